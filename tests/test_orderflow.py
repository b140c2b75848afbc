"""Order flow core (feed.core.orderflow) on recorded Binance sessions, against plain pandas.

Each view is computed from real trades twice (batch and streaming, split in uneven chunks)
and checked against a plain pandas computation of the same trades. Batch and streaming
agree bit for bit; pandas (whose groupby sum is compensated, a different summation order)
agrees exactly at the 8 decimals Binance prints sizes with, which a float sum of at most a
few thousand such sizes cannot miss.
"""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feed.core.batch import aggregate
from feed.core.book import OrderBook
from feed.core.models import BUY, SELL, BookDelta, BookSnapshot, Trade
from feed.core.orderflow import (
    FootprintAggregator, Tape, bar_delta, cumulative_delta, dom_ladder, ema, footprint,
    level_of, levels_of, tape, value_area, volume_profile, vwap,
)
from feed.core.views import DepthView
from feed.io.readers import read_recording
from feed.vendors.binance import BinanceAdapter

pytestmark = pytest.mark.data

S = 1_000_000_000
DP = 8  # Binance prints sizes with at most 8 decimals

SESSIONS = [
    "usdm_BTCUSDT_2024-08-08T2354Z_2024-08-08T2359Z.csv",
    "spot_ETHUSDT_2024-08-08T2354Z_2024-08-09T0005Z.csv",
    "usdm_BTCUSDT_2023-04-04T2358Z_2023-04-05T0006Z.csv",
]


def load(folder: Path, name: str) -> list[Trade]:
    """Trades of an hftbacktest trade CSV, in file (arrival) order."""
    with open(folder / "trades" / name) as fh:
        return [
            Trade("BTCUSDT", int(r["trade_time_ms"]) * 1_000_000, float(r["price"]), float(r["qty"]),
                  SELL if r["is_buyer_maker"] == "true" else BUY, int(r["trade_id"]), 0,
                  r["trade_type"] in ("", "MARKET"))
            for r in csv.DictReader(fh)
        ]


def frame_of(trades: list[Trade]) -> pd.DataFrame:
    return pd.DataFrame({
        "trade_id": [t.trade_id for t in trades], "ts_ns": [t.ts_ns for t in trades],
        "price": [t.price for t in trades], "size": [t.size for t in trades],
        "side": [t.side for t in trades], "in_bars": [t.in_bars for t in trades],
    })


def chunks(seq, sizes=(1, 7, 300, 2, 5000)):
    """Split ``seq`` into uneven consecutive chunks (streaming input as the engine gets it)."""
    it = iter(seq)
    for n in itertools.cycle(sizes):
        part = list(itertools.islice(it, n))
        if not part:
            return
        yield part


def pandas_footprint(df: pd.DataFrame, bar_start: pd.Series, step: float | None) -> pd.DataFrame:
    """The footprint by hand: group sizes by (bar, level) with pandas."""
    df = df.assign(start=bar_start.to_numpy())
    if step is None:
        df["level"] = df["price"]
    else:
        dp = len(repr(step).split(".")[1].rstrip("0")) if "." in repr(step) else 0
        df["level"] = (np.floor(df["price"] / step + 1e-9) * step).round(dp)
    df["buy"] = df["size"].where(df["side"] == BUY, 0.0)
    df["sell"] = df["size"].where(df["side"] == SELL, 0.0)
    g = df.groupby(["start", "level"], sort=True)
    out = pd.DataFrame({"buy_volume": g["buy"].sum(), "sell_volume": g["sell"].sum(),
                        "volume": g["size"].sum(), "trade_count": g.size()})
    return out.reset_index().rename(columns={"level": "price"})


