"""A symbol whose order book has no level (its REST depth snapshot not fetched yet or
refused, a restart whose books have not synced) is drawn like any other: the page keeps
rendering.

The DOM ladder of such a book was once a list nested in the table's children; dash-renderer
handed its rows to React as plain objects (React error #31) and the whole page stopped
rendering, charts frozen, when such a symbol was selected. Here the real stack (the
embedded simulator) loses its snapshot fetcher, as when the vendor's REST endpoint is
down, so a symbol subscribed from the page never gets a book level.
"""

from __future__ import annotations

import pytest

from dashboard import ids, orderflow_layout as ol
from tests.helpers import wait_for
from tests.test_browser import dash_duo, set_input, text_by_id, wait_candles, wait_until  # noqa: F401  (dash_duo: the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_select_when_the_symbols_book_has_no_level_then_candles_drawn_and_ladder_header_only(
        runtime, tmp_path, dash_duo):
    rt = runtime("--data-dir", str(tmp_path / "data"), "--bar", "1s", "--sim-rate", "4", interval_ms=250)
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "BTCUSDT")
    rt.fetcher.stop()  # no more depth snapshots: a book synced from now on has none to start from
    set_input(dash_duo, f"#{ids.SUBSCRIBE_INPUT}", "adausdt")
    dash_duo.find_element(f"#{ids.SUBSCRIBE_BUTTON}").click()  # selects ADAUSDT
    wait_candles(dash_duo, "ADAUSDT", min_closed=2, timeout=40)
    view = rt.engine.depth("ADAUSDT", 10)
    assert view is not None and not (view.bids or view.asks), "the book got a level: not the case tested"
    # The ladder of a book without levels: its header row alone (read as textContent: the
    # order-flow block may be closed, i.e. hidden).
    wait_until(lambda: text_by_id(dash_duo, ol.LADDER) == "bidpriceasktraded", 15, "the ladder's header alone")
    wait_for(lambda: len(rt.engine.trades("ADAUSDT", 10)) == 10, 15, "ADAUSDT trades")
    assert dash_duo.get_logs() == []
