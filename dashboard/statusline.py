"""The status line and the failed-feed banner: components from ``Engine.status()``.

``status_children`` renders the status line (feed state with its dot colour and, where it
helps, why; message rate, last-trade age, queue depth, the non-zero problem counters, the
vendor's latest refusal and ``kline_badge``, the kline cross-check of the selected symbol)
and ``status_banner`` the banner shown while the feed has failed. Pure, so they are tested
without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping

from dash import html

from feed.core.health import BOOK_NOT_RECORDED, Status

from .sourcebadge import source_badge
from .wording import detail_words, plain

__all__ = ["STATE_COLOURS", "EXPLAINED_STATES", "BANNER_STATES", "status_children", "status_banner",
           "kline_badge", "vendor_label", "format_age", "history_item"]

#: Status dot colour class per feed state (``Engine.status().state``).
STATE_COLOURS: dict[str, str] = {
    "live": "green",
    "connecting": "amber",
    "authenticating": "amber",
    "reconnecting": "amber",
    "stale": "amber",
    "failed": "red",
    "stopped": "grey",
    "replay-finished": "blue",
}

#: Feed states whose ``detail`` (why, and e.g. "next retry in 2.0 s") is shown inline in the
#: status line, clipped; in the others it is only the dot's tooltip.
EXPLAINED_STATES = frozenset({"reconnecting", "stale"})
#: Feed states whose whole ``detail`` is shown in the banner under the header: the feed gave
#: up, and the detail says what to do (the HTTP 451 advice, which variable holds the token).
BANNER_STATES = frozenset({"failed"})
_DETAIL_CHARS = 90  # longest inline detail; the whole text stays in the tooltip
#: The kline cross-check's reasons for skipping an interval (``feed.core.klinecheck``).
_KLINE_SKIPPED = "intervals not fully watched: start, reconnect, trade gap"

# Problem counters of the status line (``Engine.counters``), shown when non-zero, in this
# order, each with the tooltip that says what it counts.
_COUNTERS: dict[str, str] = {
    "dropped": "messages dropped: the engine could not keep up (queue full)",
    "gaps": "trades missing: jumps in the vendor's trade ids (marked on the chart)",
    "late": "trades too late to revise their closed time bar (beyond the tolerance; counted only)",
    "malformed": "vendor messages that could not be read (skipped)",
}


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def format_age(age_ns: int | None) -> str:
    """Return a short age ("0.4 s", "12 s", "3 min", "2 h") for ns; "–" for None."""
    if age_ns is None:
        return "–"
    s = max(age_ns, 0) / 1e9
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h"


def vendor_label(vendor: str | None) -> str:
    """Return a vendor's name for people: "binance-usdm" -> "Binance", "alltick" -> "AllTick"."""
    name = str(vendor or "").lower()
    for prefix, label in (("binance", "Binance"), ("alltick", "AllTick"), ("itick", "iTick")):
        if name.startswith(prefix):
            return label
    return str(vendor) if vendor else "vendor"


