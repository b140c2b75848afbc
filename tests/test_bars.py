"""Bar aggregation: unit tests per kind and rule, and exactness against Binance's klines."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest

from feed.core.bars import TimeBarAggregator, make_aggregator
from feed.core.batch import aggregate, bars_to_frame
from feed.core.models import BUY, SELL, Bar, BarSpec, Trade
from tests.helpers import require_shared_data

S = 1_000_000_000
M = 60 * S


def tr(ts_s: float, price: float, size: float = 1.0, side: int = BUY, tid: int | None = None, in_bars=True):
    return Trade("BTCUSDT", int(round(ts_s * S)), price, size, side, tid, 0, in_bars)


# -- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1s", "5s", "15s", "1m", "5m", "15m", "1h", "4h", "1d", "100t", "50v", "1000000q", "0.5v"])
def test_parse_spec_when_valid_round_trips(text):
    assert str(BarSpec.from_str(text)) == text


@pytest.mark.parametrize("text,fragment", [
    ("7m", "divide 60"), ("60s", "1m instead"), ("24h", "1d instead"), ("0t", "positive"),
    ("1.5t", "whole number"), ("abc", "bad bar spec"), ("2d", "longer than a day"), ("", "bad bar spec"),
])
def test_parse_spec_when_invalid_raises_with_rule(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        BarSpec.from_str(text)


def test_bar_when_ohlc_inconsistent_raises():
    with pytest.raises(ValueError, match="invariant"):
        Bar("X", BarSpec.from_str("1m"), 0, M, open=10, high=9, low=8, close=9)


# -- time bars --------------------------------------------------------------------------


def test_time_bar_when_trade_exactly_on_boundary_starts_new_bar():
    agg = make_aggregator("BTCUSDT", "1m")
    assert agg.on_trade(tr(59.999, 100)) == []
    closed = agg.on_trade(tr(60.0, 101))
    assert [b.start_ns for b in closed] == [0]
    assert closed[0].end_ns == M and closed[0].closed
    assert agg.current.start_ns == M and agg.current.open == 101


def test_time_bar_when_trades_fill_computes_all_fields():
    agg = make_aggregator("BTCUSDT", "1m")
    for t in [tr(1, 10, 2, BUY), tr(2, 12, 1, SELL), tr(3, 9, 3, BUY), tr(4, 11, 1, SELL)]:
        agg.on_trade(t)
    b = agg.current
    assert (b.open, b.high, b.low, b.close) == (10, 12, 9, 11)
    assert b.volume == 7 and b.trade_count == 4
    assert b.turnover == 10 * 2 + 12 + 27 + 11
    assert b.buy_volume == 5 and b.sell_volume == 2
    assert math.isclose(b.vwap, b.turnover / 7)
    assert not b.closed


def test_time_bar_when_clock_passes_interval_closes_without_trade():
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trade(tr(10, 100))
    assert agg.on_clock(59 * S) == []
    closed = agg.on_clock(60 * S)
    assert len(closed) == 1 and closed[0].closed and agg.current is None


def test_time_bar_when_interval_empty_leaves_gap_by_default():
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trade(tr(10, 100))
    agg.on_trade(tr(190, 105))
    assert [b.start_ns for b in agg.bars()] == [0, 3 * M]


def test_time_bar_when_empty_flat_emits_zero_volume_bars_at_previous_close():
    agg = make_aggregator("BTCUSDT", "1m", empty="flat")
    agg.on_trade(tr(10, 100))
    agg.on_trade(tr(20, 102))
    agg.on_trade(tr(190, 105))
    bars = agg.bars()
    assert [b.start_ns for b in bars] == [0, M, 2 * M, 3 * M]
    for flat in bars[1:3]:
        assert (flat.open, flat.high, flat.low, flat.close) == (102, 102, 102, 102)
        assert flat.volume == 0 and flat.trade_count == 0 and flat.closed


def test_time_bar_when_utc_offset_given_aligns_days_to_local_midnight():
    day = TimeBarAggregator("X", BarSpec.from_str("1d"), utc_offset="+08:00")
    # A UTC+8 day starts at 16:00 UTC.
    assert day.bucket_start(20 * 3600 * S) == 16 * 3600 * S
    assert day.bucket_start(15 * 3600 * S) == (16 - 24) * 3600 * S
    hour = TimeBarAggregator("X", BarSpec.from_str("1h"), utc_offset="+05:30")
    assert hour.bucket_start(10 * 3600 * S + 5) == 9 * 3600 * S + 30 * 60 * S


def _utc_ns(text: str) -> int:
    return int(pd.Timestamp(text).tz_convert("UTC").value)


@pytest.mark.parametrize("day,open_utc", [
    ("2024-03-08", "2024-03-08T14:30Z"),  # EST, UTC-5
    ("2024-03-11", "2024-03-11T13:30Z"),  # EDT, UTC-4: the Monday after the change
])
def test_time_bar_when_session_anchored_new_york_starts_at_0930_local_across_dst(day, open_utc):
    # Hourly bars: epoch alignment would start them at :00, the session at :30.
    agg = make_aggregator("AAPL", "1h", session_tz="America/New_York", session_open="09:30")
    open_ns = _utc_ns(open_utc)
    agg.on_trade(Trade("AAPL", open_ns + 61 * S, 100.0, 1.0))
    assert agg.current.start_ns == open_ns
    agg.on_trade(Trade("AAPL", open_ns + 60 * M + 1, 100.5, 1.0))
    assert agg.current.start_ns == open_ns + 60 * M


def test_time_bar_when_session_spans_dst_change_day_bar_lasts_23_hours():
    agg = make_aggregator("AAPL", "1d", session_tz="America/New_York", session_open="09:30")
    t = _utc_ns("2024-03-09T15:00Z")  # Saturday 10:00 EST
    agg.on_trade(Trade("AAPL", t, 1.0, 1.0))
    bar = agg.current
    assert bar.start_ns == _utc_ns("2024-03-09T14:30Z")
    assert bar.end_ns == _utc_ns("2024-03-10T13:30Z")  # 09:30 EDT on Sunday: 23 h later
    assert bar.end_ns - bar.start_ns == 23 * 3600 * S


def test_aggregate_when_session_anchored_equals_streaming_across_dst():
    base = _utc_ns("2024-03-08T13:00Z")
    trades = [Trade("AAPL", base + i * 997 * S, 100 + (i % 7), 1.0 + i % 3) for i in range(400)]
    opts = dict(session_tz="America/New_York", session_open="09:30")
    agg = make_aggregator("AAPL", "4h", **opts)
    agg.on_trades(trades)
    pd.testing.assert_frame_equal(aggregate(trades, "4h", **opts), bars_to_frame(agg.bars()), check_exact=True)


def test_aggregate_when_lobster_aapl_executions_then_1m_bars_start_at_0930_new_york():
    folder = require_shared_data("lobster-aapl-2012-06-21-first998")
    msgs = pd.read_csv(next(folder.glob("*message*.csv")), header=None,
                       names=["time", "type", "order_id", "size", "price", "direction"])
    execs = msgs[msgs["type"].isin([4, 5])]
    assert len(execs) == 159
    midnight = _utc_ns("2012-06-21T00:00-04:00")
    trades = pd.DataFrame({
        "ts_ns": midnight + (execs["time"] * 1e9).round().astype("int64"),
        "price": execs["price"] / 10_000,
        "size": execs["size"].astype(float),
        # direction is the resting order's side: a resting buy (1) was hit by a taker sell.
        "side": (-execs["direction"]).astype("int8"),
    })
    bars = aggregate(trades, "1m", symbol="AAPL", session_tz="America/New_York", session_open="09:30")
    assert bars["start"].iloc[0] == _utc_ns("2012-06-21T09:30-04:00")
    assert bars["trade_count"].sum() == 159
    assert bars["volume"].sum() == trades["size"].sum()
    assert bars["high"].max() == trades["price"].max() and bars["low"].min() == trades["price"].min()


def test_time_bar_when_late_trade_within_tolerance_revises_closed_bar():
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trade(tr(59.0, 100, 1))
    agg.on_trade(tr(60.5, 101, 1))
    gen = agg.generation
    agg.on_trade(tr(59.5, 90, 2))  # 1 s behind the newest trade
    first = agg.closed[0]
    assert first.low == 90 and first.volume == 3 and first.trade_count == 2
    assert first.close == 90  # the late trade is the bar's latest by exchange time
    assert first.open == 100
    assert agg.current.prev_close == 90  # the next bar's change is now against 90
    assert agg.generation == gen + 1 and agg.late == 0


def test_time_bar_when_late_trade_is_earliest_of_its_bar_becomes_open():
    agg = make_aggregator("BTCUSDT", "1m", late_tolerance_ns=100 * S)
    agg.on_trades([tr(30.0, 100), tr(59.0, 101), tr(60.5, 102)])
    agg.on_trade(tr(5.0, 95))  # late and earlier than every trade of its bar
    first = agg.closed[0]
    assert (first.open, first.high, first.low, first.close) == (95, 101, 95, 101)


def test_time_bar_when_late_trade_lands_in_flat_bar_it_becomes_real_and_flats_follow():
    agg = make_aggregator("BTCUSDT", "1m", empty="flat", late_tolerance_ns=200 * S)
    agg.on_trades([tr(10, 100), tr(250, 110)])  # 1m..3m are flat at 100
    agg.on_trade(tr(70, 104, 2))  # late into the 1m flat bar
    one, two = agg.closed[1], agg.closed[2]
    assert (one.open, one.high, one.low, one.close, one.volume, one.trade_count) == (104, 104, 104, 104, 2, 1)
    assert (two.open, two.close, two.volume, two.prev_close) == (104, 104, 0, 104)
    pd.testing.assert_frame_equal(
        aggregate([tr(10, 100), tr(250, 110), tr(70, 104, 2)], "1m", empty="flat", late_tolerance_ns=200 * S),
        bars_to_frame(agg.bars()), check_exact=True)


def test_time_bar_when_late_trade_beyond_tolerance_is_counted_not_used():
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trade(tr(10, 100))
    agg.on_trade(tr(70, 101))
    agg.on_trade(tr(30, 50))  # 40 s late
    assert agg.late == 1
    assert agg.closed[0].low == 100 and agg.closed[0].trade_count == 1


def test_time_bar_when_trade_not_in_bars_is_ignored():
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trade(tr(10, 100))
    agg.on_trade(tr(11, 999, in_bars=False))
    assert agg.current.high == 100 and agg.current.trade_count == 1


# -- threshold bars ---------------------------------------------------------------------


def test_tick_bar_when_nth_trade_arrives_closes():
    agg = make_aggregator("BTCUSDT", "3t")
    assert agg.on_trades([tr(i, 100 + i) for i in range(7)]) == 2
    out = agg.closed
    assert [b.trade_count for b in out] == [3, 3]
    assert [b.open for b in out] == [100, 103] and out[0].close == 102
    assert out[0].start_ns == 0 and out[0].end_ns == 2 * S
    assert agg.current.trade_count == 1


def test_volume_bar_when_trade_overshoots_splits_remainder_into_next_bar():
    agg = make_aggregator("BTCUSDT", "10v")
    agg.on_trade(tr(1, 100, 4, BUY))
    out = agg.on_trade(tr(2, 101, 13, SELL))  # fills 6, then 7 carries
    assert len(out) == 1
    assert out[0].volume == 10 and out[0].trade_count == 2
    assert out[0].buy_volume == 4 and out[0].sell_volume == 6
    assert agg.current.volume == 7 and agg.current.open == 101 and agg.current.trade_count == 1


def test_volume_bar_when_huge_trade_closes_several_bars_each_exact():
    agg = make_aggregator("BTCUSDT", "10v")
    out = agg.on_trade(tr(1, 100, 35))
    assert [b.volume for b in out] == [10, 10, 10]
    assert agg.current.volume == 5


def test_volume_bar_when_decimal_sizes_sum_to_threshold_closes_exactly():
    agg = make_aggregator("BTCUSDT", "0.3v")
    assert agg.on_trades([tr(1, 100, 0.1), tr(2, 100, 0.2)]) == 1
    assert len(agg.closed) == 1 and agg.current is None


def test_value_bar_when_trade_overshoots_splits_by_value():
    agg = make_aggregator("BTCUSDT", "1000q")
    out = agg.on_trade(tr(1, 100, 25))  # 2500 quote -> 2 bars of 1000, 500 carried
    assert len(out) == 2
    assert all(math.isclose(b.turnover, 1000) for b in out)
    assert math.isclose(agg.current.turnover, 500)


# -- batch == streaming -----------------------------------------------------------------


def test_aggregate_when_time_bars_equals_streaming_bit_for_bit():
    trades = [tr(i * 7.3, 100 + (i * 37 % 11) * 0.1, 0.001 * (i % 13 + 1), BUY if i % 3 else SELL) for i in range(500)]
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trades(trades)
    pd.testing.assert_frame_equal(aggregate(trades, "1m"), bars_to_frame(agg.bars()), check_exact=True)


def test_aggregate_when_flat_policy_fills_like_streaming():
    trades = [tr(10, 100), tr(20, 102), tr(250, 105), tr(260, 104)]
    agg = make_aggregator("BTCUSDT", "1m", empty="flat")
    agg.on_trades(trades)
    pd.testing.assert_frame_equal(aggregate(trades, "1m", empty="flat"), bars_to_frame(agg.bars()), check_exact=True)


# -- real data: Binance's official klines -----------------------------------------------

_KLINE_FIELDS = [("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"),
                 ("volume", "volume"), ("trade_count", "count"), ("buy_volume", "taker_buy_volume")]


def assert_matches_klines(bars: pd.DataFrame, klines: pd.DataFrame, covered_from_ns: int, covered_to_ns: int) -> int:
    """Assert bars equal the official klines on every minute inside [from, to]; return the count."""
    kl = klines.assign(start=klines["open_time"].astype("int64") * 1_000_000)
    kl = kl[(kl["start"] >= covered_from_ns) & (kl["start"] + M <= covered_to_ns)]
    assert len(kl), "no fully covered minute"
    merged = kl.merge(bars, on="start", how="left", suffixes=("_k", ""))
    for ours, theirs in _KLINE_FIELDS:
        col_k = theirs + ("_k" if theirs in bars.columns else "")
        for _, row in merged.iterrows():
            assert row[ours] == pytest.approx(row[col_k], abs=1e-9), (
                f"{ours} differs at {pd.Timestamp(row['start'], unit='ns')}: {row[ours]} vs {row[col_k]}")
    return len(kl)


def test_aggregate_when_tardis_trades_matches_official_klines_every_covered_minute():
    folder = require_shared_data("nautilus-testdata-crypto")
    frame = pd.read_csv(folder / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv")
    trades = pd.DataFrame({
        "ts_ns": frame["timestamp"].astype("int64") * 1000,
        "price": frame["price"].astype(float),
        "size": frame["amount"].astype(float),
        "side": frame["side"].map({"buy": BUY, "sell": SELL}).astype("int8"),
    })
    bars = aggregate(trades, "1m", symbol="BTCUSDT")
    klines = pd.read_csv(folder / "official_klines_usdm_BTCUSDT_1m_2020-02-22T0000Z_0207Z.csv")
    n = assert_matches_klines(bars, klines, int(trades["ts_ns"].iloc[0]), int(trades["ts_ns"].iloc[-1]))
    assert n == 124


@pytest.mark.parametrize("name,kl_name,expected", [
    ("usdm_BTCUSDT_2024-08-08T2354Z_2024-08-08T2359Z.csv", "usdm_BTCUSDT_1m_2024-08-08T2350Z_2024-08-09T0010Z.csv", 4),
    ("usdm_BTCUSDT_2023-04-04T2358Z_2023-04-05T0006Z.csv", "usdm_BTCUSDT_1m_2023-04-04T2355Z_2023-04-05T0010Z.csv", 7),
])
def test_streaming_when_hft_trade_csv_matches_official_klines(name, kl_name, expected):
    folder = require_shared_data("binance-ws-captures-hftbacktest")
    with open(folder / "trades" / name) as fh:
        trades = [
            Trade("BTCUSDT", int(r["trade_time_ms"]) * 1_000_000, float(r["price"]), float(r["qty"]),
                  SELL if r["is_buyer_maker"] == "true" else BUY, int(r["trade_id"]), 0,
                  r["trade_type"] in ("", "MARKET"))
            for r in csv.DictReader(fh)
        ]
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trades(trades)
    bars = bars_to_frame(agg.bars())
    klines = pd.read_csv(folder / "klines_official" / kl_name)
    # Trades alone bound the covered span: minutes strictly inside the first/last trade.
    n = assert_matches_klines(bars, klines, trades[0].ts_ns, trades[-1].ts_ns)
    assert n == expected


def test_derived_fields_when_previous_close_known_give_amplitude_and_change():
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trades([tr(1, 100.0), tr(61, 104.0), tr(62, 98.0), tr(63, 102.0)])
    first, second = agg.bars()
    assert math.isnan(first.amplitude) and math.isnan(first.change)
    assert second.prev_close == 100.0
    assert second.amplitude == pytest.approx((104.0 - 98.0) / 100.0)
    assert second.change == pytest.approx(0.02)
    frame = aggregate([tr(1, 100.0), tr(61, 104.0), tr(62, 98.0), tr(63, 102.0)], "1m")
    assert frame["change"].iloc[1] == second.change and math.isnan(frame["change"].iloc[0])
