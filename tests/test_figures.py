"""Figure builders, patches and the update planning, without a browser.

Also the pure view next to them: the status line (``statusline.status_children``). The
callbacks' helpers that drive these builders are tested in ``tests/test_callbacks.py``.
"""

from __future__ import annotations

import copy
import json

import plotly.graph_objects as go
import pytest
from dash import Patch, html

from dashboard import candles, depth, figures, layout, statusline
from feed.core.batch import bars_to_frame
from feed.core.models import Bar, BarSpec
from tests.helpers import make_status

T0 = 1_723_161_300 * 10**9  # 2024-08-08T23:55:00Z
MIN = 60 * 10**9


def make_bars(n: int, *, spec: str = "1m", first_index: int = 0, current: bool = True,
              symbol: str = "BTCUSDT") -> list[Bar]:
    """Return ``n`` bars (the last in progress when ``current``), alternating up and down."""
    s = BarSpec.from_str(spec)
    bars = []
    for i in range(n):
        k = first_index + i
        o = 100.0 + k
        c = o + (1.5 if k % 2 == 0 else -1.5)
        bars.append(Bar(symbol, s, T0 + k * MIN, T0 + (k + 1) * MIN, o, max(o, c) + 1, min(o, c) - 1, c,
                        volume=1.0 + k, turnover=(1.0 + k) * o, trade_count=k + 1, buy_volume=1.0,
                        sell_volume=float(k), closed=not (current and i == n - 1)))
    return bars


def fig_dict(fig) -> dict:
    """Return a figure as the browser receives it (plain JSON)."""
    return json.loads(fig.to_json() if isinstance(fig, go.Figure) else json.dumps(fig))


def apply_patch(figure: dict, patch: Patch) -> dict:
    """Apply a dash.Patch's Assign/Extend operations to a figure dict (as dash-renderer does)."""
    out = copy.deepcopy(figure)
    for op in patch.to_plotly_json()["operations"]:
        *path, last = op["location"]
        node = out
        for key in path:
            node = node[key]
        if op["operation"] == "Assign":
            node[last] = op["params"]["value"]
        elif op["operation"] == "Extend":
            node[last].extend(op["params"]["value"])
        else:  # pragma: no cover - figures use only these two
            raise AssertionError(f"unexpected patch operation {op['operation']}")
    return out


def operations(patch: Patch) -> list[tuple[str, tuple]]:
    return [(op["operation"], tuple(op["location"])) for op in patch.to_plotly_json()["operations"]]


# -- x values -----------------------------------------------------------------------------------


def test_x_values_when_time_bars_then_utc_date_strings_with_ms():
    df = bars_to_frame(make_bars(2, current=False))
    df.loc[1, "start"] += 123_456_789
    assert figures.x_values(df, "1m") == ["2024-08-08 23:55:00.000", "2024-08-08 23:56:00.123"]


def test_x_values_when_tick_bars_then_bar_indices_from_first_index():
    df = bars_to_frame(make_bars(3, spec="100t", current=False))
    assert figures.x_values(df, BarSpec.from_str("100t"), first_index=40) == [40, 41, 42]


# -- full candle figure -------------------------------------------------------------------------


def test_candles_figure_when_bars_then_closed_live_and_volume_traces_in_fixed_order():
    bars = make_bars(5)
    fig = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec="1m"))
    data = fig["data"]
    assert [t["type"] for t in data] == ["candlestick", "candlestick", "bar", "bar", "scatter", "candlestick",
                                         "scatter", "candlestick"]  # verification marks, vendor candles
    closed, live = data[candles.TRACE_CANDLES], data[candles.TRACE_LIVE]
    assert closed["open"] == [b.open for b in bars[:4]]
    assert closed["close"] == [b.close for b in bars[:4]]
    assert live["x"] == ["2024-08-08 23:59:00.000"] and live["close"] == [bars[4].close]
    assert live["opacity"] < 1  # the in-progress bar is drawn distinct
    assert data[candles.TRACE_VOLUME]["y"] == [b.volume for b in bars[:4]]
    assert data[candles.TRACE_LIVE_VOLUME]["y"] == [bars[4].volume]
    assert data[candles.TRACE_VOLUME]["yaxis"] == "y2"
    assert fig["layout"]["shapes"][0]["y0"] == bars[4].close  # last price line


