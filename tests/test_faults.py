"""Fault injection end to end: the embedded exchange misbehaves on purpose over real
loopback sockets, and the whole runtime (FeedClient -> Engine -> Dash app) must stay
alive, reconnect, resubscribe, count every lost trade and keep bars and books correct.

Each scenario replays the recorded Binance spot captures (BTCUSDT and ETHUSDT, 2024-08-08)
through ``start_runtime`` with a hidden ``--faults`` option, with short backoff and stale
settings. What was sent is known from the files (and from the exchange's
``fault_stats()``), so every check is exact:

* the trades the engine holds are, in order, a subset of the recorded trades with equal
  values;
* health ``gaps`` equals the recorded trades missing between the first and the last trade
  received (so trades lost to a drop or a refused reconnect are counted, and a skipped
  block of ids counts exactly its size);
* bars of several kinds equal ``feed.core.batch.aggregate`` of the trades received: no bar is
  invented for a gap and nothing is counted twice.

Set ``TICKSCOPE_FAULT_REPORT=/path/file.jsonl`` to append what each scenario injected and
what ``/api/health`` reported to that file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from dashboard.cli import config_from_argv
from dashboard.runtime import start_runtime
from feed.core.batch import aggregate
from feed.io.client import FeedClient
from feed.io.snapshots import SnapshotFetcher
from feed.core.config import EngineConfig, MarketConfig
from feed.io.engine import Engine
from feed.exchange.server import EmbeddedExchange
from feed.core.models import Trade
from feed.io.readers import merge_recordings, read_recording
from feed.vendors.binance import BinanceAdapter
from tests.helpers import require_shared_data, wait_for

pytestmark = pytest.mark.timeout(60)

SPOT = ("raw", "spot")
FILES = ("btcusdt_20240808.gz", "ethusdt_20240808.gz")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: Feed settings that keep the suite fast: first retry ~50 ms, stale after 1 s.
FAST_FEED = {"backoff_initial_s": 0.05, "backoff_cap_s": 2.0, "stale_after_s": 1.0, "ping_interval_s": 0}
#: Bar specs compared with a batch aggregation (time, tick, volume, value).
SPECS = ("1s", "1m", "50t", "2v", "100000q")
BAR_COLUMNS = ["start", "end", "open", "high", "low", "close", "volume", "turnover", "trade_count",
               "buy_volume", "sell_volume"]


# -- helpers shared with test_fuzz / test_recorder ---------------------------------------


def spot_files(hft_data: Path, names=FILES) -> list[Path]:
    return [hft_data.joinpath(*SPOT, n) for n in names]


def recorded_trades(paths, market: str = "spot") -> dict[str, list[Trade]]:
    """Return the trades in recorded files per symbol, in order."""
    adapter = BinanceAdapter(market)
    out: dict[str, list[Trade]] = {}
    for recv_ns, _, raw in merge_recordings(paths):
        if raw.startswith('{"stream"') and '@trade"' in raw[:40]:
            for ev in adapter.parse(raw, recv_ns):
                out.setdefault(ev.symbol, []).append(ev)
    return out


def key(t: Trade) -> tuple:
    """The values of a trade that must survive the trip (not the receive time)."""
    return (t.symbol, t.trade_id, t.ts_ns, t.price, t.size, t.side, t.in_bars)




def start(files, faults: str | None, *, speed: float = 30, extra=(), feed=None, engine=None):
    argv = ["--replay", *map(str, files), "--speed", str(speed)]
    if faults:
        argv += ["--faults", faults]
    rt = start_runtime(config_from_argv([*argv, *extra]),
                       feed_options={**FAST_FEED, **(feed or {})}, engine_options=engine)
    # Create the bar series before the data flows, so they are built trade by trade
    # (a series created later is rebuilt in one go from the trades held).
    for sym in rt.engine.symbols():
        for spec in SPECS:
            rt.engine.bar_series(sym, spec)
    return rt


def api_health(rt) -> dict:
    """GET /api/health through the Dash app's server (the app must answer)."""
    resp = rt.app.server.test_client().get("/api/health")
    assert resp.status_code == 200
    return json.loads(resp.get_data())


