"""Browser test: panning left past the first bar drawn loads older stored bars
(headless chromium, dash_duo), while the live end keeps updating.

The stack is ``tickscope``'s (``dashboard.runtime.start_runtime``, embedded simulator)
over a data dir whose store already holds 25 minutes of BTCUSDT trades; the engine holds
only the newest 1,000 trades (and reads at most 2,000 per load), and the page draws only 20-30 bars, so what panning loads
comes past the engine's tape, from the store.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from dashboard import ids
from dashboard.app import create_app
from dashboard.history import CHUNK, TRACE_HISTORY, TRACE_HISTORY_VOLUME
from feed.core.models import Trade
from feed.io.store import TradeStore
from tests.test_browser import dash_duo, graph, runtime, wait_candles, wait_until  # noqa: F401

pytestmark = pytest.mark.browser

STORED_S = 25 * 60  # seconds of stored trades before the run
RATE = 1  # stored trades per second


def _fill_store(directory) -> int:
    # Trades of the last STORED_S seconds (ending 3 s ago), as a previous run left them.
    now = time.time_ns()
    t0 = now - (STORED_S + 3) * 10**9
    n = STORED_S * RATE
    with TradeStore(directory) as store:
        store.extend(Trade("BTCUSDT", t0 + i * 10**9 // RATE, 60_000.0 + (i % 97) * 0.5 - (i % 13), 0.001 * (1 + i % 5),
                           1 if i % 3 else -1, 1 + i) for i in range(n))
        store.flush()
    return t0


def _relayout(dash_duo, left: str, right: str) -> None:
    dash_duo.driver.execute_script(
        "var gd = document.querySelector('#candles .js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.range': [arguments[0], arguments[1]], 'xaxis2.range': [arguments[0], arguments[1]]});",
        left, right)


def _shift(x: str, seconds: float) -> str:
    return (pd.Timestamp(x) + pd.Timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def test_pan_left_loads_older_stored_bars_and_the_live_end_keeps_updating(runtime, dash_duo, tmp_path):
    t0 = _fill_store(tmp_path / "data" / "embedded")
    rt = runtime("--bar", "1s", "--symbols", "BTCUSDT", engine_options={"max_trades": 1_000})
    held_from = rt.engine.trades("BTCUSDT", 1_000)[0].ts_ns  # the oldest trade the engine holds
    app = create_app(rt.engine, interval_ms=250, max_points=30, keep_points=20)
    dash_duo.start_server(app)
    g = wait_candles(dash_duo, "1s", min_closed=10, timeout=30)
    drawn = g["data"][0]["x"]
    first, n_drawn = drawn[0], len(drawn)

    # Pan left of the first bar drawn: a chunk of older bars appears left of it.
    left, right = _shift(first, -120), _shift(first, 20)
    _relayout(dash_duo, left, right)

    def loaded(min_bars, before):
        g = graph(dash_duo, ids.CANDLES)
        if g and len(g["data"]) == TRACE_HISTORY_VOLUME + 1 and len(g["data"][TRACE_HISTORY]["x"] or []) >= min_bars \
                and g["data"][TRACE_HISTORY]["x"][0] < before:
            return g
        return None

    g1 = wait_until(lambda: loaded(CHUNK, first), timeout=20, message="a chunk of older bars")
    hist = g1["data"][TRACE_HISTORY]["x"]
    assert len(hist) + len(g1["data"][0]["x"]) > n_drawn and hist[0] < first and hist[-1] < first
    assert hist == sorted(hist) and len(set(hist)) == len(hist)
    # the user's range is kept (no reset of the view)
    assert g1["layout"]["xaxis"]["range"][0].startswith(left[:19])

    # Pan further, past the first loaded bar: the next chunk, from the store (older than the tape).
    _relayout(dash_duo, _shift(hist[0], -60), _shift(hist[0], 60))
    g2 = wait_until(lambda: loaded(2 * CHUNK, hist[0]), timeout=20, message="a second chunk of older bars")
    hist2 = g2["data"][TRACE_HISTORY]["x"]
    assert pd.Timestamp(hist2[0]).value < held_from  # before the oldest trade the engine holds
    assert pd.Timestamp(hist2[0]).value >= t0 - 10**9
    assert set(hist) <= set(hist2)  # the bars loaded before are kept

    # The live end keeps updating while the history is shown, and the history stays
    # through the redraws the live cap forces (30 bars drawn at most).
    last_live = (g2["data"][1]["x"] or [None])[-1], g2["data"][0]["x"][-1]

    def advanced():
        g = graph(dash_duo, ids.CANDLES)
        if not g or len(g["data"]) != TRACE_HISTORY_VOLUME + 1:
            return None
        now = (g["data"][1]["x"] or [None])[-1], g["data"][0]["x"][-1]
        return g if now[1] > last_live[1] else None

    g3 = wait_until(advanced, timeout=20, message="new closed bars at the live end")
    assert g3["data"][TRACE_HISTORY]["x"][0] == hist2[0]
    wait_until(lambda: (lambda g: g and len(g["data"]) == TRACE_HISTORY_VOLUME + 1 and g["data"][TRACE_HISTORY]["x"][0] == hist2[0]
                        and g["data"][0]["x"][-1] > _shift(last_live[1], 12))(graph(dash_duo, ids.CANDLES)),
               timeout=30, message="history kept after a live redraw")