def test_candles_figure_when_volume_then_coloured_by_up_down():
    bars = make_bars(4, current=False)
    fig = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec="1m"))
    colours = fig["data"][candles.TRACE_VOLUME]["marker"]["color"]
    ups = [b.close >= b.open for b in bars]
    assert ups == [True, False, True, False]
    assert len(set(colours[0::2])) == 1 and len(set(colours[1::2])) == 1 and colours[0] != colours[1]
    assert "38,166,154" in colours[0] and "239,83,80" in colours[1]


def test_candles_figure_when_no_bar_in_progress_then_live_traces_empty():
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(3, current=False)),
                                          symbol="BTCUSDT", spec="1m"))
    assert fig["data"][candles.TRACE_LIVE]["x"] == []
    assert fig["data"][candles.TRACE_LIVE_VOLUME]["y"] == []
    assert len(fig["data"][candles.TRACE_CANDLES]["x"]) == 3


def test_candles_figure_when_time_spec_then_date_axis_shared_and_rangeslider_off():
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(3)), symbol="BTCUSDT", spec="1m"))
    lay = fig["layout"]
    assert lay["xaxis"]["type"] == "date" and lay["xaxis"]["rangeslider"]["visible"] is False
    assert lay["xaxis"]["matches"] == "x2" or lay["xaxis2"].get("matches") == "x"
    assert lay["uirevision"] == "BTCUSDT|1m"
    assert "BTCUSDT" in lay["title"]["text"] and "1m" in lay["title"]["text"]


def test_candles_figure_when_tick_spec_then_linear_axis_of_bar_indices():
    bars = make_bars(3, spec="100t", first_index=7)
    fig = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="ETHUSDT", spec="100t",
                                          first_index=7, uirevision="custom"))
    assert fig["layout"]["xaxis"]["type"] == "linear"
    assert fig["data"][candles.TRACE_CANDLES]["x"] == [7, 8]
    assert fig["data"][candles.TRACE_LIVE]["x"] == [9]
    assert "start 2024-08-09 00:02:00.000" in fig["data"][candles.TRACE_CANDLES]["text"][0]
    assert fig["layout"]["uirevision"] == "custom"


# -- patches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["1m", "100t"])
def test_candles_patch_when_applied_then_equals_full_figure_of_all_bars(spec):
    bars = make_bars(12, spec=spec)  # the last one in progress
    # drawn earlier: bars 0..5 closed with bar 6 then in progress
    early = [copy.copy(b) for b in bars[:7]]
    early[6].closed, early[6].close, early[6].volume = False, early[6].open, 0.5
    early[6].high = max(early[6].high, early[6].open)
    before = fig_dict(candles.candles_figure(bars_to_frame(early), symbol="BTCUSDT", spec=spec))
    patch = candles.candles_patch(bars_to_frame(bars[6:]), spec=spec, first_index=6,
                                  decimals=figures.price_decimals(bars_to_frame(early)))
    after = apply_patch(before, patch)
    full = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec=spec))
    assert after["data"] == full["data"]
    assert after["layout"]["shapes"] == full["layout"]["shapes"]
    assert after["layout"]["annotations"] == full["layout"]["annotations"]


def test_candles_patch_when_only_the_live_bar_changed_then_no_closed_trace_touched():
    patch = candles.candles_patch(bars_to_frame(make_bars(1, first_index=9)), spec="1m", first_index=9)
    ops = operations(patch)
    assert all(kind == "Assign" for kind, _ in ops)
    touched = {loc[1] for _, loc in ops if loc[0] == "data"}
    assert touched == {candles.TRACE_LIVE, candles.TRACE_LIVE_VOLUME, candles.TRACE_FRAME}


