"""Memory per trade held in the engine, vs a columnar record baseline.

Applies ``--trades`` Binance trades (one symbol, consecutive ids, the engine's real
``MarketState.apply`` path with a 1m bar series) and measures what the held trades cost
with ``tracemalloc`` (numpy reports its array memory to it): the traced bytes after the
run minus before, with the input objects freed, per trade held. Two contenders in the
same run:

* **tickscope**: ``feed.core.market.MarketState`` (trades in ``feed.core.tradebuffer``);
* **deque of Trade** (what the engine held before): ``collections.deque`` of the same
  ``feed.core.models.Trade`` objects, for the record;

and the baseline: one aligned numpy record (ts int64, price float64, size float64, id
int64, side int8 -> 40 bytes) per trade. Prints bytes/trade and the ratio to the
baseline. Run::

    python benchmarks/bench_memory.py [--trades 500000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from feed.core.config import MarketConfig  # noqa: E402
from feed.core.events import Parsed  # noqa: E402
from feed.core.market import MarketState  # noqa: E402
from feed.core.models import BarSpec, Trade  # noqa: E402
from feed.vendors.binance import BinanceAdapter  # noqa: E402

T0 = 1_723_161_255_000_000_000


def _trades(lo: int, hi: int) -> list[Trade]:
    return [Trade("BTCUSDT", T0 + i * 3_000_000, 61000.0 + (i % 997) * 0.01, 0.00001 * (1 + i % 9000),
                  1 if i % 2 else -1, i, T0 + i * 3_000_000 + 1_000_000) for i in range(lo, hi)]


def _measure(fill) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = fill()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    n = held[1]
    del held
    return (after - before) / n


def tickscope(n: int) -> tuple:
    m = MarketState(MarketConfig(clock="exchange", max_trades=n), BinanceAdapter("spot"))
    m.add_symbol("BTCUSDT")
    seed = m.series_seed("BTCUSDT", BarSpec.from_str("1m"), T0)
    m.install_series(seed, m.build_series(seed), T0)
    for lo in range(0, n, 10_000):  # feed in batches, as the engine does; inputs die
        m.apply([Parsed(0, [t]) for t in _trades(lo, min(n, lo + 10_000))], T0, 0)
    bars = m.bar_series("BTCUSDT", BarSpec.from_str("1m")).n_closed
    # The bars are not trades: measure them separately and leave them out.
    return m, n, bars


def deque_of_trades(n: int) -> tuple:
    d: deque = deque(maxlen=n)
    for lo in range(0, n, 10_000):
        d.extend(_trades(lo, min(n, lo + 10_000)))
    return d, n


def baseline(n: int) -> tuple:
    dt = np.dtype([("ts", "i8"), ("price", "f8"), ("size", "f8"), ("id", "i8"), ("side", "i1")], align=True)
    return np.zeros(n, dtype=dt), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trades", type=int, default=500_000)
    args = p.parse_args()
    n = args.trades
    base = _measure(lambda: baseline(n))
    ours = _measure(lambda: tickscope(n))
    old = _measure(lambda: deque_of_trades(n))
    print(f"{n:,} trades held, one symbol (bytes include the 1m bar series, ~{n * 3 // 60_000:,} bars)")
    print(f"{'holder':<44}{'bytes/trade':>12}{'vs baseline':>13}")
    print(f"{'numpy record baseline (aligned, 5 fields)':<44}{base:>12.1f}{1.0:>12.2f}x")
    print(f"{'tickscope MarketState (columnar chunks)':<44}{ours:>12.1f}{ours / base:>12.2f}x")
    print(f"{'deque of Trade objects (before)':<44}{old:>12.1f}{old / base:>12.2f}x")
    print("target: tickscope <= 64 bytes/trade")
    return 0


if __name__ == "__main__":
    sys.exit(main())
