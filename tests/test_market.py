"""MarketState driven with typed inputs and explicit times: no threads, sockets or clock.

The way the websockets library tests its protocol core: feed inputs, assert the state and
the effects handed back.
"""

from __future__ import annotations

import json

import pytest

from feed.core.batch import aggregate
from feed.core.config import MarketConfig
from feed.core.events import (
    FeedError, FeedOpened, Malformed, Parsed, PlannedDisconnect, SnapshotBody, SnapshotFailed,
    SourceFinished,
)
from feed.core.market import MarketState
from feed.core.models import BAR_COLUMNS, BUY, SELL, BarSpec, BookDelta, Trade, VendorReply
from feed.vendors.alltick import AllTickAdapter
from feed.vendors.binance import BinanceAdapter

S = 1_000_000_000
T0 = 1_723_161_600 * S  # 2024-08-09 00:00:00 UTC, a minute boundary


def trade(tid: int, ts_s: float, price: float = 100.0, size: float = 1.0, side: int = BUY) -> Trade:
    return Trade("BTCUSDT", T0 + int(ts_s * S), price, size, side, trade_id=tid)


def parsed(*events, recv_ns: int = T0) -> Parsed:
    return Parsed(recv_ns, list(events))


def market(clock: str = "exchange", adapter=None, **config) -> MarketState:
    m = MarketState(MarketConfig(clock=clock, close_grace_s=0, **config), adapter or BinanceAdapter("spot"))
    m.add_symbol("BTCUSDT")
    return m


def series(m: MarketState, spec: str, now_ns: int = T0):
    spec = BarSpec.from_str(spec)
    seed = m.series_seed("BTCUSDT", spec, now_ns)
    if seed is not None:
        m.install_series(seed, m.build_series(seed), now_ns)
    return m.bar_series("BTCUSDT", spec)


def test_apply_when_trade_ids_jump_counts_missing_and_marks_the_gap():
    m = market()
    fx = m.apply([parsed(trade(1, 0), trade(2, 1), trade(6, 2), trade(7, 3))], T0, 0)
    assert [t.trade_id for t in fx.persist] == [1, 2, 6, 7]
    assert m.missing_trades() == 3
    assert m.gap_marks_since("BTCUSDT") == (1, [(T0 + 2 * S, 3)])
    assert m.symbol_status()["BTCUSDT"].gap_events == 1


def test_apply_when_trade_id_repeats_skips_it_as_duplicate_and_keeps_bars_exact():
    m = market()
    m.apply([parsed(trade(1, 0, 100.0), trade(2, 1, 101.0))], T0, 0)
    fx = m.apply([parsed(trade(2, 1, 101.0), trade(1, 0, 100.0), trade(3, 2, 99.0))], T0, 0)
    assert [t.trade_id for t in fx.persist] == [3]
    assert m.count("duplicates") == 2 and m.count("trades") == 3
    bars = series(m, "1m")
    assert bars.current.volume == 3.0 and bars.current.low == 99.0


def test_apply_when_vendor_ids_not_consecutive_neither_gaps_nor_duplicates():
    m = MarketState(MarketConfig(clock="exchange"), AllTickAdapter(token="t"))
    m.add_symbol("AAPL.US")
    m.apply([parsed(Trade("AAPL.US", T0, 1.0, 1.0, trade_id=10), Trade("AAPL.US", T0, 1.0, 1.0, trade_id=5),
                    Trade("AAPL.US", T0, 1.0, 1.0, trade_id=50))], T0, 0)
    assert m.count("trades") == 3 and m.count("duplicates") == 0 and m.missing_trades() == 0


def test_apply_when_exchange_clock_passes_the_interval_closes_the_time_bar():
    m = market()
    m.apply([parsed(trade(1, 10))], T0, 0)
    assert series(m, "1m").current is not None and series(m, "1m").n_closed == 0
    # A depth diff does not move the replay clock (trade times only)...
    delta = BookDelta("BTCUSDT", T0 + 61 * S, 1, 1, None, ((99.0, 1.0),), ())
    m.apply([parsed(delta)], T0, 0)
    assert series(m, "1m").n_closed == 0
    # ...another symbol's later trade does: the quiet bar closes.
    m.add_symbol("ETHUSDT")
    m.apply([parsed(Trade("ETHUSDT", T0 + 61 * S, 3000.0, 1.0, trade_id=1))], T0, 0)
    bars = series(m, "1m")
    assert bars.n_closed == 1 and bars.closed[0].closed and bars.current is None


