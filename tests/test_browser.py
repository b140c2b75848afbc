"""Browser tests: the real stack in headless chromium through dash_duo.

Every test runs what ``tickscope`` runs (``dashboard.runtime.start_runtime``): the embedded
exchange on loopback -- the seeded market simulator, or a recorded Binance session replayed
at full speed -- the FeedClient, the Engine and the Dash app, served by ``dash_duo``. Files
go under pytest's ``tmp_path`` (``--data-dir``), never the user's data dir.

Determinism: a replay at ``--speed 0`` is played out before the page loads; its bars no
longer change (the engine clock follows exchange time, which stopped), so exports are
compared with the engine's bars exactly. On the live simulator bars move with the wall
clock, so only closed bars are compared, and only bars that closed before the browser read
them (a closed bar never changes: the simulator's trades arrive in order).

Chromium runs headless with the flags a root container needs; ``dash_duo`` is overridden
here (same name, same composite as dash[testing]'s) so no conftest hook or pytest option
is required. ``TICKSCOPE_HEADED=1`` shows the browser instead.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from dashboard import candles, figures, ids
from dashboard.callbacks import DEPTH_LEVELS
from dashboard.export import export_filename
from feed.core.csvformat import bars_to_csv

pytestmark = pytest.mark.browser

CHROME_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,900",
)
REPLAY_FILE = ("raw", "spot", "btcusdt_20240808.gz")  # 23:54-00:00 UTC, 9,757 BTCUSDT trades
SIM_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # what the embedded simulator starts with


# -- the runtime --------------------------------------------------------------------------------


@pytest.fixture
def runtime(runtime, tmp_path):
    """Return ``start(*argv, **options)``: the ``runtime`` fixture (conftest) with
    ``--data-dir`` under ``tmp_path`` and the default 250 ms refresh."""

    def start(*argv: str, **options):
        return runtime("--data-dir", str(tmp_path / "data"), *argv, **{"interval_ms": 250, **options})

    return start


@pytest.fixture
def live(runtime):
    """The embedded simulator (BTCUSDT, ETHUSDT, SOLUSDT on the wall clock), 1s bars first."""
    return runtime("--bar", "1s")


@pytest.fixture
def replay(runtime, hft_data):
    """A recorded Binance spot session replayed at full speed and played out, 5s bars first."""
    rt = runtime("--replay", str(hft_data.joinpath(*REPLAY_FILE)), "--speed", "0", "--bar", "5s")
    assert rt.exchange.finished.wait(60), "the replay did not finish"
    assert rt.engine.wait_idle(60, quiet_s=0.5)
    return rt


# -- the browser ---------------------------------------------------------------------------------


def chrome_options():
    """Return selenium Chrome options for headless chromium as root in a container."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    if "DASH_TEST_CHROMEPATH" not in os.environ:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary:
            options.binary_location = binary
    return options


@pytest.fixture
def dash_duo(request, dash_thread_server, tmp_path):
    """dash[testing]'s dash_duo, always headless, with the container's chromium flags."""
    from dash.testing.composite import DashComposite

    headed = os.environ.get("TICKSCOPE_HEADED") == "1"
    download = tmp_path / "download"
    download.mkdir()
    with DashComposite(
        server=dash_thread_server,
        browser="Chrome",
        headless=not headed,
        options=[chrome_options()],
        download_path=str(download),
        percy_run=False,
        percy_finalize=False,
        wait_timeout=15,
    ) as dc:
        yield dc


# -- helpers ------------------------------------------------------------------------------------


def graph(dash_duo, graph_id: str) -> dict | None:
    """Return ``{"data": [...], "layout": {...}}`` of a dcc.Graph as plotly holds it."""
    return dash_duo.driver.execute_script(
        "var gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "if (!gd || !gd.data || !gd._fullLayout) { return null; }"
        "return {data: gd.data.map(function (t) { return {type: t.type, name: t.name, x: t.x, y: t.y,"
        "            open: t.open, high: t.high, low: t.low, close: t.close, text: t.text}; }),"
        "        layout: {title: gd.layout.title && gd.layout.title.text, uirevision: gd.layout.uirevision,"
        "                 annotations: (gd.layout.annotations || []).map(function (a) { return a.text; }),"
        "                 xaxis: {type: gd._fullLayout.xaxis.type,"
        "                 range: gd._fullLayout.xaxis.range, autorange: gd._fullLayout.xaxis.autorange}}};",
        f"#{graph_id}",
    )


