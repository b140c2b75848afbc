"""The order-flow block of the page: its component ids and its layout.

A self-contained block placed under the charts (``create_orderflow``): a controls row
(tape filter, ladder depth, footprint step, EMA lengths, CVD and VWAP anchoring, alert
rules), the time & sales tape, the DOM ladder, the footprint, the flow chart (candles with
VWAP/EMA, the volume profile beside the price axis, CVD under the candles), the alert
log, and the chart layouts (one, two or four order-flow charts, each with its own symbol
and bar type, sharing the crosshair). Settings persist in the browser (``persistence_type="local"``); the alert log is a
``dcc.Store(storage_type="local")``, so both survive a reload. Styling is
``assets/orderflow.css``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dash import dcc, html

from .figures import placeholder_figure

__all__ = [
    "TAPE", "TAPE_MIN", "TAPE_LARGE", "LADDER", "LADDER_LEVELS", "FOOTPRINT", "FP_STEP", "FLOW",
    "EMA_LENGTHS", "CVD_MODE", "VWAP_MODE", "VWAP_ANCHOR", "ALERT_PRICE", "ALERT_SIZE",
    "ALERT_SURGE", "ALERT_WINDOW", "ALERT_LOG", "ALERT_STORE", "ALERT_CLEAR", "NOTIFY_BUTTON",
    "NOTIFY_SINK", "STATE", "TRIGGER", "FLOW_MESSAGE", "LAYOUT", "CHARTS", "CHART", "CHART_SYMBOL",
    "CHART_BAR", "CHARTS_STATE", "CHARTS_TRIGGER", "CROSSHAIR", "CHART_BARS", "create_orderflow",
]

# -- component ids (the "of-" prefix keeps them apart from dashboard.ids) ----------------------
SHOW = "of-show"  # Checklist: the order-flow block open ("on") or closed (persisted)
BODY = "of-body"  # the block's views, hidden while closed
TAPE = "of-tape"  # html.Table: time & sales, newest on top
TAPE_MIN = "of-tape-min"  # smallest size shown on the tape (base units)
TAPE_LARGE = "of-tape-large"  # trades of at least this size are emphasised
LADDER = "of-ladder"  # html.Table: DOM ladder around the mid
LADDER_LEVELS = "of-ladder-levels"  # book levels per side on the ladder
FOOTPRINT = "of-footprint"  # dcc.Graph: footprint heatmap of the latest bars
FP_STEP = "of-fp-step"  # price step of footprint levels (empty: each traded price)
FLOW = "of-flow"  # dcc.Graph: candles + VWAP/EMA + volume profile + CVD
EMA_LENGTHS = "of-ema"  # EMA lengths, comma separated ("9,21")
CVD_MODE = "of-cvd-mode"  # CVD from the first bar shown ("view") or per session
VWAP_MODE = "of-vwap-mode"  # VWAP anchored at each session or at a chosen bar
VWAP_ANCHOR = "of-vwap-anchor"  # store: start (UTC ns) of the bar clicked as VWAP anchor
ALERT_PRICE = "of-alert-price"  # alert when the price crosses this level
ALERT_SIZE = "of-alert-size"  # alert on a trade of at least this size
ALERT_SURGE = "of-alert-surge"  # alert when a bar's volume > N std above the rolling mean
ALERT_WINDOW = "of-alert-window"  # bars in that rolling window
ALERT_LOG = "of-alert-log"  # html.Ol: alerts, newest first
ALERT_STORE = "of-alert-store"  # dcc.Store(local): the alert log (survives a reload)
ALERT_CLEAR = "of-alert-clear"  # button: clear the log
NOTIFY_BUTTON = "of-notify"  # button: ask the browser's permission for notifications
NOTIFY_SINK = "of-notify-sink"  # store written by the clientside notification callbacks
STATE = "of-state"  # dcc.Store(memory): what each view drew last (see orderflow_callbacks)
TRIGGER = "of-trigger"  # dcc.Store(memory): the update timer's ticks, let through one at a time
FLOW_MESSAGE = "of-flow-message"  # inline note for a bad order-flow input

# -- chart layouts: one, two side by side or four charts, each its own symbol and bar type
LAYOUT = "of-layout"  # RadioItems: 1, 2 or 4 charts
CHARTS = "of-charts"  # the charts' container (its class says how many show)
CHART_SLOTS = 4
CHART = [f"of-chart-{i}" for i in range(CHART_SLOTS)]  # dcc.Graph per chart
CHART_SYMBOL = [f"of-chart-symbol-{i}" for i in range(CHART_SLOTS)]  # dcc.Dropdown per chart
CHART_BAR = [f"of-chart-bar-{i}" for i in range(CHART_SLOTS)]  # dcc.Dropdown of bar specs per chart
CHARTS_STATE = "of-charts-state"  # dcc.Store(memory): what each chart drew last
CHARTS_TRIGGER = "of-charts-trigger"  # the update timer's ticks, let through one at a time
CROSSHAIR = "of-crosshair"  # dcc.Store(memory): the x hovered last (shared crosshair)
CHART_BARS = ("1s", "5s", "15s", "1m", "5m", "15m", "1h", "100t", "1000t", "10v", "1000000q")

_GRAPH_CONFIG = {"displaylogo": False, "scrollZoom": True, "displayModeBar": "hover",
                 "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}


def _num(id_: str, label: str, value, *, placeholder: str = "", width: str = "short", step="any",
         title: str = "") -> html.Label:
    return html.Label(
        [html.Span(label, className="of-label"),
         dcc.Input(id=id_, type="number", value=value, min=0, step=step, placeholder=placeholder,
                   debounce=True, persistence=True, persistence_type="local",
                   className=f"ctl-input of-input-{width}")],
        className="of-field", title=title)


def _controls() -> html.Div:
    return html.Div([
        _num(TAPE_MIN, "tape ≥", None, placeholder="min size", title="smallest trade size on the tape"),
        _num(TAPE_LARGE, "large ≥", None, placeholder="size", title="emphasise trades of at least this size"),
        _num(LADDER_LEVELS, "ladder levels", 10, step=1, title="book levels per side on the DOM ladder"),
        _num(FP_STEP, "footprint step", None, placeholder="tick", title="price step of footprint levels"),
        html.Label([html.Span("EMA", className="of-label"),
                    dcc.Input(id=EMA_LENGTHS, type="text", value="9,21", debounce=True, persistence=True,
                              persistence_type="local", className="ctl-input of-input-short",
                              placeholder="9,21")],
                   className="of-field", title="EMA lengths in bars, comma separated (up to 4)"),
        html.Label([html.Span("CVD", className="of-label"),
                    dcc.RadioItems(id=CVD_MODE, options=[{"label": "view", "value": "view"},
                                                          {"label": "session", "value": "session"}],
                                   value="view", inline=True, persistence=True, persistence_type="local",
                                   className="ctl-toggle")], className="of-field"),
        html.Label([html.Span("VWAP", className="of-label"),
                    dcc.RadioItems(id=VWAP_MODE, options=[{"label": "session", "value": "session"},
                                                           {"label": "bar", "value": "bar"}],
                                   value="session", inline=True, persistence=True, persistence_type="local",
                                   className="ctl-toggle")],
                   className="of-field", title="anchored at the session open, or at the bar clicked last"),
        html.Span(id=FLOW_MESSAGE, className="ctl-message", role="alert"),
    ], className="of-controls")


def _alerts() -> html.Div:
    return html.Div([
        html.Div([
            html.Span("Alerts", className="of-title"),
            _num(ALERT_PRICE, "price crosses", None, placeholder="level"),
            _num(ALERT_SIZE, "trade ≥", None, placeholder="size"),
            _num(ALERT_SURGE, "volume >", None, placeholder="N", title="N standard deviations"),
            html.Span("std over", className="of-label"),
            _num(ALERT_WINDOW, "", 20, step=1, title="bars in the rolling window"),
            html.Span("bars", className="of-label"),
            html.Button("Notify me", id=NOTIFY_BUTTON, n_clicks=0, className="btn",
                        title="show alerts as browser notifications (asks permission)"),
            html.Button("Clear", id=ALERT_CLEAR, n_clicks=0, className="btn"),
        ], className="of-controls"),
        html.Ol(id=ALERT_LOG, className="of-alert-log"),
    ], className="of-panel of-alerts")


def _charts(symbols: Sequence[str], default_spec: str) -> html.Div:
    # The chart layout chooser and four chart slots (the ones beyond the layout are hidden);
    # every choice persists in localStorage.
    first = list(symbols[:1]) or [None]
    bars = list(CHART_BARS) if default_spec in CHART_BARS else [default_spec, *CHART_BARS]
    slots = []
    for i in range(CHART_SLOTS):
        slots.append(html.Div([
            html.Div([
                dcc.Dropdown(id=CHART_SYMBOL[i], options=list(symbols),
                             value=symbols[i % len(symbols)] if symbols else first[0], clearable=False,
                             persistence=True, persistence_type="local", className="ctl-dropdown ctl-symbol"),
                dcc.Dropdown(id=CHART_BAR[i], options=bars, value=default_spec, clearable=False, searchable=False,
                             persistence=True, persistence_type="local", className="ctl-dropdown ctl-size"),
            ], className="of-chart-controls"),
            dcc.Graph(id=CHART[i], figure=placeholder_figure("loading…"), config=_GRAPH_CONFIG, className="graph"),
        ], className=f"of-panel of-chart of-chart-{i}"))
    return html.Div([
        html.Div([html.Span("Charts", className="of-title"),
                  dcc.RadioItems(id=LAYOUT, options=[{"label": "one", "value": 1}, {"label": "two", "value": 2},
                                                     {"label": "four", "value": 4}],
                                 value=1, inline=True, persistence=True, persistence_type="local",
                                 className="ctl-toggle")], className="of-controls"),
        html.Div(slots, id=CHARTS, className="of-charts of-charts-1"),
        dcc.Store(id=CHARTS_STATE, storage_type="memory"),
        dcc.Store(id=CHARTS_TRIGGER, storage_type="memory"),
        dcc.Store(id=CROSSHAIR, storage_type="memory"),
    ], className="of-layouts")


def create_orderflow(symbols: Sequence[str] = (), default_spec: str = "1m") -> html.Section:
    """Return the order-flow block (self-contained: its own ids, stores and CSS classes).

    Parameters
    ----------
    symbols : sequence of str
        Subscribed symbols at page load (the layout charts' symbol choices).
    default_spec : str
        Bar spec the layout charts start with.
    """
    # Closed by default: its views cost tens of KB per update, which a trader who only
    # watches the candles should not pay; open, it stays open (local persistence).
    toggle = dcc.Checklist(id=SHOW, options=[{"label": " Order flow: tape, DOM ladder, footprint, profile, CVD, "
                                                       "VWAP/EMA, alerts, layouts", "value": "on"}],
                           value=[], persistence=True, persistence_type="local", className="of-show")
    return html.Section([
        toggle,
        html.Div([
            _controls(),
            html.Div([
                html.Div([html.Div("Time & sales", className="of-title"),
                          html.Div(html.Table(id=TAPE, className="of-table of-tape"), className="of-scroll")],
                         className="of-panel of-tape-panel"),
                html.Div([html.Div("DOM ladder", className="of-title"),
                          html.Div(html.Table(id=LADDER, className="of-table of-ladder"), className="of-scroll")],
                         className="of-panel of-ladder-panel"),
                html.Div(dcc.Graph(id=FOOTPRINT, figure=placeholder_figure("loading…"), config=_GRAPH_CONFIG,
                                   className="graph"), className="of-panel of-footprint-panel"),
                html.Div(dcc.Graph(id=FLOW, figure=placeholder_figure("loading…"), config=_GRAPH_CONFIG,
                                   className="graph"), className="of-panel of-flow-panel"),
            ], className="of-grid"),
            _alerts(),
            _charts(symbols, default_spec),
            dcc.Store(id=STATE, storage_type="memory"),
            dcc.Store(id=TRIGGER, storage_type="memory"),
            dcc.Store(id=ALERT_STORE, storage_type="local"),
            dcc.Store(id=VWAP_ANCHOR, storage_type="local"),
            dcc.Store(id=NOTIFY_SINK, storage_type="memory"),
        ], id=BODY, style={"display": "none"}),
    ], className="orderflow")