def test_candles_patch_when_bars_closed_then_closed_traces_extended_not_rewritten():
    patch = candles.candles_patch(bars_to_frame(make_bars(3, first_index=4)), spec="1m", first_index=4)
    ops = operations(patch)
    extended = {(loc[1], loc[2]) for kind, loc in ops if kind == "Extend"}
    assert (candles.TRACE_CANDLES, "x") in extended and (candles.TRACE_VOLUME, "y") in extended
    assert not any(kind == "Assign" and loc[1] in (candles.TRACE_CANDLES, candles.TRACE_VOLUME)
                   for kind, loc in ops if loc[0] == "data")
    ext_x = next(op for op in patch.to_plotly_json()["operations"]
                 if op["operation"] == "Extend" and op["location"] == ["data", 0, "x"])
    assert ext_x["params"]["value"] == ["2024-08-08 23:59:00.000", "2024-08-09 00:00:00.000"]


def test_candles_patch_when_no_bar_in_progress_then_live_traces_emptied():
    patch = candles.candles_patch(bars_to_frame(make_bars(1, current=False)), spec="1m", first_index=0)
    before = fig_dict(candles.candles_figure(bars_to_frame(make_bars(1)), symbol="BTCUSDT", spec="1m"))
    after = apply_patch(before, patch)
    assert after["data"][candles.TRACE_LIVE]["x"] == [] and after["data"][candles.TRACE_LIVE_VOLUME]["x"] == []
    assert len(after["data"][candles.TRACE_CANDLES]["x"]) == 1


def test_price_decimals_when_prices_then_most_decimals_seen():
    df = bars_to_frame(make_bars(3, current=False))
    assert figures.price_decimals(df) == 1
    df.loc[2, "low"] = 97.25
    assert figures.price_decimals(df) == 2


def test_candles_patch_when_decimals_given_then_last_price_tag_uses_them():
    patch = candles.candles_patch(bars_to_frame(make_bars(1)), spec="1m", first_index=0, decimals=3)
    tag = next(op for op in patch.to_plotly_json()["operations"] if op["location"][:2] == ["layout", "annotations"])
    assert tag["params"]["value"]["text"] == "101.500"


def test_candles_figure_when_time_bars_then_volume_bars_overlay_at_80_percent_width():
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(3)), symbol="BTCUSDT", spec="5m"))
    assert fig["layout"]["barmode"] == "overlay"
    assert fig["data"][candles.TRACE_VOLUME]["width"] == fig["data"][candles.TRACE_LIVE_VOLUME]["width"] == 240_000
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(3, spec="50v")), symbol="X", spec="50v"))
    assert fig["data"][candles.TRACE_VOLUME]["width"] == 0.8


# -- planning -----------------------------------------------------------------------------------

STORE = {"key": "BTCUSDT|1m", "generation": 3, "first_index": 0, "n_closed": 100, "n_points": 100}


@pytest.mark.parametrize(
    ("store", "series", "plan"),
    [
        (STORE, dict(generation=3, n_closed=105, first_index=0), "patch"),
        (STORE, dict(generation=3, n_closed=100, first_index=0), "patch"),
        (None, dict(generation=3, n_closed=105, first_index=0), "full"),
        ({**STORE, "key": "ETHUSDT|1m"}, dict(generation=3, n_closed=105, first_index=0), "full"),
        (STORE, dict(generation=4, n_closed=105, first_index=0), "full"),  # revision
        (STORE, dict(generation=3, n_closed=5105, first_index=101), "full"),  # fell behind
        (STORE, dict(generation=3, n_closed=90, first_index=0), "full"),  # series went back
        (STORE, dict(generation=3, n_closed=600, first_index=0), "patch"),  # 100 + 500 = cap
        (STORE, dict(generation=3, n_closed=601, first_index=0), "full"),  # over the cap
        ({"key": "BTCUSDT|1m", "empty": True}, dict(generation=0, n_closed=1, first_index=0), "full"),
    ],
)
def test_plan_candles_when_state_differs_then_full_else_patch(store, series, plan):
    assert candles.plan_candles(store, key="BTCUSDT|1m", max_points=600, **series) == plan


def test_current_signature_when_bar_changes_then_signature_changes():
    bar = make_bars(1)[0]
    sig = candles.current_signature(bar)
    assert isinstance(sig, str) and candles.current_signature(copy.copy(bar)) == sig
    bar.trade_count += 1
    assert candles.current_signature(bar) != sig
    assert candles.current_signature(None) is None
    assert candles.current_signature({"start_ns": 1, "end_ns": 2, "trade_count": 3, "volume": 1.0,
                                      "close": 5.0}) == "1:2:3:1.0:5.0"


