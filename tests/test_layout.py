"""The status line, the failed-feed banner and the kline cross-check badge
(``dashboard.statusline``) and the page layout (``dashboard.layout``), without a browser. The vendor-error matching behind the subscribe
box and the status update are tested in ``tests/test_callbacks.py``."""

from __future__ import annotations

import pytest

from dashboard import ids, layout, statusline
from feed.core.health import Status
from tests.helpers import make_status

HINT_451 = ("HTTP 451: Binance refuses connections from your location (restricted region); try "
            "--binance-host data (market-data-only host), --market usdm, or a VPN or network in a "
            "permitted region")
TOKEN_MISSING = ("AllTick error 401: token invalid or expired; set ALLTICK_TOKEN to the token from "
                 "your alltick.co dashboard (or [alltick] token in the --config file)")


def text_of(node) -> str:
    """Return the visible text of a component tree (strings joined by spaces)."""
    out: list[str] = []

    def walk(n):
        if n is None:
            return
        if isinstance(n, str):
            out.append(n)
        elif isinstance(n, (list, tuple)):
            for c in n:
                walk(c)
        else:
            walk(getattr(n, "children", None))
    walk(node)
    return " ".join(out)


def find(node, class_part: str):
    """Return the first component whose className contains ``class_part`` (depth first)."""
    if isinstance(node, (list, tuple)):
        for c in node:
            hit = find(c, class_part)
            if hit is not None:
                return hit
        return None
    if node is None or isinstance(node, str):
        return None
    if class_part in (getattr(node, "className", None) or "").split():
        return node
    return find(getattr(node, "children", None), class_part)


def status(**over) -> Status:
    return make_status(**over)


def kline_result(checked=42, agreed=42, skipped=2, pending=0, mismatches=(), interval="1m") -> dict:
    return {"interval": interval, "checked": checked, "agreed": agreed, "skipped": skipped, "pending": pending,
            "last": {"minute": "2024-08-08T23:59:00Z", "agreed": checked == agreed} if checked else None,
            "mismatches": list(mismatches)}


MISMATCH_1 = {"minute": "2024-08-08T23:56:00Z", "fields": {"volume": [1.2350000001, 1.235]}}
MISMATCH_2 = {"minute": "2024-08-08T23:58:00Z",
              "fields": {"close": [60010.5, 60010.0], "trade_count": [13, 12]}}


# -- status line per feed state -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "colour", "inline"),
    [
        ("connecting", "amber", False),
        ("authenticating", "amber", False),
        ("live", "green", False),
        ("reconnecting", "amber", True),
        ("stale", "amber", True),
        ("failed", "red", False),  # the whole detail is in the banner instead
        ("stopped", "grey", False),
        ("replay-finished", "blue", False),
    ],
)
def test_status_children_when_state_then_colour_vendor_label_and_detail_where_it_helps(state, colour, inline):
    detail = f"why it is {state}"
    children = statusline.status_children(status(state=state, detail=detail), "BTCUSDT")
    head = children[0]
    assert find(head, "dot").className == f"dot dot-{colour}"
    assert find(head, "state").children == state
    feed = find(head, "feed-name")
    assert feed.children == "binance" and feed.title == "binance feed: wss://stream.binance.com:9443/stream"
    assert text_of(head).startswith(f"binance {state}")
    assert (find(head, "detail") is not None) is inline
    assert head.title == detail  # the tooltip always has it
    banner = statusline.status_banner(status(state=state, detail=detail))
    assert (banner != []) is (state == "failed")


def test_status_children_when_vendor_unknown_then_no_label():
    children = statusline.status_children(status(vendor=None, feed=None), None)
    assert find(children, "feed-name") is None and text_of(children[0]) == "live"


@pytest.mark.parametrize("vendor", ["binance-usdm", "alltick", "itick"])
def test_status_children_when_vendor_then_named_as_the_adapter(vendor):
    assert find(statusline.status_children(status(vendor=vendor), None), "feed-name").children == vendor


def test_status_children_when_failed_then_not_clipped_and_banner_has_the_whole_detail():
    for detail in (HINT_451, TOKEN_MISSING):
        st = status(state="failed", detail=detail, vendor="alltick" if "AllTick" in detail else "binance")
        children = statusline.status_children(st, "BTCUSDT")
        assert "…" not in text_of(children) and find(children, "detail") is None
        banner = statusline.status_banner(st)
        assert banner[1].children == detail  # whole: the advice, which variable holds the token
        assert banner[0].children == f"{st.vendor} feed failed"
    assert len(HINT_451) > 90  # longer than the status line's clip


def test_status_children_when_failed_then_the_same_reason_not_repeated_as_vendor_error():
    st = status(state="failed", detail=HINT_451, errors=["Binance error 2: Invalid request", HINT_451])
    assert "vendor" not in text_of(statusline.status_children(st, "BTCUSDT"))
    st = status(state="failed", detail=HINT_451, errors=[HINT_451, "Binance error 2: Invalid request"])
    assert "vendor Binance error 2" in text_of(statusline.status_children(st, "BTCUSDT"))


def test_status_banner_when_failed_without_detail_then_points_to_the_log():
    assert text_of(statusline.status_banner(status(state="failed", detail="", vendor=None))) == \
        "feed failed no reason given; see the log"


