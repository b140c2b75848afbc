"""One bad input never breaks tickscope: bounded costs and sane values in the market state.

Each test sends what an attacker or a broken vendor could send through the real parse
path (Binance adapter -> Engine -> MarketState) and checks that the good data around it
stays exact and every read path still answers.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from flask import Flask

from dashboard import api
from feed.core.bars import MAX_BARS_PER_TRADE, make_aggregator
from feed.core.batch import aggregate
from feed.core.config import EngineConfig, MarketConfig
from feed.core.events import RawMessage
from feed.core.market import MAX_ID_JUMP
from feed.core.models import BUY, Trade, iso_ms
from feed.core.timegrid import MAX_FLAT_FILL
from feed.io.engine import Engine
from feed.vendors.binance import BinanceAdapter
from tests.helpers import binance_trade_msg

S = 1_000_000_000
T0_MS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC
YEAR_2200_MS = 7_258_118_400_000


def engine(clock: str = "exchange", **market) -> Engine:
    eng = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock=clock, close_grace_s=0, **market)))
    eng.subscribe("BTCUSDT")
    return eng


def good_stream(n: int, start_id: int = 1, start_ms: int = T0_MS, step_ms: int = 1000) -> list[str]:
    return [binance_trade_msg(start_ms + i * step_ms, start_id + i, f"{60000 + i % 7}.5", "0.25", i % 2 == 0)
            for i in range(n)]


def feed(eng: Engine, messages: list[str], recv_ns: int | None = None) -> None:
    eng.process([RawMessage(recv_ns if recv_ns is not None else time.time_ns(), m) for m in messages])


def expected(eng: Engine, spec: str, messages: list[str]):
    # The bars of the good trades alone, through the same adapter and batch aggregate.
    adapter = BinanceAdapter("spot")
    trades = [ev for m in messages for ev in adapter.parse(m, 0) if isinstance(ev, Trade)]
    return aggregate(trades, spec)


def api_client(eng: Engine):
    server = Flask("hostile")
    api.register_routes(server, eng)
    return server.test_client()


def assert_bars_exact(eng: Engine, spec: str, messages: list[str]) -> None:
    got = eng.bars_frame("BTCUSDT", spec)
    want = expected(eng, spec, messages)
    cols = ["start", "open", "high", "low", "close", "volume", "trade_count", "buy_volume"]
    assert got[cols].to_dict("list") == want[cols].to_dict("list")


# -- bar specs with a tiny step -------------------------------------------------------


@pytest.mark.parametrize("spec", ["0.00000001v", "0.01q", "1t"])
def test_bar_series_when_spec_would_make_too_many_bars_refused_fast_in_bounded_memory(spec):
    eng = engine(max_rebuild_bars=1000)
    feed(eng, good_stream(3000))
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="would make about"):
        eng.bar_series("BTCUSDT", spec)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0 and peak < 5_000_000
    assert_bars_exact(eng, "1m", good_stream(3000))  # the engine is unharmed


def test_api_bars_when_spec_too_fine_answers_400_and_health_still_answers():
    eng = engine(max_rebuild_bars=1000)
    feed(eng, good_stream(3000))
    client = api_client(eng)
    resp = client.get("/api/bars?symbol=BTCUSDT&bar=0.00000001v")
    assert resp.status_code == 400 and "choose a larger step" in resp.get_json()["error"]
    assert client.get("/api/health").status_code == 200


def test_volume_bar_when_huge_trade_meets_tiny_threshold_closes_at_most_the_cap():
    agg = make_aggregator("BTCUSDT", "0.00000001v", max_bars=100)
    closed = agg.on_trade(Trade("BTCUSDT", 0, 60000.0, 1000.0, BUY, 1))
    assert len(closed) == MAX_BARS_PER_TRADE
    assert agg.current is None and sum(b.volume for b in agg.closed) <= 1000.0
    # batch gives the same bars (it runs the same loop)
    frame = aggregate([Trade("BTCUSDT", 0, 60000.0, 1000.0, BUY, 1)], "0.00000001v")
    assert len(frame) == MAX_BARS_PER_TRADE and frame["volume"].sum() == pytest.approx(1000.0)


def test_bar_series_when_many_distinct_specs_keeps_at_most_max_series_per_symbol():
    eng = engine(max_series=4)
    feed(eng, good_stream(500))
    for n in range(2, 40):
        eng.bar_series("BTCUSDT", f"{n}t")
    assert len(eng.market._symbols["BTCUSDT"].series) == 4
    assert_bars_exact(eng, "5m", good_stream(500))  # evicted or not, a spec read is exact


# -- timestamps -------------------------------------------------------------------------


def test_trade_when_stamped_10_18_ms_live_refused_and_every_read_path_answers():
    eng = engine(clock="wall")
    now_ms = time.time_ns() // 1_000_000
    good = good_stream(5, start_ms=now_ms - 10_000)
    feed(eng, good[:2] + [binance_trade_msg(10**18, 3)] + good[2:])
    c = eng.counters()
    assert eng.health()["malformed_by_reason"] == {"bad_time": 1}  # past 2096: the adapter refuses it
    assert c.trades == 5  # the bad trade took no id: its real twin (id 3) is kept
    client = api_client(eng)
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/bars?symbol=BTCUSDT&bar=1m").status_code == 200
    assert iso_ms(10**18 * 10**6) == ""  # formatting is total anyway


def test_trade_when_stamped_2200_in_replay_refused_and_later_trades_not_late():
    eng = engine(bar_options={"late_tolerance_ns": 2 * S})
    good = good_stream(300)
    bad = binance_trade_msg(YEAR_2200_MS, 10_000_000)
    feed(eng, good[:100] + [bad] + good[100:])
    eng.bar_series("BTCUSDT", "1m")
    c = eng.counters()
    assert c.late == 0 and c.trades == 300 and c.gaps == 0
    assert eng.health()["malformed_by_reason"] == {"bad_time": 1}  # past 2096: the adapter refuses it
    assert_bars_exact(eng, "1m", good)


def test_flat_bars_when_trade_stamped_2200_fill_nothing_beyond_the_cap():
    agg = make_aggregator("BTCUSDT", "1m", empty="flat")
    agg.on_trade(Trade("BTCUSDT", T0_MS * 1_000_000, 100.0, 1.0, BUY, 1))
    agg.on_trade(Trade("BTCUSDT", T0_MS * 1_000_000 + 61 * S, 100.0, 1.0, BUY, 2))
    t0 = time.perf_counter()
    closed = agg.on_trade(Trade("BTCUSDT", YEAR_2200_MS * 1_000_000, 100.0, 1.0, BUY, 3))
    agg.on_clock(YEAR_2200_MS * 1_000_000 + 3600 * S)
    assert len(closed) == 1 and time.perf_counter() - t0 < 1.0  # the gap stays a gap
    assert MAX_FLAT_FILL >= 100_000  # a day of 1s bars is still filled


# -- trade ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("jump", [10**6, 2**40])
def test_trade_id_when_one_jumps_far_ahead_is_suspect_and_genuine_trades_kept(jump):
    eng = engine()
    good = good_stream(200)
    feed(eng, good[:50] + [binance_trade_msg(T0_MS + 50_500, 50 + jump)] + good[50:])
    c = eng.counters()
    assert c.trades == 200 and c.duplicates == 0 and c.gaps == 0
    assert eng.health()["malformed_by_reason"] == {"suspect_trade_id": 1}
    assert_bars_exact(eng, "1m", good)


def test_trade_id_when_jump_is_confirmed_by_the_next_trade_counts_a_real_gap():
    eng = engine()
    good = good_stream(10)
    far = good_stream(10, start_id=10 + MAX_ID_JUMP + 5, start_ms=T0_MS + 20_000)
    feed(eng, good + far)
    c = eng.counters()
    assert c.trades == 20 and c.gaps == MAX_ID_JUMP + 4 and not eng.health()["malformed_by_reason"]
    assert_bars_exact(eng, "1m", good + far)


def test_trade_id_when_beyond_int64_refused_and_not_a_baseline():
    eng = engine()
    good = good_stream(20)
    feed(eng, good[:10] + [binance_trade_msg(T0_MS + 10_100, 2**70)] + good[10:])
    c = eng.counters()
    assert c.trades == 20 and c.duplicates == 0 and c.gaps == 0
    assert sum(eng.health()["malformed_by_reason"].values()) == 1
    assert_bars_exact(eng, "1m", good)
