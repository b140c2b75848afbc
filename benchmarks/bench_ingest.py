"""Sustained ingest: trades/s from a loopback firehose into tickscope, vs a bare receiver.

A firehose (``benchmarks/firehose.py``, its own process) sends ``--trades`` Binance
``@trade`` frames as fast as the receiver takes them. Two receivers, alternated
``--repeat`` times in the same run:

* **bare**: websocket-client ``WebSocketApp.run_forever(skip_utf8_validation=True)``
  whose ``on_message`` does ``json.loads`` + ``queue.SimpleQueue.put`` -- the usual
  hand-written receiver, and the baseline of the ratio;
* **tickscope**: the live runtime as ``tickscope --vendor binance --url ws://... --symbols
  BTCUSDT --data-dir TMP`` builds it (FeedClient -> queue -> Engine: parse, trade checks,
  tape, 1m bars, trade store), timed until the engine has applied every trade.

Both clocks start at the first frame received. Prints trades/s for each (median of the
runs) and tickscope / bare. Run::

    python benchmarks/bench_ingest.py [--trades 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import websocket  # noqa: E402

from benchmarks.firehose import Firehose  # noqa: E402


def bare(n: int) -> float:
    """Receive ``n`` frames with a bare websocket-client receiver; return trades/s."""
    hose = Firehose(n)
    q: queue.SimpleQueue = queue.SimpleQueue()
    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    def on_message(ws, data):
        if state["n"] == 0:
            state["t0"] = time.perf_counter()
        q.put(json.loads(data))
        state["n"] += 1
        if state["n"] == n:
            state["t1"] = time.perf_counter()
            ws.keep_running = False

    app = websocket.WebSocketApp(hose.url, on_message=on_message)
    th = threading.Thread(target=app.run_forever, kwargs={"skip_utf8_validation": True}, daemon=True)
    th.start()
    th.join(300)
    hose.close()
    return n / (state["t1"] - state["t0"])


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: a REST snapshot request is refused at once
    return f"http://127.0.0.1:{port}"


def engine_times(eng, n: int, clock=time.perf_counter) -> tuple[float, float]:
    """Return ``clock()`` when ``eng`` (an ``Engine``) has received its first message and
    when it has applied its ``n``-th trade, polling every 0.5 ms.

    ``benchmarks/bench_redis_ingest.py`` passes ``time.time``: its reader process reads
    the same wall clock.
    """
    t0 = None
    while True:
        if t0 is None and eng.market.count("messages"):
            t0 = clock()
        if eng.market.count("trades") >= n:
            return t0, clock()
        time.sleep(0.0005)


def tickscope(n: int, tmp: Path) -> float:
    """Receive ``n`` frames through tickscope's live runtime; return trades/s."""
    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    hose = Firehose(n)
    data_dir = Path(tempfile.mkdtemp(dir=tmp))
    cfg = config_from_argv(["--vendor", "binance", "--url", hose.url, "--rest-url", _closed_port(),
                            "--symbols", "BTCUSDT", "--data-dir", str(data_dir)])
    rt = start_runtime(cfg)
    try:
        eng = rt.engine
        t0, t1 = engine_times(eng, n)
        counters = eng.counters()
    finally:
        rt.stop()
        hose.close()
    if counters.dropped or counters.malformed:
        print(f"  warning: dropped {counters.dropped}, malformed {counters.malformed}", file=sys.stderr)
    return n / (t1 - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trades", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    runs: dict[str, list[float]] = {"bare": [], "tickscope": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs["bare"].append(bare(args.trades))
            runs["tickscope"].append(tickscope(args.trades, Path(tmp)))
            print(f"run {i + 1}: bare {runs['bare'][-1]:,.0f}/s  tickscope {runs['tickscope'][-1]:,.0f}/s")
    b, t = statistics.median(runs["bare"]), statistics.median(runs["tickscope"])
    print(f"\n{'receiver':<32}{'trades/s (median)':>20}")
    print(f"{'bare websocket-client + json':<32}{b:>20,.0f}")
    print(f"{'tickscope client + engine':<32}{t:>20,.0f}")
    print(f"ratio tickscope / bare: {t / b:.2f}x  (target >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
