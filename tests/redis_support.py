"""Helpers of the Redis tests: ``tickscope serve`` / ``collect`` processes on loopback,
and a publisher writing what a live collector writes (``feed.io.bus`` contract)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import redis

from feed.core.models import BUY, SELL, Trade
from feed.io.bus import HEARTBEAT_TTL_S, Keys, encode_trades

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """Return (status, body) of a GET (errors as their status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_get_worker(url: str, timeout: float = 10.0) -> tuple[int, bytes, str]:
    """Return (status, body, the ``X-Tickscope-Worker`` pid that answered)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("X-Tickscope-Worker", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("X-Tickscope-Worker", "")


def http_json(url: str) -> dict:
    status, body = http_get(url)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def wait_until(predicate, timeout: float = 30.0, message: str = "condition", every: float = 0.1):
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, AssertionError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {message} (last error: {last!r})")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def tickscope(*argv: str, log_path: Path | None = None) -> subprocess.Popen:
    """Start ``python -m dashboard ARGV`` (the ``tickscope`` command) in its own process group."""
    out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "dashboard", *argv], env=_env(), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal ``proc``'s process group (gunicorn's workers too) and wait for it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def serve(redis_url: str, *extra: str, workers: int = 2, log_path: Path | None = None,
          wait_path: str | None = "/api/health"):
    """Run ``tickscope serve --redis URL --workers N`` on a free port; yield its base URL
    once ``wait_path`` answers 200 (None: once the port accepts connections, so that no
    worker has served a request yet)."""
    port = free_port()
    proc = tickscope("serve", "--redis", redis_url, "--port", str(port), "--workers", str(workers),
                     "--log-level", "WARNING", *extra, log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        if wait_path is None:
            wait_until(lambda: proc.poll() is not None or _accepts(port), timeout=60, message="serve listening")
            time.sleep(1.0)  # the workers have booted
        else:
            wait_until(lambda: proc.poll() is not None or http_get(base + wait_path, 2)[0] == 200,
                       timeout=60, message="serve answering")
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        yield base
    finally:
        stop(proc)


class LivePublisher(threading.Thread):
    """What a live collector named ``name`` writes for ``symbols``: a cycle of trades every
    50 ms, the book, meta, and a heartbeat every second (wall clock)."""

    def __init__(self, url: str, symbols, name: str = "live", prefix: str = "tickscope", per_cycle: int = 3) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(url)
        self.keys = Keys(prefix)
        self.symbols, self.name, self.per_cycle = list(symbols), name, per_cycle
        self.halt = threading.Event()
        self.ids = {s: 1 for s in self.symbols}
        self.px = {s: 100.0 * (i + 1) for i, s in enumerate(self.symbols)}
        self.rng = random.Random(5)

    def run(self) -> None:
        next_beat = 0.0
        while not self.halt.is_set():
            now = time.time_ns()
            p = self.r.pipeline(transaction=False)
            for s in self.symbols:
                trades = []
                for k in range(self.per_cycle):
                    self.px[s] = round(self.px[s] + self.rng.choice((-0.1, 0.0, 0.1)), 1)
                    trades.append(Trade(s, now - (self.per_cycle - k) * 1000, self.px[s],
                                        round(self.rng.uniform(0.001, 1), 3), self.rng.choice((BUY, SELL)),
                                        self.ids[s], now))
                    self.ids[s] += 1
                p.xadd(self.keys.trades(s), {"k": b"t", "d": encode_trades(trades)})
                mid = self.px[s]
                p.set(self.keys.book(s), orjson.dumps({
                    "ts_ns": now, "bids": [[round(mid - 0.1 * (i + 1), 1), 1.0 + i] for i in range(20)],
                    "asks": [[round(mid + 0.1 * (i + 1), 1), 1.0 + i] for i in range(20)],
                    "best_bid": round(mid - 0.1, 1), "best_ask": round(mid + 0.1, 1), "mid": mid,
                    "spread": 0.2, "synced": True}))
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + 1.0
                p.sadd(self.keys.collectors, self.name)
                p.set(self.keys.collector(self.name), orjson.dumps({
                    "name": self.name, "pid": os.getpid(), "host": "test", "symbols": self.symbols,
                    "clock_ns": now, "beat_ns": now, "vendor": "binance", "default_spec": "1s",
                    "source": {"kind": "live", "label": "Binance spot", "speed": None, "progress": None},
                    "health": {"feed": {"state": "live", "detail": "", "messages_per_s": 20.0},
                               "counters": {"trades": sum(self.ids.values())}, "queue_depth": 0}}),
                    px=int(HEARTBEAT_TTL_S * 1000))
            p.execute()
            self.halt.wait(0.05)
