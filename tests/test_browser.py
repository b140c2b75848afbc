"""Browser tests: the dashboard in headless chromium through dash_duo.

The engine comes from one fixture, ``engine``. For now it is ``FakeEngine``, a temporary
scaffold with the real engine's read API (real ``feed.bars`` aggregators over synthetic
trades); the lead swaps the fixture for the real engine + embedded exchange.

Chromium runs headless with the flags a root container needs; ``dash_duo`` is overridden
here (same name, same composite as dash[testing]'s) so no conftest hook or pytest option
is required. ``TICKSCOPE_HEADED=1`` shows the browser instead.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from feed.bars import bars_to_frame, make_aggregator
from feed.engine import BarSeries, DepthView
from feed.models import BUY, SELL, BarSpec, Trade

pytestmark = pytest.mark.browser

_NS = 1_000_000_000
CHROME_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,900",
)


# -- temporary engine scaffold ----------------------------------------------------------------


class FakeEngine:
    """Stand-in with ``feed.engine.Engine``'s read API over synthetic trades.

    History: ``history_s`` of trades (one every ~1.5 s) before ``clock0_ns``; then, when
    started, a thread adds a trade or two per symbol every 100 ms at the engine clock
    (``clock0_ns`` plus the real time elapsed), closing time bars on the clock.
    """

    default_spec = "1m"
    PRICES = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
    PRICE_DECIMALS = 2
    SIZE_DECIMALS = 4

    def __init__(self, symbols=("BTCUSDT", "ETHUSDT"), *, clock0_ns=1_723_161_600 * _NS,
                 history_s=7200, seed=7):
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self.clock0_ns = clock0_ns
        self.history_s = history_s
        self._mono0 = time.monotonic()
        self._frozen: int | None = None
        self._trades: dict[str, list[Trade]] = {}
        self._last: dict[str, float] = {}
        self._series: dict[tuple[str, BarSpec], object] = {}
        self._n = 0
        self.state = "live"
        self.dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for s in symbols:
            self._add(s)

    # -- scaffold plumbing
    def _add(self, symbol: str) -> None:
        price = self.PRICES[symbol]
        trades = []
        ts = self.clock0_ns - self.history_s * _NS
        while ts < self.clock0_ns:
            price = self._step(price)
            trades.append(self._trade(symbol, ts, price))
            ts += int(self._rng.uniform(0.3, 2.7) * _NS)
        self._trades[symbol] = trades
        self._last[symbol] = price

    def _step(self, price: float) -> float:
        return round(max(price * (1 + self._rng.gauss(0, 4e-4)), 0.01), self.PRICE_DECIMALS)

    def _trade(self, symbol: str, ts: int, price: float) -> Trade:
        self._n += 1
        size = round(self._rng.uniform(0.0001, 0.5), self.SIZE_DECIMALS) or 0.0001
        return Trade(symbol, ts, price, size, BUY if self._rng.random() < 0.5 else SELL, self._n)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                now = self.clock_ns()
                for symbol in list(self._trades):
                    for _ in range(self._rng.randint(0, 2)):
                        self._last[symbol] = self._step(self._last[symbol])
                        trade = self._trade(symbol, now, self._last[symbol])
                        self._trades[symbol].append(trade)
                        for (s, _), agg in self._series.items():
                            if s == symbol:
                                agg.on_trade(trade)
                for agg in self._series.values():
                    agg.on_clock(now)

    def start(self) -> "FakeEngine":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    def freeze(self) -> None:
        """Stop the clock and the trades (deterministic export comparisons)."""
        self.stop()
        self._frozen = self.clock_ns()

    def _agg(self, symbol: str, spec: BarSpec):
        agg = self._series.get((symbol, spec))
        if agg is None:
            agg = make_aggregator(symbol, spec, max_bars=5000)
            agg.on_trades(self._trades[symbol])
            agg.on_clock(self.clock_ns())
            self._series[(symbol, spec)] = agg
        return agg

    # -- the engine read API
    def symbols(self) -> list[str]:
        with self._lock:
            return list(self._trades)

    def subscribe(self, text: str) -> str:
        symbol = text.strip().upper()
        if not re.fullmatch(r"[A-Z0-9]{3,20}", symbol):
            raise ValueError(f"invalid symbol {text.strip()!r}: expected letters and digits, e.g. BTCUSDT")
        if symbol not in self.PRICES:
            raise ValueError(f"unknown symbol {symbol}")
        with self._lock:
            if symbol not in self._trades:
                self._add(symbol)
        return symbol

    def unsubscribe(self, symbol: str) -> None:
        with self._lock:
            self._trades.pop(symbol, None)

    def clock_ns(self) -> int:
        if self._frozen is not None:
            return self._frozen
        return self.clock0_ns + int((time.monotonic() - self._mono0) * _NS)

    def bar_series(self, symbol: str, spec, since: int = 0) -> BarSeries:
        spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
        with self._lock:
            if symbol not in self._trades:
                raise KeyError(symbol)
            agg = self._agg(symbol, spec)
            lo = max(since - agg.first_index, 0)
            return BarSeries(
                key=f"{symbol}|{spec}", generation=agg.generation, n_closed=agg.n_closed,
                closed=[_copy(b) for b in agg.closed[lo:]],
                current=_copy(agg.current) if agg.current is not None else None,
                first_index=agg.first_index,
            )

    def bars_frame(self, symbol: str, spec):
        series = self.bar_series(symbol, spec)
        frame = bars_to_frame(series.closed + ([series.current] if series.current else []))
        frame.attrs["price_decimals"] = self.PRICE_DECIMALS
        frame.attrs["size_decimals"] = self.SIZE_DECIMALS
        return frame

    def depth(self, symbol: str, levels: int = 50) -> DepthView | None:
        with self._lock:
            if symbol not in self._trades:
                return None
            last = self._last[symbol]
            tick = 10 ** -self.PRICE_DECIMALS * max(1, round(last / 20000))
            rng = random.Random(self.clock_ns() // (250 * 10**6))
            bb, ba = round(last - tick, 2), round(last + tick, 2)
            bids = [(round(bb - i * tick, 2), round(rng.uniform(0.01, 3), 4)) for i in range(levels)]
            asks = [(round(ba + i * tick, 2), round(rng.uniform(0.01, 3), 4)) for i in range(levels)]
            return DepthView(symbol, self.clock_ns(), bids, asks, bb, ba, (bb + ba) / 2, ba - bb, True)

    def status(self) -> dict:
        with self._lock:
            syms = {s: {"trades": len(t), "last_trade_ts_ns": t[-1].ts_ns if t else None}
                    for s, t in self._trades.items()}
        return {
            "state": self.state, "detail": "fake engine", "messages_per_s": 20.0,
            "queue_depth": 0,
            "counters": {"messages": self._n, "trades": self._n, "malformed": 0,
                         "dropped": self.dropped, "reconnects": 0, "gaps": 0, "late": 0},
            "symbols": syms, "clock_ns": self.clock_ns(), "errors": [],
        }

    def health(self) -> dict:
        st = self.status()
        return {"status": "ok", "counters": st["counters"], "queue_depth": 0,
                "symbols": {s: {"trades": v["trades"]} for s, v in st["symbols"].items()}}


def _copy(bar):
    from dataclasses import replace
    return replace(bar)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def engine():
    """The engine under the dashboard (temporary scaffold: FakeEngine)."""
    eng = FakeEngine().start()
    yield eng
    eng.stop()


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


@pytest.fixture
def app(engine):
    from dashboard.app import create_app

    return create_app(engine, interval_ms=250)


# -- helpers ------------------------------------------------------------------------------------


def graph(dash_duo, graph_id: str) -> dict:
    """Return ``{"data": [...], "layout": {...}}`` of a dcc.Graph as plotly holds it."""
    return dash_duo.driver.execute_script(
        "var gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "if (!gd || !gd.data) { return null; }"
        "return {data: gd.data.map(function (t) { return {type: t.type, x: t.x, open: t.open, close: t.close, y: t.y}; }),"
        "        layout: {title: gd.layout.title && gd.layout.title.text,"
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
    g = graph(dash_duo, ids().CANDLES)
    return (g or {}).get("layout", {}).get("title") or ""


def ids():
    from dashboard import ids as module

    return module


def wait_candles(dash_duo, text: str) -> dict:
    """Wait until the candle chart's title contains ``text`` and it holds closed bars."""
    def ready():
        g = graph(dash_duo, ids().CANDLES)
        if g and text in (g["layout"]["title"] or "") and len(g["data"]) == 4 and g["data"][0]["x"]:
            return g
        return None
    return wait_until(ready, message=f"candles showing {text!r}")


