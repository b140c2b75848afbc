"""Layout factories: functions from data to components, no module-level app or engine.

``create_layout`` builds the page: a header with the status line, a red banner under it
while the feed has failed, a controls row (symbol, subscribe, bar type with its "label:
start | end" toggle, export) and the two charts. ``status_children`` renders the status
line from ``Engine.status()`` (with ``kline_badge``, the kline cross-check of the selected
symbol) and ``status_banner`` the banner; they are pure so they are tested without a
browser. Styling lives in ``assets/tickscope.css`` (class names here, colours there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dash import dcc, html

from feed.core.health import Status
from feed.core.models import BarSpec

from . import ids
from .figures import LABELS, placeholder_figure

__all__ = [
    "BAR_KINDS",
    "BAR_PRESETS",
    "STATE_COLOURS",
    "EXPLAINED_STATES",
    "BANNER_STATES",
    "label_options",
    "kind_default",
    "size_options",
    "status_children",
    "status_banner",
    "kline_badge",
    "vendor_label",
    "format_age",
    "create_header",
    "create_banner",
    "create_controls",
    "create_charts",
    "create_stores",
    "create_layout",
]

#: Bar kinds in the kind selector, in display order.
BAR_KINDS: tuple[str, ...] = ("time", "tick", "volume", "value")

#: Preset specs per kind (the size selector); :func:`kind_default` names the one chosen when
#: the user switches to a kind.
BAR_PRESETS: dict[str, tuple[str, ...]] = {
    "time": ("1s", "5s", "15s", "1m", "5m", "15m", "1h", "4h", "1d"),
    "tick": ("10t", "50t", "100t", "500t", "1000t"),
    "volume": ("1v", "10v", "50v", "100v"),
    "value": ("100000q", "1000000q", "10000000q"),
}
_KIND_DEFAULT = {"time": "1m", "tick": "100t", "volume": "10v", "value": "1000000q"}

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

_GRAPH_CONFIG = {
    "displaylogo": False,
    "scrollZoom": True,
    "displayModeBar": "hover",
    "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines"],
}


def _spec_label(spec: str) -> str:
    # "1000000q" -> "1,000,000q": big value-bar steps are easier to read grouped.
    s = BarSpec.from_str(spec)
    if s.kind == "value" and float(s.step).is_integer():
        return f"{int(s.step):,}q"
    return str(s)


def kind_default(kind: str) -> str:
    """Return the spec chosen when the user picks ``kind`` in the kind selector."""
    return _KIND_DEFAULT[kind]


def size_options(kind: str, extra: str | None = None) -> list[dict]:
    """Return the size selector's options for ``kind``, plus ``extra`` when not a preset.

    Parameters
    ----------
    kind : {"time", "tick", "volume", "value"}
    extra : str, optional
        A custom spec string of that kind (typed by the user) to offer as well.
    """
    specs = list(BAR_PRESETS[kind])
    if extra is not None and extra not in specs:
        specs.append(extra)
    return [{"label": _spec_label(s), "value": s} for s in specs]


def label_options(kind: str) -> list[dict]:
    """Return the label toggle's options: enabled for time bars only (the others have no
    interval to label); ``dashboard.callbacks`` keeps them in step with the kind in the
    browser."""
    return [{"label": v, "value": v, "disabled": kind != "time"} for v in LABELS]


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
    detail = status.detail.strip() or "no reason given; see the log"
    head = f"{vendor} feed {state}" if vendor else f"feed {state}"
    return [html.Span(head, className="banner-head"), html.Span(detail, className="banner-detail")]


def status_children(status: Status, symbol: str | None, *, dropping: bool = False) -> list:
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
    """
    state = status.state
    colour = STATE_COLOURS.get(state, "grey")
    label = state
    if dropping and colour in ("green", "blue"):
        colour, label = "amber", f"{state} · dropping"
    elif dropping:
        label = f"{state} · dropping"
    counters = status.counters
    sym = status.symbols.get(symbol or "")
    last_ts = sym.last_trade_ts_ns if sym is not None else None
    age = None if last_ts is None else status.clock_ns - last_ts

    def item(name: str, value: str, cls: str = "", title: str | None = None) -> html.Span:
        return html.Span([html.Span(name, className="k"), html.Span(value, className="v")],
                         className=f"status-item {cls}".strip(), title=title)

    detail = status.detail
    vendor = status.vendor
    state_parts = [html.Span(className=f"dot dot-{colour}")]
    if vendor:
        url = status.feed.url if status.feed is not None else ""
        state_parts.append(html.Span(str(vendor), className="feed-name",
                                     title=f"{vendor} feed: {url}" if url else f"{vendor} feed"))
    state_parts.append(html.Span(label, className="state"))
    if detail and state in EXPLAINED_STATES:
        state_parts.append(html.Span(_clip(detail, _DETAIL_CHARS), className="detail"))
    children = [
        html.Span(state_parts, className="status-state", title=detail),
        item("msg/s", f"{status.messages_per_s:,.0f}"),
        item("last trade", format_age(age) if symbol else "–"),
        item("queue", f"{status.queue_depth:,}"),
    ]
    badge = kline_badge(status.kline_check, symbol, vendor=vendor)
    if badge is not None:
        children.append(badge)
    for name, title in _COUNTERS.items():
        n = getattr(counters, name)
        if n:
            children.append(item(name, f"{n:,}", "warn", title))
    errors = list(status.errors)
    if errors and state in BANNER_STATES and str(errors[-1]) in detail:
        errors = []  # the reason the feed failed: already whole in the banner
    if errors:  # the vendor's last refusal, e.g. of a symbol it does not list
        children.append(item("vendor", _clip(str(errors[-1]), 80), "warn",
                             "the vendor's latest refusals, newest last:\n" + "\n".join(map(str, errors))))
    return children