def _kline_value(value) -> str:
    # A compared field's value: ints as they are, floats to 12 significant digits (enough
    # to show any difference the checker counts: it tolerates 1e-9 relative), None (no
    # trade seen in the interval) as "none".
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def kline_badge(kline_check: Mapping | None, symbol: str | None, *, vendor: str | None = None) -> html.Span | None:
    """Return the status line's kline cross-check badge of ``symbol``, or None.

    Green "klines ✓ 42/42 (1m)" while every compared candle agreed; red "klines ✗ 3 of 42"
    once one did not; grey "klines … (1m)" before the first comparison. The tooltip lists
    the mismatches kept (newest first, "minute · field: Binance value vs ours") and the
    intervals skipped.

    Parameters
    ----------
    kline_check : mapping or None
        ``Engine.status().kline_check``: None when the check is off, else per symbol
        ``interval``, ``checked``, ``agreed``, ``skipped``, ``pending``, ``last`` and
        ``mismatches`` (the latest, oldest first: ``{"minute", "fields": {name: [vendor,
        ours]}}``).
    symbol : str or None
        Symbol selected; None (no badge) when it is not checked.
    vendor : str, optional
        ``Engine.status().vendor``, naming whose candles they are (default Binance).
    """
    if not kline_check or not symbol or symbol not in kline_check:
        return None
    r = kline_check[symbol] or {}
    interval = str(r.get("interval", "1m"))
    checked, agreed = int(r.get("checked", 0) or 0), int(r.get("agreed", 0) or 0)
    skipped, pending = int(r.get("skipped", 0) or 0), int(r.get("pending", 0) or 0)
    mismatches = list(r.get("mismatches") or [])
    bad = checked - agreed
    who = vendor_label(vendor if vendor else "binance")
    lines = [f"kline cross-check ({interval}): {who}'s final candles vs tickscope's own {interval} bars"]
    if checked == 0:
        text, cls = f"klines … ({interval})", "kline-wait"
        lines.append("no candle compared yet")
    elif bad == 0:
        text, cls = f"klines ✓ {agreed:,}/{checked:,} ({interval})", "kline-ok"
        lines.append(f"all {checked:,} compared agree")
    else:
        text, cls = f"klines ✗ {bad:,} of {checked:,}", "kline-bad"
        lines.append(f"{bad:,} of {checked:,} compared disagree"
                     + (f" (the latest {len(mismatches)} below, newest first)" if len(mismatches) < bad
                        else " (newest first)"))
        for m in reversed(mismatches):
            fields = "; ".join(f"{name}: {who} {_kline_value(v[0])} vs ours {_kline_value(v[1])}"
                               for name, v in (m.get("fields") or {}).items())
            lines.append(f"{m.get('minute', '?')} · {fields}")
    last = r.get("last")
    if last:
        lines.append(f"last compared {last.get('minute')}: {'agreed' if last.get('agreed') else 'disagreed'}")
    if pending:
        lines.append(f"pending {pending:,} (waiting for our bar to close)")
    lines.append(f"skipped {skipped:,} ({_KLINE_SKIPPED})")
    return html.Span(text, className=f"kline-badge {cls}", title="\n".join(lines))


def status_banner(status: Mapping) -> list:
    """Return the banner's components: the whole ``detail`` while the feed has failed
    (``BANNER_STATES``), else [] (the banner is hidden when empty).

    Parameters
    ----------
    status : feed.core.health.Status
        ``Engine.status()``: state, detail, vendor.
    """
    state = status.state
    if state not in BANNER_STATES:
        return []
    vendor = status.vendor
    detail = detail_words(status.detail.strip()) or "no reason given; see the log"
    head = f"{vendor} feed {state}" if vendor else f"feed {state}"
    return [html.Span(head, className="banner-head"), html.Span(detail, className="banner-detail")]


def status_children(status: Status, symbol: str | None, *, dropping: bool = False,
                    source: dict | None = None) -> list:
    """Return the status line's components for ``Engine.status()``.

    Parameters
    ----------
    status : feed.core.health.Status
        ``Engine.status()``: state, detail, messages_per_s, queue_depth, counters,
        symbols, clock_ns and optionally errors (vendor refusals, newest last), vendor
        (the adapter's name, labelling the feed), feed (its ``url`` is the label's
        tooltip) and kline_check (:func:`kline_badge`). The detail is written out
        (clipped) after the state while reconnecting or stale (``EXPLAINED_STATES``),
        whole in the banner when failed (:func:`status_banner`), and is the state's
        tooltip always; the counters ``dropped``, ``gaps`` (trades missing), ``late`` and
        ``malformed`` appear when non-zero.
    symbol : str or None
        Symbol selected; its last-trade age and kline cross-check are shown.
    dropping : bool
        True when the dropped-message counter grew recently: the dot turns amber and
        says so, whatever the connection state.
    source : dict, optional
        ``dashboard.sourcebadge.source_info``: the source badge (``SIMULATED``, ``REPLAY
        x10`` with clock and progress, ``Binance USD-M``) replaces the vendor's name.
    """
    sym = status.symbols.get(symbol or "")
    last_ts = sym.last_trade_ts_ns if sym is not None else None
    age = None if last_ts is None else status.clock_ns - last_ts
    detail = detail_words(status.detail)  # an exception's text is for the log
    vendor = status.vendor
    state = status.state
    item = _status_item
    children = [
        html.Span(_state_parts(status, dropping, source), className="status-state", title=detail),
        item("msg/s", f"{status.messages_per_s:,.0f}"),
        item("last trade", format_age(age) if symbol else "–"),
        item("queue", f"{status.queue_depth:,}"),
    ]
    absent = sym.book_absent if sym is not None else None
    if absent:  # a fact of the source (a trades-only recording), not a fault: no warn colour
        children.append(item("order book", "not in the recording" if absent == BOOK_NOT_RECORDED else absent,
                             "", f"{symbol}: {absent}. The DOM ladder and depth chart stay empty; bars, "
                             "tape, footprint, volume profile and delta come from its trades."))
    badge = kline_badge(status.kline_check, symbol, vendor=vendor)
    if badge is not None:
        children.append(badge)
    history = history_item(status.history, symbol)
    if history is not None:
        children.append(history)
    for name, title in _COUNTERS.items():
        n = getattr(status.counters, name)
        if n:
            children.append(item(name, f"{n:,}", "warn", title))
    errors = list(status.errors)
    if errors and state in BANNER_STATES and str(errors[-1]) in status.detail:
        errors = []  # the reason the feed failed: already whole in the banner
    if errors:  # the vendor's last refusal, e.g. of a symbol it does not list
        children.append(item("vendor", _clip(plain(errors[-1]), 80), "warn",
                             "the vendor's latest refusals, newest last:\n" + "\n".join(map(plain, errors))))
    return children


