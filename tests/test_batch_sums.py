"""Batch time and tick bars (feed.core.batch.aggregate) equal the streaming aggregator bit
for bit whichever way the per-bar sums are taken: slice by slice when bars hold many
trades (a day of a busy symbol in 1m bars), by bincount over a group index when few."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import feed.core.batch as batch
from feed.core.bars import make_aggregator
from feed.core.batch import aggregate, bars_to_frame
from feed.core.models import BUY, SELL, Trade

S = 1_000_000_000


def trades(n: int, per_minute: int, seed: int, out_of_order: bool = False) -> list[Trade]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(60 * S / per_minute, size=n)).astype(np.int64) + 1_723_161_600 * S
    if out_of_order:  # a few trades a little late, within the tolerance
        late = rng.choice(n, size=n // 50, replace=False)
        t[late] -= rng.integers(0, S, size=len(late))
    price = 100 + rng.integers(0, 500, size=n) * 0.01
    size = rng.integers(1, 10_000, size=n) * 1e-4
    side = rng.choice([BUY, SELL, 0], size=n)
    return [Trade("BTCUSDT", int(a), float(p), float(q), int(sd), i, 0, True)
            for i, (a, p, q, sd) in enumerate(zip(t, price, size, side))]


@pytest.mark.parametrize("spec,per_minute,out_of_order", [
    ("1m", 3000, False),   # long bars: summed slice by slice
    ("1m", 3000, True),    # out of order within bars: lexsort and bincount
    ("1m", 20, False),     # short bars: bincount
    ("1000t", 600, False),  # long tick bars: slice by slice
    ("3t", 600, False),
])
def test_aggregate_when_bars_hold_many_or_few_trades_equals_streaming_bit_for_bit(spec, per_minute, out_of_order):
    ts = trades(30_000, per_minute, seed=per_minute, out_of_order=out_of_order)
    agg = make_aggregator("BTCUSDT", spec)
    agg.on_trades(ts)
    pd.testing.assert_frame_equal(aggregate(ts, spec), bars_to_frame(agg.bars()), check_exact=True)


def test_aggregate_when_sums_taken_either_way_gives_the_same_bars(monkeypatch):
    ts = trades(30_000, 3000, seed=5)
    sliced = aggregate(ts, "1m")
    monkeypatch.setattr(batch, "_LOOP_MIN_MEAN", 10**12)  # force the bincount path
    pd.testing.assert_frame_equal(sliced, aggregate(ts, "1m"), check_exact=True)