def settle(rt) -> None:
    """Stop receiving and let the engine apply everything already queued."""
    rt.feed.stop()
    assert rt.engine.wait_idle(20)


def check_trades_and_bars(rt, sent: dict[str, list[Trade]], *, skipped: dict | None = None) -> dict:
    """Assert the exact invariants of the module docstring; return per-symbol facts."""
    facts = {}
    total_missing = 0
    for sym in rt.engine.symbols():
        got = rt.engine.trades(sym, 10**7)
        assert got, f"no {sym} trade received"
        ids = [t.trade_id for t in got]
        assert all(b > a for a, b in zip(ids, ids[1:])), f"{sym}: trade ids not increasing"
        by_id = {t.trade_id: t for t in sent[sym]}
        assert [key(t) for t in got] == [key(by_id[i]) for i in ids], f"{sym}: values changed"
        window = [t.trade_id for t in sent[sym] if ids[0] <= t.trade_id <= ids[-1]]
        missing = sorted(set(window) - set(ids))
        if skipped is not None:
            expected = sorted(i for i in skipped.get(sym, ()) if ids[0] <= i <= ids[-1])
            assert missing == expected, f"{sym}: missing ids are not exactly the skipped ones"
        marks = rt.engine.gap_marks(sym)
        assert sum(n for _, n in marks) == len(missing)
        assert rt.engine.status().symbols[sym].gaps == len(missing)
        total_missing += len(missing)
        for spec in SPECS:
            live = rt.engine.bars_frame(sym, spec)[BAR_COLUMNS]
            batch = aggregate(got, spec)[BAR_COLUMNS]
            pd.testing.assert_frame_equal(live.reset_index(drop=True), batch.reset_index(drop=True),
                                          check_exact=True, obj=f"{sym} {spec} bars")
        facts[sym] = {"received": len(got), "missing": len(missing), "gap_events": len(marks)}
    assert rt.engine.counters().gaps == total_missing
    return facts


def report(scenario: str, faults: str | None, rt, health: dict, facts: dict) -> None:
    path = os.environ.get("TICKSCOPE_FAULT_REPORT")
    if not path:
        return
    stats = rt.exchange.fault_stats() if rt.exchange is not None else {}
    stats = {k: v for k, v in stats.items() if k != "delivered"}
    stats["skipped"] = {k: len(v) for k, v in stats.get("skipped", {}).items()}
    with open(path, "a") as fh:
        fh.write(json.dumps({"scenario": scenario, "faults": faults, "injected": stats,
                             "facts": facts, "health": health}) + "\n")


@pytest.fixture(scope="module")
def spot():
    paths = spot_files(require_shared_data("binance-ws-captures-hftbacktest"))
    return paths, recorded_trades(paths)


# -- connection faults ------------------------------------------------------------------


def test_drop_when_connection_aborted_every_n_messages_reconnects_resubscribes_and_counts_lost_trades(spot):
    paths, sent = spot
    faults = "drop_every=1500"
    rt = start(paths, faults)
    try:
        wait_for(lambda: (rt.feed.status().generation >= 3
                          and all(rt.engine.status().symbols[s].trades > 0 for s in SYMBOLS)),
                 20, "two drops and reconnects")
        gen_trades = {s: rt.engine.status().symbols[s].trades for s in SYMBOLS}
        # Both symbols keep receiving after the latest reconnect: every stream resubscribed.
        wait_for(lambda: all(rt.engine.status().symbols[s].trades > gen_trades[s] + 20 for s in SYMBOLS),
                 10, "trades of every symbol on the new connection")
        health = api_health(rt)
        assert health["feed"]["state"] in ("live", "reconnecting")
        assert health["counters"]["reconnects"] >= 2 and health["feed"]["generation"] >= 3
        assert health["counters"]["malformed"] == 0 and health["counters"]["dropped"] == 0
        stats = rt.exchange.fault_stats()
        assert stats["drops"] >= 2
        settle(rt)
        facts = check_trades_and_bars(rt, sent)
        for sym in SYMBOLS:  # what arrived was written by the exchange, in order
            got = [t.trade_id for t in rt.engine.trades(sym, 10**7)]
            delivered = rt.exchange.fault_stats()["delivered"][sym]
            it = iter(delivered)
            assert all(i in it for i in got)
        assert sum(f["missing"] for f in facts.values()) > 0  # the drops did lose trades
        report("drop", faults, rt, health, facts)
    finally:
        rt.stop()


