"""What the page receives, read from headless chromium's own network log: one symbol switch
brings exactly one full candle figure (timer ticks during the draw no longer make the
server build and send it again), and steady updates arrive compressed and carry the depth
chart as a Patch or not at all.

The runtime is the embedded simulator (``dashboard.runtime.start_runtime``), served by
dash[testing]'s ``dash_duo`` with chromium's DevTools performance log switched on.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from dashboard import ids
from tests.test_browser import chrome_options, wait_candles, wait_depth
from tests.test_persistence_e2e import free_port

pytestmark = pytest.mark.browser

UPDATE_PATH = "/_dash-update-component"


def perf_options():
    """``tests.test_browser.chrome_options`` with the DevTools performance log on (merged
    into the logging prefs dash[testing] sets after us)."""
    base = chrome_options()

    class PerfLogOptions(type(base)):
        def set_capability(self, name, value):
            if name == "goog:loggingPrefs":
                value = {**value, "performance": "ALL"}
            super().set_capability(name, value)

    options = PerfLogOptions()
    for arg in base.arguments:
        options.add_argument(arg)
    if base.binary_location:
        options.binary_location = base.binary_location
    return options


@pytest.fixture
def dash_duo(request, dash_thread_server, tmp_path):
    """dash[testing]'s dash_duo, headless, with chromium's performance log."""
    from dash.testing.composite import DashComposite

    download = tmp_path / "download"
    download.mkdir()
    with DashComposite(server=dash_thread_server, browser="Chrome",
                       headless=os.environ.get("TICKSCOPE_HEADED") != "1", options=[perf_options()],
                       download_path=str(download), percy_run=False, percy_finalize=False,
                       wait_timeout=15) as dc:
        yield dc


@pytest.fixture
def live(runtime, tmp_path):
    """The embedded simulator with 1s bars, 250 ms updates."""
    return runtime("--data-dir", str(tmp_path / "data"), "--bar", "1s", interval_ms=250)


class Responses:
    """``/_dash-update-component`` responses finished since the last :meth:`take`."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.meta: dict[str, dict] = {}

    def take(self) -> list[dict]:
        out = []
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            rid = params.get("requestId")
            if msg.get("method") == "Network.responseReceived":
                headers = {k.lower(): v for k, v in (params["response"].get("headers") or {}).items()}
                self.meta[rid] = {"url": params["response"].get("url", ""),
                                  "encoding": headers.get("content-encoding", "")}
            elif msg.get("method") == "Network.loadingFinished" and UPDATE_PATH in self.meta.get(rid, {}).get("url", ""):
                body = self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": rid})["body"]
                out.append({**self.meta[rid], "wire": params["encodedDataLength"],
                            "response": json.loads(body).get("response", {})})
        return out


def full_figure(value) -> bool:
    return isinstance(value, dict) and "data" in value and "layout" in value


def candle_figures(responses: list[dict], symbol: str) -> list[dict]:
    """The full candle figures of ``symbol`` among ``responses``."""
    figs = [r["response"].get(ids.CANDLES, {}).get("figure") for r in responses]
    return [f for f in figs if full_figure(f) and symbol in f["layout"]["title"]["text"]]


def test_symbol_switch_when_timer_ticks_during_the_draw_then_exactly_one_full_candle_figure(live, dash_duo):
    dash_duo.start_server(live.app, port=free_port())
    wait_candles(dash_duo, "BTCUSDT")
    log = Responses(dash_duo.driver)
    for symbol in ("ETHUSDT", "SOLUSDT", "BTCUSDT"):
        time.sleep(1.0)
        log.take()
        dash_duo.select_dcc_dropdown(f"#{ids.SYMBOL}", value=symbol)
        wait_candles(dash_duo, symbol)
        wait_depth(dash_duo, symbol)
        time.sleep(1.5)  # ticks after the draw: patches only
        seen = log.take()
        assert len(seen) >= 4, "the live update stopped after the switch"
        fulls = [r for r in seen if full_figure(r["response"].get(ids.CANDLES, {}).get("figure"))]
        assert len(fulls) == 1, [list(r["response"]) for r in seen]  # one full figure, no repeat
        assert len(candle_figures(fulls, symbol)) == 1  # ... and it is the new symbol's
    assert dash_duo.get_logs() == []


def test_steady_updates_when_page_left_alone_then_compressed_small_and_depth_patched(live, dash_duo):
    dash_duo.start_server(live.app, port=free_port())
    wait_candles(dash_duo, "BTCUSDT")
    wait_depth(dash_duo, "BTCUSDT")
    log = Responses(dash_duo.driver)
    time.sleep(1.0)
    log.take()
    time.sleep(5.0)
    steady = log.take()
    assert len(steady) >= 4  # 4 a second when idle; fewer on a loaded machine
    assert {r["encoding"] for r in steady} <= {"gzip", "br", "zstd"} and all(r["encoding"] for r in steady)
    for r in steady:
        assert not full_figure(r["response"].get(ids.DEPTH, {}).get("figure"))  # a Patch, or not sent
        assert not full_figure(r["response"].get(ids.CANDLES, {}).get("figure"))
    assert sorted(r["wire"] for r in steady)[len(steady) // 2] < 4000  # bytes on the wire, median
    assert any(ids.DEPTH in r["response"] for r in steady)  # the simulated book moves
    assert dash_duo.get_logs() == []
