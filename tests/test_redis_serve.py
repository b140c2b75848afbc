"""``tickscope serve`` against real collectors through a real redis-server.

Two collectors (``tickscope collect`` processes) replay recorded Binance spot sessions
from ../shared/data, one symbol each, and ``tickscope serve --workers 2`` reads them: every
worker's ``/api/bars`` CSV, for time, tick, volume and value bars, equals byte for byte the
one the single-process ``tickscope`` run of the same file serves. Killing one collector
leaves ``serve`` up with that collector's symbol stale in ``/api/health`` within seconds;
restarting it (same ``--name``, replaying from the start) makes it alive again with the
bars still equal.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from dashboard.cli import config_from_argv
from dashboard.runtime import start_runtime
from feed.io.bus import HEARTBEAT_TTL_S
from tests.redis_support import free_port, http_get_worker, serve, stop, tickscope, wait_until

FILES = {"BTCUSDT": ("raw", "spot", "btcusdt_20240808.gz"), "ETHUSDT": ("raw", "spot", "ethusdt_20240808.gz")}
SPECS = ("1m", "15s", "100t", "2v", "250000q")
WORKERS = 2


def reference(path) -> tuple[dict[str, bytes], int]:
    """The single-process run of one file: ``/api/bars`` bodies by spec, and its trades."""
    rt = start_runtime(config_from_argv(["--replay", str(path), "--speed", "0"]))
    try:
        assert rt.exchange.finished.wait(120), "the replay did not finish"
        assert rt.engine.wait_idle(60, quiet_s=1.0)
        client = rt.app.server.test_client()
        symbol = rt.engine.symbols()[0]
        out = {}
        for spec in SPECS:
            resp = client.get(f"/api/bars?symbol={symbol}&bar={spec}")
            assert resp.status_code == 200, resp.data[:200]
            out[spec] = resp.data
        return out, rt.engine.counters().trades
    finally:
        rt.stop()


def collector(redis_url, name: str, path, symbol: str, log_path):
    return tickscope("collect", "--redis", redis_url, "--name", name, "--replay", str(path), "--speed", "0",
                     "--symbols", symbol, "--log-level", "WARNING", log_path=log_path)


def every_worker(base: str, path: str, check, timeout: float = 60.0) -> None:
    """Wait until ``check(body)`` has held for an answer of each of the workers (and for
    every answer since the last failure)."""
    good: set[str] = set()

    def done():
        status, body, pid = http_get_worker(base + path)
        if status != 200 or not check(body):
            good.clear()
            return False
        good.add(pid)
        return len(good) >= WORKERS

    wait_until(done, timeout, message=f"every worker answering {path} as expected", every=0.05)


def health_shows(want_trades: dict[str, int], alive: dict[str, bool]):
    def check(body: bytes) -> bool:
        h = json.loads(body)
        held = h["reader"]["trades_held"]
        cols = h["collectors"]
        return (all(held.get(s) == n for s, n in want_trades.items())
                and all(cols.get(c, {}).get("alive") is a for c, a in alive.items())
                and all(cols[c]["state"] == "replay-finished" for c, a in alive.items() if a))
    return check


def bars_equal(symbol: str, spec: str, want: bytes):
    return lambda body: body == want


def test_serve_when_two_collectors_replay_gives_the_single_process_bars_and_survives_a_collector(
        redis_url, hft_data, tmp_path):
    paths = {s: hft_data.joinpath(*f) for s, f in FILES.items()}
    refs = {s: reference(p) for s, p in paths.items()}
    trades = {s: n for s, (_, n) in refs.items()}
    assert all(n > 1000 for n in trades.values())
    procs = {s: collector(redis_url, f"c-{s.lower()}", p, s, tmp_path / f"collect-{s}.log")
             for s, p in paths.items()}
    try:
        with serve(redis_url, workers=WORKERS, log_path=tmp_path / "serve.log") as base:
            every_worker(base, "/api/health", health_shows(trades, {"c-btcusdt": True, "c-ethusdt": True}), 120)
            for symbol, (bodies, _) in refs.items():
                for spec in SPECS:
                    every_worker(base, f"/api/bars?symbol={symbol}&bar={spec}",
                                 bars_equal(symbol, spec, bodies[spec]), 30)

            # One collector dies: serve stays up, its symbol is stale within seconds.
            stop(procs["ETHUSDT"], signal.SIGKILL)
            killed = time.monotonic()

            def eth_stale(body: bytes) -> bool:
                h = json.loads(body)
                return (h["collectors"]["c-ethusdt"]["alive"] is False and h["symbols"]["ETHUSDT"]["stale"] is True
                        and h["symbols"]["BTCUSDT"]["stale"] is False and h["collectors"]["c-btcusdt"]["alive"])

            every_worker(base, "/api/health", eth_stale, HEARTBEAT_TTL_S + 10)
            assert time.monotonic() - killed < HEARTBEAT_TTL_S + 10
            status, body, _ = http_get_worker(base + "/api/bars?symbol=BTCUSDT&bar=1m")
            assert status == 200 and body == refs["BTCUSDT"][0]["1m"]
            status, body, _ = http_get_worker(base + "/api/bars?symbol=ETHUSDT&bar=1m")
            assert status == 200 and body == refs["ETHUSDT"][0]["1m"]  # the last bars stay shown

            # It comes back under its name, replaying from the start: alive, bars equal.
            procs["ETHUSDT"] = collector(redis_url, "c-ethusdt", paths["ETHUSDT"], "ETHUSDT",
                                         tmp_path / "collect-ETHUSDT-2.log")
            every_worker(base, "/api/health", health_shows(trades, {"c-btcusdt": True, "c-ethusdt": True}), 120)
            for symbol, (bodies, _) in refs.items():
                for spec in SPECS:
                    every_worker(base, f"/api/bars?symbol={symbol}&bar={spec}",
                                 bars_equal(symbol, spec, bodies[spec]), 30)
    finally:
        for p in procs.values():
            stop(p)


def test_serve_when_redis_is_unreachable_says_so_and_exits_2(tmp_path):
    port = free_port()
    proc = tickscope("serve", "--redis", f"redis://127.0.0.1:{port}/0", "--port", str(free_port()),
                     log_path=tmp_path / "serve.log")
    assert proc.wait(30) == 2
    text = (tmp_path / "serve.log").read_text()
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in text
    assert text.count("error") == 1


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--port", "x"], []])
def test_serve_when_arguments_are_bad_exits_2(argv, tmp_path):
    proc = tickscope("serve", *argv, log_path=tmp_path / "serve.log")
    assert proc.wait(30) == 2


def test_serve_when_a_page_loads_every_worker_serves_its_scripts_at_once(redis_url, tmp_path):
    # A browser asks for a page's scripts at once; a worker must answer them even if its
    # first requests are these (Dash registers them while setting up: a race otherwise).
    import re
    from concurrent.futures import ThreadPoolExecutor

    from dashboard.app import create_app
    from feed.io.redis_reader import RedisReader

    page = create_app(RedisReader(redis_url)).server.test_client().get("/").data.decode()
    scripts = re.findall(r'<script src="(/_dash-component-suites/[^"]+)"', page)
    assert len(scripts) > 3
    for _ in range(3):
        with serve(redis_url, workers=WORKERS, log_path=tmp_path / "serve.log", wait_path=None) as base:
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda src: http_get_worker(base + src)[0], scripts * 4))
            assert answers == [200] * len(answers)


def test_reader_unsubscribe_and_subscribe_go_to_a_live_collector(redis_url, tmp_path):
    # The embedded simulator's collector (BTCUSDT, ETHUSDT, SOLUSDT); a page of serve removes
    # and adds a symbol through P:commands.
    from feed.io.redis_reader import RedisReader

    proc = tickscope("collect", "--redis", redis_url, "--name", "sim", "--data-dir", str(tmp_path / "data"),
                     "--backfill", "0", "--log-level", "INFO", log_path=tmp_path / "collect.log")
    reader = RedisReader(redis_url)
    try:
        reader.start()
        wait_until(lambda: reader.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"], 60, message="the collector's symbols")
        reader.unsubscribe("ETHUSDT")
        wait_until(lambda: reader.symbols() == ["BTCUSDT", "SOLUSDT"], 15, message="ETHUSDT gone")
        assert reader.subscribe("ethusdt") == "ETHUSDT"  # the collector claimed and subscribed it again
        assert reader.symbols() == ["BTCUSDT", "SOLUSDT", "ETHUSDT"]
        n = len(reader.trades("ETHUSDT", 10**6))
        wait_until(lambda: len(reader.trades("ETHUSDT", 10**6)) > n, 30, message="new ETHUSDT trades")
        assert reader.health()["symbols"]["ETHUSDT"]["collector"] == "sim"
    finally:
        reader.stop()
        stop(proc)
