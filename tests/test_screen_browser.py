"""Browser tests of an honest screen and a chart that behaves (headless chromium, dash_duo).

The stack is what ``tickscope`` runs (``dashboard.runtime.start_runtime``): the embedded
simulator or a replay of a recorded Binance session from ../shared/data; fixtures and
helpers come from ``tests/test_browser.py``.
"""

from __future__ import annotations

import csv
import io
import socket
import threading
import time

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from dashboard import ids
from tests.test_browser import (REPLAY_FILE, dash_duo, dropdown_options, export_csv, graph,  # noqa: F401
                                runtime, status_text, wait_candles, wait_until)

pytestmark = pytest.mark.browser


# -- the source badge -----------------------------------------------------------------------


def test_badge_when_simulator_says_simulated(runtime, dash_duo):
    rt = runtime("--bar", "1s")
    dash_duo.start_server(rt.app)
    text = wait_until(lambda: "SIMULATED" in status_text(dash_duo) and status_text(dash_duo),
                      message="SIMULATED in the status line")
    assert "binance" not in text


def test_badge_when_replay_says_replay_speed_clock_and_progress(runtime, dash_duo, hft_data):
    rt = runtime("--replay", str(hft_data.joinpath(*REPLAY_FILE)), "--speed", "0", "--bar", "5s")
    assert rt.exchange.finished.wait(60), "the replay did not finish"
    dash_duo.start_server(rt.app)
    text = wait_until(lambda: "REPLAY x max" in status_text(dash_duo) and status_text(dash_duo),
                      message="REPLAY in the status line")
    assert "2024-08-0" in text and "100%" in text


# -- server unreachable ---------------------------------------------------------------------


class _OneShotHandler(WSGIRequestHandler):
    # HTTP/1.0: every request on its own connection, so a stopped server answers nothing.
    protocol_version = "HTTP/1.0"


class StoppableServer:
    """The Dash app served on a fixed loopback port in a thread; stop and start again."""

    def __init__(self, app) -> None:
        self.app = app
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._srv = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._srv = make_server("127.0.0.1", self.port, self.app.server, threaded=True,
                                request_handler=_OneShotHandler)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None


def banner_shown(dash_duo) -> bool:
    return dash_duo.driver.execute_script(
        "var b = document.getElementById('server-banner');"
        "return !!(b && document.body.classList.contains('server-down')"
        "          && getComputedStyle(b).display !== 'none' && b.textContent.indexOf('server unreachable') >= 0);")


def test_server_unreachable_shown_within_5_s_and_gone_after_restart(runtime, dash_duo):
    rt = runtime("--bar", "1s")
    server = StoppableServer(rt.app)
    server.start()
    try:
        dash_duo.driver.get(server.url)
        wait_candles(dash_duo, "BTCUSDT")
        time.sleep(1.5)
        assert not banner_shown(dash_duo)
        server.stop()
        t0 = time.monotonic()
        wait_until(lambda: banner_shown(dash_duo), timeout=5.0, message="server unreachable banner")
        assert time.monotonic() - t0 <= 5.0
        dot = dash_duo.driver.execute_script(
            "return getComputedStyle(document.querySelector('#status .dot')).backgroundColor;")
        assert dot in ("rgb(125, 134, 147)",), dot  # --ts-muted: grey
        body = dash_duo.driver.find_element("tag name", "body").text
        assert "server unreachable" in body
        server.start()
        wait_until(lambda: not banner_shown(dash_duo), timeout=10.0, message="the banner to go")
        assert "server unreachable" not in dash_duo.driver.find_element("tag name", "body").text
    finally:
        server.stop()


# -- a stale book -----------------------------------------------------------------------------


def depth_title(dash_duo) -> str:
    return ((graph(dash_duo, ids.DEPTH) or {}).get("layout") or {}).get("title") or ""


