"""Vendor candles where no trades exist: TickDB's REST kline seed (parser, codes, rate limit,
key) against a TickDB fake on loopback, and end to end with the AllTick fake: the vendor's
1m candles are held apart from tickscope's own bars and drawn hollow and grey."""

from __future__ import annotations

import json
import time

import pytest

from feed.core.models import MalformedMessage
from feed.io.vendor_candles import VendorCandleSeeder
from feed.vendors.alltick import AllTickAdapter
from feed.vendors.tickdb import kline_url, tickdb_symbol
from feed.vendors.tickdb_wire import TickdbError, parse_kline_answer
from tests.fakes import FakeAllTickServer
from tests.fakes.tickdb_server import FakeTickdb
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)

KEY = "tdb-key-9f8e7d6c5b"
NS = 1_000_000


class Sink:
    def __init__(self) -> None:
        self.items = []

    def submit_control(self, item) -> None:
        self.items.append(item)


def test_parser_keeps_final_candles_and_words_each_code():
    body = json.dumps({"code": 0, "message": "success", "data": {"symbol": "AAPL.US", "interval": "1m", "klines": [
        {"time": 60_000, "open": "1", "high": "2", "low": "0.5", "close": "1.5", "volume": "10", "quote_volume": "15"},
        {"time": 120_000, "open": "1", "high": "2", "low": "0.5", "close": "1.5", "volume": "10"}]}})
    (k,) = parse_kline_answer("AAPL.US", body, now_ns=150_000 * NS)  # 02:00 is still in progress
    assert (k.start_ns, k.end_ns, k.open, k.high, k.low, k.close, k.volume, k.turnover) == (
        60_000 * NS, 120_000 * NS, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0)
    for code, fatal in ((1001, True), (1002, True), (2002, True), (3001, False)):
        with pytest.raises(TickdbError) as err:
            parse_kline_answer("X", json.dumps({"code": code, "message": "m"}), 0)
        assert err.value.fatal is fatal and str(code) in str(err.value)
    for bad in ("nope", "[]", json.dumps({"code": 0, "data": {"klines": [{"time": "x"}]}})):
        with pytest.raises(MalformedMessage):
            parse_kline_answer("X", bad, 0)
    assert tickdb_symbol("aapl$us") == "AAPL.US"
    assert "start_time=0&end_time=59999" in kline_url("http://h", "AAPL.US", 0, 59_999)
    with pytest.raises(ValueError):
        kline_url("ftp://h", "X", 0, 1)


def test_seeder_waits_out_3001_sends_the_key_in_the_header_and_pages_1000_candles():
    with FakeTickdb(KEY, rate_limited=1) as fake:
        sink = Sink()
        seeder = VendorCandleSeeder(sink, fake.base_url, KEY, 1500 * 60.0)
        seeder.seed("AAPL.US")
        wait_for(lambda: len(sink.items) >= 2, 10, "two windows of candles")
        seeder.stop()
        candles = [k for item in sink.items for k in item.klines]
        assert all(not item.error for item in sink.items)
        assert len(candles) == 1500 and len({k.start_ns for k in candles}) == 1500
        assert [r["key"] for r in fake.requests] == [KEY] * 3  # 3001 once, then two windows
        assert all(int(r["limit"]) <= 1000 and KEY not in json.dumps(r["symbol"]) for r in fake.requests)
        assert seeder.calls == 3


@pytest.mark.parametrize("key, symbol, words", [
    ("wrong-key", "AAPL.US", "invalid or expired"),
    (KEY, "NOPE.US", "does not know this symbol"),
])
def test_seeder_refusals_end_the_seed_with_words_and_no_key_in_them(key, symbol, words):
    with FakeTickdb(KEY) as fake:
        sink = Sink()
        seeder = VendorCandleSeeder(sink, fake.base_url, key, 600.0)
        seeder.seed(symbol)
        wait_for(lambda: sink.items, 10, "the refusal")
        seeder.stop()
        (item,) = sink.items
        assert item.klines == () and words in item.error and key not in item.error
        assert len(fake.requests) == 1  # not retried


def test_alltick_with_tickdb_seed_vendor_bars_drawn_apart_never_in_own_bars(tmp_path, monkeypatch):
    from dashboard import updates
    from dashboard.candles import TRACE_CANDLES, TRACE_VENDOR, VENDOR_GREY
    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    monkeypatch.setenv("ALLTICK_TOKEN", "tok-e2e-5a4b3c2d1e")
    monkeypatch.setattr(AllTickAdapter, "heartbeat_interval_s", 0.5)
    monkeypatch.setattr(AllTickAdapter, "max_messages_per_s", 4.0)
    with FakeAllTickServer(token="tok-e2e-5a4b3c2d1e", push_interval_s=0.1, ts_start_ms=None,
                           min_request_interval_s=0.2) as fake, FakeTickdb(KEY) as tickdb:
        monkeypatch.setenv("TICKDB_API_KEY", KEY)
        monkeypatch.setenv("TICKDB_BASE_URL", tickdb.base_url)
        rt = start_runtime(config_from_argv(["--vendor", "alltick", "--symbols", "AAPL.US", "--url", fake.base_url,
                                             "--backfill", "30m", "--data-dir", str(tmp_path)]),
                           feed_options={"backoff_initial_s": 0.05, "ping_interval_s": 0})
        try:
            wait_for(lambda: len(rt.engine.vendor_candles("AAPL.US")) >= 29, 10, "TickDB candles")
            wait_for(lambda: rt.engine.status().symbols["AAPL.US"].trades >= 3, 10, "live trades")
            vendor = rt.engine.vendor_candles("AAPL.US")
            own = rt.engine.bars_frame("AAPL.US", "1m")
            # Never mixed in: own bars come from the live trades only (prices ~ the fake's).
            assert own["trade_count"].sum() == rt.engine.status().symbols["AAPL.US"].trades
            assert (own["trade_count"] > 0).all()  # a vendor candle (no trade count) would show as 0
            assert not (own["volume"] == 1200).any()  # the fake's vendor volume
            fig, _ = updates.candles_update(rt.engine, "AAPL.US", "1m", None, max_points=5000, keep_points=5000)
            trace = fig.data[TRACE_VENDOR]
            assert trace.name == "vendor candles" and len(trace.x) >= 29
            assert trace.increasing.fillcolor == "rgba(0,0,0,0)" and trace.increasing.line.color == VENDOR_GREY
            assert len(fig.data[TRACE_CANDLES].x) == len(own) - 1  # own closed bars only
            assert KEY not in json.dumps(rt.engine.health())
            assert all(r["key"] == KEY for r in tickdb.requests)
        finally:
            rt.stop()