def test_shutdown_notice_when_sent_reconnects_at_once_and_is_not_malformed(spot):
    paths, sent = spot
    faults = "shutdown_every=3000,shutdown_grace_s=2"
    rt = start(paths, faults)
    try:
        wait_for(lambda: rt.engine.counters().server_shutdowns >= 2 and rt.feed.status().generation >= 3,
                 25, "two shutdown notices and reconnects")
        health = api_health(rt)
        feed = rt.feed.status()
        assert feed.planned_reconnects >= 2
        assert feed.last_retry_delay_s == 0.0  # at once, no backoff
        assert health["counters"]["malformed"] == 0 and "server_shutdown" not in health["malformed_by_reason"]
        assert health["counters"]["reconnects"] >= 2
        assert not rt.engine.status().errors  # a planned reconnect is not shown as an error
        settle(rt)
        facts = check_trades_and_bars(rt, sent)
        report("shutdown", faults, rt, health, facts)
    finally:
        rt.stop()


def test_stall_when_no_message_for_stale_after_reconnects_and_loses_nothing_silently(spot):
    paths, sent = spot
    faults = "stall=2.5,stall_every=3000"
    rt = start(paths, faults)
    try:
        wait_for(lambda: rt.exchange.fault_stats()["stalls"] >= 1, 20, "a stall")
        wait_for(lambda: rt.feed.status().generation >= 2, 10, "a stale reconnect")
        assert "no message" in (rt.feed.status().last_error or "")
        n = rt.engine.counters().trades
        wait_for(lambda: rt.engine.counters().trades > n + 200, 15, "trades after the stall")
        health = api_health(rt)
        assert health["counters"]["reconnects"] >= 1
        settle(rt)
        facts = check_trades_and_bars(rt, sent)
        report("stall", faults, rt, health, facts)
    finally:
        rt.stop()


def test_refuse_when_handshakes_answered_503_retries_with_backoff_until_accepted(spot):
    paths, sent = spot
    faults = "refuse=1.5,refuse_after=3000"
    rt = start(paths, faults)
    try:
        wait_for(lambda: rt.exchange.fault_stats()["refused"] >= 2, 20, "refused handshakes")
        # Between attempts the status says when the next one is due.
        seen = wait_for(lambda: (lambda h: h if h["feed"]["next_retry_at"] else None)(api_health(rt)),
                        10, "a scheduled retry")
        assert seen["feed"]["state"] == "reconnecting" and seen["status"] == "degraded"
        assert "503" in seen["feed"]["detail"] and "next retry in" in seen["feed"]["detail"]
        assert seen["feed"]["next_retry_at"] is not None
        wait_for(lambda: rt.feed.status().generation >= 2, 15, "the connection accepted again")
        n = rt.engine.counters().trades
        wait_for(lambda: rt.engine.counters().trades > n + 100, 10, "trades after the refusal")
        health = api_health(rt)
        assert health["feed"]["reconnects"] >= 3  # the drop plus refused attempts
        assert health["counters"]["reconnects"] >= 1
        settle(rt)
        facts = check_trades_and_bars(rt, sent)
        assert sum(f["missing"] for f in facts.values()) > 0  # the replay went on meanwhile
        report("refuse", faults, rt, {"during": seen, "after": health}, facts)
    finally:
        rt.stop()