def test_depth_when_feed_goes_down_marked_stale_and_status_in_words(runtime, dash_duo):
    rt = runtime("--bar", "1s")
    dash_duo.start_server(rt.app)
    wait_until(lambda: "BTCUSDT" in depth_title(dash_duo) and "stale" not in depth_title(dash_duo),
               message="a current BTCUSDT book")
    rt.exchange.stop()  # the exchange goes away: the feed retries, the book is no longer current
    title = wait_until(lambda: "stale" in depth_title(dash_duo) and depth_title(dash_duo), timeout=20,
                       message="the stale mark on the depth chart")
    assert "stale: feed" in title
    mid_line = dash_duo.driver.execute_script(
        "var gd = document.querySelector('#depth .js-plotly-plot');"
        "return (gd.layout.annotations || []).map(function (a) { return a.text; }).join('|');")
    assert "mid " in mid_line and "stale: feed" in mid_line
    text = wait_until(lambda: "retrying in" in status_text(dash_duo) and status_text(dash_duo), timeout=20,
                      message="the retry in words")
    assert "Errno" not in text and "Error" not in text


# -- the chart ----------------------------------------------------------------------------------


def played_replay(runtime, hft_data, *args):
    """A recorded Binance spot session replayed at full speed and played out."""
    rt = runtime("--replay", str(hft_data.joinpath(*REPLAY_FILE)), "--speed", "0", *args)
    assert rt.exchange.finished.wait(60), "the replay did not finish"
    assert rt.engine.wait_idle(60, quiet_s=0.5)
    return rt


def candle_axes(dash_duo) -> dict:
    return dash_duo.driver.execute_script(
        "var gd = document.querySelector('#candles .js-plotly-plot'); var L = gd._fullLayout;"
        "return {x: L.xaxis.range, y: L.yaxis.range, y2: L.yaxis2.range,"
        "        lows: gd.data[0].low, highs: gd.data[0].high, vols: gd.data[2].y, xs: gd.data[0].x};")


def test_chart_when_zoomed_in_time_price_and_volume_axes_fit_the_bars_in_view(runtime, dash_duo, hft_data):
    rt = played_replay(runtime, hft_data, "--bar", "5s")
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "5s", min_closed=40)
    full = candle_axes(dash_duo)
    first, last = 5, 14  # ten bars early in the session
    dash_duo.driver.execute_script(
        "var gd = document.querySelector('#candles .js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.range': [arguments[0], arguments[1]], 'xaxis2.range': [arguments[0], arguments[1]]});",
        full["xs"][first], full["xs"][last])
    lo, hi = min(full["lows"][first:last + 1]), max(full["highs"][first:last + 1])
    vmax = max(full["vols"][first:last + 1])

    def fitted():
        a = candle_axes(dash_duo)
        y0, y1 = a["y"]
        return a if y0 <= lo and y1 >= hi and (y1 - y0) <= (hi - lo) * 1.2 + 1e-9 else None

    axes = wait_until(fitted, timeout=10, message="the price axis fitted to the bars in view")
    assert (axes["y"][1] - axes["y"][0]) < (full["y"][1] - full["y"][0])  # zoomed in, not the full range
    assert axes["y2"][1] == pytest.approx(vmax * 1.05, rel=1e-6)
    # a pan to other bars refits
    dash_duo.driver.execute_script(
        "var gd = document.querySelector('#candles .js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.range': [arguments[0], arguments[1]], 'xaxis2.range': [arguments[0], arguments[1]]});",
        full["xs"][30], full["xs"][39])
    lo2, hi2 = min(full["lows"][30:40]), max(full["highs"][30:40])
    wait_until(lambda: (lambda a: a["y"][0] <= lo2 and a["y"][1] >= hi2
                        and a["y"][1] - a["y"][0] <= (hi2 - lo2) * 1.2 + 1e-9)(candle_axes(dash_duo)),
               timeout=10, message="the price axis refitted after a pan")


def test_remove_when_clicked_unsubscribes_the_selected_symbol(runtime, dash_duo):
    rt = runtime("--bar", "1s")
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "BTCUSDT")
    dash_duo.select_dcc_dropdown(f"#{ids.SYMBOL}", value="ETHUSDT")
    wait_candles(dash_duo, "ETHUSDT")
    dash_duo.find_element(f"#{ids.UNSUBSCRIBE_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids.SUBSCRIBE_MESSAGE}", "removed ETHUSDT", timeout=10)
    assert rt.engine.symbols() == ["BTCUSDT", "SOLUSDT"]
    wait_candles(dash_duo, "BTCUSDT")  # the selection moved to a symbol still subscribed
    assert dropdown_options(dash_duo, f"#{ids.SYMBOL}") == ["BTCUSDT", "SOLUSDT"]


