"""Hostile input: thousands of bad messages mixed with valid ones must be counted by reason
and skipped, and leave trades, bars and books exactly as the valid messages alone make them.

The end-to-end test replays the recorded spot BTCUSDT capture through the embedded
exchange with the ``garbage`` fault over a real loopback socket: after each message, with
probability 0.3, one hostile message (``feed.exchange.faults.GARBAGE_KINDS``: truncated JSON,
invalid UTF-8, wrong types, NaN/negative prices and sizes, unknown events, a symbol never
subscribed, binary frames, 10 MB frames, duplicates, ...). The unit tests below feed the
engine directly, without sockets.
"""

from __future__ import annotations

import json
import logging
import random
import time

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.core.events import RawMessage
from feed.core.batch import aggregate
from feed.core.config import EngineConfig, MarketConfig
from feed.io.engine import Engine
from feed.vendors.binance import BinanceAdapter
from tests.test_faults import (
    BAR_COLUMNS,
    SPECS,
    api_health,
    key,
    recorded_trades,
    report,
    rest_book,
    spot_files,
    start,
)

pytestmark = pytest.mark.timeout(60)

#: What the Binance adapter / feed client / engine call each kind of hostile message.
REASON_OF_KIND = {
    "truncated": "bad_json", "bad_utf8": "bad_json", "deep_nesting": "bad_json", "empty": "bad_json",
    "not_object": "bad_shape", "data_not_object": "bad_shape", "wrong_type": "bad_field",
    "missing_field": "missing_field", "nan_price": "bad_price", "negative_price": "bad_price",
    "zero_size": "bad_size", "negative_size": "bad_size", "unknown_event": "unknown_event",
    "unsubscribed_symbol": "unsubscribed_symbol", "bad_level": "bad_level",
    "bad_update_id": "bad_update_id", "bad_reply": "bad_reply", "binary": "binary_frame",
    "huge": "too_large",
}


def test_fuzz_when_garbage_mixed_into_replay_counts_every_bad_message_and_bars_equal_valid_trades(hft_data, caplog):
    paths = spot_files(hft_data, ("btcusdt_20240808.gz",))
    valid = recorded_trades(paths)["BTCUSDT"]
    faults = "garbage=0.3,garbage_big=2,seed=11"
    caplog.set_level(logging.WARNING)
    rt = start(paths, faults, speed=0, feed={"stale_after_s": 30.0})
    try:
        assert rt.exchange.finished.wait(40)
        assert rt.engine.wait_idle(30, quiet_s=0.5)
        health = api_health(rt)
        garbage = rt.exchange.fault_stats()["garbage"]
        assert sum(garbage.values()) > 3000 and garbage.get("huge") == 2
        assert set(garbage) == set(REASON_OF_KIND) | {"duplicate"}
        # Every hostile message is counted under its reason, and nothing else is.
        expected: dict[str, int] = {}
        for kind, n in garbage.items():
            if kind != "duplicate":
                expected[REASON_OF_KIND[kind]] = expected.get(REASON_OF_KIND[kind], 0) + n
        assert health["malformed_by_reason"] == expected
        assert health["counters"]["malformed"] == sum(expected.values())
        assert health["counters"]["duplicates"] == garbage["duplicate"]
        assert health["feed"]["binary_frames"] == garbage["binary"]
        assert health["feed"]["oversize_frames"] == garbage["huge"]
        # The valid trades arrived, all of them, once, unchanged; no gap, no reconnect.
        got = rt.engine.trades("BTCUSDT", 10**7)
        assert [key(t) for t in got] == [key(t) for t in valid]
        assert health["counters"]["gaps"] == 0 and health["counters"]["reconnects"] == 0
        # Bars equal those of the valid trades alone; the book equals the exchange's.
        for spec in SPECS:
            pd.testing.assert_frame_equal(rt.engine.bars_frame("BTCUSDT", spec)[BAR_COLUMNS],
                                          aggregate(valid, spec)[BAR_COLUMNS], check_exact=True)
        view = rt.engine.depth("BTCUSDT", 50)
        assert view.synced and (view.bids, view.asks) == rest_book(rt, "BTCUSDT", 50)
        # Logged rate-limited, with short samples: nothing like a 10 MB line.
        engine_logs = [r for r in caplog.records if r.name == "tickscope.engine"]
        assert 1 <= len(engine_logs) <= 10
        assert max(len(r.getMessage()) for r in caplog.records) < 2000
        report("garbage (fuzz)", faults, rt, health, {"BTCUSDT": {"received": len(got), "garbage": garbage}})
    finally:
        rt.stop()