def test_on_clock_when_wall_clock_passes_the_interval_closes_without_a_trade():
    m = market(clock="wall")
    m.apply([parsed(trade(1, 10))], T0 + 11 * S, 0)
    series(m, "1m", T0 + 11 * S)
    m.on_clock(T0 + 60 * S, 0)
    assert m.bar_series("BTCUSDT", BarSpec.from_str("1m")).n_closed == 1


def test_apply_when_trade_late_within_tolerance_revises_the_closed_bar():
    m = market(bar_options={"late_tolerance_ns": 5 * S})
    m.apply([parsed(trade(1, 30, 100.0))], T0, 0)
    first = series(m, "1m")
    m.apply([parsed(trade(2, 61, 101.0))], T0, 0)
    m.apply([parsed(trade(3, 59, 90.0))], T0, 0)  # 2 s late: revises the first minute
    bars = series(m, "1m")
    assert bars.closed[0].low == 90.0 and bars.generation > first.generation
    assert m.late_trades() == 0


def test_apply_when_trade_later_than_tolerance_counts_it_late_and_leaves_bars():
    m = market(bar_options={"late_tolerance_ns": 1 * S})
    m.apply([parsed(trade(1, 30))], T0, 0)
    series(m, "1m")
    m.apply([parsed(trade(2, 130)), parsed(trade(3, 20, 50.0))], T0, 0)
    bars = series(m, "1m")
    assert bars.closed[0].low == 100.0 and m.late_trades() == 1


def test_series_built_outside_then_installed_catches_up_with_trades_applied_since():
    m = market()
    trades = [trade(i, i * 7, 100.0 + i, 0.5 + i % 3, BUY if i % 2 else SELL) for i in range(1, 40)]
    m.apply([parsed(*trades[:20])], T0, 0)
    seed = m.series_seed("BTCUSDT", BarSpec.from_str("1m"), T0)
    agg = m.build_series(seed)  # what the engine does outside its lock...
    m.apply([parsed(*trades[20:])], T0, 0)  # ...while the worker goes on
    m.install_series(seed, agg, T0)
    got = m.bar_series("BTCUSDT", BarSpec.from_str("1m"))
    frame = aggregate(trades, "1m")
    assert got.n_closed + 1 == len(frame)
    assert [b.close for b in got.closed + [got.current]] == list(frame["close"])
    assert [b.volume for b in got.closed + [got.current]] == pytest.approx(list(frame["volume"]), abs=0)
    assert tuple(frame.columns[: len(BAR_COLUMNS)]) == tuple(BAR_COLUMNS)