def assert_same_cells(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert len(ours) == len(ref)
    assert ours["start"].tolist() == ref["start"].tolist()
    assert ours["price"].tolist() == ref["price"].tolist()
    assert ours["trade_count"].tolist() == ref["trade_count"].tolist()
    for col in ("buy_volume", "sell_volume", "volume"):
        assert ours[col].round(DP).tolist() == ref[col].round(DP).tolist(), col


# -- footprint --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SESSIONS)
@pytest.mark.parametrize("spec,step", [("1m", None), ("15s", 5.0), ("1m", 0.1)])
def test_footprint_when_time_bars_on_recorded_session_equals_pandas_and_streaming(hft_data, name, spec, step):
    trades = load(hft_data, name)
    df = frame_of(trades)
    kept = df[df["in_bars"]]
    interval = {"1m": 60 * S, "15s": 15 * S}[spec]
    ref = pandas_footprint(kept, kept["ts_ns"] // interval * interval, step)

    batch = footprint(trades, spec, step)
    assert_same_cells(batch, ref)
    stream = FootprintAggregator("BTCUSDT", spec, step)
    for part in chunks(trades):
        stream.on_trades(part)
    pd.testing.assert_frame_equal(stream.frame(), batch)  # bit for bit

    # Each bar's cells add up to the bar of feed.core.batch (the same trades per bar).
    bars = aggregate(trades, spec)
    per_bar = bar_delta(batch)
    assert per_bar["start"].tolist() == bars["start"].tolist()
    assert per_bar["volume"].round(DP).tolist() == bars["volume"].round(DP).tolist()
    assert (per_bar["delta"].round(DP).tolist()
            == (bars["buy_volume"] - bars["sell_volume"]).round(DP).tolist())


def test_footprint_when_futures_trade_not_market_is_left_out_as_bars_do(hft_data):
    trades = load(hft_data, SESSIONS[2])
    assert any(not t.in_bars for t in trades)  # the capture holds insurance-fund fills
    fp = footprint(trades, "1m")
    assert fp["trade_count"].sum() == sum(t.in_bars for t in trades)


@pytest.mark.parametrize("name", SESSIONS[:2])
def test_footprint_when_tick_bars_equals_pandas_and_streaming(hft_data, name):
    trades = load(hft_data, name)
    df = frame_of(trades)
    run = np.arange(len(df)) // 500
    ref = pandas_footprint(df.assign(run=run), pd.Series(run), 1.0)
    batch = footprint(trades, "500t", 1.0)
    assert batch["bar"].tolist() == ref["start"].tolist()
    ref["start"] = df["ts_ns"].to_numpy()[ref["start"].to_numpy() * 500]
    assert_same_cells(batch, ref)
    stream = FootprintAggregator("BTCUSDT", "500t", 1.0).on_trades(trades)
    pd.testing.assert_frame_equal(stream.frame(), batch)


def test_footprint_when_late_trade_within_tolerance_joins_its_bar_beyond_is_left_out():
    t = [Trade("X", 59 * S, 10.0, 1.0, BUY), Trade("X", 61 * S, 11.0, 2.0, SELL),
         Trade("X", int(59.5 * S), 10.0, 0.5, SELL),  # 1.5 s late: revises bar 0
         Trade("X", 70 * S, 11.0, 1.0, BUY),
         Trade("X", 58 * S, 10.0, 4.0, BUY)]  # 12 s late: left out
    batch = footprint(t, "1m")
    assert batch[["start", "price", "buy_volume", "sell_volume", "trade_count"]].values.tolist() == [
        [0, 10.0, 1.0, 0.5, 2], [60 * S, 11.0, 1.0, 2.0, 2]]
    pd.testing.assert_frame_equal(FootprintAggregator("X", "1m").on_trades(t).frame(), batch)


def test_footprint_when_volume_bars_refuses_with_reason():
    with pytest.raises(ValueError, match="time or tick"):
        footprint([], "50v")
    with pytest.raises(ValueError, match="positive"):
        footprint([], "1m", step=0.0)


def test_level_of_when_decimal_steps_bins_without_float_noise():
    assert level_of(0.3, 0.1) == 0.3
    assert level_of(61837.63, 0.5) == 61837.5
    assert level_of(61837.63, 10) == 61830.0
    prices = np.array([0.3, 0.7000000001, 61837.63, 2683.8])
    assert levels_of(prices, 0.1).tolist() == [level_of(p, 0.1) for p in prices]


# -- tape -------------------------------------------------------------------------------


@pytest.mark.parametrize("min_size", [0.0, 0.5, 5.0])
def test_tape_when_min_size_filters_equals_pandas_and_streaming(hft_data, min_size):
    trades = load(hft_data, SESSIONS[0])
    df = frame_of(trades)
    ref = df[df["size"] >= min_size].tail(200).reset_index(drop=True)
    batch = tape(trades, 200, min_size)
    assert batch["trade_id"].tolist() == ref["trade_id"].tolist()
    assert batch["ts_ns"].tolist() == ref["ts_ns"].tolist()
    assert batch["price"].tolist() == ref["price"].tolist()
    assert batch["size"].tolist() == ref["size"].tolist()
    assert batch["side"].tolist() == ref["side"].tolist()
    stream = Tape(200, min_size)
    for part in chunks(trades):
        stream.on_trades(part)
    pd.testing.assert_frame_equal(stream.frame(), batch)


# -- volume profile ------------------------------------------------------------------------


def test_volume_profile_when_recorded_session_equals_pandas_and_value_area_holds_70pc(hft_data):
    trades = load(hft_data, SESSIONS[0])
    df = frame_of(trades)
    kept = df[df["in_bars"]]
    prof = volume_profile(footprint(trades, "1m", 1.0))
    ref = kept.assign(level=np.floor(kept["price"] / 1.0 + 1e-9)).groupby("level")["size"].sum()
    assert prof["price"].tolist() == ref.index.tolist()
    assert prof["volume"].round(DP).tolist() == ref.round(DP).tolist()

    va = value_area(prof)
    assert va.poc == float(ref.idxmax())
    inside = ref[(ref.index >= va.val) & (ref.index <= va.vah)].sum()
    assert inside >= 0.7 * ref.sum()
    assert va.val <= va.poc <= va.vah
    assert abs(va.volume - inside) < 1e-6 and abs(va.total - ref.sum()) < 1e-6


def test_value_area_when_hand_profile_follows_two_level_rule():
    # Levels 1..7, total 85, target 59.5; POC 4 (30). Pairs: above (5,6)=25 vs below
    # (3,2)=20 -> up, 55; then above (7)=5 vs below (3,2)=20 -> down, 75 >= 59.5.
    prof = pd.DataFrame({"price": [1.0, 2, 3, 4, 5, 6, 7], "volume": [5.0, 10, 10, 30, 15, 10, 5]})
    va = value_area(prof)
    assert (va.poc, va.val, va.vah, va.volume, va.total) == (4.0, 2.0, 6.0, 75.0, 85.0)
    # One level at a time: 5 (15) vs 3 (10) -> up, 45; 6 (10) vs 3 (10), a tie -> both, 65.
    va1 = value_area(prof, rows=1)
    assert (va1.poc, va1.val, va1.vah, va1.volume) == (4.0, 3.0, 6.0, 65.0)
    assert value_area(prof.iloc[:0]) is None
    with pytest.raises(ValueError):
        value_area(prof, fraction=0.0)


# -- CVD, VWAP, EMA -------------------------------------------------------------------------


def test_cvd_vwap_ema_when_recorded_bars_equal_pandas_over_trades(hft_data):
    trades = load(hft_data, SESSIONS[2])  # spans midnight UTC: two sessions
    df = frame_of(trades)
    kept = df[df["in_bars"]].copy()
    bars = aggregate(trades, "1m")
    kept["start"] = kept["ts_ns"] // (60 * S) * (60 * S)
    kept["day"] = kept["ts_ns"] // (86400 * S)
    kept["delta"] = kept["size"].where(kept["side"] == BUY, -kept["size"])
    per_bar = kept.groupby("start").agg(delta=("delta", "sum"), day=("day", "first"))
    assert bars["start"].tolist() == per_bar.index.tolist()
    assert per_bar["day"].nunique() == 2

    cvd = cumulative_delta(bars)
    assert np.round(cvd, DP).tolist() == per_bar["delta"].cumsum().round(DP).tolist()
    cvd_s = cumulative_delta(bars, per_session=True)
    assert np.round(cvd_s, DP).tolist() == per_bar.groupby("day")["delta"].cumsum().round(DP).tolist()

    kept["pv"] = kept["price"] * kept["size"]
    g = kept.groupby("start")
    by_bar = pd.DataFrame({"pv": g["pv"].sum(), "v": g["size"].sum(), "day": g["day"].first()})
    ref_vwap = by_bar.groupby("day")["pv"].cumsum() / by_bar.groupby("day")["v"].cumsum()
    np.testing.assert_allclose(vwap(bars), ref_vwap.to_numpy(), rtol=1e-12)
    anchored = vwap(bars, anchor=3)
    assert np.isnan(anchored[:3]).all()
    np.testing.assert_allclose(anchored[3:], (by_bar["pv"].iloc[3:].cumsum() / by_bar["v"].iloc[3:].cumsum()).to_numpy(),
                               rtol=1e-12)

    for n in (3, 9, 21):
        # pandas evaluates the same recursion in another algebraic form: equal to rounding.
        np.testing.assert_allclose(ema(bars["close"], n), bars["close"].ewm(span=n, adjust=False).mean(),
                                   rtol=1e-13)
    with pytest.raises(ValueError):
        ema([1.0], 0)


# -- DOM ladder -------------------------------------------------------------------------------


def test_dom_ladder_when_replayed_book_rows_equal_book_and_traded_volume(hft_data):
    adapter = BinanceAdapter("usdm")
    book = OrderBook("BTCUSDT")
    fp = FootprintAggregator("BTCUSDT", "1m")
    symbol = None
    trades: list[Trade] = []
    checked = 0
    for i, (recv_ns, raw) in enumerate(read_recording(hft_data / "raw/usdm/btcusdt_20240808.gz")):
        if raw.startswith('{"lastUpdateId"'):
            book.apply_snapshot(adapter.parse_snapshot(symbol, raw.encode(), recv_ns))
            continue
        for ev in adapter.parse(raw.encode(), recv_ns):
            symbol = symbol or ev.symbol
            if isinstance(ev, Trade):
                fp.on_trade(ev)
                trades.append(ev)
            elif isinstance(ev, (BookDelta, BookSnapshot)):
                book.apply_delta(ev) if isinstance(ev, BookDelta) else book.apply_snapshot(ev)
        if book.synced and trades and i % 997 == 0:
            bids, asks = book.depth(10)
            view = DepthView("BTCUSDT", 0, list(bids), list(asks), bids[0][0], asks[0][0],
                             book.mid(), book.spread(), True)
            ladder = dom_ladder(view, 10, fp.bar_levels())
            assert ladder["price"].tolist() == sorted([p for p, _ in bids] + [p for p, _ in asks], reverse=True)
            assert ladder["ask_size"].tolist()[:10] == [s for _, s in reversed(asks)]
            assert ladder["bid_size"].tolist()[10:] == [s for _, s in bids]
            cur = trades[-1].ts_ns // (60 * S) * (60 * S)
            in_bar = frame_of([t for t in trades if t.in_bars and t.ts_ns // (60 * S) * (60 * S) == cur])
            traded = in_bar.groupby("price")["size"].sum()
            expect = [round(float(traded.get(p, 0.0)), DP) for p in ladder["price"]]
            assert ladder["volume"].round(DP).tolist() == expect
            checked += 1
    assert checked >= 5


# -- streaming CVD / VWAP / EMA ----------------------------------------------------------------


def test_flow_series_when_fed_recorded_bars_one_by_one_equals_batch_functions(hft_data):
    from feed.core.orderflow import FlowSeries

    trades = load(hft_data, SESSIONS[2])  # two UTC sessions
    bars = aggregate(trades, "15s")
    fs = FlowSeries((5, 20), keep=10_000)
    for b in bars.itertuples():
        fs.on_bar(b.start, b.close, b.turnover, b.volume, b.buy_volume, b.sell_volume)
    rows = list(fs.rows)
    session = FlowSeries.values(rows, cvd_session=True, anchor=None)
    view = FlowSeries.values(rows, cvd_session=False, anchor=None)
    assert view["cvd"] == cumulative_delta(bars).tolist()  # bit for bit: the same running sums
    assert session["cvd"] == cumulative_delta(bars, per_session=True).tolist()
    assert np.array_equal(np.array(session["vwap"]), vwap(bars), equal_nan=True)
    for n in (5, 20):
        assert view[f"ema{n}"] == ema(bars["close"].to_numpy(), n).tolist()
    # anchored at a bar: a difference of running sums, equal to a fresh sum to rounding
    anchored = FlowSeries.values(rows, cvd_session=False, anchor=7)
    assert all(math.isnan(v) for v in anchored["vwap"][:7])
    np.testing.assert_allclose(anchored["vwap"][7:], vwap(bars, anchor=7)[7:], rtol=1e-12)
    # the bar in progress is one more step, without taking it
    last = bars.iloc[-1]
    peek = fs.peek(int(last["start"]) + 15 * S, 100.0, 1000.0, 10.0, 6.0, 4.0)
    assert peek["g_delta"] == rows[-1]["g_delta"] + 2.0 and len(fs.rows) == len(bars)