def test_candles_redraw_when_applied_then_new_traces_title_and_marker_but_user_range_kept():
    old = fig_dict(candles.candles_figure(bars_to_frame(make_bars(5)), symbol="BTCUSDT", spec="1m"))
    old["layout"]["xaxis"]["range"] = ["2024-08-08 23:56:00", "2024-08-08 23:58:00"]  # the user zoomed
    old["layout"]["xaxis"]["autorange"] = False
    new = candles.candles_figure(bars_to_frame(make_bars(8)), symbol="BTCUSDT", spec="1m", label="end",
                                 gap_marks=[(T0 + MIN, 2)], decimals=2)
    after = apply_patch(old, candles.candles_redraw(new))
    full = fig_dict(new)
    assert after["data"] == full["data"]
    for key in ("title", "shapes", "annotations"):
        assert after["layout"][key] == full["layout"][key]
    assert after["layout"]["yaxis"]["hoverformat"] == ",.2f"
    assert after["layout"]["xaxis"]["range"] == ["2024-08-08 23:56:00", "2024-08-08 23:58:00"]
    assert after["layout"]["xaxis"]["autorange"] is False


# -- depth --------------------------------------------------------------------------------------

BIDS = [(100.0, 1.0), (99.9, 2.0), (99.8, 0.5)]
ASKS = [(100.2, 0.25), (100.3, 1.0)]


def test_depth_figure_when_book_then_cumulative_sizes_in_price_order():
    fig = fig_dict(depth.depth_figure(BIDS, ASKS, symbol="BTCUSDT", mid=100.1, spread=0.2))
    bids, asks = fig["data"]
    assert bids["x"] == [99.8, 99.9, 100.0] and bids["y"] == [3.5, 3.0, 1.0]
    assert asks["x"] == [100.2, 100.3] and asks["y"] == [0.25, 1.25]
    assert bids["line"]["shape"] == "vh" and asks["line"]["shape"] == "hv"
    assert bids["fill"] == asks["fill"] == "tozeroy"
    assert bids["line"]["color"] == figures.BID and asks["line"]["color"] == figures.ASK
    assert fig["layout"]["shapes"][0]["x0"] == 100.1  # mid line
    note = fig["layout"]["annotations"][0]["text"]
    assert note == "mid 100.1 · spread 0.2 (20 bps)"  # decimals as seen in the prices
    assert fig["layout"]["uirevision"] == "BTCUSDT"


def test_depth_figure_when_mid_between_ticks_then_one_more_decimal():
    fig = fig_dict(depth.depth_figure([(100.1, 1.0)], [(100.2, 1.0)], symbol="X", mid=100.15, spread=0.1))
    assert fig["layout"]["annotations"][0]["text"].startswith("mid 100.15 ")


def test_depth_figure_when_empty_or_unsynced_then_says_so():
    fig = fig_dict(depth.depth_figure([], [], symbol="BTCUSDT", synced=False))
    assert "resyncing" in fig["layout"]["title"]["text"]
    assert any("order book out of sync" in a["text"] for a in fig["layout"]["annotations"])
    assert not fig["layout"].get("shapes")  # no mid line without a mid


# -- status line --------------------------------------------------------------------------------


def text_of(children) -> str:
    """Return the visible text of components, space-joined."""
    out = []

    def walk(node):
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, (list, tuple)):
            for c in node:
                walk(c)
        elif isinstance(node, html.Span) or hasattr(node, "children"):
            walk(getattr(node, "children", None) or [])
    walk(children)
    return " ".join(out)


def dot_class(children) -> str:
    return children[0].children[0].className


def status(**over):
    base = {"state": "live", "detail": "", "messages_per_s": 1234.4, "queue_depth": 12,
            "symbols": {"BTCUSDT": {"trades": 5, "last_trade_ts_ns": 10 * 10**9}},
            "clock_ns": 10 * 10**9 + 400_000_000, "vendor": None, "feed": None}
    base.update(over)
    return make_status(**base)