def test_status_children_when_vendor_errors_then_latest_shown_and_all_in_tooltip():
    errors = ["Binance error 2: Invalid request", "AllTick error 600: symbol code invalid (trades ZZZZ.US)"]
    children = statusline.status_children(status(errors=errors), "BTCUSDT")
    item = children[-1]
    assert text_of(item) == "vendor " + errors[-1]
    assert item.title.splitlines()[1:] == errors


# -- kline cross-check badge ----------------------------------------------------------------------


def test_kline_badge_when_check_off_or_symbol_not_checked_then_none():
    assert statusline.kline_badge(None, "BTCUSDT") is None
    assert statusline.kline_badge({"ETHUSDT": kline_result()}, "BTCUSDT") is None
    assert statusline.kline_badge({"BTCUSDT": kline_result()}, None) is None
    children = statusline.status_children(status(), "BTCUSDT")
    assert find(children, "kline-badge") is None


def test_kline_badge_when_all_agree_then_green_count_and_interval():
    badge = statusline.kline_badge({"BTCUSDT": kline_result(42, 42, skipped=3)}, "BTCUSDT")
    assert badge.children == "klines ✓ 42/42 (1m)"
    assert badge.className == "kline-badge kline-ok"
    lines = badge.title.splitlines()
    assert lines[0] == "kline cross-check (1m): Binance's final candles vs tickscope's own 1m bars"
    assert "all 42 compared agree" in lines
    assert "last compared 2024-08-08T23:59:00Z: agreed" in lines
    assert lines[-1] == "skipped 3 (intervals not fully watched: start, reconnect, trade gap)"


def test_kline_badge_when_mismatches_then_red_and_each_listed_minute_field_vendor_vs_ours():
    r = kline_result(42, 40, skipped=1, pending=1, mismatches=[MISMATCH_1, MISMATCH_2])
    badge = statusline.kline_badge({"BTCUSDT": r}, "BTCUSDT", vendor="binance-usdm")
    assert badge.children == "klines ✗ 2 of 42"
    assert badge.className == "kline-badge kline-bad"
    lines = badge.title.splitlines()
    assert lines[1] == "2 of 42 compared disagree (newest first)"
    assert lines[2] == ("2024-08-08T23:58:00Z · close: Binance 60010.5 vs ours 60010; "
                        "trade_count: Binance 13 vs ours 12")
    assert lines[3] == "2024-08-08T23:56:00Z · volume: Binance 1.2350000001 vs ours 1.235"
    assert "pending 1 (waiting for our bar to close)" in lines
    assert "last compared 2024-08-08T23:59:00Z: disagreed" in lines
    assert lines[-1] == "skipped 1 (intervals not fully watched: start, reconnect, trade gap)"


def test_kline_badge_when_more_mismatches_than_kept_then_says_the_latest():
    r = kline_result(100, 75, mismatches=[MISMATCH_1] * 20)
    badge = statusline.kline_badge({"BTCUSDT": r}, "BTCUSDT")
    assert badge.children == "klines ✗ 25 of 100"
    assert "the latest 20 below" in badge.title.splitlines()[1]
    assert sum("· volume:" in line for line in badge.title.splitlines()) == 20


def test_kline_badge_when_nothing_compared_yet_then_grey_waiting():
    badge = statusline.kline_badge({"BTCUSDT": kline_result(0, 0, skipped=1, pending=1, interval="1s")}, "BTCUSDT")
    assert badge.children == "klines … (1s)" and badge.className == "kline-badge kline-wait"
    assert "no candle compared yet" in badge.title


def test_kline_badge_when_our_side_had_no_bar_then_none():
    r = kline_result(1, 0, mismatches=[{"minute": "2024-08-08T23:56:00Z", "fields": {"open": [1.5, None]}}])
    assert "open: Binance 1.5 vs ours none" in statusline.kline_badge({"BTCUSDT": r}, "BTCUSDT").title


def test_status_children_when_kline_check_on_then_badge_of_the_selected_symbol():
    kc = {"BTCUSDT": kline_result(5, 5), "ETHUSDT": kline_result(5, 4, mismatches=[MISMATCH_1])}
    btc = find(statusline.status_children(status(kline_check=kc), "BTCUSDT"), "kline-badge")
    eth = find(statusline.status_children(status(kline_check=kc), "ETHUSDT"), "kline-badge")
    assert btc.children == "klines ✓ 5/5 (1m)" and eth.children == "klines ✗ 1 of 5"


@pytest.mark.parametrize(("vendor", "label"), [("binance", "Binance"), ("binance-usdm", "Binance"),
                                               ("alltick", "AllTick"), ("itick", "iTick"), ("other", "other"),
                                               (None, "vendor")])
def test_vendor_label_when_adapter_name_then_for_people(vendor, label):
    assert statusline.vendor_label(vendor) == label


def test_create_layout_when_built_then_banner_under_header_and_subscribe_store():
    page = layout.create_layout(symbols=["BTCUSDT"], default_spec="1m", interval_ms=250)
    assert [getattr(c, "id", None) for c in page.children[:2]] == [None, ids.STATUS_BANNER]
    assert page.children[1].role == "alert"
    stores = [c.id for c in page.children[-1].children]
    assert ids.SUBSCRIBE_STORE in stores
