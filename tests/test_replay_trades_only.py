"""A recording with trades and no order book, replayed end to end over loopback sockets.

The trades-only file is cut from a real spot capture (its ``@trade`` lines alone). The
replay must play it like a full capture (bars equal ``tickscope bars`` of the same file) and
say plainly that the recording has no order book: the REST depth answer, the book state in
``/api/health`` (health not degraded for it) and the status line.
"""

from __future__ import annotations

import gzip
import io
import json
import urllib.error
import urllib.request

import pandas as pd
import pytest

from dashboard.statusline import status_children
from dashboard.updates import depth_update
from feed.io.convert import main as bars_main
from tests.helpers import run

CAPTURE = ("raw", "spot", "btcusdt_20240808.gz")
BAR_COLUMNS = ["start", "open", "high", "low", "close", "volume", "turnover", "trade_count",
               "buy_volume", "sell_volume"]


@pytest.fixture
def trades_only(hft_data, tmp_path):
    """Return (path, trade lines) of the capture's ``@trade`` lines, gzipped in tmp_path."""
    kept = []
    with gzip.open(hft_data.joinpath(*CAPTURE), "rt") as f:
        for line in f:
            if '{"stream":"btcusdt@trade"' in line:
                kept.append(line)
    assert len(kept) > 1000 and not any("@depth" in line for line in kept)
    path = tmp_path / "btcusdt_trades_only.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(kept)
    return path, len(kept)


def _text(component) -> str:
    # Every string in a Dash component tree, joined with spaces.
    if component is None:
        return ""
    if isinstance(component, str):
        return component
    if isinstance(component, (list, tuple)):
        return " ".join(_text(c) for c in component)
    return _text(getattr(component, "children", None))


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _csv_bars(text: str) -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(text))
    frame["start"] = pd.to_datetime(frame["start"], utc=True).dt.as_unit("ns").astype("int64")
    return frame[BAR_COLUMNS].reset_index(drop=True)


def test_replay_when_recording_has_trades_but_no_depth_bars_play_and_status_says_no_book(
        trades_only, tmp_path, capsys):
    path, n_trades = trades_only
    rt = run(["--replay", str(path), "--speed", "0", "--data-dir", str(tmp_path / "data")])
    try:
        assert rt.exchange.finished.wait(120), "replay did not finish"
        assert rt.engine.wait_idle(60, quiet_s=1.0)

        # The symbol stays subscribed and every recorded trade arrived.
        assert rt.engine.symbols() == ["BTCUSDT"]
        health = rt.engine.health()
        assert health["counters"]["trades"] == n_trades
        assert health["counters"]["gaps"] == 0 and health["counters"]["malformed"] == 0

        # The 1m bars equal the offline converter's on the same file.
        out = tmp_path / "bars.csv"
        assert bars_main([str(path), "--bar", "1m", "-o", str(out), "--no-progress"]) == 0
        client = rt.app.server.test_client()
        resp = client.get("/api/bars?symbol=BTCUSDT&bar=1m")
        assert resp.status_code == 200
        served = _csv_bars(resp.get_data(as_text=True))
        assert len(served) >= 5  # the capture spans about 7 minutes
        pd.testing.assert_frame_equal(served, _csv_bars(out.read_text()), check_exact=True)

        # Health: not degraded by the missing book, the book's state says why it is absent.
        health = json.loads(client.get("/api/health").get_data())
        assert health["status"] == "ok", health
        assert health["reasons"] == []
        book = health["symbols"]["BTCUSDT"]
        assert book["book_synced"] is False and book["book_unsynced_s"] is None
        assert book["book_absent"] == "no order book in the recording"
        assert not any("unsubscribed" in e for e in health["errors"]), health["errors"]

        # The status line says so in words.
        words = _text(status_children(rt.engine.status(), "BTCUSDT"))
        assert "order book not in the recording" in words, words
        # The depth chart says the same over its empty plot, not "out of sync".
        figure, _ = depth_update(rt.engine, "BTCUSDT", None, rt.engine.status().state, rt.engine.status())
        notes = " ".join(a["text"] for a in figure.layout.annotations) + " " + figure.layout.title.text
        assert "no order book in the recording" in notes and "out of sync" not in notes, notes

        # The exchange accepted the depth stream; its REST depth says what is missing,
        # while a symbol the recording lacks is still an invalid symbol.
        assert rt.exchange.serves("BTCUSDT", "trade") and not rt.exchange.serves("BTCUSDT", "depth")
        status, body = _get(f"{rt.exchange.rest_url}/api/v3/depth?symbol=BTCUSDT&limit=5")
        assert status == 404 and "not in the recording" in body["msg"] and body["msg"].endswith("(recorded for this symbol: trade)"), body
        status, body = _get(f"{rt.exchange.rest_url}/api/v3/depth?symbol=ETHUSDT&limit=5")
        assert status == 400 and body["code"] == -1121
    finally:
        rt.stop()