@pytest.mark.parametrize(
    ("state", "colour"),
    [("live", "green"), ("connecting", "amber"), ("authenticating", "amber"), ("reconnecting", "amber"),
     ("stale", "amber"), ("failed", "red"), ("stopped", "grey"), ("replay-finished", "blue"),
     ("something-new", "grey")],
)
def test_status_children_when_state_then_dot_colour(state, colour):
    children = statusline.status_children(status(state=state), "BTCUSDT")
    assert dot_class(children) == f"dot dot-{colour}"
    assert state in text_of(children)


def test_status_children_when_live_then_rate_age_and_queue():
    text = text_of(statusline.status_children(status(), "BTCUSDT"))
    assert "msg/s 1,234" in text and "last trade 0.4 s" in text and "queue 12" in text
    assert "dropped" not in text


def test_status_children_when_dropping_then_amber_and_counters_shown():
    children = statusline.status_children(status(counters={"dropped": 7, "gaps": 3}), "BTCUSDT", dropping=True)
    assert dot_class(children) == "dot dot-amber"
    text = text_of(children)
    assert "live · dropping" in text and "dropped 7" in text and "gaps 3" in text


def test_status_children_when_failed_and_dropping_then_stays_red():
    assert dot_class(statusline.status_children(status(state="failed"), None, dropping=True)) == "dot dot-red"


def test_status_children_when_vendor_refused_then_last_error_shown():
    text = text_of(statusline.status_children(status(errors=["old", "Invalid symbol XRPUSD"]), "BTCUSDT"))
    assert "vendor Invalid symbol XRPUSD" in text and "old" not in text


@pytest.mark.parametrize(
    ("age_ns", "text"),
    [(None, "–"), (400_000_000, "0.4 s"), (12 * 10**9, "12 s"), (300 * 10**9, "5 min"),
     (3 * 3600 * 10**9, "3 h"), (-5, "0.0 s")],
)
def test_format_age_when_ns_then_short_text(age_ns, text):
    assert statusline.format_age(age_ns) == text


# -- controls helpers ---------------------------------------------------------------------------


def test_size_options_when_custom_spec_then_appended_once():
    values = [o["value"] for o in layout.size_options("time", "3m")]
    assert values == list(layout.BAR_PRESETS["time"]) + ["3m"]
    assert [o["value"] for o in layout.size_options("time", "5m")] == list(layout.BAR_PRESETS["time"])
    assert layout.size_options("value")[1]["label"] == "1,000,000q"


def test_presets_when_parsed_then_all_valid_and_of_their_kind():
    for kind, specs in layout.BAR_PRESETS.items():
        assert all(BarSpec.from_str(s).kind == kind for s in specs)
        assert BarSpec.from_str(layout.kind_default(kind)).kind == kind


# -- bar label: time bars at their interval end -------------------------------------------


def test_x_values_when_label_end_then_time_bars_at_interval_end_and_others_unchanged():
    df = bars_to_frame(make_bars(2, current=False))
    assert figures.x_values(df, "1m", label="end") == ["2024-08-08 23:56:00.000", "2024-08-08 23:57:00.000"]
    ticks = bars_to_frame(make_bars(2, spec="100t", current=False))
    assert figures.x_values(ticks, "100t", first_index=5, label="end") == [5, 6]


def test_x_values_when_label_unknown_then_value_error():
    with pytest.raises(ValueError, match="label"):
        figures.x_values(bars_to_frame(make_bars(1)), "1m", label="middle")


def test_candles_figure_when_label_end_then_candles_and_volume_at_ends_and_title_says_so():
    bars = make_bars(4)
    fig = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec="1m", label="end"))
    data = fig["data"]
    ends = figures.x_values(bars_to_frame(bars), "1m", label="end")
    assert data[candles.TRACE_CANDLES]["x"] == data[candles.TRACE_VOLUME]["x"] == ends[:3]
    assert data[candles.TRACE_LIVE]["x"] == data[candles.TRACE_LIVE_VOLUME]["x"] == ends[3:]
    assert "interval end" in fig["layout"]["title"]["text"]
    assert fig["layout"]["uirevision"] == "BTCUSDT|1m"  # same view as label=start
    # the hover text still gives the interval start, since x no longer does
    assert data[candles.TRACE_CANDLES]["text"][0].startswith("start 2024-08-08 23:55:00.000<br>")