def history_item(history: Mapping | None, symbol: str | None) -> html.Span | None:
    """Return the status line's REST history item of ``symbol``, or None without history.

    "history fetching 12,400 trades · back to 13:46:05" while the backfill runs, "history
    12,400 trades since 13:46:05" when done, "history failed" (amber, the reason in the
    tooltip); with trades of ``symbol`` recovered in gaps (``symbols[symbol]["repaired"]``),
    "· 30 repaired" is added, and the gaps that could not be repaired are listed in the
    tooltip with their reason.

    Parameters
    ----------
    history : mapping or None
        ``Engine.status().history`` (``feed.core.history.HistoryLedger.as_json``).
    symbol : str or None
        Symbol selected.
    """
    if not history or not symbol:
        return None
    p = (history.get("backfill") or {}).get(symbol)
    per_symbol = history.get("symbols")
    # The symbol's own repairs; a ledger without per-symbol figures gives the total.
    repaired = int(((per_symbol.get(symbol) or {}).get("repaired") if isinstance(per_symbol, Mapping)
                    else history.get("repaired")) or 0)
    unrepaired = [u for u in history.get("unrepaired") or () if u.get("symbol") == symbol]
    if p is None and not repaired and not unrepaired:
        return None
    parts, cls = [], ""
    lines = ["REST history: trades fetched from the vendor before the first live trade (backfill) "
             "and into trade-id gaps (repaired)"]
    if p is not None:
        trades = f"{int(p.get('trades') or 0):,} trades"
        when = (p.get("oldest") or p.get("since") or "")[11:19]
        if p.get("state") == "fetching":
            parts.append(f"fetching {trades}" + (f" · back to {when}" if when else ""))
        elif p.get("state") == "failed":
            parts.append(f"failed after {trades}")
            cls = "warn"
            lines.append(f"backfill given up: {p.get('error', '')}")
        else:
            parts.append(f"{trades} since {when}" if when else trades)
        lines.append(f"{p.get('calls', 0)} REST calls; vendor's used weight {p.get('weight')}")
    if repaired:
        parts.append(f"{repaired:,} repaired")
    for u in unrepaired[-5:]:
        cls = "warn"
        lines.append(f"ids {u.get('from_id')}..{u.get('to_id')}: {u.get('missing')} still missing: {u.get('error')}")
    return _status_item("history", " · ".join(parts), cls, "\n".join(lines))


def _status_item(name: str, value: str, cls: str = "", title: str | None = None) -> html.Span:
    # One "name value" pair of the status line.
    return html.Span([html.Span(name, className="k"), html.Span(value, className="v")],
                     className=f"status-item {cls}".strip(), title=title)


def _state_parts(status: Status, dropping: bool, source: dict | None = None) -> list:
    # The coloured dot, the feed's name (its URL as tooltip), the state and, while
    # reconnecting or stale, the clipped detail.
    state = status.state
    colour = STATE_COLOURS.get(state, "grey")
    label = state
    if dropping and colour in ("green", "blue"):
        colour, label = "amber", f"{state} · dropping"
    elif dropping:
        label = f"{state} · dropping"
    parts = [html.Span(className=f"dot dot-{colour}")]
    vendor = status.vendor
    url = status.feed.url if status.feed is not None else ""
    badge = source_badge(source, state=state, clock_ns=status.clock_ns, url=url)
    if badge is not None:
        parts.append(badge)
    elif vendor:
        parts.append(html.Span(str(vendor), className="feed-name",
                               title=f"{vendor} feed: {url}" if url else f"{vendor} feed"))
    parts.append(html.Span(label, className="state"))
    if status.detail and state in EXPLAINED_STATES:
        parts.append(html.Span(_clip(detail_words(status.detail), _DETAIL_CHARS), className="detail"))
    return parts
