"""Exchange-to-applied latency: the pure window (feed/core/latency.py) and ``latency_ms``
in the engine's health after a real loopback run."""

from __future__ import annotations

import json
import time

import pytest

from feed.core.latency import LatencyWindow
from feed.io.client import FeedClient
from feed.io.engine import Engine
from feed.vendors.binance import BinanceAdapter
from tests.test_wsbuffer import RawServer, _frame

pytestmark = pytest.mark.timeout(30)

MS = 1_000_000
NOW = 1_800_000_000_000_000_000


def test_window_when_samples_recorded_reports_percentiles_in_ms():
    w = LatencyWindow()
    assert w.summary(NOW) is None
    w.record(NOW, [NOW - k * MS for k in range(1, 101)])  # 1..100 ms
    s = w.summary(NOW)
    assert s["samples"] == 100 and s["max"] == 100.0
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)


def test_window_when_samples_older_than_a_minute_leaves_them_out():
    w = LatencyWindow(window_s=60)
    w.record(NOW, [NOW - 500 * MS])
    w.record(NOW + 61 * 10**9, [NOW + 61 * 10**9 - 2 * MS])
    s = w.summary(NOW + 61 * 10**9)
    assert s["samples"] == 1 and s["p99"] == 2.0
    assert w.summary(NOW + 200 * 10**9) is None


def test_window_when_full_keeps_the_newest_samples():
    w = LatencyWindow(capacity=8)
    for k in range(5):
        w.record(NOW, [NOW - (10 * k + j) * MS for j in range(3)])  # 15 samples > 8
    s = w.summary(NOW)
    assert s["samples"] == 8 and s["max"] == 42.0  # the newest eight: 21, 22, 30..32, 40..42
    w.record(NOW, [NOW - j * MS for j in range(20)])  # more than the capacity at once
    assert w.summary(NOW)["max"] == 19.0 and w.summary(NOW)["samples"] == 8


def test_window_when_bad_arguments_raises():
    with pytest.raises(ValueError):
        LatencyWindow(window_s=0)
    with pytest.raises(ValueError):
        LatencyWindow(capacity=0)


def _trade(tid: int, t_ms: int) -> bytes:
    return json.dumps({"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": t_ms, "s": "BTCUSDT", "t": tid, "p": "61000.5", "q": "0.01",
        "T": t_ms, "m": bool(tid % 2), "M": True}}).encode()


def test_health_after_a_loopback_run_carries_latency_ms_of_the_trades_applied():
    n = 500
    now_ms = time.time_ns() // MS
    server = RawServer([b"".join(_frame(_trade(i, now_ms)) for i in range(1, n + 1))])
    engine = Engine(BinanceAdapter("spot")).start()
    client = FeedClient(BinanceAdapter("spot"), engine, url=server.url, ping_interval_s=0)
    engine.attach(client)
    try:
        engine.subscribe("BTCUSDT")
        client.start()
        deadline = time.monotonic() + 15
        while engine.market.count("trades") < n and time.monotonic() < deadline:
            time.sleep(0.01)
        health = engine.health()
    finally:
        client.stop()
        engine.stop()
        server.close()
    assert health["counters"]["trades"] == n
    lat = health["latency_ms"]
    assert lat["samples"] == n
    # Stamped before the connection: at least the time to connect, at most the test's.
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"] < 15_000


def test_health_in_a_replay_has_no_latency():
    from feed.core.config import EngineConfig, MarketConfig

    engine = Engine(BinanceAdapter("spot"), EngineConfig(market=MarketConfig(clock="exchange")))
    engine.subscribe("BTCUSDT")
    from feed.core.events import RawMessage

    engine.process([RawMessage(0, _trade(1, 1_700_000_000_000))])
    health = engine.health()
    assert health["counters"]["trades"] == 1 and health["latency_ms"] is None
