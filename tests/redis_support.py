"""Helpers of the Redis tests: ``tickscope serve`` / ``collect`` processes on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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
