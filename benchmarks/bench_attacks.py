"""Cost of the bar-spec attacks: a tiny threshold, and many distinct specs.

An engine holds ``--trades`` seeded trades of one symbol (Binance wire format through the
real adapter). Then, while a reader thread calls ``engine.health()`` every 10 ms (what
``/api/health`` does), the attacker asks for

* ``tiny``: one series of ``0.00000001v`` (a forged ``/api/bars`` or bar-box value), and
* ``many``: 40 distinct tick specs one after the other,

and the script prints the attack's wall time, the worst and median ``health()`` latency
during it, and the process's peak RSS growth. Baseline in the same run: the same health
loop with no attack (``idle``); the ratios say what an attack costs the readers.

Run::

    python benchmarks/bench_attacks.py [--trades 200000]

Not part of the test suite; runs offline.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feed.core.config import EngineConfig, MarketConfig  # noqa: E402
from feed.core.events import RawMessage  # noqa: E402
from feed.io.engine import Engine  # noqa: E402
from feed.vendors.binance import BinanceAdapter  # noqa: E402
from tests.helpers import binance_trade_msg  # noqa: E402

T0_MS = 1_723_161_600_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(n: int) -> Engine:
    eng = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange")))
    eng.subscribe("BTCUSDT")
    msgs = [RawMessage(0, binance_trade_msg(T0_MS + i * 50, i + 1, f"{60000 + (i * 7919) % 500}.5",
                                            "0.013", i % 3 == 0)) for i in range(n)]
    for i in range(0, n, 5000):
        eng.process(msgs[i:i + 5000])
    return eng


def run(eng: Engine, attack) -> dict:
    lat: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            eng.health()
            lat.append(time.perf_counter() - t)
            time.sleep(0.01)

    th = threading.Thread(target=reader, daemon=True)
    rss0 = _rss_mb()
    th.start()
    t0 = time.perf_counter()
    outcome = attack()
    wall = time.perf_counter() - t0
    time.sleep(0.05)
    stop.set()
    th.join()
    return {"wall_s": wall, "p50_ms": statistics.median(lat) * 1e3, "max_ms": max(lat) * 1e3,
            "rss_growth_mb": _rss_mb() - rss0, "outcome": outcome}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=200_000)
    args = ap.parse_args()
    eng = build(args.trades)
    eng.bar_series("BTCUSDT", "1m")

    def idle() -> str:
        time.sleep(1.0)
        return "-"

    def tiny() -> str:
        try:
            eng.bar_series("BTCUSDT", "0.00000001v")
            return "built"
        except ValueError as exc:
            return f"refused: {str(exc)[:60]}..."

    def many() -> str:
        for n in range(2, 42):
            eng.bar_series("BTCUSDT", f"{n}t")
        return f"{len(eng.market._symbols['BTCUSDT'].series)} series held"

    base = run(eng, idle)
    print(f"{args.trades:,} trades held; health() every 10 ms during each attack\n")
    print(f"{'attack':8} {'wall s':>8} {'health p50 ms':>14} {'health max ms':>14} {'max vs idle':>12} "
          f"{'RSS +MB':>8}  outcome")
    for name, attack in (("idle", idle), ("tiny", tiny), ("many", many)):
        r = base if name == "idle" else run(eng, attack)
        print(f"{name:8} {r['wall_s']:8.2f} {r['p50_ms']:14.2f} {r['max_ms']:14.2f} "
              f"{r['max_ms'] / base['max_ms']:11.1f}x {r['rss_growth_mb']:8.1f}  {r['outcome']}")


if __name__ == "__main__":
    main()