# -- engine without sockets --------------------------------------------------------------

TRADE = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
         '"t":%d,"p":"%s","q":"0.02000000","T":%d,"m":%s,"M":true}}')


def valid_stream(n: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    t0 = 1_723_161_255_000
    return [(TRADE % (1000 + i, f"{60000 + rng.randrange(-500, 500) / 100:.2f}", t0 + 37 * i,
                      "true" if rng.random() < 0.5 else "false")).encode() for i in range(n)]


def make_engine() -> Engine:
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange")))
    engine.subscribe("BTCUSDT")
    for spec in SPECS:
        engine.bar_series("BTCUSDT", spec)
    return engine


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_engine_when_valid_messages_mutated_never_fails_and_counts_each_message_once(data):
    msgs = valid_stream(40)
    mutated = []
    for raw in msgs:
        if data.draw(st.booleans(), label="mutate"):
            b = bytearray(raw)
            for _ in range(data.draw(st.integers(1, 4), label="edits")):
                i = data.draw(st.integers(0, len(b) - 1), label="at")
                op = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="op")
                if op == "flip":
                    b[i] = data.draw(st.integers(0, 255), label="byte")
                elif op == "cut":
                    del b[i:]
                    break
                else:
                    b[i:i] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
            mutated.append(bytes(b))
        else:
            mutated.append(raw)
    engine = make_engine()
    engine.process([RawMessage(1, m) for m in mutated])
    c = engine.counters()
    assert engine._worker_errors == 0
    assert c.messages == len(mutated)
    # Each message is exactly one of: a trade applied, a duplicate, malformed, or an
    # event that is not a trade (a mutation can turn a trade into a valid other event).
    assert c.trades + c.duplicates + c.malformed <= len(mutated)
    got = engine.trades("BTCUSDT", 10**6)
    assert len(got) == c.trades
    for spec in SPECS:
        pd.testing.assert_frame_equal(engine.bars_frame("BTCUSDT", spec)[BAR_COLUMNS],
                                      aggregate(got, spec)[BAR_COLUMNS], check_exact=True)


def test_engine_when_message_is_10mb_counts_it_without_parsing_quickly():
    engine = make_engine()
    huge = b'{"stream":"btcusdt@trade","data":{"e":"trade","pad":"' + b"x" * (10 << 20) + b'"}}'
    t0 = time.perf_counter()
    engine.process([RawMessage(1, huge), RawMessage(2, valid_stream(1)[0])])
    assert time.perf_counter() - t0 < 0.05
    assert engine.health()["malformed_by_reason"] == {"too_large": 1}
    assert engine.counters().trades == 1


def test_engine_when_server_shutdown_notice_asks_feed_for_planned_reconnect_not_malformed():
    class Feed:
        calls = []

        def reconnect(self, reason, *, planned=False):
            self.calls.append((reason, planned))

        def status(self):
            return {"state": "live"}

        def subscribe(self, symbols):
            pass

    engine = make_engine()
    feed = Feed()
    engine.attach(feed)
    notice = json.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1}})
    engine.process([RawMessage(1, notice.encode())])
    assert feed.calls and feed.calls[0][1] is True
    c = engine.counters()
    assert c.malformed == 0 and c.server_shutdowns == 1 and c.messages == 1


def test_engine_when_trade_for_symbol_never_subscribed_counts_it_and_keeps_state_clean():
    engine = make_engine()
    other = TRADE.replace("btcusdt", "ethusdt").replace("BTCUSDT", "ETHUSDT") % (5, "3000.00", 1_723_161_255_000, "true")
    engine.process([RawMessage(1, other.encode()), RawMessage(2, valid_stream(1)[0])])
    assert engine.health()["malformed_by_reason"] == {"unsubscribed_symbol": 1}
    assert engine.symbols() == ["BTCUSDT"] and engine.counters().trades == 1