def test_candles_figure_when_label_end_then_start_figure_shifted_by_one_interval():
    df = bars_to_frame(make_bars(5))
    start = fig_dict(candles.candles_figure(df, symbol="BTCUSDT", spec="1m"))
    end = fig_dict(candles.candles_figure(df, symbol="BTCUSDT", spec="1m", label="end"))
    assert end["data"][candles.TRACE_CANDLES]["x"][:-1] == start["data"][candles.TRACE_CANDLES]["x"][1:]
    for col in ("open", "high", "low", "close"):
        assert end["data"][candles.TRACE_CANDLES][col] == start["data"][candles.TRACE_CANDLES][col]


def test_candles_figure_when_tick_bars_then_label_changes_nothing():
    df = bars_to_frame(make_bars(4, spec="100t"))
    a = fig_dict(candles.candles_figure(df, symbol="X", spec="100t"))
    b = fig_dict(candles.candles_figure(df, symbol="X", spec="100t", label="end"))
    assert a == b


def test_candles_patch_when_label_end_then_applied_equals_full_end_figure():
    bars = make_bars(9)
    early = [copy.copy(b) for b in bars[:5]]
    early[4].closed = False
    before = fig_dict(candles.candles_figure(bars_to_frame(early), symbol="BTCUSDT", spec="1m", label="end"))
    patch = candles.candles_patch(bars_to_frame(bars[4:]), spec="1m", first_index=4, label="end",
                                  decimals=figures.price_decimals(bars_to_frame(early)))
    full = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec="1m", label="end"))
    assert apply_patch(before, patch)["data"] == full["data"]


# -- hover text: change and amplitude ------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "signed", "text"),
    [
        (0.0123, False, "1.23 %"),
        (0.0123, True, "+1.23 %"),
        (-0.0000123, True, "-0.00123 %"),
        (0.00123456, False, "0.123 %"),
        (0.12345, False, "12.35 %"),
        (0.0, True, "0.00 %"),
        (1e-15, True, "0.00 %"),
        (float("nan"), True, "–"),
        (None, False, "–"),
    ],
)
def test_format_pct_when_fraction_then_percent_to_three_significant_digits(x, signed, text):
    assert figures.format_pct(x, signed=signed) == text


def test_hover_text_when_time_bars_then_trades_change_and_amplitude_percent():
    bars = make_bars(3, current=False)
    for prev, bar in zip(bars, bars[1:]):
        bar.prev_close = prev.close
    text = figures.hover_text(bars_to_frame(bars), "1m")
    assert text[0] == "volume 1<br>1 trade<br>change –<br>amplitude –"  # a series' first bar has no previous close
    b = bars[1]
    change, amplitude = (b.close - b.prev_close) / b.prev_close, (b.high - b.low) / b.prev_close
    assert text[1] == (f"volume 2<br>2 trades<br>change {figures.format_pct(change, signed=True)}"
                       f"<br>amplitude {figures.format_pct(amplitude)}")
    assert text[1] == "volume 2<br>2 trades<br>change -1.97 %<br>amplitude 3.45 %"  # (99.5 - 101.5) / 101.5, 3.5 / 101.5


def test_candles_figure_when_bars_then_closed_and_live_hover_show_change_and_amplitude():
    bars = make_bars(3)
    for prev, bar in zip(bars, bars[1:]):
        bar.prev_close = prev.close
    fig = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec="1m"))
    closed_text = fig["data"][candles.TRACE_CANDLES]["text"]
    live_text = fig["data"][candles.TRACE_LIVE]["text"][0]
    assert "change -1.97 %" in closed_text[1] and "amplitude 3.45 %" in closed_text[1]
    assert "change +4.02 %" in live_text and live_text.endswith("<br>in progress")


def test_hover_text_when_tick_bars_then_start_and_end_times_first():
    text = figures.hover_text(bars_to_frame(make_bars(1, spec="100t")), "100t")
    assert text[0].startswith("start 2024-08-08 23:55:00.000<br>end 2024-08-08 23:56:00.000<br>volume 1<br>1 trade<br>")


# -- framing candles -----------------------------------------------------------------------------


