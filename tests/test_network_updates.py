"""What a live update sends: the depth chart only when the book changed, as a Patch of what
changed while the frame is the same (and that Patch turns the drawn figure into the new
one exactly); the status line only when its text changed; responses compressed
when the client accepts it (flask-compress through ``dash.Dash(compress=True)``), read
over a real socket.
"""

from __future__ import annotations

import copy
import gzip
import json
import threading
import urllib.request

import plotly.graph_objects as go
import pytest
from dash import Patch, html, no_update
from werkzeug.serving import make_server

from dashboard import depth, updates
from feed.core.views import DepthView
from tests.helpers import wait_for

BIDS = [(100.0, 1.0), (99.9, 2.0), (99.8, 0.5)]
ASKS = [(100.2, 0.25), (100.3, 1.0)]


class BookEngine:
    """``depth`` over a book the test sets."""

    def __init__(self, book: DepthView | None) -> None:
        self.book = book

    def depth(self, symbol, levels=50):
        return self.book if self.book is not None and self.book.symbol == symbol else None


def view(bids=BIDS, asks=ASKS, synced=True, symbol="BTCUSDT") -> DepthView:
    mid = (bids[0][0] + asks[0][0]) / 2 if bids and asks else None
    spread = asks[0][0] - bids[0][0] if bids and asks else None
    return DepthView(symbol, 1, bids, asks, bids[0][0] if bids else None, asks[0][0] if asks else None,
                     mid, spread, synced)


def figure_dict(fig) -> dict:
    return json.loads(fig.to_json()) if isinstance(fig, go.Figure) else fig


def apply_patch(fig: dict, patch: Patch) -> dict:
    """Return ``fig`` with the Assign operations of ``patch`` applied, as the browser does."""
    out = copy.deepcopy(fig)
    for op in patch.to_plotly_json()["operations"]:
        assert op["operation"] == "Assign", op  # steady depth updates only replace values
        *path, last = op["location"]
        node = out
        for key in path:
            node = node[key]
        node[last] = op["params"]["value"]
    return out


def test_depth_update_when_book_unchanged_then_no_update_and_nothing_sent():
    eng = BookEngine(view())
    fig, state = updates.depth_update(eng, "BTCUSDT", None)
    assert isinstance(fig, go.Figure)
    for _ in range(3):
        assert updates.depth_update(eng, "BTCUSDT", state) == (no_update, no_update)


def test_depth_update_when_one_side_changed_then_patch_of_that_side_equals_a_full_redraw():
    eng = BookEngine(view())
    fig, state = updates.depth_update(eng, "BTCUSDT", None)
    drawn = figure_dict(fig)
    eng.book = view(asks=[(100.2, 0.75), (100.3, 1.0), (100.4, 2.0)])  # asks only, same best prices
    patch, state2 = updates.depth_update(eng, "BTCUSDT", state)
    assert isinstance(patch, Patch) and state2 != state
    locations = [op["location"] for op in patch.to_plotly_json()["operations"]]
    assert locations == [["data", 1, "x"], ["data", 1, "y"]]  # no bids, no text, no mid line
    full = figure_dict(depth.depth_figure(eng.book.bids, eng.book.asks, symbol="BTCUSDT", mid=eng.book.mid,
                                          spread=eng.book.spread, uirevision="BTCUSDT"))
    assert apply_patch(drawn, patch) == full
    assert len(json.dumps(patch.to_plotly_json())) < len(json.dumps(full)) / 10


def test_depth_update_when_top_of_book_moves_then_patch_updates_mid_line_and_text_exactly():
    eng = BookEngine(view())
    fig, state = updates.depth_update(eng, "BTCUSDT", None)
    eng.book = view(bids=[(100.1, 0.3)] + BIDS)
    patch, _ = updates.depth_update(eng, "BTCUSDT", state)
    assert isinstance(patch, Patch)
    full = figure_dict(depth.depth_figure(eng.book.bids, eng.book.asks, symbol="BTCUSDT", mid=eng.book.mid,
                                          spread=eng.book.spread, uirevision="BTCUSDT"))
    patched = apply_patch(figure_dict(fig), patch)
    assert patched == full
    assert patched["layout"]["annotations"][0]["text"].startswith("mid 100.15 ")


