"""Replay throughput: how many recorded messages/s the live path sustains, and its CPU.

Plays recorded Binance sessions through the embedded exchange at ``--speed 0`` (as fast as
possible) over a real loopback WebSocket into FeedClient -> queue -> Engine (parse, books,
1m bars), exactly as ``tickscope --replay FILE --speed 0`` does, and prints messages/s,
process CPU seconds and CPU utilisation (process CPU / wall; 2.0 = both cores busy).

Baseline measured in the same run: the adapter parsing the same lines in one loop with no
sockets, threads or state (``BinanceAdapter.parse`` only) — the floor cost of the
messages themselves. The ratio says what the socket, queue and state cost on top.

Run::

    python benchmarks/bench_replay.py [FILE ...]

Default input: ../shared/data/binance-ws-captures-hftbacktest/raw/usdm/btcusdt_20240808.gz
(93,954 messages). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.cli import config_from_argv  # noqa: E402
from dashboard.runtime import start_runtime  # noqa: E402
from feed.io.readers import merge_recordings  # noqa: E402
from feed.vendors.binance import BinanceAdapter  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-ws-captures-hftbacktest" / "raw" / "usdm" / "btcusdt_20240808.gz"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def baseline(files: list[Path]) -> tuple[int, float, float]:
    """Parse every stream line with the adapter in one loop; return (messages, wall, cpu)."""
    # The same messages the live path subscribes to: trades and diff depth.
    lines = [raw for _, _, raw in merge_recordings(files)
             if raw.startswith('{"stream"') and ("@trade" in raw[:40] or "@depth" in raw[:40])]
    adapter = BinanceAdapter("usdm")
    c0, t0 = _cpu(), time.perf_counter()
    for raw in lines:
        adapter.parse(raw, 0)
    return len(lines), time.perf_counter() - t0, _cpu() - c0


def full(files: list[Path], market: str) -> tuple[int, float, float, dict]:
    """Replay through the whole live path; return (messages, wall, cpu, health)."""
    args = config_from_argv(["--replay", *map(str, files), "--speed", "0", "--market", market])
    c0, t0 = _cpu(), time.perf_counter()
    rt = start_runtime(args)
    try:
        rt.exchange.finished.wait(600)
        rt.engine.wait_idle(600, quiet_s=0.5)
        wall = time.perf_counter() - t0 - 0.5  # minus the quiet wait
        cpu = _cpu() - c0
        health = rt.engine.health()
    finally:
        rt.stop()
    return health["counters"]["messages"], wall, cpu, health


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, default=[DEFAULT])
    p.add_argument("--market", default="usdm", choices=["spot", "usdm"])
    args = p.parse_args()
    missing = [f for f in args.files if not f.exists()]
    if missing:
        print(f"bench_replay: no such file: {missing[0]}", file=sys.stderr)
        return 2
    n_b, wall_b, cpu_b = baseline(args.files)
    n_f, wall_f, cpu_f, health = full(args.files, args.market)
    rate_b, rate_f = n_b / wall_b, n_f / wall_f
    print(f"input: {', '.join(f.name for f in args.files)}")
    print(f"{'path':<44}{'messages':>10}{'wall s':>9}{'msgs/s':>11}{'CPU s':>8}{'CPU %':>8}")
    print(f"{'baseline: adapter.parse loop (no I/O)':<44}{n_b:>10,}{wall_b:>9.2f}{rate_b:>11,.0f}{cpu_b:>8.2f}{100 * cpu_b / wall_b:>7.0f}%")
    print(f"{'tickscope --replay --speed 0 (loopback)':<44}{n_f:>10,}{wall_f:>9.2f}{rate_f:>11,.0f}{cpu_f:>8.2f}{100 * cpu_f / wall_f:>7.0f}%")
    print(f"full path / baseline throughput: {rate_f / rate_b:.2f}x")
    c = health["counters"]
    print(f"health: trades={c['trades']} malformed={c['malformed']} dropped={c['dropped']} gaps={c['gaps']}")
    print("(CPU % is process CPU / wall: the exchange server, feed thread and engine worker share one process; 200% = both cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
