"""Dashboard update latency under ``tickscope serve``: 1, 4 and 16 concurrent viewers on
one worker against four workers.

Set-up, all on loopback, each in its own processes: a private ``redis-server``; one
``tickscope collect`` on the embedded market simulator (live, wall clock) publishing
BTCUSDT and ETHUSDT (``--sim-rate`` times the simulator's usual activity); and
``tickscope serve --workers W``.

A viewer is what one open page does for its live update: every ``--interval-ms`` it POSTs
``/_dash-update-component`` with the body the page sends for the candle/depth/status
callback (built from the app's own callback map, so it passes the body guard), keeps the
stores the answer returns and sends them back with the next tick (so, as on a page, the
first answer is a full figure and the next ones are patches), and never has two requests
in flight. Latency is the round trip of one request (connection kept alive). The first
``--warmup-s`` seconds of each run are not counted.

Prints p50 / p95 / max ms per (workers, viewers) and the ratio one worker / four
workers at each viewer count (> 1: four workers answer faster). Run::

    python benchmarks/bench_redis_viewers.py [--seconds 10] [--sim-rate 1] [--workers 1 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
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

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def tick_body_factory():
    """Return ``make(symbol, stores) -> body`` for the live-update callback."""
    from dashboard.app import create_app
    from dashboard import ids

    class _Shape:  # create_app only registers callbacks; nothing is read
        default_spec = "1m"

        def symbols(self):
            return list(SYMBOLS)

    app = create_app(_Shape())
    for key, cb in app.callback_map.items():
        if callable(cb.get("callback")) and any(i["id"] == ids.PULSE for i in cb["inputs"]):
            outputs = [{"id": o.component_id, "property": o.component_property} for o in cb["output"]]
            inputs, state = cb["inputs"], cb["state"]
            break
    else:
        raise RuntimeError("the live-update callback was not found")

    def make(n: int, symbol: str, stores: dict) -> bytes:
        values = {(ids.PULSE, "data"): n, (ids.SYMBOL, "value"): symbol, (ids.BAR_SIZE, "value"): "1m",
                  (ids.BAR_LABEL, "value"): "start", (ids.TIMEZONE, "value"): "UTC",
                  (ids.BROWSER_TZ, "data"): "UTC",
                  (ids.SYMBOL, "options"): [{"label": s, "value": s} for s in SYMBOLS]}
        values.update(stores)
        return json.dumps({
            "output": key, "outputs": outputs,
            "inputs": [{"id": i["id"], "property": i["property"], "value": values.get((i["id"], i["property"]))}
                       for i in inputs],
            "changedPropIds": [f"{ids.PULSE}.data"],
            "state": [{"id": s["id"], "property": s["property"], "value": values.get((s["id"], s["property"]))}
                      for s in state],
        }).encode()

    stores = [(ids.CANDLES_STORE, "data"), (ids.DEPTH_STORE, "data"), (ids.STATUS_STORE, "data")]
    return make, stores


def viewer(port: int, symbol: str, make, store_keys, seconds: float, warmup: float, interval: float,
           out: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    stores: dict = {}
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        n += 1
        body = make(n, symbol, stores)
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/_dash-update-component", body,
                         {"Content-Type": "application/json", "Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        dt = time.perf_counter() - t0
        if resp.status == 200:
            if resp.getheader("Content-Encoding") == "gzip":
                import gzip
                data = gzip.decompress(data)
            answer = json.loads(data).get("response", {})
            for cid, prop in store_keys:
                if cid in answer and prop in answer[cid]:
                    stores[(cid, prop)] = answer[cid][prop]
        elif resp.status != 204:
            errors.append(f"HTTP {resp.status}")
        if time.monotonic() - start >= warmup:
            out.append(dt * 1000)
        time.sleep(max(0.0, interval - dt))


def run_serve(url: str, workers: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dashboard", "serve", "--redis", url, "--port", str(port),
                             "--workers", str(workers), "--log-level", "WARNING"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(url: str, workers: int, viewers: int, args, make, store_keys) -> dict:
    port = free_port()
    proc = run_serve(url, workers, port)
    try:
        wait_port(port)
        time.sleep(1.5)  # every worker has booted and read the streams
        out: list[float] = []
        errors: list[str] = []
        threads = [threading.Thread(target=viewer, args=(port, SYMBOLS[i % 2], make, store_keys, args.seconds,
                                                         args.warmup_s, args.interval_ms / 1000, out, errors))
                   for i in range(viewers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(10)
    out.sort()
    return {"n": len(out), "p50": statistics.median(out) if out else float("nan"),
            "p95": out[int(0.95 * (len(out) - 1))] if out else float("nan"),
            "max": out[-1] if out else float("nan"), "errors": len(errors)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one run (default 10)")
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--interval-ms", type=float, default=250.0, help="the page's update interval (default 250)")
    ap.add_argument("--sim-rate", type=float, default=1.0, help="the simulator's activity, times its usual (default 1)")
    ap.add_argument("--viewers", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed (scripts/test.sh installs it)")
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    collector = None
    rport = free_port()
    redis_proc = subprocess.Popen([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                   "no", "--dir", tmp, "--loglevel", "warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{rport}/0"
    try:
        wait_port(rport)
        collector = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "collect", "--redis", url, "--name", "bench", "--symbols",
             ",".join(SYMBOLS), "--sim-rate", str(args.sim_rate), "--data-dir", os.path.join(tmp, "data"),
             "--backfill", "0", "--log-level", "WARNING"],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5.0)  # the simulator is live and a few bars exist
        if collector.poll() is not None:
            sys.exit(f"tickscope collect exited with {collector.returncode}")
        make, store_keys = tick_body_factory()
        results = {}
        print(f"live update round trip, ms ({args.seconds:g} s per run, a tick every {args.interval_ms:g} ms "
              f"per viewer, simulator x{args.sim_rate:g}; cpus: {os.cpu_count()}, load {os.getloadavg()[0]:.1f})")
        print(f"{'workers':>7} {'viewers':>7} {'requests':>8} {'p50':>8} {'p95':>8} {'max':>8} {'errors':>6}")
        for v in args.viewers:
            for w in args.workers:
                r = results[(w, v)] = measure(url, w, v, args, make, store_keys)
                print(f"{w:>7} {v:>7} {r['n']:>8} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['max']:>8.1f} "
                      f"{r['errors']:>6}", flush=True)
        if len(args.workers) >= 2:
            a, b = args.workers[0], args.workers[-1]
            for v in args.viewers:
                ra, rb = results[(a, v)], results[(b, v)]
                print(f"{v:>3} viewers: p50 {a} worker(s) / {b} workers = {ra['p50'] / rb['p50']:.2f}, "
                      f"p95 = {ra['p95'] / rb['p95']:.2f}")
        collector.terminate()
        collector.wait(15)
    finally:
        if collector is not None and collector.poll() is None:
            collector.kill()
            collector.wait(5)
        redis_proc.kill()
        redis_proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