def wait_until(predicate, timeout=15.0, message="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the DOM may be mid-render
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message} (last: {last!r})")


def candles_title(dash_duo) -> str:
    return ((graph(dash_duo, ids.CANDLES) or {}).get("layout") or {}).get("title") or ""


def wait_candles(dash_duo, text: str, min_closed: int = 1, timeout: float = 15.0) -> dict:
    """Wait until the candle chart's title contains ``text`` and it holds closed bars."""
    def ready():
        g = graph(dash_duo, ids.CANDLES)
        if (g and text in (g["layout"]["title"] or "") and len(g["data"]) == candles.TRACE_VENDOR + 1
                and len(g["data"][candles.TRACE_CANDLES]["x"]) >= min_closed):
            return g
        return None
    return wait_until(ready, timeout, message=f"candles showing {text!r} with {min_closed}+ closed bars")


def wait_depth(dash_duo, symbol: str) -> dict:
    """Wait until the depth chart shows ``symbol`` with levels on both sides."""
    def ready():
        d = graph(dash_duo, ids.DEPTH)
        if d and symbol in (d["layout"]["title"] or "") and len(d["data"]) == 2 \
                and d["data"][0]["x"] and d["data"][1]["x"]:
            return d
        return None
    return wait_until(ready, message=f"{symbol} depth")


def status_text(dash_duo) -> str:
    """Return the status line's text, read atomically (it re-renders every tick)."""
    return dash_duo.driver.execute_script(
        "var e = document.getElementById(arguments[0]); return e ? e.textContent : '';", ids.STATUS)


def badge(dash_duo) -> dict | None:
    """Return the kline badge's ``{text, cls, title}``, read atomically, or None."""
    return dash_duo.driver.execute_script(
        "var b = document.querySelector(arguments[0]);"
        "return b ? {text: b.textContent, cls: b.className, title: b.title} : null;", f"#{ids.STATUS} .kline-badge")


def text_by_id(dash_duo, element_id: str) -> str:
    return dash_duo.driver.execute_script(
        "var e = document.getElementById(arguments[0]); return e ? e.textContent : '';", element_id)


def status_dot(dash_duo) -> str:
    """Return the status dot's class, read atomically."""
    return dash_duo.driver.execute_script(
        "var d = document.querySelector(arguments[0]); return d ? d.className : '';", f"#{ids.STATUS} .dot")


def wait_status(dash_duo, text: str, timeout: float = 15.0) -> str:
    return wait_until(lambda: (lambda t: t if text in t else None)(status_text(dash_duo)), timeout,
                      message=f"status line showing {text!r}")


def dropdown_options(dash_duo, selector: str) -> list[str]:
    """Open a dcc.Dropdown like a user, read its options, close it with Escape."""
    from selenium.webdriver.common.keys import Keys

    dash_duo.find_element(selector).click()
    menu = dash_duo.find_element(".dash-dropdown-options")
    texts = [o.text for o in menu.find_elements("css selector", ".dash-dropdown-option")]
    dash_duo.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_until(lambda: not dash_duo.driver.find_elements("css selector", ".dash-dropdown-options"),
               message="the dropdown to close")
    return texts


def label_inputs_disabled(dash_duo) -> list[bool]:
    return dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (i) { return i.disabled; });",
        f"#{ids.BAR_LABEL} input")


def x_range(dash_duo) -> list | None:
    g = graph(dash_duo, ids.CANDLES)
    return g["layout"]["xaxis"]["range"] if g and g["layout"]["xaxis"]["autorange"] is False else None


