"""Latency, exchange trade time -> applied, at a steady 10,000 trades/s, vs a bare receiver.

A firehose (``benchmarks/firehose.py``, its own process) sends Binance ``@trade`` frames
at ``--rate`` trades/s in 1 ms ticks, stamping each frame's ``T`` (ms) just before the
send. Two receivers, each in a fresh Python process (so one's heap and GC settings do not
colour the other's), alternated ``--repeat`` times:

* **bare**: websocket-client ``run_forever(skip_utf8_validation=True)``, ``on_message``
  doing ``json.loads`` + ``queue.SimpleQueue.put``; latency = wall clock after the put
  - ``T``;
* **tickscope**: the live runtime of ``tickscope --vendor binance --url ws://...``
  (FeedClient -> queue -> Engine -> 1m bars, trade store); latency is what
  ``/api/health`` reports as ``latency_ms`` (``Engine.health()``): wall clock after the
  batch holding the trade was applied - ``T``.

Both carry the same up-to-1 ms truncation of ``T``. Prints p50/p99 ms of each (median of
the runs' figures) and the p99 ratio. Run::

    python benchmarks/bench_latency.py [--rate 10000] [--seconds 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare(n: int, rate: float) -> dict:
    """Receive ``n`` frames at ``rate``/s with a bare receiver; return its p50/p99 ms."""
    import numpy as np
    import websocket

    from benchmarks.firehose import Firehose

    hose = Firehose(n, rate=rate)
    q: queue.SimpleQueue = queue.SimpleQueue()
    lat: list[float] = []

    def on_message(ws, data):
        msg = json.loads(data)
        q.put(msg)
        lat.append(time.time_ns() / 1e6 - msg["data"]["T"])
        if len(lat) == n:
            ws.keep_running = False

    app = websocket.WebSocketApp(hose.url, on_message=on_message)
    th = threading.Thread(target=app.run_forever, kwargs={"skip_utf8_validation": True}, daemon=True)
    th.start()
    th.join(n / rate + 60)
    hose.close()
    recent = np.array(lat[-int(rate * 60):])  # the last minute, as health reports it
    p50, p99 = np.percentile(recent, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "samples": len(recent)}


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def tickscope(n: int, rate: float) -> dict:
    """Receive ``n`` frames at ``rate``/s through tickscope; return health's latency_ms."""
    import logging

    from benchmarks.firehose import Firehose
    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    logging.basicConfig(level=logging.ERROR)
    hose = Firehose(n, rate=rate)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_argv(["--vendor", "binance", "--url", hose.url, "--rest-url", _closed_port(),
                                "--symbols", "BTCUSDT", "--data-dir", tmp])
        rt = start_runtime(cfg)
        try:
            deadline = time.monotonic() + n / rate + 60
            while rt.engine.market.count("trades") < n and time.monotonic() < deadline:
                time.sleep(0.05)
            health = rt.engine.health()
        finally:
            rt.stop()
            hose.close()
    out = dict(health["latency_ms"] or {})
    out["dropped"] = health["counters"]["dropped"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=10_000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--one", choices=["bare", "tickscope"], help=argparse.SUPPRESS)
    args = p.parse_args()
    n = int(args.rate * args.seconds)
    if args.one:
        print(json.dumps((bare if args.one == "bare" else tickscope)(n, args.rate)))
        return 0
    runs: dict[str, list[dict]] = {"bare": [], "tickscope": []}
    for i in range(args.repeat):
        for who in ("bare", "tickscope"):
            out = subprocess.run([sys.executable, __file__, "--one", who, "--rate", str(args.rate),
                                  "--seconds", str(args.seconds)], capture_output=True, text=True,
                                 check=True, cwd=ROOT)
            runs[who].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"run {i + 1}: " + "  ".join(f"{w} p50 {r[-1]['p50']:.2f} p99 {r[-1]['p99']:.2f} ms"
                                          for w, r in runs.items()))
    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("p50", "p99")} for w, rs in runs.items()}
    print(f"\n{'receiver at %d trades/s' % args.rate:<34}{'p50 ms':>10}{'p99 ms':>10}")
    for w, label in (("bare", "bare websocket-client + json"), ("tickscope", "tickscope (health latency_ms)")):
        print(f"{label:<34}{med[w]['p50']:>10.2f}{med[w]['p99']:>10.2f}")
    print(f"p99 ratio tickscope / bare: {med['tickscope']['p99'] / med['bare']['p99']:.2f}x  (target <= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
