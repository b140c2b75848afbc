"""Gap repair: trade ids skipped and connections dropped by the embedded exchange's fault
injection are fetched back from its REST history and put in place; every covered minute
of a recorded USD-M session equals Binance's official kline again, ``gaps`` returns to 0
and ``repaired`` equals the ids injected. A gap that cannot be repaired stays a gap and
says why. The end of a replay fetches the tail a dropped connection lost; two gaps in one
aggregate each get their ids; repairs are stored, and a restart restores them."""

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
    # The end of the replay asks for the trades after the newest received (the tail) in
    # the same step that shows it finished: wait for that, then for every repair.
    wait_for(lambda: rt.engine.status().state == "replay-finished", 30, "the replay to finish")
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
        assert health["history"]["symbols"]["BTCUSDT"]["repaired"] == len(skipped)  # per symbol
        from dashboard.statusline import history_item

        from dashboard.candle_data import gap_columns

        # The chart's gap marks have all turned into the smaller "repaired" marks.
        cols = gap_columns(marks, rt.engine.bars_frame("BTCUSDT", "1m"), "1m")
        heads = [t for t in cols["text"][1::3]]
        assert len(heads) == len(marks) and all(t.startswith("repaired:") for t in heads)
        assert set(cols["size"][1::3]) == {4}
        item = history_item(rt.engine.status().history, "BTCUSDT")
        assert f"{len(skipped):,} repaired" in " ".join(str(c.children) for c in item.children)
        check_minutes(rt)
        # Export follows: /api/bars holds the repaired minute's trade count.
        csv_text = rt.app.server.test_client().get("/api/bars?symbol=BTCUSDT&bar=1m").get_data(as_text=True)
        assert ",1823," in csv_text  # 00:01, the minute with the INSURANCE_FUND trade left out
    finally:
        rt.stop()


def test_dropped_connections_and_skipped_ids_every_minute_exact_again():
    rt = start_replay("skip_ids=2,skip_every=700,drop_every=3000")
    try:
        health = finish(rt)
        stats = rt.exchange.fault_stats()
        assert stats["drops"] >= 2 and health["counters"]["reconnects"] >= 2
        # Every lost id comes back, except the INSURANCE_FUND fill if a drop lost it: Binance
        # aggregates hold MARKET trades only, so no history serves it (and no bar counts it).
        left = health["history"]["unrepaired"]
        assert health["counters"]["gaps"] == sum(u["missing"] for u in left) <= 1, left
        assert all(u["from_id"] <= INSURANCE_FUND_ID <= u["to_id"] for u in left)
        assert health["counters"]["repaired"] >= len(stats["skipped"]["BTCUSDT"]) - 1
        # Recovered: every trade from history after the first live one, the tail included
        # (a drop near the end of the session loses trades no later live trade reveals).
        held = rt.engine.trades("BTCUSDT", 10**6)
        live = [t for t in held if t.recv_ns]
        recovered = sum(t.count for t in held if not t.recv_ns and t.trade_id > live[0].trade_id)
        assert recovered == health["counters"]["repaired"]
        assert [t.trade_id for t in held] == sorted({t.trade_id for t in held})  # in id order, each once
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


def _usdm_market(**options):
    from feed.core.config import MarketConfig
    from feed.core.market import MarketState
    from feed.vendors.binance import BinanceAdapter

    return MarketState(MarketConfig(clock="exchange", backfill_s=60, repair_gaps=True, **options),
                       BinanceAdapter("usdm"))


def test_tail_when_the_source_finished_trades_after_the_newest_are_fetched_put_in_place_and_close_bars():
    from feed.core.events import HistoryPage, Parsed, SourceFinished
    from feed.core.models import BUY, SELL, AggTrade, BarSpec, Trade

    m = _usdm_market()
    m.add_symbol("BTCUSDT")
    t0 = 1_680_652_800 * 10**9  # 00:00:00
    live = [Trade("BTCUSDT", t0 + i * 10**9, 100.0 + i, 1.0, BUY, 10 + i, t0) for i in range(5)]
    m.apply([Parsed(t0, [t]) for t in live], t0, 0)
    spec = BarSpec.from_str("1m")  # a series built as a reader builds one
    m.install_series(m.series_seed("BTCUSDT", spec, t0), m.build_series(m.series_seed("BTCUSDT", spec, t0)), t0)
    fx = m.apply([SourceFinished(t0)], t0, 0)
    assert m.source_finished
    (req,) = [r for r in fx.history if r.kind == "tail"]
    assert req.symbol == "BTCUSDT" and req.lo_id == 15 and req.start_ns == live[-1].ts_ns
    # The vendor holds ids 15..19 (two aggregates) and 20 a minute later; 14 again (held).
    rows = (AggTrade(7, 104.0, 1.0, 14, 14, live[-1].ts_ns, BUY), AggTrade(8, 105.0, 2.0, 15, 16, t0 + 10 * 10**9, SELL),
            AggTrade(9, 106.0, 3.0, 17, 19, t0 + 20 * 10**9, BUY), AggTrade(10, 99.0, 1.0, 20, 20, t0 + 61 * 10**9, BUY))
    fx = m.apply([HistoryPage(t0, req, rows, done=True)], t0, 0)
    assert [t.trade_id for t in fx.inserted] == [16, 19, 20] and not fx.persist
    assert m.history.repaired == 6 and m.missing_trades() == 0
    assert m.gap_marks_since("BTCUSDT")[1] == [(t0 + 10 * 10**9, 0)]  # a gap seen repaired
    (bar,) = m.bar_series("BTCUSDT", spec).closed  # the replay clock moved on: 00:00 closed
    assert bar.trade_count == 5 + 5 and bar.volume == 5.0 + 5.0 and bar.close == 106.0
    # A live trade the tail already brought is a duplicate, not a second copy.
    fx = m.apply([Parsed(t0, [Trade("BTCUSDT", t0 + 61 * 10**9, 99.0, 1.0, BUY, 20, t0)])], t0, 0)
    assert m.count("duplicates") == 1 and not fx.persist