def create_header() -> html.Header:
    """Return the top bar: product name and the (initially empty) status line."""
    return html.Header(
        [
            html.Div([html.Span("tick", className="brand-a"), html.Span("scope", className="brand-b")],
                     className="brand"),
            html.Div(id=ids.STATUS, className="status-line"),
        ],
        className="topbar",
    )


def create_banner() -> html.Div:
    """Return the (initially empty, then hidden) banner under the header: why the feed
    failed (:func:`status_banner`)."""
    return html.Div(id=ids.STATUS_BANNER, className="status-banner", role="alert")


def create_controls(symbols: Sequence[str], default_spec: str) -> html.Div:
    """Return the controls row.

    Parameters
    ----------
    symbols : sequence of str
        Subscribed symbols; the first is selected.
    default_spec : str
        Bar spec selected first (``Engine.default_spec``).
    """
    spec = BarSpec.from_str(default_spec)
    spec_str = str(spec)
    return html.Div(
        [
            html.Div(
                [
                    html.Label("Symbol", htmlFor=ids.SYMBOL, className="ctl-label"),
                    dcc.Dropdown(
                        id=ids.SYMBOL,
                        options=list(symbols),
                        value=symbols[0] if symbols else None,
                        clearable=False,
                        placeholder="no symbol",
                        className="ctl-dropdown ctl-symbol",
                    ),
                    dcc.Input(
                        id=ids.SUBSCRIBE_INPUT,
                        type="text",
                        placeholder="add symbol, e.g. ETHUSDT",
                        debounce=False,
                        autoComplete="off",
                        spellCheck=False,
                        className="ctl-input",
                    ),
                    html.Button("Subscribe", id=ids.SUBSCRIBE_BUTTON, n_clicks=0, className="btn"),
                    html.Span(id=ids.SUBSCRIBE_MESSAGE, className="ctl-message", role="alert"),
                ],
                className="ctl-group",
            ),
            html.Div(
                [
                    html.Label("Bars", htmlFor=ids.BAR_KIND, className="ctl-label"),
                    dcc.Dropdown(
                        id=ids.BAR_KIND,
                        options=[{"label": k, "value": k} for k in BAR_KINDS],
                        value=spec.kind,
                        clearable=False,
                        searchable=False,
                        className="ctl-dropdown ctl-kind",
                    ),
                    dcc.Dropdown(
                        id=ids.BAR_SIZE,
                        options=size_options(spec.kind, spec_str),
                        value=spec_str,
                        clearable=False,
                        searchable=False,
                        className="ctl-dropdown ctl-size",
                    ),
                    html.Div(
                        [
                            html.Span("label", className="ctl-sublabel"),
                            dcc.RadioItems(
                                id=ids.BAR_LABEL,
                                options=label_options(spec.kind),
                                value=LABELS[0],
                                inline=True,
                                className="ctl-toggle",
                            ),
                        ],
                        className="ctl-label-toggle",
                        title="time bars: place each candle at its interval start or end",
                    ),
                    dcc.Input(
                        id=ids.BAR_CUSTOM,
                        type="text",
                        placeholder="custom: 3m, 250t, 0.5v",
                        autoComplete="off",
                        spellCheck=False,
                        className="ctl-input ctl-input-short",
                    ),
                    html.Button("Set", id=ids.BAR_CUSTOM_BUTTON, n_clicks=0, className="btn"),
                    html.Span(id=ids.BAR_MESSAGE, className="ctl-message", role="alert"),
                ],
                className="ctl-group",
            ),
            html.Div(
                [
                    html.Span(id=ids.EXPORT_MESSAGE, className="ctl-message", role="alert"),
                    html.Button("Export CSV", id=ids.EXPORT_BUTTON, n_clicks=0, className="btn btn-primary",
                                title="download the bars in view as CSV"),
                    dcc.Download(id=ids.DOWNLOAD),
                ],
                className="ctl-group ctl-right",
            ),
        ],
        className="controls",
    )