def test_candles_figure_when_one_bar_then_frame_spans_min_slots_and_one_free_slot():
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(1)), symbol="BTCUSDT", spec="1m"))
    frame = fig["data"][candles.TRACE_FRAME]
    first = figures.x_values(bars_to_frame(make_bars(1, first_index=-(candles.MIN_SLOTS - 1))), "1m")[0]
    assert frame["x"] == [first, "2024-08-08 23:56:00.000"]
    assert frame["open"] == frame["close"] == [make_bars(1)[0].close] * 2  # inside the price range
    assert frame["hoverinfo"] == "skip"
    assert frame["increasing"]["fillcolor"] == "rgba(0,0,0,0)"


def test_candles_figure_when_few_tick_bars_then_frame_from_bar_zero_no_negative_numbers():
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(3, spec="100t")), symbol="X", spec="100t"))
    assert fig["data"][candles.TRACE_FRAME]["x"] == [0, candles.MIN_SLOTS - 1]


def test_candles_figure_when_more_bars_than_min_slots_then_left_frame_on_a_bar():
    n = candles.MIN_SLOTS + 10
    fig = fig_dict(candles.candles_figure(bars_to_frame(make_bars(n, spec="100t")), symbol="X", spec="100t"))
    assert fig["data"][candles.TRACE_FRAME]["x"] == [n - candles.MIN_SLOTS, n]
    assert n - candles.MIN_SLOTS in fig["data"][candles.TRACE_CANDLES]["x"]


# -- trade-id gap marks ---------------------------------------------------------------------


def test_gap_columns_when_time_bars_then_line_at_exact_time_with_hover_text():
    df = bars_to_frame(make_bars(3))
    cols = candles.gap_columns([(T0 + MIN + 1_500_000_000, 3), (T0 + 2 * MIN, 1)], df, "1m")
    assert cols["x"] == ["2024-08-08 23:56:01.500", "2024-08-08 23:56:01.500", None,
                         "2024-08-08 23:57:00.000", "2024-08-08 23:57:00.000", None]
    assert cols["y"] == [0, 1, None] * 2
    assert cols["text"][0] == "3 trades missing<br>2024-08-08 23:56:01.500"
    assert cols["text"][3] == "1 trade missing<br>2024-08-08 23:57:00.000"
    assert cols["size"] == [0, 7, 0] * 2  # a marker at the head only


def test_gap_columns_when_label_end_then_time_marks_do_not_move():
    df = bars_to_frame(make_bars(3))
    marks = [(T0 + MIN + 5, 2)]
    assert candles.gap_columns(marks, df, "1m", label="end")["x"] == candles.gap_columns(marks, df, "1m")["x"]


def test_gap_columns_when_tick_bars_then_at_index_of_bar_holding_that_time():
    bars = make_bars(4, spec="100t", first_index=0)  # bar k covers T0 + k min .. T0 + (k+1) min
    df = bars_to_frame(bars)
    marks = [(T0 + 30 * 10**9, 5), (T0 + 2 * MIN, 2), (T0 + 3 * MIN + 1, 1), (T0 + 99 * MIN, 4)]
    cols = candles.gap_columns(marks, df, "100t", first_index=20)
    assert cols["x"][0::3] == [20, 21, 23, 23]  # an end on the time is that bar; past the last: the last
    assert cols["text"][0].startswith("5 trades missing<br>")


def test_gap_columns_when_mark_older_than_first_bar_then_dropped_or_clamped():
    df = bars_to_frame(make_bars(2, spec="100t", first_index=3))
    marks = [(T0, 2), (T0 + 3 * MIN + 1, 1)]
    assert candles.gap_columns(marks, df, "100t", first_index=3)["x"][0::3] == [3]
    assert candles.gap_columns(marks, df, "100t", first_index=3, drop_older=False)["x"][0::3] == [3, 3]
    time_df = bars_to_frame(make_bars(2, first_index=3))
    assert len(candles.gap_columns(marks, time_df, "1m")["x"]) == 3  # the older time mark is left out


def test_gap_columns_when_no_bars_or_no_marks_then_empty():
    empty = {"x": [], "y": [], "text": [], "size": []}
    assert candles.gap_columns([(T0, 1)], bars_to_frame([]), "1m") == empty
    assert candles.gap_columns([], bars_to_frame(make_bars(2)), "1m") == empty


