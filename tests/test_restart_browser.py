"""A symbol subscribed from the page survives a restart on the same data dir: after the
restart it is in the symbol dropdown again and its chart continues its stored history.
Real runtimes (the embedded simulator) and headless chromium through ``dash_duo``
(``tests.test_browser``'s fixture: the same container flags).

Two servers in one test: dash[testing]'s ``ThreadedRunner`` stops a server by raising
SystemExit in every thread started since that server was started (``KillerThread.kill``),
and starting a second server on the same runner does that again. The threads of a runtime
started in between (its engine, feed client, snapshot fetcher, ...) would be killed with
it, whichever of them did not happen to reuse the thread id of an older thread: a run
whose books never sync, or whose feed stops, for no reason of the product's. So each
runtime is stopped before its server, and the second server has a runner of its own.
"""

from __future__ import annotations

import pytest
from dash.testing.application_runners import ThreadedRunner

from dashboard import ids
from tests.helpers import run, wait_for
from tests.test_persistence_e2e import free_port
from tests.test_browser import dash_duo, set_input, wait_candles  # noqa: F401  (dash_duo: the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

FAST = {"backoff_initial_s": 0.05, "backoff_cap_s": 1.0, "ping_interval_s": 0}


def test_restart_when_symbol_subscribed_from_the_page_then_back_in_the_dropdown(dash_duo, tmp_path):
    argv = ("--data-dir", str(tmp_path), "--bar", "1s", "--sim-rate", "4")
    first = run(argv, feed_options=FAST, interval_ms=250)
    try:
        dash_duo.start_server(first.app, port=free_port())
        wait_candles(dash_duo, "BTCUSDT")
        set_input(dash_duo, f"#{ids.SUBSCRIBE_INPUT}", "adausdt")
        dash_duo.find_element(f"#{ids.SUBSCRIBE_BUTTON}").click()
        wait_candles(dash_duo, "ADAUSDT", min_closed=2, timeout=40)
        wait_for(lambda: first.engine.trades("ADAUSDT", 1), 15, "ADAUSDT trades")
        last_id = first.engine.trades("ADAUSDT", 1)[-1].trade_id
        dash_duo.driver.get("about:blank")  # leave the page before its server goes
        assert dash_duo.get_logs() == []
    finally:
        first.stop()  # before its server: stopping that raises SystemExit in newer threads
        dash_duo.server.stop()

    second = run(argv, feed_options=FAST, interval_ms=250)
    dash_duo.server = server = ThreadedRunner()  # the first runner's next start would kill second's threads
    try:
        assert "ADAUSDT" in second.engine.symbols()
        dash_duo.start_server(second.app, port=free_port())
        wait_candles(dash_duo, "BTCUSDT")
        dash_duo.select_dcc_dropdown(f"#{ids.SYMBOL}", value="ADAUSDT")  # fails if it is not an option
        # Its book may not have synced yet: the page must still draw it (the DOM ladder of a
        # book without levels once broke the whole page, React error #31).
        wait_candles(dash_duo, "ADAUSDT", min_closed=2, timeout=40)
        wait_for(lambda: second.engine.trades("ADAUSDT", 1)
                 and second.engine.trades("ADAUSDT", 1)[-1].trade_id > last_id, 30, "new ADAUSDT trades")
        assert second.engine.health()["counters"]["gaps"] == 0
        assert dash_duo.get_logs() == []
    finally:
        second.stop()
        if server.started:
            server.stop()