def plot_area(dash_duo):
    """Return the price pane's drag surface (where a user drags to pan or zoom)."""
    return dash_duo.find_element(f"#{ids.CANDLES} .draglayer .xy .nsewdrag")


def pan_candles(dash_duo, dx: int) -> list:
    """Drag the candle chart by ``dx`` pixels like a user (the figure's drag mode is pan).

    A real GUI edit, unlike a scripted ``Plotly.relayout``: plotly's ``uirevision`` keeps
    only what the user changed. Returns the visible x-range after the drag.
    """
    from selenium.webdriver.common.action_chains import ActionChains

    (ActionChains(dash_duo.driver).move_to_element(plot_area(dash_duo)).click_and_hold()
     .move_by_offset(dx // 2, 0).move_by_offset(dx - dx // 2, 0).release().perform())
    return wait_until(lambda: x_range(dash_duo), message="a panned view")


def zoom_candles(dash_duo, left: float, right: float) -> list:
    """Pick plotly's Zoom tool and drag a box across the price pane from ``left`` to
    ``right`` (fractions of its width), as a user zooms into a stretch of time. The drag
    is horizontal, so plotly zooms x only. Returns the visible x-range after it."""
    from selenium.webdriver.common.action_chains import ActionChains

    area = plot_area(dash_duo)
    ActionChains(dash_duo.driver).move_to_element(area).pause(0.2).perform()  # the mode bar shows on hover
    dash_duo.find_element(f"#{ids.CANDLES} .modebar-btn[data-val='zoom']").click()
    width = area.size["width"]
    x0, x1 = int(width * (left - 0.5)), int(width * (right - 0.5))
    # from the centre (what move_to_element_with_offset measures from differs by version)
    (ActionChains(dash_duo.driver).move_to_element(area).move_by_offset(x0, 0).click_and_hold()
     .move_by_offset((x1 - x0) // 2, 0).move_by_offset(x1 - x0 - (x1 - x0) // 2, 0).release().perform())
    return wait_until(lambda: x_range(dash_duo), message="a zoomed view")


def set_input(dash_duo, selector: str, text: str) -> None:
    elem = dash_duo.find_element(selector)
    dash_duo.clear_input(elem)
    elem.send_keys(text)


def export_csv(dash_duo, timeout: float = 15.0) -> tuple[str, str]:
    """Click Export CSV; return the name and text of the file the browser downloads."""
    folder = Path(dash_duo.download_path)
    before = set(folder.glob("*.csv"))
    dash_duo.find_element(f"#{ids.EXPORT_BUTTON}").click()
    path = wait_until(lambda: next((p for p in folder.glob("*.csv") if p not in before), None), timeout,
                      "a downloaded CSV")
    text = wait_until(lambda: (lambda t: t if t.endswith("\n") else None)(path.read_text()), 5.0,
                      "the whole CSV written")
    return path.name, text


def axis_text(ts_ns: int) -> str:
    """Return UTC ns as the candle chart writes times ("2024-08-08 23:55:00.000")."""
    return pd.Timestamp(ts_ns, unit="ns").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def axis_ns(value: str) -> int:
    """Return a plotly date-axis value (UTC, no zone) as UTC ns."""
    return pd.Timestamp(value).value


def expected_csv(frame: pd.DataFrame) -> str:
    return bars_to_csv(frame, price_decimals=frame.attrs["price_decimals"],
                       size_decimals=frame.attrs["size_decimals"])


def closed_bars_by_x(frame: pd.DataFrame, spec: str) -> dict:
    """Return {x value: (open, high, low, close)} of the closed bars of an engine frame."""
    closed = frame[frame["closed"]]
    return dict(zip(figures.x_values(closed, spec),
                    zip(closed["open"], closed["high"], closed["low"], closed["close"])))


# -- live simulator -----------------------------------------------------------------------------


def test_load_when_live_simulator_then_charts_hold_the_engines_bars_and_console_is_clean(live, dash_duo):
    dash_duo.start_server(live.app)
    g = wait_candles(dash_duo, "BTCUSDT", min_closed=2)
    assert dash_duo.driver.title == "tickscope"
    assert g["layout"]["title"].endswith("BTCUSDT</b> · 1s · times UTC") and g["layout"]["uirevision"] == "BTCUSDT|1s"
    assert g["layout"]["xaxis"]["type"] == "date"
    # every closed candle drawn is the engine's closed bar at that time (read after the DOM),
    # unless a trade more than the close grace late revised one since (a new generation)
    drawn = g["data"][candles.TRACE_CANDLES]
    engine_bars = closed_bars_by_x(live.engine.bars_frame("BTCUSDT", "1s"), "1s")
    differ = [x for x, o, h, lo, c in zip(drawn["x"], drawn["open"], drawn["high"], drawn["low"], drawn["close"])
              if engine_bars.get(x) != (o, h, lo, c)]
    assert not differ or live.engine.bar_series("BTCUSDT", "1s", 2**62).generation > 0, differ
    assert drawn["x"] == sorted(drawn["x"])
    assert "change" in drawn["text"][-1] and "amplitude" in drawn["text"][-1]
    live_x = g["data"][candles.TRACE_LIVE]["x"]
    assert len(live_x) <= 1 and all(x > drawn["x"][-1] for x in live_x)

    depth = wait_depth(dash_duo, "BTCUSDT")
    bids, asks = depth["data"]
    assert max(bids["x"]) < min(asks["x"])  # a synced book: not crossed
    assert 0 < len(bids["x"]) <= DEPTH_LEVELS and 0 < len(asks["x"]) <= DEPTH_LEVELS
    assert any(a.startswith("mid ") and "spread" in a and "bps" in a for a in depth["layout"]["annotations"])

    wait_status(dash_duo, "live")
    assert "msg/s" in status_text(dash_duo) and status_dot(dash_duo) == "dot dot-green"
    time.sleep(1.0)  # a few ticks of patches
    assert dash_duo.get_logs() == []


def test_live_when_bars_close_while_panned_then_view_kept_and_export_equals_engine_closed_bars(live, dash_duo):
    dash_duo.start_server(live.app)
    g = wait_candles(dash_duo, "BTCUSDT", min_closed=6)
    n0 = len(g["data"][candles.TRACE_CANDLES]["x"])
    # look back about four bars (a young series spans MIN_SLOTS bars, ~24 px each here):
    # the newest bars leave the view, and those left in it have closed for good
    view = pan_candles(dash_duo, 100)
    grown = wait_until(lambda: (lambda d: d if len(d["data"][candles.TRACE_CANDLES]["x"]) >= n0 + 2 else None)(
        graph(dash_duo, ids.CANDLES)), message="new 1s bars")
    assert grown["layout"]["xaxis"]["autorange"] is False  # patches kept the user's view
    assert grown["layout"]["xaxis"]["range"] == view
    assert grown["data"][candles.TRACE_LIVE]["x"], "the in-progress bar is drawn in its own trace"

    name, text = export_csv(dash_duo)
    # The bars in view closed before the export: they are final, so the file is exactly
    # the engine's bars whose start is in the view.
    frame = live.engine.bars_frame("BTCUSDT", "1s")
    lo, hi = axis_ns(view[0]), axis_ns(view[1])
    expected = frame[(frame["start"] >= lo) & (frame["start"] <= hi)]
    assert len(expected) >= 2 and expected["closed"].all()
    assert text == expected_csv(expected)
    assert name == export_filename("BTCUSDT", "1s", expected)
    assert dash_duo.get_logs() == []


def test_switch_when_symbol_or_bar_type_changes_then_chart_redraws_with_new_uirevision(live, dash_duo):
    dash_duo.start_server(live.app)
    btc = wait_candles(dash_duo, "BTCUSDT")
    dash_duo.select_dcc_dropdown(f"#{ids.SYMBOL}", value="ETHUSDT")
    eth = wait_candles(dash_duo, "ETHUSDT")
    assert eth["layout"]["uirevision"] == "ETHUSDT|1s" != btc["layout"]["uirevision"]
    assert max(eth["data"][candles.TRACE_CANDLES]["high"]) < 10_000 < min(btc["data"][candles.TRACE_CANDLES]["low"])
    depth = wait_depth(dash_duo, "ETHUSDT")
    assert depth["data"][0]["x"][-1] < 10_000

    # tick bars: a bar-number axis, and the label toggle has no interval to label
    dash_duo.select_dcc_dropdown(f"#{ids.BAR_KIND}", value="tick")
    dash_duo.wait_for_text_to_equal(f"#{ids.BAR_SIZE}", "100t")
    dash_duo.select_dcc_dropdown(f"#{ids.BAR_SIZE}", value="10t")
    g = wait_candles(dash_duo, "10t", min_closed=2)
    assert g["layout"]["xaxis"]["type"] == "linear" and g["layout"]["uirevision"] == "ETHUSDT|10t"
    xs = g["data"][candles.TRACE_CANDLES]["x"]
    assert xs == list(range(xs[0], xs[0] + len(xs)))
    assert xs[-1] < live.engine.bar_series("ETHUSDT", "10t").n_closed
    assert label_inputs_disabled(dash_duo) == [True, True]

    set_input(dash_duo, f"#{ids.BAR_CUSTOM}", "2s")
    dash_duo.find_element(f"#{ids.BAR_CUSTOM_BUTTON}").click()
    g = wait_candles(dash_duo, "· 2s")
    assert g["layout"]["xaxis"]["type"] == "date" and g["layout"]["uirevision"] == "ETHUSDT|2s"
    dash_duo.wait_for_text_to_equal(f"#{ids.BAR_SIZE}", "2s")
    assert dash_duo.find_element(f"#{ids.BAR_KIND}").text.strip() == "time"
    assert label_inputs_disabled(dash_duo) == [False, False]

    set_input(dash_duo, f"#{ids.BAR_CUSTOM}", "7m")
    dash_duo.find_element(f"#{ids.BAR_CUSTOM_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids.BAR_MESSAGE}", "divide 60 evenly")
    time.sleep(0.6)
    g = graph(dash_duo, ids.CANDLES)  # nothing else changed
    assert "· 2s" in g["layout"]["title"] and g["layout"]["uirevision"] == "ETHUSDT|2s"
    assert dash_duo.find_element(f"#{ids.BAR_SIZE}").text.strip() == "2s"
    assert dash_duo.get_logs() == []


def test_subscribe_when_symbol_valid_then_added_and_filled_else_inline_message_only(live, dash_duo):
    dash_duo.start_server(live.app)
    wait_candles(dash_duo, "BTCUSDT")
    assert dropdown_options(dash_duo, f"#{ids.SYMBOL}") == SIM_SYMBOLS

    set_input(dash_duo, f"#{ids.SUBSCRIBE_INPUT}", "bad symbol!")
    dash_duo.find_element(f"#{ids.SUBSCRIBE_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids.SUBSCRIBE_MESSAGE}", "is not a Binance spot symbol")
    time.sleep(0.6)
    assert live.engine.symbols() == SIM_SYMBOLS  # nothing else changed
    assert dropdown_options(dash_duo, f"#{ids.SYMBOL}") == SIM_SYMBOLS
    assert dash_duo.find_element(f"#{ids.SYMBOL}").text.strip() == "BTCUSDT"
    assert "BTCUSDT" in candles_title(dash_duo)

    # any well-formed symbol: the simulator starts a market for it on subscribe
    set_input(dash_duo, f"#{ids.SUBSCRIBE_INPUT}", "adausdt")
    dash_duo.find_element(f"#{ids.SUBSCRIBE_BUTTON}").click()
    dash_duo.wait_for_text_to_equal(f"#{ids.SUBSCRIBE_MESSAGE}", "")
    assert dash_duo.find_element(f"#{ids.SYMBOL}").text.strip() == "ADAUSDT"
    assert live.engine.symbols() == SIM_SYMBOLS + ["ADAUSDT"]
    g = wait_candles(dash_duo, "ADAUSDT", timeout=20)
    assert g["layout"]["uirevision"] == "ADAUSDT|1s"
    wait_depth(dash_duo, "ADAUSDT")
    assert dropdown_options(dash_duo, f"#{ids.SYMBOL}") == SIM_SYMBOLS + ["ADAUSDT"]
    assert dash_duo.get_logs() == []


def test_gaps_when_exchange_skips_trade_ids_then_marked_on_chart_and_counted_in_status(runtime, dash_duo):
    rt = runtime("--bar", "1s", "--faults", "skip_ids=3,skip_every=40,only=btcusdt")
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "BTCUSDT")

    def marks_drawn():
        g = graph(dash_duo, ids.CANDLES)
        gaps = g["data"][candles.TRACE_GAPS]
        return gaps if gaps["x"] else None

    gaps = wait_until(marks_drawn, message="a gap mark on the candle chart")
    assert gaps["name"] == "trade-id gaps" and gaps["y"][:3] == [0, 1, None]
    drawn_x, texts = gaps["x"][0::3], gaps["text"][0::3]
    assert all(t == f"3 trades missing<br>{x}" for x, t in zip(drawn_x, texts))
    # each line stands at the time of the first trade after a gap the engine saw
    engine_marks = rt.engine.gap_marks("BTCUSDT")  # read after the DOM: holds every mark drawn
    assert set(drawn_x) <= {axis_text(ts) for ts, missing in engine_marks if missing == 3}
    drawn_candles = graph(dash_duo, ids.CANDLES)["data"][candles.TRACE_CANDLES]["x"]
    assert all(drawn_candles[0] <= x for x in drawn_x)
    status = wait_status(dash_duo, "gaps")
    assert int(status.split("gaps")[1].split()[0].replace(",", "")) % 3 == 0
    assert dash_duo.get_logs() == []


def test_subscribe_when_vendor_refuses_the_symbol_then_its_error_inline_and_it_leaves_the_dropdown(live, dash_duo):
    dash_duo.start_server(live.app)
    wait_candles(dash_duo, "BTCUSDT")
    # a well-formed Binance symbol the simulator has no market for (no TRY quote): the
    # exchange answers the SUBSCRIBE with an error naming it, a moment later
    set_input(dash_duo, f"#{ids.SUBSCRIBE_INPUT}", "abctry")
    dash_duo.find_element(f"#{ids.SUBSCRIBE_BUTTON}").click()
    message = wait_until(lambda: (lambda t: t if "ABCTRY" in t else None)(text_by_id(dash_duo, ids.SUBSCRIBE_MESSAGE)),
                         message="the vendor's refusal next to the subscribe box")
    # the refusal comes back either as the SUBSCRIBE error or as the depth snapshot's HTTP 400,
    # whichever arrives first; both name the symbol
    assert ("unknown symbol 'abctry'" in message) or message.startswith("ABCTRY: depth snapshot failed")
    assert message in live.engine.status().errors
    # the engine unsubscribes a symbol the vendor refused: the page drops it from the
    # symbols and goes back to the one selected before
    dash_duo.wait_for_text_to_equal(f"#{ids.SYMBOL}", "BTCUSDT")
    assert "ABCTRY" not in live.engine.symbols()
    wait_candles(dash_duo, "BTCUSDT")
    assert dropdown_options(dash_duo, f"#{ids.SYMBOL}") == SIM_SYMBOLS
    assert text_by_id(dash_duo, ids.SUBSCRIBE_MESSAGE) == message  # stays until the next subscribe
    assert dash_duo.get_logs() == []


def test_kline_check_when_exchange_sends_a_wrong_candle_then_red_badge_names_the_field(runtime, dash_duo):
    rt = runtime("--kline-check", "--kline-interval", "1s", "--symbols", "BTCUSDT,ETHUSDT", "--sim-rate", "4",
                 "--faults", "kline_bad_every=3,only=btcusdt", "--bar", "1s")
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "BTCUSDT")
    b = wait_until(lambda: (lambda v: v if v and "✗" in v["text"] else None)(badge(dash_duo)), 20,
                   "a red kline badge")
    assert b["cls"] == "kline-badge kline-bad" and b["text"].startswith("klines ✗ ")
    bad, checked = (int(x.replace(",", "")) for x in b["text"].removeprefix("klines ✗ ").split(" of "))
    assert 1 <= bad <= checked
    lines = b["title"].splitlines()
    assert lines[0].startswith("kline cross-check (1s): Binance's final candles")
    minutes = {m["minute"] for m in rt.engine.status().kline_check["BTCUSDT"]["mismatches"]}
    listed = [line for line in lines if " · " in line]
    assert listed and all(line.split(" · ")[0] in minutes and line.split(" · ")[1].startswith("volume: Binance ")
                          and " vs ours " in line for line in listed)
    assert lines[-1].startswith("skipped ") and lines[-1].endswith(
        "(intervals not fully watched: start, reconnect, trade gap)")
    # another symbol, no fault: green once a candle was compared
    dash_duo.select_dcc_dropdown(f"#{ids.SYMBOL}", value="ETHUSDT")
    b = wait_until(lambda: (lambda v: v if v and "✓" in v["text"] else None)(badge(dash_duo)), 15,
                   "a green kline badge for ETHUSDT")
    assert b["cls"] == "kline-badge kline-ok" and b["text"].endswith("(1s)")
    assert dash_duo.get_logs() == []


def test_status_when_feed_fails_then_red_vendor_named_and_whole_reason_in_banner(live, dash_duo):
    dash_duo.start_server(live.app)
    wait_status(dash_duo, "live")
    # The line is re-rendered whenever its text changes: read it through wait_until (a node
    # replaced between find and read is read again).
    wait_until(lambda: dash_duo.find_element(f"#{ids.STATUS} .source-badge").text == "SIMULATED",
               message="the SIMULATED badge, not 'binance'")
    assert text_by_id(dash_duo, ids.STATUS_BANNER) == ""
    assert not dash_duo.find_element(f"#{ids.STATUS_BANNER}").is_displayed()
    reason = ("HTTP 451: Binance refuses connections from your location (restricted region); try "
              "--binance-host data (market-data-only host), --market usdm, or a VPN or network "
              "in a permitted region")
    live.feed.fail(reason)  # what the engine does on a fatal vendor reply
    wait_status(dash_duo, "failed")
    wait_until(lambda: status_dot(dash_duo) == "dot dot-red", message="the red dot")
    banner = wait_until(lambda: text_by_id(dash_duo, ids.STATUS_BANNER), message="the banner")
    assert banner == "binance feed failed" + reason  # whole, not clipped
    assert dash_duo.find_element(f"#{ids.STATUS_BANNER}").is_displayed()
    assert dash_duo.get_logs() == []


def test_status_when_exchange_goes_away_then_amber_reconnecting_with_next_retry(live, dash_duo):
    dash_duo.start_server(live.app)
    wait_status(dash_duo, "live")
    live.exchange.stop()  # the vendor disappears: the feed retries with backoff
    wait_status(dash_duo, "reconnecting")
    text = wait_status(dash_duo, "retrying in")
    assert "cannot connect to the exchange" in text or "closed" in text  # why, in words
    assert status_dot(dash_duo) == "dot dot-amber"
    assert dash_duo.get_logs() == []


# -- a recorded session, played out (deterministic) ----------------------------------------------


def test_export_when_zoomed_with_mouse_on_replay_then_csv_holds_exactly_the_bars_in_view(replay, dash_duo):
    dash_duo.start_server(replay.app)
    wait_status(dash_duo, "replay-finished")
    g = wait_candles(dash_duo, "BTCUSDT</b> · 5s", min_closed=60)
    frame = replay.engine.bars_frame("BTCUSDT", "5s")
    assert len(g["data"][candles.TRACE_CANDLES]["x"]) + len(g["data"][candles.TRACE_LIVE]["x"]) == len(frame)
    assert g["data"][candles.TRACE_CANDLES]["x"] == figures.x_values(frame[frame["closed"]], "5s")

    lo, hi = zoom_candles(dash_duo, 0.3, 0.6)
    time.sleep(0.6)  # ticks pass; the view stays
    assert x_range(dash_duo) == [lo, hi]
    name, text = export_csv(dash_duo)
    expected = frame[(frame["start"] >= axis_ns(lo)) & (frame["start"] <= axis_ns(hi))]
    assert 10 < len(expected) < len(frame) // 2
    assert text == expected_csv(expected)
    assert name == export_filename("BTCUSDT", "5s", expected)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[-3:] == ["closed", "amplitude", "change"]
    # not the series' first bar: change and amplitude are against the bar before the view
    assert rows[0]["change"] and rows[0]["amplitude"] and float(rows[0]["amplitude"]) > 0

    # label time bars at their end: the candles move one interval right, the zoom stays,
    # and the export holds the bars whose end is in view
    dash_duo.find_element(f"#{ids.BAR_LABEL} label[data-option-index='1']").click()
    g = wait_candles(dash_duo, "interval end")
    assert g["data"][candles.TRACE_CANDLES]["x"] == figures.x_values(frame[frame["closed"]], "5s", label="end")
    assert x_range(dash_duo) == [lo, hi]
    name, text = export_csv(dash_duo)
    by_end = frame[(frame["end"] >= axis_ns(lo)) & (frame["end"] <= axis_ns(hi))]
    assert text == expected_csv(by_end) and by_end["start"].iloc[0] == expected["start"].iloc[0] - 5 * 10**9
    assert dash_duo.get_logs() == []


def test_export_when_not_zoomed_on_replay_tick_bars_then_csv_holds_every_bar(replay, dash_duo):
    dash_duo.start_server(replay.app)
    wait_candles(dash_duo, "5s")
    dash_duo.select_dcc_dropdown(f"#{ids.BAR_KIND}", value="tick")
    g = wait_candles(dash_duo, "100t", min_closed=90)
    frame = replay.engine.bars_frame("BTCUSDT", "100t")
    assert g["data"][candles.TRACE_CANDLES]["x"] == list(range(len(frame) - 1))  # the last one in progress
    assert g["data"][candles.TRACE_LIVE]["x"] == [len(frame) - 1]
    assert label_inputs_disabled(dash_duo) == [True, True]
    name, text = export_csv(dash_duo)
    assert text == expected_csv(frame)
    assert name == export_filename("BTCUSDT", "100t", frame)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["change"] == "" and rows[-1]["closed"] == "false" and all(r["bar"] == "100t" for r in rows)
    assert dash_duo.get_logs() == []


def test_history_when_default_start_then_status_shows_backfill_and_candles_carry_exact_marks(runtime, dash_duo):
    # The simulator with no --backfill (30 min by default): the backfilled minutes are
    # verified against the exchange's REST klines and marked above their candles.
    rt = runtime("--bar", "1m", "--symbols", "BTCUSDT")
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "BTCUSDT")
    status = wait_status(dash_duo, "trades since", timeout=30)
    assert "history" in status

    def marks():
        g = graph(dash_duo, ids.CANDLES)
        m = g["data"][candles.TRACE_VERIFY]
        return m if len(m.get("x") or []) >= 5 else None

    # A minute verified while the backfill still fills it differs (ids missing) until the
    # history lands and it is verified again: wait for the settled marks.
    def settled():
        m = marks()
        return m if m is not None and all(t == "vendor kline ✓ exact" for t in m["text"]) else None

    m = wait_until(settled, 60, message="every verification mark on the candle chart exact")
    assert m["name"] == "verified"
    report = rt.engine.verify("BTCUSDT")
    assert report["counts"]["differs"] == 0 and report["counts"]["exact"] >= 5
    assert dash_duo.get_logs() == []