@pytest.mark.parametrize("change", [
    {"symbol": "ETHUSDT"},  # another chart
    {"synced": False},  # the title says resyncing
    {"bids": [(100.05, 1.0)]},  # another number of price decimals
    {"bids": [], "asks": []},  # an empty book: the waiting note instead of mid/spread
])
def test_depth_update_when_frame_changes_then_whole_figure(change):
    eng = BookEngine(view())
    _, state = updates.depth_update(eng, "BTCUSDT", None)
    eng.book = view(**change)
    fig, state2 = updates.depth_update(eng, eng.book.symbol, state)
    assert isinstance(fig, go.Figure) and state2 != state


def test_depth_update_when_store_is_hostile_then_whole_figure():
    eng = BookEngine(view())
    for store in ("garbage", 3, ["x"], {"frame": 1}, None):
        fig, state = updates.depth_update(eng, "BTCUSDT", store)
        assert isinstance(fig, go.Figure) and isinstance(state, dict)


def test_depth_figure_cumulative_sizes_carry_no_float_noise():
    fig = figure_dict(depth.depth_figure([(1.0, 0.1), (0.9, 0.2)], [(1.1, 0.1), (1.2, 0.2)], symbol="X"))
    assert fig["data"][0]["y"] == [0.3, 0.1] and fig["data"][1]["y"] == [0.1, 0.3]  # not 0.30000000000000004


# -- compression on the wire ----------------------------------------------------------------------


@pytest.fixture
def served(runtime, tmp_path):
    """The default runtime's Dash app served on a loopback port: its base URL."""
    rt = runtime("--data-dir", str(tmp_path))
    server = make_server("127.0.0.1", 0, rt.app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wait_for(lambda: rt.engine.trades("BTCUSDT", 1), 30, "simulated trades")
    yield rt, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def fetch(url: str, encoding: str | None, body: bytes | None = None) -> tuple[dict, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if encoding is not None:
        headers["Accept-Encoding"] = encoding
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def update_request(rt) -> bytes:
    """A ``/_dash-update-component`` body of the live update, as the page sends it."""
    key = next(key for key in rt.app.callback_map if "candles.figure" in key)
    tick = rt.app.callback_map[key]
    outputs = [dict(zip(("id", "property"), part.split(".", 1))) for part in key[2:-2].split("...")]
    values = {"symbol": "BTCUSDT", "bar-size": "1m", "bar-label": "start"}
    inputs = [{**i, "value": values.get(i["id"])} for i in tick["inputs"]]
    state = [{**s, "value": None} for s in tick["state"]]
    return json.dumps({"output": key, "outputs": outputs, "inputs": inputs, "state": state,
                       "changedPropIds": ["symbol.value"]}).encode()


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_update_response_when_client_accepts_compression_then_compressed(served, encoding):
    rt, base = served
    body = update_request(rt)
    headers, raw = fetch(f"{base}/_dash-update-component", encoding, body)
    assert headers.get("content-encoding") == encoding
    plain_headers, plain = fetch(f"{base}/_dash-update-component", None, body)
    assert "content-encoding" not in plain_headers
    assert b'"candles"' in plain and len(raw) < len(plain) / 3
    if encoding == "gzip":
        assert json.loads(gzip.decompress(raw))["response"].keys() == json.loads(plain)["response"].keys()


def test_layout_when_client_accepts_gzip_then_compressed_and_identical(served):
    _, base = served
    headers, raw = fetch(f"{base}/_dash-layout", "gzip")
    assert headers.get("content-encoding") == "gzip"
    _, plain = fetch(f"{base}/_dash-layout", "identity")
    assert json.loads(gzip.decompress(raw))["props"].keys() == json.loads(plain)["props"].keys()
