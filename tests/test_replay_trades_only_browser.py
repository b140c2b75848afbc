"""A trades-only recording replayed in the browser: candles are drawn and the status line
says the recording has no order book (one page load)."""

from __future__ import annotations

import pytest

from tests.test_browser import dash_duo, wait_candles, wait_status  # noqa: F401  (dash_duo: the fixture)
from tests.test_replay_trades_only import trades_only  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_page_when_replay_has_no_depth_draws_candles_and_says_book_not_recorded(
        runtime, trades_only, tmp_path, dash_duo):  # noqa: F811
    path, _ = trades_only
    rt = runtime("--replay", str(path), "--speed", "0", "--bar", "1m", "--data-dir", str(tmp_path / "data"),
                 interval_ms=250)
    dash_duo.start_server(rt.app)
    wait_candles(dash_duo, "BTCUSDT", min_closed=5, timeout=40)
    # textContent runs the item's name and value together: "order booknot in the recording".
    text = wait_status(dash_duo, "not in the recording", timeout=20)
    assert "order book" in text and "degraded" not in text
    assert dash_duo.get_logs() == []
