"""Shared fixtures: the recorded market data in ../shared/data and started runtimes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import require_shared_data, run


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data (see ``require_shared_data``)."""
    return require_shared_data()


@pytest.fixture
def hft_data() -> Path:
    """Path to the Binance raw captures folder from hftbacktest."""
    return require_shared_data("binance-ws-captures-hftbacktest")


@pytest.fixture
def runtime():
    """Return ``start(*argv, **options)``: a started runtime for ``tickscope`` arguments.

    ``options`` go to :func:`dashboard.runtime.start_runtime` (``feed_options``,
    ``engine_options``, ``interval_ms``). Every runtime started is stopped at teardown,
    the last one first.
    """
    started = []

    def start(*argv: str, **options):
        rt = run(argv, **options)
        started.append(rt)
        return rt

    yield start
    for rt in reversed(started):
        rt.stop()


@pytest.fixture
def redis_url(tmp_path):
    """Start a private ``redis-server`` on a free loopback port for one test; yield its URL.

    No persistence (``--save ''``, no AOF); the server is killed at teardown. Skips when
    ``redis-server`` is missing, except under CI=true (``scripts/test.sh`` installs it).
    """
    import os
    import shutil
    import socket
    import subprocess
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        msg = "redis-server not installed (scripts/test.sh installs Debian's redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.02)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(5)
