"""Replay throughput: how many recorded messages/s the live path sustains, and its CPU.

Plays recorded Binance sessions through the embedded exchange at ``--speed 0`` (as fast as
possible) over a real loopback WebSocket into FeedClient -> queue -> Engine (parse, books,
1m bars), exactly as ``tickscope --replay FILE --speed 0`` does, and prints messages/s,
CPU seconds (this process plus the exchange's child process) and CPU utilisation
(CPU / wall; 200 % = both cores busy).

Two live paths in the same run: the exchange in its own process (what ``--speed 0`` runs,
``feed.exchange.process``) and, for comparison, the exchange as a thread of the same
process (what it ran before, and still runs for paced replays and fault injection).

Baseline measured in the same run: the adapter parsing the same lines in one loop with no
sockets, threads or state (``BinanceAdapter.parse`` only) — the floor cost of the
messages themselves. The ratio says what the socket, queue and state cost on top.

Each path runs ``--repeat`` times (default 3), alternated; the median run of each counts.
Run::

    python benchmarks/bench_replay.py [FILE ...] [--repeat 3]

Default input: ../shared/data/binance-ws-captures-hftbacktest/raw/usdm/btcusdt_20240808.gz
(93,954 lines, of which the 27,865 trade and depth messages are subscribed). Not part of
the test suite.
"""

from __future__ import annotations

import argparse
import os
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
    # This process and its finished children (the exchange process, once joined).
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


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


def full(files: list[Path], market: str, in_thread: bool = False) -> tuple[int, float, float, dict]:
    """Replay through the whole live path; return (messages, wall, cpu, health).

    The clock runs from the engine's first batch to the end of its last one holding
    messages (the quiet wait and the stop are not replay). The replay starts as soon as
    the feed subscribes, inside ``start_runtime``, so timing from its return would leave
    out whatever part of the replay overlapped the rest of the start-up and flatter the
    rate by a varying amount. CPU counts the whole run (start-up, the file scan and the
    exchange process's imports included), so the CPU % is indicative only."""
    import feed.exchange.process as proc
    from feed.exchange.server import EmbeddedExchange
    from feed.io.engine import Engine

    saved, saved_process = proc.ExchangeProcess, Engine.process
    marks: list[float] = []

    def timed_process(self, items):  # first batch start, then the end of the last one
        if not marks:                 # that held messages (not the disconnect at stop)
            marks.append(time.perf_counter())
        before = self.market.count("messages")
        saved_process(self, items)
        if len(marks) == 1:
            marks.append(time.perf_counter())
        if self.market.count("messages") != before:
            marks[1] = time.perf_counter()

    if in_thread:  # the runtime picks the process for --speed 0: hand it the thread class
        proc.ExchangeProcess = EmbeddedExchange
    Engine.process = timed_process
    args = config_from_argv(["--replay", *map(str, files), "--speed", "0", "--market", market])
    c0 = _cpu()
    try:
        rt = start_runtime(args)
        try:
            rt.exchange.finished.wait(600)
            rt.engine.wait_idle(600, quiet_s=0.5)
            health = rt.engine.health()
        finally:
            rt.stop()
    finally:
        proc.ExchangeProcess = saved
        Engine.process = saved_process
    cpu = _cpu() - c0
    return health["counters"]["messages"], marks[1] - marks[0], cpu, health


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, default=[DEFAULT])
    p.add_argument("--market", default="usdm", choices=["spot", "usdm"])
    p.add_argument("--repeat", type=int, default=3, help="runs of each path; the median counts")
    args = p.parse_args()
    missing = [f for f in args.files if not f.exists()]
    if missing:
        print(f"bench_replay: no such file: {missing[0]}", file=sys.stderr)
        return 2
    runs: dict[str, list[tuple]] = {"baseline": [], "thread": [], "process": []}
    load_before = os.getloadavg()
    for i in range(max(1, args.repeat)):  # alternated, so a load change hits all three
        runs["baseline"].append(baseline(args.files))
        runs["thread"].append(full(args.files, args.market, in_thread=True))
        runs["process"].append(full(args.files, args.market))
        print(f"run {i + 1}: " + "  ".join(f"{k} {r[-1][0] / r[-1][1]:,.0f} msg/s" for k, r in runs.items()))
    # The median run of each path, by rate.
    (n_b, wall_b, cpu_b), (n_t, wall_t, cpu_t, _), (n_f, wall_f, cpu_f, health) = (
        sorted(r, key=lambda x: x[0] / x[1])[len(r) // 2] for r in runs.values())
    rate_b, rate_t, rate_f = n_b / wall_b, n_t / wall_t, n_f / wall_f
    print(f"\ninput: {', '.join(f.name for f in args.files)} (median of {len(runs['baseline'])} runs; "
          f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after, "
          f"{os.cpu_count()} CPUs: other processes share them)")
    print(f"{'path':<46}{'messages':>10}{'wall s':>9}{'msgs/s':>11}{'CPU s':>8}{'CPU %':>8}")
    for label, n, wall, cpu, rate in (
            ("baseline: adapter.parse loop (no I/O)", n_b, wall_b, cpu_b, rate_b),
            ("--speed 0, exchange in its own process", n_f, wall_f, cpu_f, rate_f),
            ("--speed 0, exchange as a thread (before)", n_t, wall_t, cpu_t, rate_t)):
        print(f"{label:<46}{n:>10,}{wall:>9.2f}{rate:>11,.0f}{cpu:>8.2f}{100 * cpu / wall:>7.0f}%")
    print(f"full path / baseline throughput: {rate_f / rate_b:.2f}x (exchange as a thread: {rate_t / rate_b:.2f}x); "
          f"process / thread: {rate_f / rate_t:.2f}x")
    c = health["counters"]
    print(f"health: trades={c['trades']} malformed={c['malformed']} dropped={c['dropped']} gaps={c['gaps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