def test_tail_with_nothing_after_the_newest_trade_is_done_not_a_gap():
    from feed.core.events import HistoryPage, Parsed, SourceFinished
    from feed.core.models import BUY, Trade

    m = _usdm_market()
    m.add_symbol("BTCUSDT")
    t0 = 1_680_652_800 * 10**9
    m.apply([Parsed(t0, [Trade("BTCUSDT", t0, 100.0, 1.0, BUY, 10, t0)])], t0, 0)
    (req,) = m.apply([SourceFinished(t0)], t0, 0).history
    fx = m.apply([HistoryPage(t0, req, (), done=True)], t0, 0)
    assert not fx.inserted and m.history.repaired == 0 and m.history.unrepaired() == []
    assert m.gap_marks_since("BTCUSDT") == (0, [])
    assert m.history.as_json()["repairs_fetching"] == 0


def test_repairs_are_stored_a_restart_on_the_same_data_dir_restores_the_repaired_bars_without_double_count(tmp_path):
    from feed.io.store import TradeStore

    data = require_shared_data(HFT, "raw", "usdm")
    argv = ["--replay", *(str(data / f) for f in USDM_2023), "--speed", "0", "--market", "usdm",
            "--backfill", "30m", "--data-dir", str(tmp_path)]
    rt = start_runtime(config_from_argv([*argv, "--faults", "skip_ids=3,skip_every=400"]), feed_options=FAST_FEED)
    try:
        rt.engine.bar_series("BTCUSDT", "1m")
        health = finish(rt)
        assert health["counters"]["repaired"] == len(rt.exchange.fault_stats()["skipped"]["BTCUSDT"]) > 0
        check_minutes(rt)
        before = rt.engine.bars_frame("BTCUSDT", "1m")
    finally:
        rt.stop()
    (directory,) = (tmp_path / "replay").iterdir()
    with TradeStore(directory) as store:  # every id once, in id order, repaired ones included
        arr = store.load_arrays("BTCUSDT")
        assert arr["trade_id"].tolist() == sorted(set(arr["trade_id"].tolist()))
        assert int(arr["count"][arr["recv_ns"] == 0].sum()) == health["counters"]["repaired"]
    # The same session again on the same data dir: restored first (the repaired bars at
    # once), then every replayed trade is one already held.
    rt = start_runtime(config_from_argv(argv), feed_options=FAST_FEED)
    try:
        restored = rt.engine.bars_frame("BTCUSDT", "1m")
        closed = before[before["closed"]]
        assert restored.iloc[:len(closed)].drop(columns="closed").equals(closed.drop(columns="closed"))
        check_minutes(rt)
        finish(rt)
        assert rt.engine.counters().duplicates > 0 and rt.engine.counters().repaired == 0
        check_minutes(rt)
        after = rt.engine.bars_frame("BTCUSDT", "1m")
        assert after.drop(columns="closed").equals(before.drop(columns="closed"))
    finally:
        rt.stop()


def test_two_gaps_in_one_aggregate_each_get_their_ids_and_the_bar_its_whole_size_in_either_order():
    from feed.core.history import trades_from_aggregates
    from feed.core.models import BUY, AggTrade

    # Fills 35..43 are one aggregate (one taker order, one price, one time). 39..40 were
    # skipped; 42..43 were lost in a dropped connection; 35..38, 41 and 44 are held.
    row = AggTrade(7, 100.0, 9.0, 35, 43, 10**18, BUY)
    held = {35: 1.0, 36: 1.0, 37: 1.0, 38: 1.0, 41: 1.0, 44: 1.0}
    for first, second in (((39, 40), (42, 43)), ((42, 43), (39, 40))):
        ids, sizes, counts = sorted(held), [held[i] for i in sorted(held)], [1] * len(held)
        got = {}
        for lo, hi in (first, second):
            (t,), n = trades_from_aggregates("X", (row,), lo, hi, None, ids, sizes, None, held_counts=counts)
            assert n == 2 and t.count == 2 and t.trade_id == hi
            got[lo] = t.size
            k = sorted(ids + [hi]).index(hi)
            ids, sizes, counts = ids[:k] + [hi] + ids[k:], sizes[:k] + [t.size] + sizes[k:], counts[:k] + [2] + counts[k:]
        assert abs(sum(got.values()) - (9.0 - 5.0)) < 1e-12  # the bar gets the aggregate's whole size
        assert abs(got[first[0]] - 2.0) < 1e-12  # the first a share by its count of missing ids