def test_apply_when_diff_sequence_breaks_asks_for_a_snapshot_once_per_spacing():
    m = market(snapshot_spacing_s=1.0)
    fx = m.on_clock(T0, 0)
    assert fx.snapshots == [("BTCUSDT", m.adapter.snapshot_url("BTCUSDT"))]
    assert m.on_clock(T0, S // 2).snapshots == []  # spaced
    assert len(m.on_clock(T0, S + 1).snapshots) == 1


def test_apply_when_snapshot_body_bridges_diffs_syncs_the_book_and_stops_asking():
    m = market()
    m.apply([parsed(BookDelta("BTCUSDT", T0, 101, 105, None, ((99.0, 2.0),), ((101.0, 1.0),)))], T0, 0)
    body = json.dumps({"lastUpdateId": 103, "bids": [["99.0", "1.0"]], "asks": [["101.0", "3.0"]]}).encode()
    m.apply([SnapshotBody(T0, "BTCUSDT", body)], T0, 0)
    view = m.depth("BTCUSDT", 5)
    assert view.synced and view.bids == [(99.0, 2.0)] and view.asks == [(101.0, 1.0)]
    assert m.on_clock(T0, 10 * S).snapshots == []


def test_apply_when_snapshot_body_is_garbage_counts_bad_snapshot():
    m = market()
    fx = m.apply([SnapshotBody(T0, "BTCUSDT", b"<html>")], T0, 0)
    assert m.malformed["bad_snapshot"] == 1 and fx.malformed_logs[0][0] == "bad_snapshot"


def test_apply_when_reconnected_resyncs_every_book_and_counts_the_reconnect():
    m = market()
    body = json.dumps({"lastUpdateId": 1, "bids": [["99", "1"]], "asks": [["101", "1"]]}).encode()
    m.apply([SnapshotBody(T0, "BTCUSDT", body)], T0, 0)
    assert m.depth("BTCUSDT").synced
    m.apply([FeedOpened(T0, generation=1)], T0, 0)
    assert m.depth("BTCUSDT").synced and m.count("reconnects") == 0
    m.apply([FeedOpened(T0, generation=2)], T0, 0)
    assert not m.depth("BTCUSDT").synced and m.count("reconnects") == 1
    assert m.on_clock(T0, 0).snapshots  # asked again at once


def test_apply_when_snapshot_refused_400_unsubscribes_and_says_why():
    m = market()
    fx = m.apply([SnapshotFailed(T0, "BTCUSDT", "HTTP 400 Invalid symbol", 400)], T0, 0)
    assert [s for s, _ in fx.unsubscribe] == ["BTCUSDT"]
    assert "depth snapshot failed" in m.refusals()[-1]
    fx = m.apply([SnapshotFailed(T0, "BTCUSDT", "timed out", None)], T0, 0)
    assert fx.unsubscribe == []


def test_apply_when_vendor_announces_shutdown_asks_for_a_planned_reconnect():
    m = market()
    fx = m.apply([PlannedDisconnect(T0, "serverShutdown")], T0, 0)
    assert fx.reconnect == "vendor notice: serverShutdown"
    assert m.count("server_shutdowns") == 1 and m.count("messages") == 1 and not m.malformed


def test_apply_when_reply_is_fatal_asks_to_fail_once():
    m = MarketState(MarketConfig(), AllTickAdapter(token="t"))
    m.add_symbol("AAPL.US")
    refusal = VendorReply(False, "AllTick error 600: code invalid")
    assert m.apply([parsed(refusal)], T0, 0).fail is None  # not fatal: other symbols go on
    fatal = VendorReply(False, "AllTick error 401: token invalid or expired")
    assert m.apply([parsed(fatal)], T0, 0).fail == fatal.message
    assert m.apply([parsed(fatal)], T0, 0).fail is None  # handed out once


def test_apply_when_refusal_names_symbols_asks_to_unsubscribe_held_ones():
    m = market()
    m.add_symbol("ETHUSDT")
    reply = VendorReply(False, "Invalid symbol", symbols=("ETHUSDT", "XRPUSDT"))
    fx = m.apply([parsed(reply)], T0, 0)
    assert [s for s, _ in fx.unsubscribe] == [s for s in m.adapter.rejected_symbols(reply) if s in m]


def test_apply_when_malformed_burst_logs_one_sample_per_five_seconds():
    m = market()
    bad = [Malformed(T0, "bad_json", "x", b"{" * 500) for _ in range(100)]
    fx = m.apply(bad, T0, 0)
    assert m.malformed["bad_json"] == 100 and len(fx.malformed_logs) == 1
    assert len(fx.malformed_logs[0][2]) <= 120
    assert m.apply(bad[:1], T0, 4 * S).malformed_logs == []
    assert len(m.apply(bad[:1], T0, 5 * S).malformed_logs) == 1


def test_apply_when_trade_for_symbol_not_held_counts_it_and_changes_nothing():
    m = market()
    fx = m.apply([parsed(Trade("ETHUSDT", T0, 1.0, 1.0, trade_id=1))], T0, 0)
    assert m.malformed["unsubscribed_symbol"] == 1 and fx.persist == [] and m.symbols() == ["BTCUSDT"]


def test_apply_when_feed_errors_shows_unplanned_ones_only():
    m = market()
    m.apply([FeedError(T0, "connection refused"), FeedError(T0, "planned", planned=True)], T0, 0)
    assert m.refusals() == ("connection refused",)


def test_apply_when_source_finishes_marks_it():
    m = market()
    m.apply([SourceFinished(T0)], T0, 0)
    assert m.source_finished


def test_add_symbol_when_restored_trades_continues_ids_and_rebuilds_bars():
    m = MarketState(MarketConfig(clock="exchange", close_grace_s=0), BinanceAdapter("spot"))
    m.add_symbol("BTCUSDT", [trade(1, 1), trade(2, 70)], {"price_decimals": 2, "size_decimals": 3})
    fx = m.apply([parsed(trade(2, 70), trade(3, 80))], T0, 0)
    assert [t.trade_id for t in fx.persist] == [3] and m.missing_trades() == 0
    bars = series(m, "1m")
    assert bars.n_closed == 1 and bars.price_decimals == 2 and bars.size_decimals == 3
    assert m.clock_ns(0) == T0 + 80 * S
