"""Batch time bars (feed.core.batch.aggregate) equal the streaming aggregator bit for bit
on the paths taken for trades in time order: bars found by binary search at the interval
starts, and per-bar sums by np.add.at in blocks whose edges fall inside bars."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import feed.core.batch as batch
from feed.core.bars import make_aggregator
from feed.core.batch import aggregate, bars_to_frame
from feed.core.models import BUY, SELL, Trade

S = 1_000_000_000


def in_order_trades(n: int, mean_gap_s: float, seed: int) -> list[Trade]:
    # Times never fall back (ties included); quiet stretches leave empty intervals.
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(mean_gap_s * S, size=n).astype(np.int64)
    gaps[rng.choice(n, size=n // 10, replace=False)] = 0  # trades of one match: same time
    t = 1_723_161_600 * S + 7 + np.cumsum(gaps)
    price = 100 + rng.integers(0, 500, size=n) * 0.01
    size = rng.integers(1, 10_000, size=n) * 1e-4
    side = rng.choice([BUY, SELL, 0], size=n)
    return [Trade("BTCUSDT", int(a), float(p), float(q), int(sd), i, 0, True)
            for i, (a, p, q, sd) in enumerate(zip(t, price, size, side))]


def streaming(trades, spec, **options) -> pd.DataFrame:
    agg = make_aggregator("BTCUSDT", spec, **options)
    agg.on_trades(trades)
    return bars_to_frame(agg.bars())


@pytest.mark.parametrize("spec,mean_gap_s,options", [
    ("1m", 0.05, {}),                       # long bars: blocked add.at, groups across blocks
    ("1m", 0.05, {"utc_offset": "+05:30"}),
    ("1s", 0.7, {}),                        # short bars with gaps: the bincount path
    ("1s", 0.7, {"empty": "flat"}),
    ("5m", 400.0, {}),                      # more intervals than trades: per-trade buckets
    ("1h", 30.0, {"session_tz": "America/New_York", "session_open": "09:30"}),
])
def test_aggregate_when_trades_in_time_order_equals_streaming_bit_for_bit(monkeypatch, spec, mean_gap_s, options):
    monkeypatch.setattr(batch, "_BLOCK", 997)  # block edges fall inside bars
    trades = in_order_trades(20_000, mean_gap_s, seed=int(mean_gap_s * 10))
    pd.testing.assert_frame_equal(aggregate(trades, spec, **options), streaming(trades, spec, **options),
                                  check_exact=True)


def test_aggregate_when_one_trade_goes_back_equals_streaming():
    # One trade a second older than the one before: the per-trade path (late rule).
    trades = in_order_trades(5_000, 0.05, seed=9)
    trades[2500] = dataclasses.replace(trades[2500], ts_ns=trades[2499].ts_ns - S)
    pd.testing.assert_frame_equal(aggregate(trades, "1m"), streaming(trades, "1m"), check_exact=True)