def status_dot(dash_duo) -> str:
    """Return the status dot's class, read atomically (the line re-renders every tick)."""
    return dash_duo.driver.execute_script(
        "var d = document.querySelector(arguments[0]); return d ? d.className : '';",
        f"#{ids().STATUS} .dot")


def wait_status(dash_duo, text: str) -> None:
    """Wait until the status line's text contains ``text`` (read atomically, see status_dot)."""
    wait_until(lambda: text in dash_duo.driver.execute_script(
        "var e = document.getElementById(arguments[0]); return e ? e.textContent : '';", ids().STATUS),
        message=f"status line showing {text!r}")


def pan_candles(dash_duo, dx: int) -> list:
    """Drag the candle chart by ``dx`` pixels like a user (the figure's drag mode is pan).

    A real GUI edit, unlike a scripted ``Plotly.relayout``: plotly's ``uirevision`` keeps
    only what the user changed. Returns the visible x-range after the drag.
    """
    from selenium.webdriver.common.action_chains import ActionChains

    area = dash_duo.find_element(f"#{ids().CANDLES} .nsewdrag")
    (ActionChains(dash_duo.driver).move_to_element(area).click_and_hold()
     .move_by_offset(dx // 2, 0).move_by_offset(dx - dx // 2, 0).release().perform())
    return wait_until(lambda: (lambda g: g["layout"]["xaxis"]["range"] if g["layout"]["xaxis"]["autorange"] is False
                               else None)(graph(dash_duo, ids().CANDLES)), message="a panned view")


def set_input(dash_duo, selector: str, text: str) -> None:
    elem = dash_duo.find_element(selector)
    dash_duo.clear_input(elem)
    elem.send_keys(text)


# -- tests --------------------------------------------------------------------------------------


def test_load_when_engine_has_bars_then_charts_hold_data_and_console_is_clean(dash_duo, app, engine):
    dash_duo.start_server(app)
    g = wait_candles(dash_duo, "BTCUSDT")
    series = engine.bar_series("BTCUSDT", "1m")
    assert g["layout"]["xaxis"]["type"] == "date"
    # closed bars: the newest up to the cap, oldest first, at their start times
    assert len(g["data"][0]["x"]) == min(len(series.closed), 400)
    assert g["data"][0]["close"][-1] == pytest.approx(series.closed[-1].close)
    depth = wait_until(lambda: (lambda d: d if d and len(d["data"]) == 2 and d["data"][0]["x"] else None)(
        graph(dash_duo, ids().DEPTH)), message="depth data")
    assert "BTCUSDT" in depth["layout"]["title"]
    assert any(a.startswith("mid ") and "spread 0.0" in a and "bps" in a for a in depth["layout"]["annotations"])
    assert len(depth["data"][0]["x"]) == 50 and len(depth["data"][1]["x"]) == 50
    wait_status(dash_duo, "live")
    wait_status(dash_duo, "msg/s")
    assert status_dot(dash_duo) == "dot dot-green"
    assert dash_duo.driver.title == "tickscope"
    time.sleep(1.0)  # a few ticks of patches
    assert dash_duo.get_logs() == []


def test_live_updates_when_new_bars_close_then_chart_grows_and_zoom_survives(dash_duo, app, engine):
    dash_duo.start_server(app)
    dash_duo.select_dcc_dropdown(f"#{ids().BAR_SIZE}", value="1s")
    g = wait_candles(dash_duo, "1s")
    n0 = len(g["data"][0]["x"])
    view = pan_candles(dash_duo, 300)  # look at older bars
    grown = wait_until(lambda: (lambda d: d if len(d["data"][0]["x"]) >= n0 + 2 else None)(
        graph(dash_duo, ids().CANDLES)), message="new 1s bars")
    assert grown["layout"]["xaxis"]["autorange"] is False  # patches kept the user's view
    assert grown["layout"]["xaxis"]["range"] == view
    assert grown["data"][1]["x"], "the in-progress bar is drawn in its own trace"
    assert dash_duo.get_logs() == []


def test_switch_when_symbol_or_bar_type_changes_then_chart_redraws(dash_duo, app, engine):
    dash_duo.start_server(app)
    wait_candles(dash_duo, "BTCUSDT")
    dash_duo.select_dcc_dropdown(f"#{ids().SYMBOL}", value="ETHUSDT")
    g = wait_candles(dash_duo, "ETHUSDT")
    assert g["data"][0]["close"][-1] < 10_000  # ETH prices, not BTC
    depth = wait_until(lambda: (lambda d: d if d and "ETHUSDT" in (d["layout"]["title"] or "") else None)(
        graph(dash_duo, ids().DEPTH)), message="ETH depth")
    assert depth["data"][0]["x"][-1] < 10_000

    dash_duo.select_dcc_dropdown(f"#{ids().BAR_KIND}", value="tick")
    g = wait_candles(dash_duo, "100t")
    assert g["layout"]["xaxis"]["type"] == "linear"
    series = engine.bar_series("ETHUSDT", "100t")
    assert g["data"][0]["x"][-1] == series.n_closed - 1 or g["data"][0]["x"][-1] == series.n_closed - 2

    set_input(dash_duo, f"#{ids().BAR_CUSTOM}", "3m")
    dash_duo.find_element(f"#{ids().BAR_CUSTOM_BUTTON}").click()
    g = wait_candles(dash_duo, "3m")
    assert g["layout"]["xaxis"]["type"] == "date"
    assert dash_duo.find_element(f"#{ids().BAR_SIZE}").text.strip() == "3m"

    set_input(dash_duo, f"#{ids().BAR_CUSTOM}", "7m")
    dash_duo.find_element(f"#{ids().BAR_CUSTOM_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids().BAR_MESSAGE}", "divide 60 evenly")
    time.sleep(0.6)
    assert "3m" in candles_title(dash_duo)  # nothing else changed
    assert dash_duo.get_logs() == []


def test_subscribe_when_symbol_valid_then_added_and_selected_else_inline_message(dash_duo, app, engine):
    dash_duo.start_server(app)
    wait_candles(dash_duo, "BTCUSDT")
    set_input(dash_duo, f"#{ids().SUBSCRIBE_INPUT}", "bad symbol!")
    dash_duo.find_element(f"#{ids().SUBSCRIBE_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids().SUBSCRIBE_MESSAGE}", "invalid symbol")
    set_input(dash_duo, f"#{ids().SUBSCRIBE_INPUT}", "XRPUSDT")
    dash_duo.find_element(f"#{ids().SUBSCRIBE_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids().SUBSCRIBE_MESSAGE}", "unknown symbol XRPUSDT")
    assert "BTCUSDT" in candles_title(dash_duo)

    set_input(dash_duo, f"#{ids().SUBSCRIBE_INPUT}", "solusdt")
    dash_duo.find_element(f"#{ids().SUBSCRIBE_BUTTON}").click()
    g = wait_candles(dash_duo, "SOLUSDT")
    assert g["data"][0]["close"][-1] < 1000
    assert "SOLUSDT" in engine.symbols()
    dash_duo.wait_for_text_to_equal(f"#{ids().SUBSCRIBE_MESSAGE}", "")
    assert dash_duo.find_element(f"#{ids().SYMBOL}").text.strip() == "SOLUSDT"
    assert dash_duo.get_logs() == []


def _read_download(dash_duo, timeout=15.0) -> tuple[str, str]:
    folder = Path(dash_duo.download_path)
    path = wait_until(lambda: next((p for p in folder.glob("*.csv")), None), timeout, "a downloaded CSV")
    time.sleep(0.2)  # let chromium finish the write
    return path.name, path.read_text()


def test_export_when_zoomed_then_csv_holds_exactly_the_bars_in_view(dash_duo, app, engine):
    from dashboard.export import bars_to_csv, iso_ms

    dash_duo.start_server(app)
    g = wait_candles(dash_duo, "BTCUSDT")
    engine.freeze()
    lo, hi = pan_candles(dash_duo, 500)  # older bars into view, the newest out
    time.sleep(0.6)  # ticks pass; the view stays
    assert graph(dash_duo, ids().CANDLES)["layout"]["xaxis"]["range"] == [lo, hi]
    dash_duo.find_element(f"#{ids().EXPORT_BUTTON}").click()
    name, text = _read_download(dash_duo)

    frame = engine.bars_frame("BTCUSDT", "1m")
    lo_ns, hi_ns = pd_ts(lo), pd_ts(hi)
    expected = frame[(frame["start"] >= lo_ns) & (frame["start"] <= hi_ns)]
    assert 10 < len(expected) < len(frame) and not expected["closed"].eq(False).any()
    assert text == bars_to_csv(expected, price_decimals=frame.attrs["price_decimals"],
                               size_decimals=frame.attrs["size_decimals"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["start"] for r in rows] == [iso_ms(s) for s in expected["start"]]
    assert rows[0]["open"] == f"{expected['open'].iloc[0]:.{frame.attrs['price_decimals']}f}"
    compact = [iso_ms(int(expected["start"].iloc[i]))[:19].replace("-", "").replace(":", "") for i in (0, -1)]
    assert name == f"BTCUSDT_1m_{compact[0]}Z_{compact[1]}Z.csv"
    assert dash_duo.get_logs() == []


def test_export_when_not_zoomed_then_csv_holds_every_bar_in_the_figure(dash_duo, app, engine):
    dash_duo.start_server(app)
    dash_duo.select_dcc_dropdown(f"#{ids().BAR_KIND}", value="tick")
    g = wait_candles(dash_duo, "100t")
    engine.freeze()
    time.sleep(0.6)  # the last tick's update lands
    g = graph(dash_duo, ids().CANDLES)
    dash_duo.find_element(f"#{ids().EXPORT_BUTTON}").click()
    name, text = _read_download(dash_duo)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(g["data"][0]["x"]) + len(g["data"][1]["x"])
    assert name.startswith("BTCUSDT_100t_")
    assert rows[-1]["closed"] in ("true", "false") and rows[0]["closed"] == "true"
    assert all(r["bar"] == "100t" for r in rows)


def pd_ts(text: str) -> int:
    import pandas as pd

    return pd.Timestamp(text).value


def test_status_when_messages_are_dropped_then_dot_turns_amber(dash_duo, app, engine):
    dash_duo.start_server(app)
    wait_status(dash_duo, "live")
    engine.dropped = 5
    time.sleep(0.5)
    engine.dropped = 9
    wait_status(dash_duo, "dropping")
    assert status_dot(dash_duo) == "dot dot-amber"
    engine.state = "failed"
    wait_until(lambda: status_dot(dash_duo) == "dot dot-red", message="red dot")
