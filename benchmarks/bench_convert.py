"""`tickscope bars` on a 2 M-trade file, whole process, vs a plain pandas script.

Generates a Binance public-data trades CSV (data.binance.vision layout: id, price, qty,
quote_qty, time ms, is_buyer_maker, is_best_match; a seeded random walk, about 30
trades a second) of ``--trades`` rows in a temporary directory, then times two whole
processes, alternated ``--repeat`` times (start-up and imports included, as a user waits):

* **tickscope**: ``python -m dashboard.cli bars FILE --bar 1m -o OUT`` -- every field of
  its bars (OHLC, volume, turnover, VWAP, trade count, taker buy/sell volume, ...);
* **pandas script** (the baseline): ``pd.read_csv`` of the columns it needs, then
  ``resample("1min")`` OHLC and volume sum, written with ``to_csv``.

Prints the median wall seconds of each and tickscope / pandas (target <= 1.0x), and the
median CPU seconds (user + system, every thread: pandas' C reader parses a whole file on
both cores, so CPU exceeds wall when a core is free; on a loaded machine wall time swings,
CPU much less).

Both run with compiled bytecode cached, as an installed package runs: each command runs
once untimed first, with ``PYTHONPYCACHEPREFIX`` pointing at the temporary directory (so no
``__pycache__`` is written into the repository) and ``PYTHONDONTWRITEBYTECODE`` removed.
Otherwise tickscope, run from its source tree, would compile its own modules on every run
(about 20 ms of CPU here) while pandas' bytecode is cached. ``--compile-each-run`` keeps
the environment as it is. The untimed runs also bring the CSV into the page cache for both.
Run::

    python benchmarks/bench_convert.py [--trades 2000000] [--repeat 3] [--compile-each-run]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

PANDAS_SCRIPT = """
import sys
import pandas as pd
src, out = sys.argv[1], sys.argv[2]
df = pd.read_csv(src, header=None, usecols=[1, 2, 4], names=["price", "qty", "time"])
df.index = pd.to_datetime(df["time"], unit="ms")
bars = df["price"].resample("1min").ohlc()
bars["volume"] = df["qty"].resample("1min").sum()
bars.dropna().to_csv(out)
"""


def make_file(path: Path, n: int) -> None:
    """Write ``n`` Binance public-data trade rows to ``path``."""
    rng = np.random.default_rng(7)
    ids = np.arange(3_000_000_000, 3_000_000_000 + n)
    price = np.round(61000 + np.cumsum(rng.choice([-0.01, 0.0, 0.01], size=n)), 2)
    qty = np.round(rng.integers(1, 200_000, size=n) * 1e-5, 5)
    t = 1_723_161_600_000 + np.cumsum(rng.integers(0, 67, size=n))
    maker = rng.integers(0, 2, size=n).astype(bool)
    with open(path, "w") as fh:
        for lo in range(0, n, 200_000):
            hi = min(n, lo + 200_000)
            rows = zip(ids[lo:hi].tolist(), price[lo:hi].tolist(), qty[lo:hi].tolist(),
                       (price[lo:hi] * qty[lo:hi]).tolist(), t[lo:hi].tolist(), maker[lo:hi].tolist())
            fh.write("".join(f"{i},{p:.2f},{q:.5f},{v:.7f},{ms},{str(m).lower()},true\n"
                             for i, p, q, v, ms, m in rows))


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    # (wall s, CPU s of the child: user + system, all its threads).
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trades", type=int, default=2_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compile-each-run", action="store_true",
                   help="keep PYTHONDONTWRITEBYTECODE etc. as they are (no bytecode cache, no warm-up)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "BTCUSDT-trades-2024-08-09.csv"
        make_file(src, args.trades)
        print(f"{args.trades:,} trades, {src.stat().st_size / 1e6:.0f} MB CSV")
        cmds = {
            "tickscope": [sys.executable, "-m", "dashboard.cli", "bars", str(src), "--bar", "1m",
                          "-o", str(Path(tmp) / "ours.csv")],
            "pandas": [sys.executable, "-c", PANDAS_SCRIPT, str(src), str(Path(tmp) / "pd.csv")],
        }
        env = dict(os.environ)
        if not args.compile_each_run:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            for cmd in cmds.values():
                _time(cmd, env)
        runs: dict[str, list[tuple[float, float]]] = {"tickscope": [], "pandas": []}
        for i in range(args.repeat):
            for who, cmd in cmds.items():
                runs[who].append(_time(cmd, env))
            print(f"run {i + 1}: " + "  ".join(f"{w} {r[-1][0]:.2f} s wall, {r[-1][1]:.2f} s CPU"
                                               for w, r in runs.items()))
    med = {w: (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)) for w, r in runs.items()}
    print(f"\n{'whole process (median)':<36}{'wall s':>10}{'CPU s':>10}")
    print(f"{'tickscope bars --bar 1m':<36}{med['tickscope'][0]:>10.2f}{med['tickscope'][1]:>10.2f}")
    print(f"{'pandas read_csv + resample script':<36}{med['pandas'][0]:>10.2f}{med['pandas'][1]:>10.2f}")
    print(f"ratio tickscope / pandas: wall {med['tickscope'][0] / med['pandas'][0]:.2f}x  (target <= 1.0x), "
          f"CPU {med['tickscope'][1] / med['pandas'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
