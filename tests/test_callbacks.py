"""The callbacks' helpers without a browser: the live update of the candle chart, the depth
chart and the status line (``dashboard.updates``, over stub engines), the vendor-error
matching behind the subscribe box, the CSV export of the bars in view
(``dashboard.callbacks.export_download``) and ``register``'s argument check."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import plotly.graph_objects as go
import pytest
from dash import Patch, html, no_update
from plotly.utils import PlotlyJSONEncoder

from dashboard import callbacks, candles, figures, updates
from feed.core.batch import bars_to_frame
from feed.core.events import RawMessage
from feed.core.health import Counters
from feed.core.models import Bar
from feed.core.views import BarSeries, DepthView
from tests.helpers import make_status
from tests.test_figures import ASKS, BIDS, MIN, T0, dot_class, make_bars, operations
from tests.test_layout import HINT_451, status

E600 = "AllTick error 600: symbol code invalid (trades ZZZZ.US)"
#: Wall-clock time (UTC seconds) for status updates whose timing does not matter.
NOW = 1000.0


# -- candle chart ---------------------------------------------------------------------------------


class StubSeriesEngine:
    """``bar_series``/``depth``/``status`` over bars the test sets directly."""

    def __init__(self):
        self.closed: list[Bar] = []
        self.current: Bar | None = None
        self.first_index = 0
        self.generation = 0
        self.calls: list[int] = []
        self.book: DepthView | None = None
        self.marks: list[tuple[int, int]] = []  # the marks held (the engine keeps the latest)
        self.marks_dropped = 0  # marks no longer held: the first held one's sequence index
        self.status_value = make_status(messages_per_s=1.0, symbols={}, clock_ns=0)

    def bar_series(self, symbol, spec, since=0):
        if symbol != "BTCUSDT":
            raise KeyError(symbol)
        self.calls.append(since)
        lo = max(since - self.first_index, 0)
        return BarSeries(f"{symbol}|{spec}", self.generation, self.first_index + len(self.closed),
                         [copy.copy(b) for b in self.closed[lo:]],
                         copy.copy(self.current) if self.current else None, self.first_index,
                         price_decimals=1, size_decimals=1)

    def depth(self, symbol, levels=50):
        return self.book

    def gap_marks(self, symbol):
        return list(self.marks) if symbol == "BTCUSDT" else []

    def gap_marks_since(self, symbol, since=0):
        if symbol != "BTCUSDT":
            return 0, []
        return self.marks_dropped + len(self.marks), list(self.marks[max(since - self.marks_dropped, 0):])

    def bars_frame(self, symbol, spec):
        series = self.bar_series(symbol, spec)
        frame = bars_to_frame(series.closed + ([series.current] if series.current else []))
        frame.attrs.update(price_decimals=series.price_decimals, size_decimals=series.size_decimals)
        return frame

    def status(self):
        return self.status_value

    def grow(self, n_closed: int) -> None:
        bars = make_bars(n_closed + 1, first_index=self.first_index)
        for b in bars[:-1]:
            b.closed = True
        self.closed, self.current = bars[:-1], bars[-1]


def tick_candles(engine, store, spec="1m", symbol="BTCUSDT", max_points=50, keep_points=30, label="start"):
    return updates.candles_update(engine, symbol, spec, store, max_points, keep_points, label)


def test_candles_tick_when_steady_then_full_once_then_patches_then_nothing():
    eng = StubSeriesEngine()
    eng.grow(40)
    fig, store = tick_candles(eng, None)
    assert isinstance(fig, go.Figure)
    assert store == {"key": "BTCUSDT|1m", "view": "BTCUSDT|1m", "generation": 0, "first_index": 0, "n_closed": 40,
                     "n_points": 30, "current": candles.current_signature(eng.current), "decimals": 1,
                     "gap_total": 0}
    assert len(fig.data[candles.TRACE_CANDLES].x) == 30  # the newest keep_points
    assert fig.data[candles.TRACE_CANDLES].x[0] == figures.x_values(bars_to_frame(eng.closed[10:11]), "1m")[0]

    out, same = tick_candles(eng, store)  # nothing changed
    assert out is no_update and same is no_update

    eng.current.trade_count += 1  # the in-progress bar changed
    patch, store2 = tick_candles(eng, store)
    assert isinstance(patch, Patch)
    assert all(kind == "Assign" for kind, _ in operations(patch))
    assert store2["n_closed"] == 40 and store2["n_points"] == 30
    assert eng.calls[-1] == 40  # asked only for bars from the first undrawn index

    eng.grow(43)  # three more bars closed
    patch, store3 = tick_candles(eng, store2)
    assert isinstance(patch, Patch)
    assert store3["n_closed"] == 43 and store3["n_points"] == 33
    ext = [op for op in patch.to_plotly_json()["operations"] if op["location"] == ["data", 0, "open"]]
    assert ext[0]["operation"] == "Extend" and len(ext[0]["params"]["value"]) == 3


def through_the_page(store: dict) -> dict:
    """``store`` as the page hands it back: the browser keeps every JSON number as a double."""
    return json.loads(json.dumps(store), parse_int=lambda text: int(float(text)))


def test_candles_tick_when_bars_verified_then_steady_updates_are_patches_after_the_page_round_trip():
    eng = StubSeriesEngine()
    eng.grow(40)
    verdicts = {b.start_ns: "exact" for b in eng.closed[-5:]}
    eng.verify = lambda symbol: {"verdicts": verdicts}
    fig, store = tick_candles(eng, None)
    assert isinstance(fig, go.Figure) and store["verified"]
    eng.current.trade_count += 1
    patch, store = tick_candles(eng, through_the_page(store))
    assert isinstance(patch, Patch) and ("Assign", ("data",)) not in operations(patch)  # not a redraw
    verdicts[eng.closed[-6].start_ns] = "differs"  # a new verdict: drawn by a redraw
    redrawn(tick_candles(eng, through_the_page(store))[0])


def redrawn(out) -> dict:
    """Assert ``out`` is a redraw in place (``candles.candles_redraw``); return its data as JSON."""
    assert isinstance(out, Patch)
    ops = operations(out)
    assert ("Assign", ("data",)) in ops
    assert not any(loc[:2] in (("layout", "xaxis"), ("layout", "xaxis2"), ("layout", "uirevision"))
                   for _, loc in ops)  # the user's view is left alone
    op = next(o for o in out.to_plotly_json()["operations"] if o["location"] == ["data"])
    return json.loads(json.dumps(op["params"]["value"], cls=PlotlyJSONEncoder))


def test_candles_tick_when_generation_changes_then_redrawn_keeping_the_view():
    eng = StubSeriesEngine()
    eng.grow(10)
    _, store = tick_candles(eng, None)
    eng.generation = 1
    out, store2 = tick_candles(eng, store)
    assert len(redrawn(out)[candles.TRACE_CANDLES]["x"]) == 10 and store2["generation"] == 1


def test_candles_tick_when_cap_would_be_exceeded_then_redrawn_with_newest_bars():
    eng = StubSeriesEngine()
    eng.grow(40)
    _, store = tick_candles(eng, None)  # 30 points drawn
    eng.grow(61)  # 21 more: 51 > 50
    out, store2 = tick_candles(eng, store)
    assert len(redrawn(out)[candles.TRACE_CANDLES]["x"]) == 30
    assert store2["n_points"] == 30 and store2["n_closed"] == 61


def test_candles_tick_when_client_fell_behind_the_oldest_bar_held_then_redrawn():
    eng = StubSeriesEngine()
    eng.grow(40)
    _, store = tick_candles(eng, None)
    eng.first_index = 45  # the engine dropped bars the client never got
    eng.grow(10)
    out, store2 = tick_candles(eng, store)
    redrawn(out)
    assert store2["first_index"] == 45 and store2["n_closed"] == 55


def test_candles_tick_when_drawn_as_placeholder_then_full_figure_not_redraw():
    eng = StubSeriesEngine()
    _, store = tick_candles(eng, None)
    eng.grow(3)
    fig, _ = tick_candles(eng, store)
    assert isinstance(fig, go.Figure)  # the placeholder's layout is not a candle layout


def test_candles_tick_when_spec_changes_then_full_figure_with_new_uirevision():
    eng = StubSeriesEngine()
    eng.grow(10)
    _, store = tick_candles(eng, None)
    fig, store2 = tick_candles(eng, store, spec="5m")
    assert isinstance(fig, go.Figure)
    assert fig.layout.uirevision == "BTCUSDT|5m" and store2["key"] == "BTCUSDT|5m"


def test_candles_tick_when_no_bars_yet_then_placeholder_once():
    eng = StubSeriesEngine()
    fig, store = tick_candles(eng, None)
    assert isinstance(fig, go.Figure) and store == {"key": "BTCUSDT|1m", "empty": True}
    assert fig.layout.annotations[0].text == "no BTCUSDT trades yet"
    assert tick_candles(eng, store) == (no_update, no_update)
    eng.grow(2)
    fig, store = tick_candles(eng, store)
    assert isinstance(fig, go.Figure) and store["n_closed"] == 2


def test_candles_tick_when_symbol_unknown_or_none_then_placeholder():
    eng = StubSeriesEngine()
    fig, store = tick_candles(eng, None, symbol="NOPE")
    assert store is None and "not subscribed" in fig.layout.annotations[0].text
    fig, store = tick_candles(eng, None, symbol=None)
    assert store is None and "subscribe" in fig.layout.annotations[0].text


def test_register_when_keep_points_above_max_then_value_error():
    with pytest.raises(ValueError, match="keep_points"):
        callbacks.register(object(), StubSeriesEngine(), max_points=10, keep_points=11)


def test_depth_tick_when_book_unchanged_then_no_update():
    eng = StubSeriesEngine()
    eng.book = DepthView("BTCUSDT", 1, BIDS, ASKS, 100.0, 100.2, 100.1, 0.2, True)
    fig, sig = updates.depth_update(eng, "BTCUSDT", None)
    assert isinstance(fig, go.Figure)
    assert updates.depth_update(eng, "BTCUSDT", sig) == (no_update, no_update)
    eng.book = DepthView("BTCUSDT", 2, BIDS[:2], ASKS, 100.0, 100.2, 100.1, 0.2, True)
    fig2, sig2 = updates.depth_update(eng, "BTCUSDT", sig)
    assert isinstance(fig2, Patch) and sig2 != sig  # same frame: only what changed


def test_status_tick_when_dropped_grows_then_dropping_for_a_while():
    eng = StubSeriesEngine()
    now = [1000.0]
    children, banner, store, message, options = updates.status_update(eng, "BTCUSDT", None, now=now[0])
    assert dot_class(children) == "dot dot-green" and banner == []
    assert message is no_update and options is no_update
    assert updates.status_update(eng, "BTCUSDT", store, now=now[0]) == (no_update,) * 5
    eng.status_value = replace(eng.status_value, counters=Counters(dropped=3))
    line, _, store, *_ = updates.status_update(eng, "BTCUSDT", store, now=now[0])
    children = applied(children, line)
    assert dot_class(children) == "dot dot-amber"
    now[0] += updates.DROPPING_FOR_S - 1
    assert updates.status_update(eng, "BTCUSDT", store, now=now[0])[0] is no_update  # still amber, same text
    now[0] += 2
    line, _, store, *_ = updates.status_update(eng, "BTCUSDT", store, now=now[0])
    children = applied(children, line)
    assert dot_class(children) == "dot dot-green"


def applied(children: list, line):
    """Return the status line the browser holds after receiving ``line`` (a whole list, or
    a Patch assigning some of its items: only the items that changed are sent)."""
    if not isinstance(line, Patch):
        return line
    items = list(children)
    for op in line.to_plotly_json()["operations"]:
        assert op["operation"] == "Assign" and len(op["location"]) == 1, op
        items[op["location"][0]] = op["params"]["value"]
    return items


def gap_texts_extended(patch: Patch) -> list[str]:
    """Return the hover texts a patch appends to the gap-mark trace (one mark: 3 entries)."""
    ext = [op for op in patch.to_plotly_json()["operations"]
           if op["location"] == ["data", candles.TRACE_GAPS, "text"]]
    assert all(op["operation"] == "Extend" for op in ext)
    return [t for op in ext for t in op["params"]["value"]][0::3]


def test_candles_tick_when_gap_marks_arrive_then_patched_in_once():
    eng = StubSeriesEngine()
    eng.grow(10)
    eng.marks = [(T0 + 2 * MIN, 3)]
    fig, store = tick_candles(eng, None)
    assert fig.data[candles.TRACE_GAPS].text[0].startswith("3 trades missing")
    assert store["gap_total"] == 1
    assert tick_candles(eng, store) == (no_update, no_update)  # nothing new
    eng.marks.append((T0 + 9 * MIN + 5, 1))
    patch, store2 = tick_candles(eng, store)
    assert isinstance(patch, Patch)
    [text] = gap_texts_extended(patch)
    assert text.startswith("1 trade missing")
    assert store2["gap_total"] == 2
    assert tick_candles(eng, store2) == (no_update, no_update)


def test_candles_tick_when_two_identical_gap_marks_then_both_patched_in():
    # Two gaps of the same size at the same millisecond: told apart by sequence index.
    eng = StubSeriesEngine()
    eng.grow(10)
    mark = (T0 + 9 * MIN + 5, 2)
    eng.marks = [mark]
    _, store = tick_candles(eng, None)
    eng.marks.append(mark)
    patch, store2 = tick_candles(eng, store)
    assert len(gap_texts_extended(patch)) == 1 and store2["gap_total"] == 2
    eng.marks += [mark, mark]
    patch, store3 = tick_candles(eng, store2)
    assert len(gap_texts_extended(patch)) == 2 and store3["gap_total"] == 4


def test_candles_tick_when_drawn_gap_marks_no_longer_held_then_redrawn():
    eng = StubSeriesEngine()
    eng.grow(10)
    eng.marks = [(T0 + 2 * MIN, 3)]
    _, store = tick_candles(eng, None)
    eng.marks, eng.marks_dropped = [(T0 + 3 * MIN, 1)], 2  # the engine's bounded list moved on
    out, store2 = tick_candles(eng, store)
    assert redrawn(out)[candles.TRACE_GAPS]["text"][0].startswith("1 trade missing")
    assert store2["gap_total"] == 3
    assert tick_candles(eng, store2) == (no_update, no_update)


def test_candles_tick_when_fewer_marks_than_drawn_then_redrawn():
    # The symbol was unsubscribed and subscribed again: its marks start over.
    eng = StubSeriesEngine()
    eng.grow(10)
    eng.marks = [(T0 + 2 * MIN, 3), (T0 + 3 * MIN, 3)]
    _, store = tick_candles(eng, None)
    eng.marks = [(T0 + 4 * MIN, 1)]
    out, store2 = tick_candles(eng, store)
    texts = redrawn(out)[candles.TRACE_GAPS]["text"]
    assert len(texts) == 3 and texts[0].startswith("1 trade missing") and store2["gap_total"] == 1


def test_candles_tick_when_label_changes_then_redrawn_keeping_the_view():
    eng = StubSeriesEngine()
    eng.grow(10)
    _, store = tick_candles(eng, None)
    out, store2 = tick_candles(eng, store, label="end")
    assert store2["key"] == "BTCUSDT|1m|end" and store2["view"] == "BTCUSDT|1m"
    assert redrawn(out)[candles.TRACE_CANDLES]["x"][0] == "2024-08-08 23:56:00.000"
    assert tick_candles(eng, store2, label="end") == (no_update, no_update)
    _, store3 = tick_candles(eng, store2, spec="100t", label="end")
    assert store3["key"] == "BTCUSDT|100t"  # no interval to label: same as start
    assert tick_candles(eng, store3, spec="100t", label="start") == (no_update, no_update)


def test_candles_tick_when_label_garbage_then_start():
    eng = StubSeriesEngine()
    eng.grow(3)
    _, store = tick_candles(eng, None, label=None)
    assert store["key"] == "BTCUSDT|1m"


def export_text(out) -> str:
    data, message = out
    assert message == "" and data["type"] == "text/csv"
    return data["content"]


def test_export_when_label_end_drawn_then_bars_whose_end_is_in_view():
    from feed.core.csvformat import bars_to_csv

    eng = StubSeriesEngine()
    eng.grow(10)
    _, drawn = tick_candles(eng, None, label="end")
    request = {"n": 1, "type": "date", "range": ["2024-08-08 23:57:00", "2024-08-08 23:59:00"]}
    frame = eng.bars_frame("BTCUSDT", "1m")
    by_end = frame[(frame["end"] >= T0 + 2 * MIN) & (frame["end"] <= T0 + 4 * MIN)]
    assert export_text(callbacks.export_download(eng, request, "BTCUSDT", "1m", drawn)) == bars_to_csv(
        by_end, price_decimals=1, size_decimals=1)
    _, drawn_start = tick_candles(eng, None)
    by_start = frame[(frame["start"] >= T0 + 2 * MIN) & (frame["start"] <= T0 + 4 * MIN)]
    assert export_text(callbacks.export_download(eng, request, "BTCUSDT", "1m", drawn_start)) == bars_to_csv(
        by_start, price_decimals=1, size_decimals=1)
    assert by_end["start"].tolist() == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]


@pytest.mark.parametrize(
    ("request_type", "drawn_spec", "message"),
    [("linear", "1m", "chart is updating, try again"),  # the axis is still the old kind's
     ("date", "5m", "chart is updating, try again"),  # the chart still shows another spec
     ("date", None, "chart is updating, try again")],  # nothing drawn yet
)
def test_export_when_chart_not_yet_drawn_for_the_choice_then_inline_message(request_type, drawn_spec, message):
    eng = StubSeriesEngine()
    eng.grow(5)
    drawn = tick_candles(eng, None, spec=drawn_spec)[1] if drawn_spec else None
    out = callbacks.export_download(eng, {"n": 1, "type": request_type, "range": None}, "BTCUSDT", "1m", drawn)
    assert out == (no_update, message)


def test_export_when_no_bars_or_range_empty_or_unknown_symbol_then_inline_message():
    eng = StubSeriesEngine()
    _, drawn = tick_candles(eng, None)  # the "waiting for trades" placeholder
    assert callbacks.export_download(eng, {"n": 1, "type": "linear", "range": None}, "BTCUSDT", "1m", drawn) == (
        no_update, "no bars in view")
    eng.grow(5)
    _, drawn = tick_candles(eng, None)
    far = {"n": 1, "type": "date", "range": ["2030-01-01 00:00:00", "2030-01-02 00:00:00"]}
    assert callbacks.export_download(eng, far, "BTCUSDT", "1m", drawn) == (no_update, "no bars in view")
    drawn_eth = {**drawn, "view": "ETHUSDT|1m", "key": "ETHUSDT|1m"}
    assert callbacks.export_download(eng, {"n": 1, "type": "date", "range": None}, "ETHUSDT", "1m", drawn_eth) == (
        no_update, "ETHUSDT is not subscribed")


# -- trade-id gap marks from a real engine ---------------------------------------------------------


def binance_trade(seconds: float, trade_id: int) -> str:
    ms = (T0 + int(seconds * 1e9)) // 1_000_000
    return json.dumps({"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": ms, "s": "BTCUSDT", "t": trade_id, "p": "60000.0", "q": "0.5", "T": ms,
        "m": False, "M": True}})


def test_gap_marks_since_when_real_engine_then_exact_new_marks_and_total():
    from feed.core.config import EngineConfig, MarketConfig
    from feed.io.engine import Engine
    from feed.vendors.binance import BinanceAdapter

    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    engine.subscribe("BTCUSDT")
    # ids 1, 4 (2 missing), 7 (2 missing, same ms as 4: an identical mark), 8, 12 (3 missing)
    engine.process([RawMessage(0, binance_trade(s, i)) for s, i in ((1, 1), (2, 4), (2, 7), (3, 8), (70, 12))])
    t2, t70 = T0 + 2 * 10**9, T0 + 70 * 10**9
    assert engine.gap_marks("BTCUSDT") == [(t2, 2), (t2, 2), (t70, 3)]  # the old reader still works
    assert engine.gap_marks_since("BTCUSDT") == (3, [(t2, 2), (t2, 2), (t70, 3)])
    assert engine.gap_marks_since("BTCUSDT", 1) == (3, [(t2, 2), (t70, 3)])
    assert engine.gap_marks_since("BTCUSDT", 3) == (3, [])
    assert engine.gap_marks_since("BTCUSDT", 9) == (3, [])
    assert engine.gap_marks_since("ETHUSDT") == (0, [])
    with pytest.raises(ValueError):
        engine.gap_marks_since("BTCUSDT", -1)
    # the tick helper on the real engine: drawn once, then only the new mark is patched in
    _, store = tick_candles(engine, None)
    assert store["gap_total"] == 3
    engine.process([RawMessage(0, binance_trade(80, 14))])
    patch, store2 = tick_candles(engine, store)
    assert isinstance(patch, Patch)
    assert gap_texts_extended(patch) == ["1 trade missing<br>2024-08-08 23:56:20.000"]
    assert store2["gap_total"] == 4


def test_gap_marks_since_when_more_than_held_then_total_counts_the_dropped():
    from feed.core.config import EngineConfig, MarketConfig
    from feed.io.engine import Engine
    from feed.vendors.binance import BinanceAdapter

    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    engine.subscribe("BTCUSDT")
    engine.process([RawMessage(0, binance_trade(1 + i * 0.01, 1 + 2 * i)) for i in range(1005)])  # 1004 gaps
    total, marks = engine.gap_marks_since("BTCUSDT", 0)
    assert total == 1004 and len(marks) == 1000 and total - len(marks) == 4  # the 4 oldest dropped
    total, marks = engine.gap_marks_since("BTCUSDT", 2)
    assert total - len(marks) == 4  # != 2: a reader that drew 2 missed two and must redraw
    assert engine.gap_marks_since("BTCUSDT", 1000) == (1004, marks[-4:])


# -- vendor errors after a subscribe and the status line -------------------------------------------


@pytest.mark.parametrize(
    ("before", "now", "new"),
    [
        ([], [], []),
        ([], ["A"], ["A"]),
        (["A"], ["A"], []),
        (["A"], ["A", "A"], ["A"]),  # the same refusal again is new
        (["A", "B", "C", "D", "E"], ["B", "C", "D", "E", "F"], ["F"]),  # the oldest fell off
        (["A", "B", "C", "D", "E"], ["D", "E", "F", "G", "H"], ["F", "G", "H"]),
        (["A", "B"], ["B"], []),  # only fell off
        (["A", "B", "A"], ["B", "A", "A"], ["A"]),
        (["A"], ["X", "Y"], ["X", "Y"]),  # nothing in common: every one is new
    ],
)
def test_new_errors_when_lists_then_the_entries_after_before(before, now, new):
    assert updates.new_errors(before, now) == new


def test_subscribe_errors_when_new_error_names_the_symbol_then_returned():
    assert updates.subscribe_errors([], [E600], "ZZZZ.US") == [E600]
    assert updates.subscribe_errors(["old"], ["old", E600], "zzzz.us") == [E600]  # case-insensitive
    itick = "iTick refused subscribe AAPL$US, QQQQ$US: invalid symbol"
    assert updates.subscribe_errors([], [itick], "QQQQ$US") == [itick]
    binance = "Binance error 1: Invalid symbol (SUBSCRIBE adausdt@trade, adausdt@depth@100ms)"
    assert updates.subscribe_errors([], [binance], "ADAUSDT") == [binance]


def test_subscribe_errors_when_old_other_symbol_or_longer_code_then_nothing():
    assert updates.subscribe_errors([E600], [E600], "ZZZZ.US") == []  # seen before the subscribe
    assert updates.subscribe_errors([], [E600], "AAPL.US") == []
    assert updates.subscribe_errors([], ["AllTick error 600: symbol code invalid (trades ZZZZ.USX)"],
                                      "ZZZZ.US") == []
    assert updates.subscribe_errors([], ["Binance error 1: Invalid symbol (SUBSCRIBE BTCUSDT)"], "BTC") == []
    assert updates.subscribe_errors([], [E600], "") == []


class StatusEngine:
    """``status()`` only."""

    def __init__(self, **over):
        self.value = status(**over)

    def status(self):
        return self.value


def pending(symbol="ZZZZ.US", at=1000.0, errors=(), previous="AAPL.US", n="1") -> dict:
    return {"n": n, "symbol": symbol, "at": at, "errors": list(errors), "previous": previous}


def test_status_tick_when_vendor_refuses_the_symbol_just_subscribed_then_inline_message_once():
    now = [1000.5]
    eng = StatusEngine(errors=["earlier refusal"], symbols={"AAPL.US": {}, "ZZZZ.US": {}})
    sub = pending(errors=["earlier refusal"])
    _, _, store, message, _ = updates.status_update(eng, "ZZZZ.US", None, sub, now=now[0])
    assert message is no_update  # no answer yet
    now[0] += 1.0
    eng.value = replace(eng.value, errors=("earlier refusal", E600))
    _, _, store, message, _ = updates.status_update(eng, "ZZZZ.US", store, sub, now=now[0])
    assert message == E600 and store["sub_done"] == "1"
    _, _, store2, message, _ = updates.status_update(eng, "ZZZZ.US", store, sub, now=now[0])
    assert message is no_update and store2 is no_update  # shown once; it stays until the next subscribe


def test_status_tick_when_refusal_comes_late_or_for_another_symbol_then_no_message():
    late = 1000.0 + updates.SUBSCRIBE_ERRORS_FOR_S + 1
    eng = StatusEngine(errors=[E600])
    assert updates.status_update(eng, "BTCUSDT", None, pending(), now=late)[3] is no_update  # too late
    now = 1001.0
    assert updates.status_update(eng, "BTCUSDT", None, pending(symbol="AAPL.US"), now=now)[3] is no_update
    assert updates.status_update(eng, "BTCUSDT", None, pending(errors=[E600]), now=now)[3] is no_update  # seen before
    assert updates.status_update(eng, "BTCUSDT", None, None, now=now)[3] is no_update
    assert updates.status_update(eng, "BTCUSDT", None, pending(), now=now)[3] == E600


def test_status_tick_when_engine_dropped_a_symbol_then_options_without_it():
    eng = StatusEngine(symbols={"AAPL.US": {}})
    assert updates.status_update(eng, "AAPL.US", None, None, ["AAPL.US", "ZZZZ.US"], now=NOW)[4] == ["AAPL.US"]
    assert updates.status_update(eng, "AAPL.US", None, None, ["AAPL.US"], now=NOW)[4] is no_update
    dict_options = [{"label": "AAPL.US", "value": "AAPL.US"}, {"label": "ZZZZ.US", "value": "ZZZZ.US"}]
    assert updates.status_update(eng, "AAPL.US", None, None, dict_options, now=NOW)[4] == dict_options[:1]
    assert updates.status_update(eng, "AAPL.US", None, None, None, now=NOW)[4] is no_update


def test_status_tick_when_feed_fails_then_banner_rendered_and_signature_changes():
    eng = StatusEngine()
    children, banner, store, _, _ = updates.status_update(eng, "BTCUSDT", None, now=NOW)
    assert banner == []
    eng.value = replace(eng.value, state="failed", detail=HINT_451)
    children, banner, store2, _, _ = updates.status_update(eng, "BTCUSDT", store, now=NOW)
    assert isinstance(banner[1], html.Span) and banner[1].children == HINT_451
    assert store2["sig"] != store["sig"]
