"""Throughput of 1-minute time bars: tickscope's streaming and batch aggregators against
two common baselines, on one core. A script, not a test::

    python benchmarks/bench_bars.py [--trades 1500000] [--repeat 3] [--synthetic] [--profile]

Input: the real Binance spot BTCUSDT trades of the hftbacktest captures in ../shared/data
(19,904 trades, 2024-08-08 23:54 .. 08-09 00:05 UTC), read with ``feed.io.tradefiles.read_trades``
and tiled with shifted timestamps to ``--trades`` trades; a seeded synthetic random walk when
the data is absent (or with ``--synthetic``). See benchmarks/README.md for what the figures
mean.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import math
import os
import platform
import pstats
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from feed.core.bars import make_aggregator  # noqa: E402
from feed.core.batch import aggregate  # noqa: E402
from feed.core.models import Trade  # noqa: E402
from feed.io.tradefiles import read_trades  # noqa: E402

SHARED_DATA = Path(os.environ.get("TICKSCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))
SOURCE_FILES = [
    "binance-ws-captures-hftbacktest/raw/spot/btcusdt_20240808.gz",
    "binance-ws-captures-hftbacktest/raw/spot/btcusdt_20240809.gz",
]
MINUTE_NS = 60_000_000_000


# -- input -------------------------------------------------------------------------------


def load_real() -> pd.DataFrame | None:
    """Return the recorded spot BTCUSDT trades, or None when the data is absent."""
    paths = [SHARED_DATA / f for f in SOURCE_FILES]
    if not all(p.exists() for p in paths):
        return None
    frame = pd.concat([read_trades(p, symbol="BTCUSDT") for p in paths], ignore_index=True)
    return frame.sort_values("ts_ns", kind="stable", ignore_index=True)


def synthetic(n: int, seed: int = 7) -> pd.DataFrame:
    """Return ``n`` seeded random-walk trades, ~30 per second, 0.01 tick, 0.001 lot."""
    rng = np.random.default_rng(seed)
    ts = 1_723_161_240_000_000_000 + np.cumsum(rng.integers(0, 66_000_000, n))
    price = np.round(61_000 + np.cumsum(rng.normal(0, 0.8, n)), 2)
    size = np.round(rng.exponential(0.05, n) + 0.001, 3)
    return pd.DataFrame({
        "ts_ns": ts.astype(np.int64), "price": price, "size": size,
        "side": np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8), "in_bars": True,
    })


def tile(base: pd.DataFrame, n: int) -> pd.DataFrame:
    """Repeat ``base`` until it holds ``n`` trades, each copy shifted to later whole minutes."""
    span = int(base["ts_ns"].iloc[-1] - base["ts_ns"].iloc[0])
    shift = (math.ceil(span / MINUTE_NS) + 1) * MINUTE_NS  # copies never share a minute
    copies = math.ceil(n / len(base))
    offsets = np.repeat(np.arange(copies, dtype=np.int64) * shift, len(base))[:n]
    reps = np.tile(np.arange(len(base)), copies)[:n]
    cols = {c: base[c].to_numpy()[reps] for c in ("ts_ns", "price", "size", "side", "in_bars")}
    cols["ts_ns"] = cols["ts_ns"] + offsets
    return pd.DataFrame(cols)


# -- contenders --------------------------------------------------------------------------


def run_streaming(trades: list[Trade]):
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trades(trades)
    return agg.bars()


def run_batch(frame: pd.DataFrame):
    return aggregate(frame, "1m", symbol="BTCUSDT")


def run_dict(trades: list[Trade]):
    # The common hand-written aggregator: a dict keyed by the formatted UTC minute.
    bars: dict[str, list[float]] = {}
    for t in trades:
        key = dt.datetime.utcfromtimestamp(t.ts_ns / 1e9).strftime("%Y-%m-%d %H:%M")
        bar = bars.get(key)
        if bar is None:
            bars[key] = [t.price, t.price, t.price, t.price, t.size]
        else:
            if t.price > bar[1]:
                bar[1] = t.price
            if t.price < bar[2]:
                bar[2] = t.price
            bar[3] = t.price
            bar[4] += t.size
    return bars


def run_pandas(frame: pd.DataFrame):
    # pandas resample: OHLC of price plus summed size, from the same int-ns columns.
    index = pd.to_datetime(frame["ts_ns"].to_numpy(), unit="ns")
    price = pd.Series(frame["price"].to_numpy(), index=index)
    size = pd.Series(frame["size"].to_numpy(), index=index)
    ohlc = price.resample("1min").ohlc()
    ohlc["volume"] = size.resample("1min").sum()
    return ohlc


def best_of(fn, arg, repeat: int) -> tuple[float, object]:
    """Return the fastest wall time of ``repeat`` runs (GC off while timing) and the last result."""
    best, result = math.inf, None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn(arg)
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        best = min(best, elapsed)
    return best, result


def check_agreement(stream_bars, batch: pd.DataFrame, dict_bars: dict, resampled: pd.DataFrame) -> str:
    """Return a one-line summary after asserting all four produced the same OHLCV."""
    ours = pd.DataFrame([(b.start_ns, b.open, b.high, b.low, b.close, b.volume) for b in stream_bars],
                        columns=["start", "open", "high", "low", "close", "volume"])
    cols = ["start", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(ours[cols], batch[cols].reset_index(drop=True), check_exact=True)
    full = resampled.dropna(subset=["open"])
    assert len(full) == len(ours) == len(dict_bars), (len(full), len(ours), len(dict_bars))
    np.testing.assert_array_equal(full[["open", "high", "low", "close"]].to_numpy(),
                                  ours[["open", "high", "low", "close"]].to_numpy())
    np.testing.assert_allclose(full["volume"].to_numpy(), ours["volume"].to_numpy(), rtol=1e-12)
    d = np.array(list(dict_bars.values()))
    np.testing.assert_array_equal(d[:, :4], ours[["open", "high", "low", "close"]].to_numpy())
    return f"{len(ours):,} bars; streaming == batch exactly; dict and pandas OHLC equal, volume within 1e-12"


def pin_one_core() -> str:
    """Pin this process to one CPU when the platform allows; return a description."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity); single-threaded code"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=1_500_000, help="trades to aggregate (default 1.5M)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender; the best counts (default 3)")
    ap.add_argument("--synthetic", action="store_true", help="use synthetic trades even if real data exists")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of batch aggregate()")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)  # utcfromtimestamp, on Python >= 3.12

    where = pin_one_core()
    base = None if args.synthetic else load_real()
    if base is None:
        frame, source = synthetic(args.trades), "synthetic random walk (seed 7)"
    else:
        frame = tile(base, args.trades)
        source = (f"Binance spot BTCUSDT, {len(base):,} recorded trades tiled "
                  f"x{math.ceil(args.trades / len(base))} with shifted timestamps")
    trades = [Trade("BTCUSDT", int(t), float(p), float(s), int(sd))
              for t, p, s, sd in zip(frame["ts_ns"].tolist(), frame["price"].tolist(),
                                     frame["size"].tolist(), frame["side"].tolist())]
    n = len(frame)
    minutes = (frame["ts_ns"].iloc[-1] - frame["ts_ns"].iloc[0]) / MINUTE_NS
    print(f"input: {n:,} trades over {minutes:,.0f} minutes ({n / minutes:,.0f} trades/minute); {source}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}; "
          f"{where}; best of {args.repeat}")

    results = {}
    outputs = {}
    contenders = [
        ("streaming  make_aggregator().on_trades", run_streaming, trades),
        ("batch      aggregate(DataFrame)", run_batch, frame),
        ("baseline   dict keyed by strftime minute", run_dict, trades),
        ("baseline   pandas resample ohlc + sum", run_pandas, frame),
    ]
    for name, fn, arg in contenders:
        seconds, out = best_of(fn, arg, args.repeat)
        results[name], outputs[name] = seconds, out
    names = [c[0] for c in contenders]
    print(check_agreement(*(outputs[k] for k in names)))
    t_dict, t_pandas = results[names[2]], results[names[3]]
    print()
    print(f"{'contender':44s} {'seconds':>8s} {'trades/s':>12s} {'vs dict':>8s} {'vs pandas':>10s}")
    for name in names:
        s = results[name]
        print(f"{name:44s} {s:8.3f} {n / s:12,.0f} {t_dict / s:7.2f}x {t_pandas / s:9.2f}x")
    print("\n(vs X = X's time / this time: above 1 is faster than X. tickscope's bars also carry")
    print(" turnover, vwap, trade_count and buy/sell volume; the baselines only OHLCV.)")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_batch(frame)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
        print("\nprofile of batch aggregate() (tottime):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