def create_charts() -> html.Main:
    """Return the chart area: candles with volume (left) and order-book depth (right)."""
    return html.Main(
        [
            html.Section(
                dcc.Graph(id=ids.CANDLES, figure=placeholder_figure("loading…"),
                          config=_GRAPH_CONFIG, className="graph"),
                className="panel panel-candles",
            ),
            html.Section(
                dcc.Graph(id=ids.DEPTH, figure=placeholder_figure("loading…"),
                          config=_GRAPH_CONFIG, className="graph"),
                className="panel panel-depth",
            ),
        ],
        className="charts",
    )


def create_stores(interval_ms: int) -> html.Div:
    """Return the interval timer and the stores the callbacks keep their state in."""
    return html.Div(
        [
            dcc.Interval(id=ids.TICK, interval=interval_ms, n_intervals=0),
            dcc.Store(id=ids.CANDLES_STORE, storage_type="memory"),
            dcc.Store(id=ids.DEPTH_STORE, storage_type="memory"),
            dcc.Store(id=ids.STATUS_STORE, storage_type="memory"),
            dcc.Store(id=ids.EXPORT_REQUEST, storage_type="memory"),
            dcc.Store(id=ids.SUBSCRIBE_STORE, storage_type="memory"),
        ],
        hidden=True,
    )


def create_layout(*, symbols: Sequence[str], default_spec: str, interval_ms: int) -> html.Div:
    """Return the whole page.

    Parameters
    ----------
    symbols : sequence of str
        Subscribed symbols (``Engine.symbols()``) at page load.
    default_spec : str
        Bar spec selected first.
    interval_ms : int
        Period of the update timer, milliseconds.
    """
    return html.Div(
        [
            create_header(),
            create_banner(),
            create_controls(symbols, default_spec),
            create_charts(),
            create_stores(interval_ms),
        ],
        className="app",
    )