def test_refuse_when_from_start_status_goes_connecting_reconnecting_live_without_gaps(hft_data):
    paths = spot_files(hft_data, FILES[:1])
    faults = "refuse=1.0"
    rt = start(paths, faults, speed=0)
    try:
        states = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not rt.exchange.finished.is_set():
            states.add(rt.engine.status().state)
            time.sleep(0.01)
        assert rt.exchange.finished.is_set()
        assert {"reconnecting", "live"} <= states
        assert rt.engine.wait_idle(20, quiet_s=0.5)
        health = api_health(rt)
        assert health["feed"]["generation"] == 1 and health["counters"]["reconnects"] == 0
        assert health["feed"]["reconnects"] >= 1 and rt.exchange.fault_stats()["refused"] >= 1
        assert health["counters"]["gaps"] == 0
        report("refuse_from_start", faults, rt, health, {"states": sorted(states)})
    finally:
        rt.stop()


# -- data faults ------------------------------------------------------------------------


def test_skip_ids_when_trades_omitted_gaps_equal_exactly_the_number_omitted(spot):
    paths, sent = spot
    faults = "skip_ids=3,skip_every=500"
    rt = start(paths, faults, speed=0)
    try:
        assert rt.exchange.finished.wait(30)
        assert rt.engine.wait_idle(20, quiet_s=0.5)
        health = api_health(rt)
        skipped = rt.exchange.fault_stats()["skipped"]
        facts = check_trades_and_bars(rt, sent, skipped=skipped)
        for sym in SYMBOLS:
            blocks = len(sent[sym]) // 500
            assert len(skipped[sym]) >= 3 * blocks
            assert health["symbols"][sym]["gaps"] == facts[sym]["missing"]
            assert facts[sym]["gap_events"] == facts[sym]["missing"] // 3
        assert health["counters"]["gaps"] == sum(len(v) for v in skipped.values())
        assert health["feed"]["generation"] == 1 and health["counters"]["reconnects"] == 0
        assert health["counters"]["malformed"] == 0
        report("skip_ids", faults, rt, health, facts)
    finally:
        rt.stop()


def rest_book(rt, symbol: str, levels: int):
    with urllib.request.urlopen(f"{rt.exchange.rest_url}/api/v3/depth?symbol={symbol}&limit={levels}",
                                timeout=10) as resp:
        body = json.loads(resp.read())
    return ([(float(p), float(q)) for p, q in body["bids"]], [(float(p), float(q)) for p, q in body["asks"]])


@pytest.fixture(scope="module")
def spot_slice(tmp_path_factory):
    """The first 100 s of both spot captures (snapshots included), as plain files."""
    out = []
    folder = tmp_path_factory.mktemp("slices")
    for path in spot_files(require_shared_data("binance-ws-captures-hftbacktest")):
        lines, first = [], None
        for recv_ns, raw in read_recording(path):
            first = first or recv_ns
            if recv_ns - first > 100 * 10**9:
                break
            lines.append(f"{recv_ns} {raw}\n")
        target = folder / path.name.replace(".gz", ".txt")
        target.write_text("".join(lines))
        out.append(target)
    return out, recorded_trades(out)


