"""Older bars (panning left): chunks of time bars before the oldest bar drawn, built from
the trades held and the store's, join exactly; a hostile relayout is answered no_update."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feed.core import olderbars
from feed.core.batch import aggregate, bars_to_frame
from feed.core.config import EngineConfig, MarketConfig
from feed.core.models import BarSpec, Trade
from feed.io.engine import Engine
from feed.io.store import TradeStore
from feed.vendors.binance import BinanceAdapter

COMPARED = ["start", "end", "open", "high", "low", "close", "volume", "turnover", "trade_count",
            "buy_volume", "sell_volume", "closed"]


def _trades(n: int, seed: int = 1, t0: int = 1_700_000_000_000_000_000) -> list[Trade]:
    rng = np.random.default_rng(seed)
    ts = t0 + np.cumsum(rng.integers(1, 400_000_000, n))
    price = 100 + np.cumsum(rng.normal(0, 0.05, n)).round(2)
    return [Trade("BTCUSDT", int(t), float(p), float(1 + i % 3), 1 if i % 2 else -1, i)
            for i, (t, p) in enumerate(zip(ts, price))]


def _walk_back(older, before_ns: int, chunk: int) -> list[pd.DataFrame]:
    # Ask chunk after chunk, each before the first bar of the previous one, until none is left.
    chunks = []
    while True:
        got = older(before_ns, chunk)
        if got.empty:
            return chunks[::-1]
        assert len(got) <= chunk
        chunks.append(got)
        before_ns = int(got["start"].iloc[0])


def _assert_joined(parts: list[pd.DataFrame], expected: pd.DataFrame) -> None:
    joined = pd.concat(parts, ignore_index=True)[COMPARED].reset_index(drop=True)
    expected = expected[COMPARED].reset_index(drop=True).copy()
    expected["closed"] = True
    pd.testing.assert_frame_equal(joined, expected, check_dtype=False)


@pytest.mark.parametrize("spec_text", ["1s", "5s", "1m"])
def test_older_bars_when_walked_back_in_chunks_join_the_batch_bars_exactly(spec_text):
    trades = _trades(30_000)
    spec = BarSpec.from_str(spec_text)
    full = aggregate(trades, spec)
    full = full[full["closed"]]
    current = full.iloc[-120:]  # the bars a series holds
    every = olderbars.trade_frame(pd.DataFrame([(t.ts_ns, t.price, t.size, t.side, True) for t in trades],
                                             columns=["ts_ns", "price", "size", "side", "in_bars"]))
    held = every.iloc[-9_000:]  # the tape holds the newest trades; the store holds all
    loads = []

    def load(n):
        loads.append(n)
        return every.iloc[-n:], n >= len(every)

    chunks = _walk_back(lambda b, k: olderbars.older_bars(held, load, spec, b, k), int(current["start"].iloc[0]), 500)
    _assert_joined(chunks + [current], full)
    assert loads and max(loads) <= 4_000_000


def test_older_bars_without_a_store_stop_at_the_first_trade_held():
    trades = _trades(5_000, seed=2)
    spec = BarSpec.from_str("1s")
    full = aggregate(trades, spec)
    held = olderbars.trade_frame(pd.DataFrame([(t.ts_ns, t.price, t.size, t.side, True) for t in trades],
                                            columns=["ts_ns", "price", "size", "side", "in_bars"]))
    current = full.iloc[-50:]
    chunks = _walk_back(lambda b, k: olderbars.older_bars(held, None, spec, b, k), int(current["start"].iloc[0]), 300)
    _assert_joined(chunks + [current.iloc[:-1]], full.iloc[:-1])  # the last bar is in progress


def test_older_bars_when_not_time_bars_or_beyond_the_read_cap():
    trades = _trades(3_000, seed=3)
    frame = olderbars.trade_frame(pd.DataFrame([(t.ts_ns, t.price, t.size, t.side, True) for t in trades],
                                             columns=["ts_ns", "price", "size", "side", "in_bars"]))
    with pytest.raises(ValueError, match="time bars only"):
        olderbars.older_bars(frame, None, BarSpec.from_str("100t"), trades[-1].ts_ns, 10)
    # The store read is capped: with a cap of 1,000 trades only the whole bars in them come back.
    spec = BarSpec.from_str("1s")
    got = olderbars.older_bars(frame.iloc[-10:], lambda n: (frame.iloc[-n:], n >= len(frame)), spec,
                             trades[-1].ts_ns, 5_000, max_trades=1_000)
    assert 0 < len(got) < 5_000 and got.attrs["exhausted"] is False
    assert int(got["start"].iloc[0]) >= trades[-1_000].ts_ns  # none built from beyond the cap


def test_engine_older_bars_when_store_holds_more_than_the_tape_join_the_series(tmp_path):
    trades = _trades(40_000, seed=4, t0=1_700_000_000_000_000_000)
    store = TradeStore(tmp_path / "store")
    store.extend(trades)
    store.flush()
    engine = Engine(BinanceAdapter("spot"), EngineConfig(market=MarketConfig(max_trades=20_000, max_bars=300)),
                    store=store)
    try:
        engine.subscribe("BTCUSDT")  # restores the newest 20,000 trades only (reads up to 40,000)
        series = engine.bar_series("BTCUSDT", "1s")
        held = bars_to_frame(series.closed)
        # The series' first bar is built from the tape's first trades (maybe partial): join at the second.
        chunks = _walk_back(lambda b, k: engine.older_bars("BTCUSDT", "1s", b, k), int(held["start"].iloc[1]), 500)
        full = aggregate(trades, "1s")
        full = full[full["start"] <= held["start"].iloc[-1]]
        _assert_joined(chunks + [held.iloc[1:]], full)
        assert sum(map(len, chunks)) > 2_000  # far more than the 300 bars the series holds
        with pytest.raises(KeyError):
            engine.older_bars("ETHUSDT", "1s", trades[-1].ts_ns)
    finally:
        engine.stop()
        store.close()


# -- the page side: a relayout left of the first bar drawn ---------------------------------


@pytest.fixture
def stored_engine(tmp_path):
    """An engine holding the newest 12,000 of 40,000 stored BTCUSDT trades (1 s bars)."""
    trades = _trades(40_000, seed=5)
    store = TradeStore(tmp_path / "store")
    store.extend(trades)
    store.flush()
    engine = Engine(BinanceAdapter("spot"), EngineConfig(market=MarketConfig(max_trades=12_000)), store=store)
    engine.subscribe("BTCUSDT")
    yield engine
    engine.stop()
    store.close()


def _drawn_store(engine, keep: int = 100) -> dict:
    # The candle store the live update writes after a full draw of the newest ``keep`` bars.
    from dashboard import updates

    series = engine.bar_series("BTCUSDT", "1s")
    return {"key": "BTCUSDT|1s", "view": updates.chart_view("BTCUSDT", BarSpec.from_str("1s")),
            "generation": series.generation, "first_index": series.first_index,
            "n_closed": series.n_closed, "n_points": keep, "current": None, "decimals": 2, "gap_total": 0}


def test_history_update_when_panned_left_of_the_first_bar_loads_a_chunk_then_the_next(stored_engine):
    from dash import Patch, no_update

    from dashboard import history
    from dashboard.figures import plotly_date

    cs = _drawn_store(stored_engine)
    first = stored_engine.bar_series("BTCUSDT", "1s", cs["n_closed"] - cs["n_points"]).closed[0]
    left = plotly_date(first.start_ns - 60 * 10**9)
    patch, store = history.history_update(stored_engine, {"xaxis.range[0]": left, "xaxis.range[1]": "x"},
                                          cs, "BTCUSDT", "1s", "start", "UTC", None)
    assert isinstance(patch, Patch) and store["n"] == history.CHUNK and store["drawn"] and store["ranged"]
    traces = patch.to_plotly_json()["operations"][0]["params"]["value"]
    assert [t["name"] for t in traces] == ["history", "history volume"]
    assert len(traces[0]["x"]) == history.CHUNK and traces[0]["x"][-1] < plotly_date(first.start_ns)
    # inside the history already loaded: nothing; past its first bar: the next chunk, in place
    inside = plotly_date(int(store["first_ns"]) + 10**9)
    assert history.history_update(stored_engine, {"xaxis.range[0]": inside}, cs, "BTCUSDT", "1s",
                                  "start", "UTC", store) == (no_update, no_update)
    further = plotly_date(int(store["first_ns"]) - 10**9)
    patch2, store2 = history.history_update(stored_engine, {"xaxis.range": [further, left]}, cs,
                                            "BTCUSDT", "1s", "start", "UTC", store)
    assert store2["n"] == 2 * history.CHUNK and int(store2["first_ns"]) < int(store["first_ns"])
    ops = patch2.to_plotly_json()["operations"]
    assert [op["operation"] for op in ops] == ["Assign", "Assign"]  # the history traces replaced, not added
    # a redraw that dropped 40 bars: they join the history, which is drawn again
    redrawn = {**cs, "n_closed": cs["n_closed"], "n_points": cs["n_points"] - 40}
    patch3, store3 = history.history_update(stored_engine, {"xaxis.range": [further, left]}, redrawn, "BTCUSDT", "1s", "start", "UTC",
                                            store2)
    assert store3["n"] == 2 * history.CHUNK + 40 and store3["first_ns"] == store2["first_ns"]
    assert patch3.to_plotly_json()["operations"][0]["operation"] == "Extend"


@pytest.mark.parametrize("relayout", [
    None, "xaxis.range[0]", [1, 2], {"xaxis.range[0]": 5}, {"xaxis.range[0]": "x" * 1000},
    {"xaxis.range[0]": "not a date"}, {"xaxis.range": [1]}, {"xaxis.range": "2020-01-01"},
    {"xaxis.range[0]": "2020-01-01T00:00:00+05:00"}, {f"k{i}": i for i in range(10_000)},
    {"xaxis.range[0]": ["2020-01-01"]}, {"yaxis.range[0]": "2020-01-01"}, {"xaxis.autorange": True},
])
def test_history_update_when_relayout_is_hostile_answers_no_update(stored_engine, relayout):
    from dash import no_update

    from dashboard import history

    cs = _drawn_store(stored_engine)
    assert history.history_update(stored_engine, relayout, cs, "BTCUSDT", "1s", "start", "UTC",
                                  None) == (no_update, no_update)


@pytest.mark.parametrize("case", ["store", "store base", "store time", "candles", "symbol", "spec", "tick bars",
                                  "other chart"])
def test_history_update_when_state_is_forged_or_not_time_bars_answers_no_update(stored_engine, case):
    from dash import no_update

    from dashboard import history

    cs = _drawn_store(stored_engine)
    args = dict(relayout={"xaxis.range[0]": "2000-01-01 00:00:00"}, candles_store=cs,
                symbol="BTCUSDT", spec_text="1s", label="start", tz="UTC", store=None)
    forged = {"store": dict(store={"view": cs["view"], "base": "x", "first_ns": "1", "n": 10**12, "ranged": True,
                                   "done": False, "drawn": True}, relayout=None),
              "store base": dict(store={"view": cs["view"], "base": "x", "first_ns": "1", "n": 5, "ranged": True,
                                        "done": False, "drawn": True}, relayout=None),
              "store time": dict(store={"view": cs["view"], "base": "a|0|3", "first_ns": "1e5", "n": 5,
                                        "ranged": True, "done": False, "drawn": True}, relayout=None),
              "candles": dict(candles_store={**cs, "n_closed": "many"}),
              "symbol": dict(symbol="ETHUSDT" * 100),
              "spec": dict(spec_text="-5s"),
              "tick bars": dict(spec_text="100t"),
              "other chart": dict(symbol="ETHUSDT")}[case]
    assert history.history_update(stored_engine, **{**args, **forged}) == (no_update, no_update)


def test_history_update_when_zoomed_inside_the_bars_a_cap_redraw_keeps_the_dropped_bars(stored_engine):
    from dash import Patch, no_update

    from dashboard import history
    from dashboard.figures import plotly_date

    cs = _drawn_store(stored_engine)
    first = stored_engine.bar_series("BTCUSDT", "1s", cs["n_closed"] - cs["n_points"]).closed[0]
    inside = {"xaxis.range": [plotly_date(first.start_ns + 5 * 10**9), plotly_date(first.start_ns + 30 * 10**9)]}
    patch, store = history.history_update(stored_engine, inside, cs, "BTCUSDT", "1s", "start", "UTC", None)
    assert patch is no_update and store["ranged"] and store["n"] == 0 and not store["drawn"]
    # the live cap redraws with 60 fewer bars on the left: they come back as history
    redrawn = {**cs, "n_points": cs["n_points"] - 60}
    patch, store = history.history_update(stored_engine, inside, redrawn, "BTCUSDT", "1s", "start", "UTC", store)
    assert isinstance(patch, Patch) and store["n"] == 60 and store["drawn"]
    assert store["first_ns"] == str(first.start_ns)
    # back to autorange: a later redraw drops bars as before
    _, store = history.history_update(stored_engine, {"xaxis.autorange": True}, redrawn, "BTCUSDT",
                                      "1s", "start", "UTC", store)
    assert store["ranged"] is False
