"""Browser test of ``tickscope serve`` (headless chromium, dash_duo's driver): the page
served by gunicorn workers reading Redis shows both symbols updating, and a collector
that stops beating is named stale on the page while the other symbol keeps updating.

A real redis-server (``redis_url``), two ``tickscope collect`` processes replaying recorded
Binance spot sessions at recorded pace (one symbol each, 1s bars), and ``tickscope serve
--workers 2``, all in their own processes."""

from __future__ import annotations

import pytest

from dashboard import candles, ids
import signal

from tests.redis_support import http_json, serve, stop, tickscope
from tests.test_browser import dash_duo, graph, status_text, wait_until  # noqa: F401

pytestmark = pytest.mark.browser


def candle_state(dash_duo) -> tuple | None:
    """(title, closed bars drawn, last close drawn) of the candle chart, or None."""
    g = graph(dash_duo, ids.CANDLES)
    if not g or len(g["data"]) <= candles.TRACE_LIVE:
        return None
    closed = g["data"][candles.TRACE_CANDLES]
    live = g["data"][candles.TRACE_LIVE]
    closes = (closed.get("close") or []) + (live.get("close") or [])
    return g["layout"]["title"] or "", len(closed.get("x") or []), closes[-1] if closes else None


def depth_title(dash_duo) -> str:
    return ((graph(dash_duo, ids.DEPTH) or {}).get("layout") or {}).get("title") or ""


def select_symbol(dash_duo, symbol: str) -> None:
    dash_duo.select_dcc_dropdown(f"#{ids.SYMBOL}", value=symbol)


def wait_updating(dash_duo, symbol: str) -> None:
    """Wait until the chart shows ``symbol`` and then draws more closed bars."""
    first = wait_until(lambda: (s := candle_state(dash_duo)) and symbol in s[0] and s[1] >= 1 and s,
                       30, message=f"{symbol} candles")
    wait_until(lambda: (s := candle_state(dash_duo)) and symbol in s[0] and s[1] >= first[1] + 2,
               30, message=f"{symbol} candles updating")


FILES = {"BTCUSDT": ("raw", "spot", "btcusdt_20240808.gz"), "ETHUSDT": ("raw", "spot", "ethusdt_20240808.gz")}


def test_serve_page_when_two_collectors_publish_shows_both_updating_and_a_stale_collector(
        redis_url, dash_duo, hft_data, tmp_path):
    procs = {s: tickscope("collect", "--redis", redis_url, "--name", f"c-{s[:3].lower()}", "--replay",
                          str(hft_data.joinpath(*f)), "--speed", "1", "--symbols", s, "--bar", "1s",
                          "--log-level", "WARNING", log_path=tmp_path / f"collect-{s}.log")
             for s, f in FILES.items()}
    try:
        with serve(redis_url, workers=2, log_path=tmp_path / "serve.log") as base:
            # Both collectors known to the workers before the page loads (its dropdown lists
            # the symbols held then, in the order the collectors were first seen: either).
            for _ in range(6):  # several answers: two workers, each with its own replica
                wait_until(lambda: set(FILES) <= set(http_json(base + "/api/health")["symbols"]), 30,
                           message="both symbols in /api/health")
            dash_duo.driver.get(base + "/")
            dash_duo.wait_for_element(f"#{ids.CANDLES}", timeout=30)
            # The first symbol is selected at load: either, by the order the collectors were
            # first seen; start from BTCUSDT.
            title = wait_until(lambda: (s := candle_state(dash_duo)) and s[0], 30, message="a chart title")
            if "BTCUSDT" not in title:
                select_symbol(dash_duo, "BTCUSDT")
            wait_updating(dash_duo, "BTCUSDT")  # 1s bars
            select_symbol(dash_duo, "ETHUSDT")
            wait_updating(dash_duo, "ETHUSDT")
            wait_until(lambda: "live" in status_text(dash_duo) and "REPLAY" in status_text(dash_duo), 15,
                       message="status live, the collectors' source badge")
            stop(procs["ETHUSDT"], signal.SIGKILL)  # the ETHUSDT collector dies: its heartbeat expires
            wait_until(lambda: "collector c-eth stale" in status_text(dash_duo), 20,
                       message="the stale collector named in the status line")
            assert "ETHUSDT" in status_text(dash_duo)
            wait_until(lambda: "ETHUSDT" in depth_title(dash_duo) and "stale: feed stale" in depth_title(dash_duo),
                       15, message="the stale collector's book marked stale")
            select_symbol(dash_duo, "BTCUSDT")
            wait_updating(dash_duo, "BTCUSDT")  # the other symbol keeps updating
            wait_until(lambda: "BTCUSDT" in depth_title(dash_duo) and "stale" not in depth_title(dash_duo),
                       15, message="the live collector's book not marked stale")
            assert dash_duo.get_logs() in (None, []) or not [
                e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"]
    finally:
        for p in procs.values():
            stop(p)