def test_depth_gap_and_crossed_book_when_one_symbol_hit_resync_that_book_only(spot_slice):
    paths, sent = spot_slice
    faults = "depth_gap_every=150,cross_every=250,only=btcusdt"
    # Paced, so the faults meet a synced book; resyncs may follow each other at 0.2 s.
    rt = start(paths, faults, speed=30, engine={"snapshot_spacing_s": 0.2})
    try:
        assert rt.exchange.finished.wait(30)
        assert rt.engine.wait_idle(20, quiet_s=0.5)
        wait_for(lambda: all(rt.engine.depth(s, 1).synced for s in SYMBOLS), 10, "books synced")
        health = api_health(rt)
        stats = rt.exchange.fault_stats()
        btc, eth = health["symbols"]["BTCUSDT"], health["symbols"]["ETHUSDT"]
        assert stats["depth_gaps"] >= 5 and stats["crossed"] >= 3
        assert btc["book_sequence_gaps"] >= 3 and btc["book_crossed"] >= 2
        assert btc["book_resyncs"] >= 4  # snapshot + buffered diffs, each time
        assert eth["book_sequence_gaps"] == eth["book_crossed"] == eth["book_resyncs"] == 0
        # The connection was never touched, and no trade was lost.
        assert health["feed"]["generation"] == 1 and health["counters"]["reconnects"] == 0
        assert health["counters"]["gaps"] == 0
        for sym in SYMBOLS:  # both books end equal to the exchange's
            view = rt.engine.depth(sym, 20)
            assert (view.bids, view.asks) == rest_book(rt, sym, 20)
            assert view.best_bid < view.best_ask
        facts = check_trades_and_bars(rt, sent)
        report("depth_gap_and_crossed", faults, rt, health, facts)
    finally:
        rt.stop()


# -- backpressure -----------------------------------------------------------------------


class SlowAdapter(BinanceAdapter):
    """A Binance adapter whose parser takes ~0.3 ms a message: the engine falls behind."""

    def parse(self, raw, recv_ns):
        time.sleep(0.0003)
        return super().parse(raw, recv_ns)


def test_backpressure_when_queue_tiny_drops_counted_socket_never_waits_and_gaps_reported(hft_data):
    paths = spot_files(hft_data, FILES[:1])
    sent = recorded_trades(paths)
    ex = EmbeddedExchange(replay_files=paths, speed=0).start()
    adapter = SlowAdapter("spot", ws_url=ex.ws_url, rest_url=ex.rest_url)
    engine = Engine(adapter, EngineConfig(MarketConfig(clock="exchange"), queue_size=16))
    feed = FeedClient(adapter, engine, **FAST_FEED)
    fetcher = SnapshotFetcher(engine)
    engine.attach(feed, fetcher)
    engine.start()
    try:
        engine.subscribe("BTCUSDT")
        for spec in SPECS:
            engine.bar_series("BTCUSDT", spec)
        feed.start()
        assert ex.finished.wait(30)
        wait_for(lambda: engine.counters().dropped > 0, 5, "dropped messages")
        health = engine.health()
        assert health["status"] == "degraded"
        assert "dropped" in health["feed"]["detail"]
        feed.stop()
        assert engine.wait_idle(20)
        counters = engine.counters()
        # Every frame was either queued or dropped: the socket thread never waited.
        assert feed.status().messages == counters.messages + counters.dropped
        assert counters.dropped > 100
        got = engine.trades("BTCUSDT", 10**7)
        ids = [t.trade_id for t in got]
        window = [t.trade_id for t in sent["BTCUSDT"] if ids[0] <= t.trade_id <= ids[-1]]
        assert counters.gaps == len(window) - len(got) > 0  # the loss shows as gaps too
        for spec in SPECS:
            pd.testing.assert_frame_equal(engine.bars_frame("BTCUSDT", spec)[BAR_COLUMNS],
                                          aggregate(got, spec)[BAR_COLUMNS], check_exact=True)
        # Lost diffs resync the book (read once the engine has applied what was queued: a
        # replay at full speed ends before the engine reaches the first missing diff).
        assert engine.health()["symbols"]["BTCUSDT"]["book_sequence_gaps"] >= 1
        report("backpressure", "queue_size=16, parser 0.3 ms/message", type("R", (), {"exchange": ex})(),
               health, {"BTCUSDT": {"received": len(got), "missing": counters.gaps,
                                    "dropped": counters.dropped}})
    finally:
        feed.stop()
        fetcher.stop()
        engine.stop()
        ex.stop()
