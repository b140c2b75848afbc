"""Trades per second through Redis (collector + reader) against the in-process engine alone.

A firehose (``benchmarks/firehose.py``, its own process) sends ``--trades`` Binance
``@trade`` frames as fast as the receiver takes them. Two contenders, alternated
``--repeat`` times in the same run, on the same frames:

* **in-process**: the runtime ``tickscope --vendor binance --url ws://... --symbols BTCUSDT
  --data-dir TMP`` builds, without the Dash app (FeedClient -> queue -> Engine: parse,
  trade checks, tape, 1m bars, trade store), timed until the engine has applied every trade
  (the baseline of the ratio);
* **redis**: the same run as ``tickscope collect --redis URL`` (the engine plus the
  publisher thread writing each batch of cycles with one pipeline) and a reader in its own
  process (as a ``serve`` worker would be) that XREADs ``P:trades:BTCUSDT`` and decodes every
  entry with ``feed.io.bus.decode_trades``; timed until the reader has decoded every trade.

Clocks start at the first frame the engine received (wall clock, shared by the processes
of one machine). A private ``redis-server`` on a loopback port (no persistence) serves the
run. Prints trades/s of each (median of the runs), how far behind the engine the reader
finished, and redis / in-process. Run::

    python benchmarks/bench_redis_ingest.py [--trades 200000] [--repeat 3] [--no-reader]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_ingest import _closed_port, engine_times  # noqa: E402
from benchmarks.firehose import Firehose  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _feed_args(hose: Firehose, data_dir: Path) -> list[str]:
    return ["--vendor", "binance", "--url", hose.url, "--rest-url", _closed_port(),
            "--symbols", "BTCUSDT", "--data-dir", str(data_dir), "--log-level", "ERROR"]


def in_process(n: int, tmp: Path) -> float:
    """Receive ``n`` frames through the runtime (no app); return trades/s."""
    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    hose = Firehose(n)
    rt = start_runtime(config_from_argv(_feed_args(hose, Path(tempfile.mkdtemp(dir=tmp)))), serve=False)
    try:
        t0, t1 = engine_times(rt.engine, n, clock=time.time)  # wall: the reader's clock too
    finally:
        rt.stop()
        hose.close()
    return n / (t1 - t0)


def through_redis(n: int, tmp: Path, url: str, run: int, with_reader: bool = True) -> tuple[float, float, float]:
    """Receive ``n`` frames through a collector and a reader process; return (trades/s to
    the reader, trades/s to the engine, seconds the reader finished after the engine).
    Without the reader: (nan, trades/s to the engine, nan)."""
    from dashboard.collect import start_collector

    prefix = f"bench{run}"
    reader = subprocess.Popen([sys.executable, __file__, "--reader", url, prefix, str(n)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) if with_reader else None
    hose = Firehose(n)
    col = start_collector(["--redis", url, "--name", f"bench-{run}", "--redis-prefix", prefix,
                           "--redis-retention", "0", *_feed_args(hose, Path(tempfile.mkdtemp(dir=tmp)))])
    try:
        t0, t_engine = engine_times(col.runtime.engine, n, clock=time.time)
        if reader is None:
            return float("nan"), n / (t_engine - t0), float("nan")
        out, _ = reader.communicate(timeout=600)
        t_reader = float(out.split()[-1])
    finally:
        col.stop()
        hose.close()
        if reader is not None and reader.poll() is None:
            reader.kill()
    pub = col.publisher.stats()
    if pub["dropped_cycles"] or pub["errors"]:
        print(f"  warning: publisher dropped {pub['dropped_cycles']} cycles, {pub['errors']} errors", file=sys.stderr)
    return n / (t_reader - t0), n / (t_engine - t0), t_reader - t_engine


def reader_main(url: str, prefix: str, n: int) -> int:
    """The reader process: tail ``P:trades:BTCUSDT`` from the start, decode every entry,
    print the wall time at which ``n`` trades were decoded."""
    import redis

    from feed.io.bus import Keys, decode_trades

    r = redis.Redis.from_url(url)
    key, cursor, got = Keys(prefix).trades("BTCUSDT"), "0-0", 0
    while got < n:
        for _stream, entries in r.xread({key: cursor}, count=1000, block=1000) or ():
            for entry_id, fields in entries:
                cursor = entry_id
                got += len(decode_trades("BTCUSDT", fields[b"d"]))
    print(time.time(), flush=True)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--reader"]:
        return reader_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trades", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-reader", action="store_true",
                   help="also time the collector with no reader process (what the reader's CPU costs "
                        "the collector on a small machine)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    exe = shutil.which("redis-server")
    if exe is None:
        print("redis-server is not installed (scripts/test.sh installs it)", file=sys.stderr)
        return 2
    port = _free_port()
    runs: dict[str, list[float]] = {"in-process": [], "redis": [], "redis-engine": [], "lag": [], "alone": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            for i in range(args.repeat):
                runs["in-process"].append(in_process(args.trades, Path(tmp)))
                to_reader, to_engine, lag = through_redis(args.trades, Path(tmp), url, i)
                runs["redis"].append(to_reader)
                runs["redis-engine"].append(to_engine)
                runs["lag"].append(lag)
                print(f"run {i + 1}: in-process {runs['in-process'][-1]:,.0f}/s  through Redis "
                      f"{to_reader:,.0f}/s (its engine {to_engine:,.0f}/s; reader done {lag * 1000:,.0f} ms "
                      "after the engine)")
                if args.no_reader:
                    runs["alone"].append(through_redis(args.trades, Path(tmp), url, 100 + i, False)[1])
                    print(f"       collector with no reader: its engine {runs['alone'][-1]:,.0f}/s")
        finally:
            server.kill()
            server.wait(5)
    ip, rd, re_ = (statistics.median(runs[k]) for k in ("in-process", "redis", "redis-engine"))
    print(f"\n{'path':<44}{'trades/s (median)':>20}")
    print(f"{'in-process engine (baseline)':<44}{ip:>20,.0f}")
    print(f"{'collector engine, publishing to Redis':<44}{re_:>20,.0f}")
    print(f"{'collector + Redis + reader decoding':<44}{rd:>20,.0f}")
    if runs["alone"]:
        print(f"{'collector engine, no reader running':<44}{statistics.median(runs['alone']):>20,.0f}")
    print(f"reader finished {statistics.median(runs['lag']) * 1000:,.0f} ms after the engine (median)")
    print(f"ratio through Redis / in-process: {rd / ip:.2f}x; collector engine / in-process: {re_ / ip:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
