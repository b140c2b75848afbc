"""Wiring of the order-flow block (``dashboard.orderflow_layout``) to
``dashboard.orderflow_updates``: one callback on the page's update timer returns every
order-flow view, the alert log is drawn from its local store, and the browser side
(notifications, the VWAP anchor click, clearing the log) is clientside.

Registered by :func:`register_orderflow` on the app it is given, like
``dashboard.callbacks.register``.
"""

from __future__ import annotations

import time
from typing import Any

from dash import Input, Output, State, html, no_update

from feed.core.models import BarSpec

from . import ids
from . import orderflow_layout as ol
from . import orderflow_updates as ou

__all__ = ["register_orderflow", "GATE_JS", "NOTIFY_JS", "PERMISSION_JS"]

# Browser side of the alerts: a notification for each alert newer than those already
# notified (when the user allowed them); the newest time notified is remembered in
# localStorage so a reload does not notify the stored log again.
NOTIFY_JS = """
function(log) {
    if (!log || !log.length || !window.Notification || Notification.permission !== 'granted') {
        return window.dash_clientside.no_update;
    }
    var seen = window.localStorage.getItem('tickscope-notified') || '';
    var fresh = log.filter(function (a) { return a.time > seen; }).slice(0, 5);
    fresh.forEach(function (a) { try { new Notification('tickscope: ' + a.kind, {body: a.text}); } catch (e) {} });
    window.localStorage.setItem('tickscope-notified', log[0].time);
    return fresh.length;
}
"""

GATE_JS = """
function(n, show) {
    if (!show || show.indexOf('on') < 0) { return window.dash_clientside.no_update; }  // block closed
    var now = Date.now();
    if (window._tickscopeFlowBusy && now - window._tickscopeFlowBusy < 5000) {
        return window.dash_clientside.no_update;
    }
    window._tickscopeFlowBusy = now;
    return n;
}
"""

# The order-flow update came back: open the gate (a separate callback, so the gate does not
# depend on its own output, which Dash refuses as a cycle).
DONE_JS = """
function(state) { window._tickscopeFlowBusy = 0; return window.dash_clientside.no_update; }
"""

# The block opened or closed: its views shown or hidden (closed, the gates hold every tick).
SHOW_JS = """
function(show) { return (show && show.indexOf('on') >= 0) ? {} : {display: 'none'}; }
"""

# The charts' gate: GATE_JS with its own flag.
CHARTS_GATE_JS = GATE_JS.replace("_tickscopeFlowBusy", "_tickscopeChartsBusy")
CHARTS_DONE_JS = DONE_JS.replace("_tickscopeFlowBusy", "_tickscopeChartsBusy")

# Shared crosshair: the time hovered on one chart is hovered on the other charts shown
# (plotly spikes draw the line). Hovering them fires their own hoverData: the same x is
# not passed on again, so it stops there.
CROSSHAIR_JS = """
function() {
    var ctx = window.dash_clientside.callback_context;
    if (!ctx.triggered.length || !window.Plotly) { return window.dash_clientside.no_update; }
    var id = ctx.triggered[0].prop_id.split('.')[0];
    var hd = ctx.triggered[0].value;
    if (!hd || !hd.points || !hd.points.length) { return window.dash_clientside.no_update; }
    var x = hd.points[0].x;
    if (window._tickscopeCrosshair === x) { return window.dash_clientside.no_update; }
    window._tickscopeCrosshair = x;
    // plotly's Fx.hover takes a date axis position in ms since the epoch
    var xval = (typeof x === 'string') ? Date.parse(x.replace(' ', 'T') + 'Z') : x;
    document.querySelectorAll('.of-chart .js-plotly-plot').forEach(function (gd) {
        var box = gd.closest('.of-chart');
        if (!box || gd.closest('#' + id) || box.offsetParent === null) { return; }
        try { window.Plotly.Fx.hover(gd, {xval: xval}, ['xy']); } catch (e) {}
    });
    return x;
}
"""

LAYOUT_CLASS_JS = """
function(n) { return 'of-charts of-charts-' + (n === 2 || n === 4 ? n : 1); }
"""