def choose_zone(dash_duo, name: str) -> None:
    """Type ``name`` in the time-zone dropdown's search and pick it, as a user does."""
    from selenium.webdriver.common.keys import Keys

    dash_duo.find_element(f"#{ids.TIMEZONE}").click()
    dash_duo.find_element(".dash-dropdown-options")
    dash_duo.find_element("input.dash-dropdown-search").send_keys(name)

    def option():
        for o in dash_duo.driver.find_elements("css selector", ".dash-dropdown-options .dash-dropdown-option"):
            if o.text.strip() == name or (name == "browser" and o.text.startswith("browser")):
                return o
        return None

    wait_until(option, message=f"the option {name}").click()
    if dash_duo.driver.find_elements("css selector", ".dash-dropdown-options"):
        dash_duo.driver.switch_to.active_element.send_keys(Keys.ESCAPE)


def axis_labels(dash_duo) -> list[str]:
    return dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#candles .xtick text, #candles .x2tick text')).map(function (t) {"
        "  return t.textContent; });")


def test_time_zone_when_switched_axis_and_hover_move_export_stays_utc(runtime, dash_duo, hft_data):
    rt = played_replay(runtime, hft_data, "--bar", "5s")
    dash_duo.start_server(rt.app)
    utc = wait_candles(dash_duo, "times UTC", min_closed=40)
    first_utc = utc["data"][0]["x"][0]
    labels_utc = wait_until(lambda: axis_labels(dash_duo), message="axis labels")
    choose_zone(dash_duo, "Asia/Tokyo")
    tokyo = wait_candles(dash_duo, "times Asia/Tokyo", min_closed=40)
    first_tokyo = tokyo["data"][0]["x"][0]
    import pandas as pd

    assert pd.Timestamp(first_tokyo) - pd.Timestamp(first_utc) == pd.Timedelta(hours=9)  # JST, no DST
    wait_until(lambda: axis_labels(dash_duo) != labels_utc, message="the axis labels to move")
    # the export of the bars in view stays UTC
    _, text = export_csv(dash_duo)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["start"] == pd.Timestamp(first_utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert len(rows) == len(tokyo["data"][0]["x"]) + 1  # every closed bar drawn and the one in progress
    # the browser's own zone is offered and resolves (headless chromium reports one)
    choose_zone(dash_duo, "browser")
    wait_candles(dash_duo, "times ", min_closed=40)


def test_tick_bars_axis_labelled_with_bar_start_times_evenly_spaced(runtime, dash_duo, hft_data):
    import re

    rt = played_replay(runtime, hft_data, "--bar", "100t")
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "100t", min_closed=40)
    labels = wait_until(lambda: (lambda ls: ls if ls and all(re.match(r"\d\d:\d\d:\d\d", t) for t in ls)
                                 else None)(axis_labels(dash_duo)), message="time labels on the tick-bar axis")
    assert len(labels) >= 4
    ticks = dash_duo.driver.execute_script(
        "var ax = document.querySelector('#candles .js-plotly-plot').layout.xaxis2;"
        "return {vals: ax.tickvals, text: ax.ticktext};")
    steps = {b - a for a, b in zip(ticks["vals"], ticks["vals"][1:])}
    assert len(steps) == 1  # evenly spaced bar numbers
    # each label is the start time of the bar at that position, as the engine has it
    import pandas as pd

    series = rt.engine.bar_series("BTCUSDT", "100t", 0)  # x = bar number = first_index + row
    for val, text in zip(ticks["vals"], ticks["text"]):
        start = pd.Timestamp(series.closed[val - series.first_index].start_ns, unit="ns")
        assert text.split("<br>")[0] == start.strftime("%H:%M:%S")