def test_candles_figure_when_gap_marks_then_dotted_lines_over_price_pane_only():
    df = bars_to_frame(make_bars(4))
    fig = fig_dict(candles.candles_figure(df, symbol="BTCUSDT", spec="1m", gap_marks=[(T0 + MIN, 7)]))
    gaps = fig["data"][candles.TRACE_GAPS]
    assert gaps["x"][:2] == ["2024-08-08 23:56:00.000"] * 2 and gaps["y"] == [0, 1, None]
    assert gaps["hovertemplate"] == "%{text}<extra></extra>" and gaps["text"][0].startswith("7 trades missing")
    assert gaps["yaxis"] == "y3" and gaps["xaxis"] == "x" and gaps["line"]["width"] == 1
    y3 = fig["layout"]["yaxis3"]
    assert y3["overlaying"] == "y" and y3["range"] == [0, 1] and y3["fixedrange"] and not y3["visible"]


@pytest.mark.parametrize("spec", ["1m", "100t"])
def test_candles_patch_when_new_gap_marks_then_extended_and_equal_to_full_figure(spec):
    bars = make_bars(8, spec=spec)
    early = [copy.copy(b) for b in bars[:5]]
    early[4].closed = False
    old_marks, new_marks = [(T0 + MIN + 10, 2)], [(T0 + 4 * MIN + 10, 1), (T0 + 7 * MIN + 10, 5)]
    before = fig_dict(candles.candles_figure(bars_to_frame(early), symbol="BTCUSDT", spec=spec, gap_marks=old_marks))
    patch = candles.candles_patch(bars_to_frame(bars[4:]), spec=spec, first_index=4, gap_marks=new_marks,
                                  decimals=figures.price_decimals(bars_to_frame(early)))
    assert ("Extend", ("data", candles.TRACE_GAPS, "x")) in operations(patch)
    full = fig_dict(candles.candles_figure(bars_to_frame(bars), symbol="BTCUSDT", spec=spec,
                                           gap_marks=old_marks + new_marks))
    assert apply_patch(before, patch)["data"] == full["data"]


def test_candles_patch_when_no_new_gap_marks_then_gap_trace_untouched():
    patch = candles.candles_patch(bars_to_frame(make_bars(2, first_index=4)), spec="1m", first_index=4)
    assert not any(loc[1] == candles.TRACE_GAPS for _, loc in operations(patch) if loc[0] == "data")


# -- status line: late, gaps and why while reconnecting ------------------------------------


def test_status_children_when_late_and_gaps_then_both_shown_else_hidden():
    text = text_of(statusline.status_children(status(counters={"gaps": 12, "late": 4}), "BTCUSDT"))
    assert "gaps 12" in text and "late 4" in text
    text = text_of(statusline.status_children(status(counters={"gaps": 0, "late": 0}), "BTCUSDT"))
    assert "gaps" not in text and "late" not in text


def test_status_children_when_reconnecting_then_detail_inline_and_in_tooltip():
    detail = "next retry in 2.0 s (connection refused)"
    children = statusline.status_children(status(state="reconnecting", detail=detail), "BTCUSDT")
    words = "cannot connect to the exchange - retrying in 2 s"  # the exception's text is for the log
    assert "reconnecting " + words in text_of(children)
    assert children[0].title == words
    assert dot_class(children) == "dot dot-amber"


def test_status_children_when_live_then_detail_only_in_tooltip():
    children = statusline.status_children(status(state="replay-finished", detail="the recorded session has played out"),
                                      "BTCUSDT")
    assert "played out" not in text_of(children) and children[0].title.endswith("played out")


def test_status_children_when_detail_long_then_clipped_inline_whole_in_tooltip():
    detail = "next retry in 9.5 s (" + "x" * 200 + ")"
    children = statusline.status_children(status(state="reconnecting", detail=detail), None)
    shown = children[0].children[2].children
    assert len(shown) == 90 and shown.endswith("…")
    assert children[0].title == "x" * 200 + " - retrying in 10 s"


def test_label_options_when_kind_not_time_then_disabled():
    assert [o["value"] for o in layout.label_options("time")] == ["start", "end"]
    assert not any(o["disabled"] for o in layout.label_options("time"))
    assert all(o["disabled"] for o in layout.label_options("tick"))


