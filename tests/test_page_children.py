"""What the live callbacks put in ``children`` is something the page can render.

dash-renderer turns only the items of a ``children`` list into components; a list nested
in that list reaches React as plain ``{props, type, namespace}`` objects and the whole
page stops rendering (React error #31): every chart freezes until a reload. It happened
to the DOM ladder whenever the selected symbol's book had no level yet (just subscribed,
a snapshot not fetched, a restart whose books had not synced): selecting such a symbol
broke the page. Checked here without a browser, on a real engine fed trades and no depth.
"""

from __future__ import annotations

import time

import pytest
from dash.development.base_component import Component

from dashboard import orderflow_updates as ou
from dashboard.statusline import status_banner, status_children
from feed.core.config import EngineConfig, MarketConfig
from feed.core.events import RawMessage
from feed.core.models import BarSpec
from feed.io.engine import Engine
from feed.vendors.binance import BinanceAdapter
from tests.helpers import binance_trade_msg


def unrenderable(children, path: str = "children") -> list[str]:
    """Return where ``children`` holds what dash-renderer would hand React unconverted:
    a list inside a list, a dict (a component already serialised, or any mapping), or
    anything that is not text, a number, None or a component; [] when all is renderable."""
    if children is None or isinstance(children, (str, int, float, Component)):
        return _inside(children, path)
    if not isinstance(children, (list, tuple)):
        return [f"{path}: {type(children).__name__}"]
    bad = []
    for i, child in enumerate(children):
        if isinstance(child, (list, tuple)):
            bad.append(f"{path}[{i}]: a list inside the children list")
        elif child is None or isinstance(child, (str, int, float, Component)):
            bad.extend(_inside(child, f"{path}[{i}]"))
        else:
            bad.append(f"{path}[{i}]: {type(child).__name__}")
    return bad


def _inside(value, path: str) -> list[str]:
    # A component's own children follow the same rule.
    if isinstance(value, Component):
        return unrenderable(getattr(value, "children", None), f"{path}.{type(value).__name__}.children")
    return []


@pytest.fixture
def engine_without_book():
    """A real engine holding BTCUSDT trades (a bar closed, one in progress) and no depth:
    the book of a symbol just subscribed, whose snapshot has not come."""
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    engine.subscribe("BTCUSDT")
    t0 = (time.time_ns() // 1_000_000 // 60_000) * 60_000 - 120_000  # two minutes ago, UTC ms
    engine.process([RawMessage(time.time_ns(), binance_trade_msg(t0 + i * 20_000, 100 + i, price=f"{60000 + i}.5"))
                    for i in range(5)])
    return engine


def test_unrenderable_when_a_list_is_nested_then_named():
    from dash import html

    assert unrenderable([html.Tr([html.Td("a")]), "x", 1, None]) == []
    assert unrenderable([[html.Tr("a")]]) == ["children[0]: a list inside the children list"]
    assert unrenderable(html.Span([{"props": {}, "type": "Span", "namespace": "dash_html_components"}])) \
        == ["children.Span.children[0]: dict"]


def test_ladder_when_the_book_has_no_level_then_a_flat_list_of_rows(engine_without_book):
    s, _ = ou.parse_settings(None, None, 10, None, "9,21", "view", "session")
    assert engine_without_book.depth("BTCUSDT", 10).bids == []  # the case: no level yet
    children, sig = ou.ladder_update(engine_without_book, "BTCUSDT", BarSpec.from_str("1s"), s, None)
    assert unrenderable(children) == []
    assert [type(c).__name__ for c in children] == ["Tr"]  # the header alone
    assert sig == "none|BTCUSDT"


def test_tape_and_status_when_the_book_has_no_level_then_renderable(engine_without_book):
    s, _ = ou.parse_settings(None, None, 10, None, "9,21", "view", "session")
    tape, _ = ou.tape_update(engine_without_book, "BTCUSDT", s, None)
    assert len(tape) == 1 + 5 and unrenderable(tape) == []
    status = engine_without_book.status()
    assert unrenderable(status_children(status, "BTCUSDT")) == []
    assert unrenderable(status_banner(status)) == []


def test_alert_log_when_local_storage_holds_odd_entries_then_renderable_text():
    from dashboard.orderflow_callbacks import _log_items

    good = {"time": "2026-12-03T20:01:15.085Z", "kind": "size", "text": "BTCUSDT 2.5 at 60,000.5"}
    forged = [good, {"time": ["a", {"props": {}, "type": "Span", "namespace": "dash_html_components"}],
                     "kind": {"x": 1}, "text": [[1, 2]]}, "not an entry", None]
    items = _log_items(forged)
    assert unrenderable(items) == []
    assert len(items) == 2
    assert [c.children for c in items[0].children] == ["20:01:15.085", "size", "BTCUSDT 2.5 at 60,000.5"]
    assert [c.children for c in items[1].children] == ["", "", ""]
    assert _log_items({"not": "a list"}) == []