PERMISSION_JS = """
function(n) {
    if (!n) { return window.dash_clientside.no_update; }
    if (!window.Notification) { return 'notifications are not supported by this browser'; }
    Notification.requestPermission();
    return '';
}
"""


def _log_items(log: list | None) -> list:
    # The log comes back from the browser's local storage (an older version's entries, or
    # forged): every field is made text, so no list or dict ever reaches the page as a
    # child (React error #31 would stop the page rendering, again on every reload).
    items = []
    for a in log if isinstance(log, list) else []:
        if not isinstance(a, dict):
            continue
        kind = _text(a.get("kind"))
        items.append(html.Li([html.Span(_text(a.get("time"))[11:23], className="of-alert-time"),
                              html.Span(kind, className=f"of-alert-kind of-alert-{kind}"),
                              html.Span(_text(a.get("text")))]))
    return items


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def register_orderflow(app: Any, engine: Any) -> None:
    """Register the order-flow callbacks on ``app`` reading ``engine``."""
    cache = ou.FlowCache()

    settings_inputs = [Input(ol.TAPE_MIN, "value"), Input(ol.TAPE_LARGE, "value"),
                       Input(ol.LADDER_LEVELS, "value"), Input(ol.FP_STEP, "value"),
                       Input(ol.EMA_LENGTHS, "value"), Input(ol.CVD_MODE, "value"),
                       Input(ol.VWAP_MODE, "value"), Input(ol.ALERT_PRICE, "value"),
                       Input(ol.ALERT_SIZE, "value"), Input(ol.ALERT_SURGE, "value"),
                       Input(ol.ALERT_WINDOW, "value")]

    # Dash drops the answer of a callback whose inputs fired again before it came back, so
    # an update slower than the timer (a busy machine) would never land: the timer's ticks
    # are let through only while no order-flow update is in flight (or one is 5 s overdue).
    app.clientside_callback(GATE_JS, Output(ol.TRIGGER, "data"), Input(ids.TICK, "n_intervals"),
                            State(ol.SHOW, "value"))
    app.clientside_callback(SHOW_JS, Output(ol.BODY, "style"), Input(ol.SHOW, "value"))
    app.clientside_callback(DONE_JS, Output(ol.NOTIFY_SINK, "data", allow_duplicate=True), Input(ol.STATE, "data"),
                            prevent_initial_call=True)

    @app.callback(
        Output(ol.TAPE, "children"), Output(ol.LADDER, "children"), Output(ol.FOOTPRINT, "figure"),
        Output(ol.FLOW, "figure"), Output(ol.ALERT_STORE, "data"), Output(ol.STATE, "data"),
        Input(ol.TRIGGER, "data"), Input(ids.SYMBOL, "value"), Input(ids.BAR_SIZE, "value"),
        *settings_inputs, Input(ol.VWAP_ANCHOR, "data"),
        State(ol.STATE, "data"), State(ol.ALERT_STORE, "data"),
    )
    def orderflow_tick(_trigger, symbol, spec_text, *args):
        *settings_values, anchor, state, log = args
        state = dict(state or {})
        state["seq"] = int(state.get("seq", 0)) + 1  # the gate waits for this store to change
        none = (no_update,) * 5
        if not symbol or not spec_text or symbol not in engine.symbols():
            return (*none, state)
        try:
            spec = BarSpec.from_str(spec_text)
        except ValueError:
            return (*none, state)
        s, _ = ou.parse_settings(*settings_values)
        t0 = time.perf_counter()
        try:
            tape, state["tape"] = ou.tape_update(engine, symbol, s, state.get("tape"))
            ladder, state["ladder"] = ou.ladder_update(engine, symbol, spec, s, state.get("ladder"))
            fp, state["fp"] = ou.footprint_update(engine, symbol, spec, s, state.get("fp"))
            flow, state["flow"] = ou.flow_update(engine, symbol, spec, s, anchor, state.get("flow"), cache)
            alerts, state["alerts"] = ou.alerts_update(engine, symbol, spec, s.rules, state.get("alerts"), log)
        except (KeyError, ValueError):  # unsubscribed meanwhile, or a spec too fine for the trades
            return (*none, state)
        state["ms"] = round((time.perf_counter() - t0) * 1000, 2)  # server time of this update
        return tape, ladder, fp, flow, alerts, state

    _register_charts(app, engine, settings_inputs)

    @app.callback(Output(ol.FLOW_MESSAGE, "children"), *settings_inputs)
    def settings_message(*values):
        return ou.parse_settings(*values)[1]

    @app.callback(Output(ol.ALERT_LOG, "children"), Input(ol.ALERT_STORE, "data"))
    def alert_log(log):
        return _log_items(log)

    app.clientside_callback(
        "function(n) { return n ? [] : window.dash_clientside.no_update; }",
        Output(ol.ALERT_STORE, "data", allow_duplicate=True),
        Input(ol.ALERT_CLEAR, "n_clicks"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        "function(click) { return (click && click.points && click.points.length) ? click.points[0].x"
        " : window.dash_clientside.no_update; }",
        Output(ol.VWAP_ANCHOR, "data"),
        Input(ol.FLOW, "clickData"),
        prevent_initial_call=True,
    )
    app.clientside_callback(NOTIFY_JS, Output(ol.NOTIFY_SINK, "data"), Input(ol.ALERT_STORE, "data"),
                            prevent_initial_call=True)
    app.clientside_callback(PERMISSION_JS, Output(ol.FLOW_MESSAGE, "children", allow_duplicate=True),
                            Input(ol.NOTIFY_BUTTON, "n_clicks"), prevent_initial_call=True)


def _register_charts(app: Any, engine: Any, settings_inputs: list) -> None:
    # The chart layouts: 1, 2 or 4 order-flow charts, each with its own symbol and bar type.
    cache = ou.FlowCache()
    app.clientside_callback(LAYOUT_CLASS_JS, Output(ol.CHARTS, "className"), Input(ol.LAYOUT, "value"))
    app.clientside_callback(CHARTS_GATE_JS, Output(ol.CHARTS_TRIGGER, "data"), Input(ids.TICK, "n_intervals"),
                            State(ol.SHOW, "value"))
    app.clientside_callback(CHARTS_DONE_JS, Output(ol.NOTIFY_SINK, "data", allow_duplicate=True),
                            Input(ol.CHARTS_STATE, "data"), prevent_initial_call=True)
    app.clientside_callback(CROSSHAIR_JS, Output(ol.CROSSHAIR, "data"),
                            *[Input(c, "hoverData") for c in ol.CHART], prevent_initial_call=True)

    @app.callback(
        *[Output(c, "figure") for c in ol.CHART], Output(ol.CHARTS_STATE, "data"),
        Input(ol.CHARTS_TRIGGER, "data"), Input(ol.LAYOUT, "value"),
        *[Input(c, "value") for c in ol.CHART_SYMBOL], *[Input(c, "value") for c in ol.CHART_BAR],
        *settings_inputs, State(ol.CHARTS_STATE, "data"),
    )
    def charts_tick(_trigger, layout, *args):
        n = ol.CHART_SLOTS
        symbols, specs, settings_values, state = args[:n], args[n:2 * n], args[2 * n:-1], args[-1]
        state = dict(state or {})
        state["seq"] = int(state.get("seq", 0)) + 1  # the gate waits for this store to change
        s, _ = ou.parse_settings(*settings_values)
        shown = layout if layout in (1, 2, 4) else 1
        figures = []
        held = set(engine.symbols())
        t0 = time.perf_counter()
        for i in range(n):
            key = str(i)
            if i >= shown or symbols[i] not in held:
                figures.append(no_update)
                continue
            try:
                spec = BarSpec.from_str(specs[i])
                fig, state[key] = ou.flow_update(engine, symbols[i], spec, s, None, state.get(key), cache)
            except (KeyError, ValueError, TypeError):
                fig = no_update
            figures.append(fig)
        state["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return (*figures, state)
