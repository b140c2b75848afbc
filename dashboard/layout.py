"""Layout factories: functions from data to components, no module-level app or engine.

``create_layout`` builds the page: a header with the status line, a red banner under it
while the feed has failed, a controls row (symbol, subscribe, bar type with its "label:
start | end" toggle, export) and the two charts; also the bar chooser's options
(``size_options``, ``label_options``). The status line's contents are
``dashboard.statusline``. Styling lives in ``assets/tickscope.css`` (class names here,
colours there).
"""

from __future__ import annotations

from collections.abc import Sequence

from dash import dcc, html

from feed.core.models import BarSpec

from . import ids
from .figures import LABELS, placeholder_figure
from .timezones import zone_options
from .orderflow_layout import create_orderflow

__all__ = [
    "BAR_KINDS",
    "BAR_PRESETS",
    "label_options",
    "kind_default",
    "size_options",
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
    failed (``statusline.status_banner``)."""
    return html.Div(id=ids.STATUS_BANNER, className="status-banner", role="alert")


def create_controls(symbols: Sequence[str], default_spec: str, session_tz: str | None = None) -> html.Div:
    """Return the controls row.

    Parameters
    ----------
    symbols : sequence of str
        Subscribed symbols; the first is selected.
    default_spec : str
        Bar spec selected first (``Engine.default_spec``).
    session_tz : str, optional
        The exchange session's zone, offered in the time-zone choice.
    """
    return html.Div(
        [_symbol_controls(symbols), _bar_controls(default_spec), _export_controls(session_tz)],
        className="controls",
    )


def _symbol_controls(symbols: Sequence[str]) -> html.Div:
    # The symbol dropdown and the subscribe box.
    return html.Div(
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
            html.Button("Remove", id=ids.UNSUBSCRIBE_BUTTON, n_clicks=0, className="btn",
                        title="unsubscribe the selected symbol (its stored history is kept)"),
            html.Span(id=ids.SUBSCRIBE_MESSAGE, className="ctl-message", role="alert"),
        ],
        className="ctl-group",
    )


def _bar_controls(default_spec: str) -> html.Div:
    # Bar kind, size, label toggle and the custom spec box.
    spec = BarSpec.from_str(default_spec)
    spec_str = str(spec)
    return html.Div(
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
    )


def _export_controls(session_tz: str | None = None) -> html.Div:
    # The chart's time zone, the Export CSV button, its inline message and the download.
    return html.Div(
        [
            html.Label("Times", htmlFor=ids.TIMEZONE, className="ctl-label"),
            dcc.Dropdown(
                id=ids.TIMEZONE,
                options=zone_options(session_tz),
                value="UTC",
                clearable=False,
                searchable=True,  # type any IANA name, e.g. America/New_York
                className="ctl-dropdown ctl-tz",
            ),
            html.Span(id=ids.EXPORT_MESSAGE, className="ctl-message", role="alert"),
            html.Button("Export CSV", id=ids.EXPORT_BUTTON, n_clicks=0, className="btn btn-primary",
                        title="download the bars in view as CSV"),
            dcc.Download(id=ids.DOWNLOAD),
        ],
        className="ctl-group ctl-right",
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
            dcc.Store(id=ids.PULSE, storage_type="memory"),
            dcc.Store(id=ids.CANDLES_STORE, storage_type="memory"),
            dcc.Store(id=ids.DEPTH_STORE, storage_type="memory"),
            dcc.Store(id=ids.STATUS_STORE, storage_type="memory"),
            dcc.Store(id=ids.EXPORT_REQUEST, storage_type="memory"),
            dcc.Store(id=ids.SUBSCRIBE_STORE, storage_type="memory"),
            dcc.Store(id=ids.BROWSER_TZ, storage_type="memory"),
            dcc.Store(id=ids.HISTORY_STORE, storage_type="memory"),
            dcc.Store(id=ids.HISTORY_BASE, storage_type="memory"),
            dcc.Store(id=ids.HISTORY_RANGE, storage_type="memory"),
        ],
        hidden=True,
    )


def create_layout(*, symbols: Sequence[str], default_spec: str, interval_ms: int,
                  session_tz: str | None = None) -> html.Div:
    """Return the whole page.

    Parameters
    ----------
    symbols : sequence of str
        Subscribed symbols (``Engine.symbols()``) at page load.
    default_spec : str
        Bar spec selected first.
    interval_ms : int
        Period of the update timer, milliseconds.
    session_tz : str, optional
        The exchange session's IANA zone (``--session-tz``), offered in the time-zone
        choice.
    """
    return html.Div(
        [
            create_header(),
            create_banner(),
            create_controls(symbols, default_spec, session_tz),
            create_charts(),
            create_orderflow(symbols, default_spec),  # the order-flow block: dashboard/orderflow_layout.py
            create_stores(interval_ms),
        ],
        className="app",
    )