# -- the market rule alone (pure: no sockets) ---------------------------------------------

S = 1_000_000_000


def _market(clock: str):
    from feed.core.config import MarketConfig
    from feed.core.market import MarketState
    from feed.vendors.binance import BinanceAdapter

    m = MarketState(MarketConfig(clock=clock, close_grace_s=0), BinanceAdapter("spot"))
    m.add_symbol("BTCUSDT")
    return m


def test_market_when_replay_depth_answers_404_marks_book_absent_and_stops_asking():
    from feed.core.events import Parsed, SnapshotFailed
    from feed.core.health import BOOK_NOT_RECORDED
    from feed.core.models import BookDelta

    m = _market("exchange")
    assert [s for s, _ in m.on_clock(0, 0).snapshots] == ["BTCUSDT"]
    fx = m.apply([SnapshotFailed(0, "BTCUSDT", "HTTP 404", 404)], 0, 1 * S)
    assert fx.unsubscribe == [] and m.refusals() == ()
    status = m.symbol_status(2 * S)["BTCUSDT"]
    assert status.book_absent == BOOK_NOT_RECORDED and status.book_unsynced_s is None
    # No retry storm: minutes later nothing is asked for.
    assert m.on_clock(0, 600 * S).snapshots == []
    # Depth arriving after all lifts the mark and the book syncs as any book.
    m.apply([Parsed(0, [BookDelta("BTCUSDT", 1, 10, 12, None, ((99.0, 1.0),), ())])], 0, 601 * S)
    assert [s for s, _ in m.on_clock(0, 602 * S).snapshots] == ["BTCUSDT"]
    assert m.symbol_status(602 * S)["BTCUSDT"].book_absent is None


def test_market_when_live_depth_answers_404_keeps_retrying_as_a_failed_fetch():
    from feed.core.events import SnapshotFailed

    m = _market("wall")
    m.on_clock(0, 0)
    fx = m.apply([SnapshotFailed(0, "BTCUSDT", "HTTP 404", 404)], 0, 1 * S)
    assert fx.unsubscribe == [] and "depth snapshot failed" in m.refusals()[-1]
    assert m.symbol_status(2 * S)["BTCUSDT"].book_absent is None
    assert [s for s, _ in m.on_clock(0, 600 * S).snapshots] == ["BTCUSDT"]


def test_symbol_status_when_read_back_from_json_keeps_book_absent_and_drops_hostile_values():
    from feed.core.collectors import symbol_status
    from feed.core.health import BOOK_NOT_RECORDED, SymbolStatus

    status = SymbolStatus(trades=3, book_absent=BOOK_NOT_RECORDED)
    assert symbol_status(status.as_json()) == status
    for hostile in (5, ["x"], "", None):
        assert symbol_status({**status.as_json(), "book_absent": hostile}).book_absent is None
    assert len(symbol_status({"book_absent": "x" * 10_000}).book_absent) == 120
