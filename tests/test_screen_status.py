"""The source badge and honest status texts, without a browser (the pure renderers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from dash import html

from dashboard.cli import config_from_argv
from dashboard.sourcebadge import replay_clock, source_badge, source_info
from dashboard.statusline import status_children
from tests.helpers import make_status, require_shared_data


def text_of(component) -> str:
    """Return the text of a Dash component tree (children strings concatenated)."""
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    if isinstance(component, (list, tuple)):
        return "".join(text_of(c) for c in component)
    return text_of(getattr(component, "children", None))


def live_config(vendor: str, market: str = "spot") -> SimpleNamespace:
    return SimpleNamespace(embedded=False, replay=(), speed=1.0, vendor_name=vendor, binance_market=market)


@pytest.mark.parametrize("vendor, market, label", [
    ("binance", "usdm", "Binance USD-M"),
    ("binance", "spot", "Binance spot"),
    ("binance", "coinm", "Binance COIN-M"),
    ("alltick", "spot", "AllTick"),
    ("itick", "spot", "iTick"),
])
def test_source_info_when_live_names_vendor_and_market(vendor, market, label):
    info = source_info(live_config(vendor, market))
    assert info["kind"] == "live" and info["label"] == label
    assert text_of(source_badge(info)) == label


def test_source_info_when_simulator_says_simulated():
    info = source_info(config_from_argv([]))
    assert info["kind"] == "simulated"
    badge = source_badge(info, state="live", clock_ns=10**18)
    assert text_of(badge) == "SIMULATED" and "made up" in badge.title


@pytest.mark.parametrize("speed, label", [("10", "REPLAY x10"), ("0", "REPLAY x max"), ("2.5", "REPLAY x2.5")])
def test_source_badge_when_replay_shows_speed_clock_and_progress(speed, label):
    path = require_shared_data("binance-ws-captures-hftbacktest", "raw", "spot", "btcusdt_20240808.gz")
    exchange = SimpleNamespace(progress=0.374)
    info = source_info(config_from_argv(["--replay", str(path), "--speed", speed]), exchange)
    clock = 1_723_161_432 * 10**9  # 2024-08-08 23:57:12 UTC
    text = text_of(source_badge(info, state="live", clock_ns=clock))
    assert text == f"{label}2024-08-08 23:57:12 UTC37%"
    assert text_of(source_badge(info, state="replay-finished", clock_ns=clock)).endswith("100%")


def test_replay_clock_when_out_of_range_is_empty_not_an_error():
    assert replay_clock(None) == "" and replay_clock(0) == "" and replay_clock(10**30) == ""


def test_status_children_when_source_given_badge_replaces_vendor_name():
    status = make_status()
    plain = text_of(status_children(status, "BTCUSDT"))
    assert "binance" in plain and "SIMULATED" not in plain
    sim = text_of(status_children(status, "BTCUSDT", source=source_info(config_from_argv([]))))
    assert "SIMULATED" in sim and "binance" not in sim


def test_replay_source_progress_counts_lines_played_of_the_files():
    from feed.exchange.replay_source import ReplaySource

    path = require_shared_data("binance-ws-captures-hftbacktest", "raw", "spot", "btcusdt_20240808.gz")
    source = ReplaySource([path], 0, None)
    assert source.total_lines > 1000 and source.progress == 0.0
    seen = 0
    for line in source._served_lines(None):  # every line served, None between batches
        seen += line is not None
        if source.played_lines >= source.total_lines // 2:
            break
    assert seen > 0
    assert source.progress == pytest.approx(0.5, abs=0.01)


def test_component_tree_helper_reads_nested_text():
    assert text_of(html.Span([html.Span("a"), "b", html.Span([html.Span("c")])])) == "abc"


# -- trader words and stale marks ---------------------------------------------------------------


@pytest.mark.parametrize("detail, words", [
    ("next retry in 4.0 s (URLError: <urlopen error [Errno 111] Connection refused>)",
     "cannot connect to the exchange - retrying in 4 s"),
    ("next retry in 2.0 s (connection refused)", "cannot connect to the exchange - retrying in 2 s"),
    ("next retry in 1.0 s", "connection to the exchange lost - retrying in 1 s"),
    ("next retry in 3.0 s (KeyError: 'data')", "the connection to the exchange failed - retrying in 3 s"),
    ("the recorded session has played out", "the recorded session has played out"),
    ("HTTP 451: Binance refuses connections from your location (restricted region); try a VPN",
     "HTTP 451: Binance refuses connections from your location (restricted region); try a VPN"),
])
def test_detail_words_when_exception_text_then_trader_words(detail, words):
    from dashboard.wording import detail_words

    assert detail_words(detail) == words


def test_status_line_when_feed_error_is_an_exception_shows_no_exception_text():
    detail = "next retry in 4.0 s (URLError: <urlopen error [Errno 111] Connection refused>)"
    children = status_children(make_status(state="reconnecting", detail=detail), "BTCUSDT")
    text = text_of(children)
    assert "cannot connect to the exchange - retrying in 4 s" in text
    assert "URLError" not in text and "Errno" not in text and "URLError" not in children[0].title


@pytest.mark.parametrize("state, synced, reason", [
    ("live", True, ""), ("replay-finished", True, ""), ("live", False, "stale: book out of sync"),
    ("reconnecting", True, "stale: feed reconnecting"), ("failed", False, "stale: feed failed"),
])
def test_depth_figure_when_feed_not_live_or_book_unsynced_marked_stale(state, synced, reason):
    from dashboard import depth
    from dashboard.wording import stale_reason

    assert stale_reason(state, synced) == reason
    fig = depth.depth_figure([(100.0, 1.0)], [(100.5, 2.0)], symbol="BTCUSDT", mid=100.25, spread=0.5,
                             synced=synced, stale=reason).to_dict()
    mid_line = fig["layout"]["annotations"][0]["text"]
    assert mid_line.startswith("mid 100.25 · spread 0.5")
    assert (reason in mid_line and reason in fig["layout"]["title"]["text"]) if reason else "stale" not in mid_line
    assert all(t.get("opacity") == 0.35 for t in fig["data"]) == bool(reason)


def test_empty_panels_when_feed_down_say_so():
    from dashboard import depth
    from dashboard.wording import feed_down_words

    fig = depth.depth_figure([], [], symbol="BTCUSDT", synced=False, stale="stale: feed reconnecting").to_dict()
    assert any(a["text"] == "no order book: feed reconnecting" for a in fig["layout"]["annotations"])
    assert feed_down_words("reconnecting") == "feed down" and feed_down_words("live") == ""
