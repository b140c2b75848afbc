"""Callbacks: wire the dashboard's components to ``dashboard.updates`` and the export.

Everything is registered by :func:`register` on the app it is given, with the engine as
an argument (closures, no module globals), so two apps with two engines can live in one
process (tests). ``dash.callback`` would register globally, on every app created later,
so ``app.callback`` is used. Each callback reads its inputs, calls one helper with the
engine (and the time, read here) and returns what it returns; every value is checked
first (``dashboard.inputs``: a body can be forged), pure UI toggles are
clientside. The live update is described in ``dashboard.updates``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from dash import Input, Output, State, ctx, dcc, no_update
from dash.exceptions import PreventUpdate

from feed.core.batch import bars_to_frame
from feed.core.csvformat import bars_to_csv
from feed.core.models import BarSpec

from . import figures, history, ids, inputs, tickgate, timezones, updates
from .export import bars_in_view, export_filename
from .layout import BAR_KINDS
from .orderflow_callbacks import register_orderflow
from .updates import DEPTH_LEVELS, KEEP_POINTS, MAX_POINTS

__all__ = ["register", "export_download", "MAX_POINTS", "KEEP_POINTS", "DEPTH_LEVELS"]

# Browser side of "Export CSV": read the candle chart's visible x-range from plotly (the
# range the user zoomed to, or the autorange covering every bar drawn).
_EXPORT_JS = """
function(n) {
    if (!n) { return window.dash_clientside.no_update; }
    var gd = document.querySelector('#%s .js-plotly-plot');
    var ax = gd && gd._fullLayout ? gd._fullLayout.xaxis : null;
    return {n: n, range: ax && ax.range ? ax.range.slice() : null, type: ax ? ax.type : null};
}
"""


# Browser side of a symbol leaving the options (the vendor refused it, the engine dropped
# it; the dropdown then clears its value): select the symbol selected before the
# subscribe, else the first one left.
_SYMBOL_GONE_JS = """
function(options, value, pending) {
    var values = (options || []).map(function (o) { return (o && typeof o === 'object') ? o.value : o; });
    if (values.indexOf(value) >= 0 || !values.length) {
        return window.dash_clientside.no_update;
    }
    var before = pending ? pending.previous : null;
    return values.indexOf(before) >= 0 ? before : values[0];
}
"""


# Browser side of the label toggle's enabled state.
_LABEL_OPTIONS_JS = """
function(kind) {
    return %s.map(function (v) { return {label: v, value: v, disabled: kind !== 'time'}; });
}
""" % json.dumps(list(figures.LABELS))


# -- the CSV export ------------------------------------------------------------------------


def export_download(engine: Any, request: dict, symbol: str, spec_text: str,
                    drawn: dict | None, tz: str = "UTC") -> tuple[Any, str]:
    """Return (download, inline message) for Export CSV.

    The bars in the visible x-range (``request``, read in the browser) of the chart as
    drawn (its store, ``drawn``), in the export format of ``dashboard.export`` (times in
    UTC whatever the chart's zone ``tz``).
    """
    try:
        spec = BarSpec.from_str(spec_text)
    except ValueError as exc:
        return no_update, f"choose another bar size: {exc}"
    drawn = drawn or {}
    if drawn.get("empty") and drawn.get("key") == f"{symbol}|{spec}":
        return no_update, "no bars in view"
    if (request.get("type") != ("date" if spec.is_time else "linear")
            or drawn.get("view") != updates.chart_view(symbol, spec, tz)):
        return no_update, "chart is updating, try again"  # still drawn for another choice
    # Bars in view as drawn: at their end when the chart labels them so (updates.candles_update).
    label = "end" if str(drawn.get("key", "")).endswith("|end") else "start"
    try:
        series = engine.bar_series(symbol, spec, 0)
    except KeyError:
        return no_update, f"{symbol} is not subscribed"
    except ValueError as exc:  # a spec too costly to build
        return no_update, str(exc)
    bars = series.closed + ([series.current] if series.current is not None else [])
    try:
        frame = bars_in_view(bars_to_frame(bars), request.get("range"), spec=spec,
                             first_index=series.first_index, label=label)
    except ValueError:
        return no_update, "chart is updating, try again"
    if frame.empty:
        return no_update, "no bars in view"
    text = bars_to_csv(frame, price_decimals=series.price_decimals,
                       size_decimals=series.size_decimals)
    return dcc.send_string(text, export_filename(symbol, spec, frame), type="text/csv"), ""


def register(app: Any, engine: Any, *, max_points: int = MAX_POINTS, keep_points: int = KEEP_POINTS,
             source: dict | None = None) -> None:
    """Register every callback of the dashboard on ``app``.

    Parameters
    ----------
    app : dash.Dash
        The app (or the ``dash`` module for global registration; anything with
        ``callback`` and ``clientside_callback``).
    engine
        The engine read API (``feed.io.engine.Engine``).
    max_points, keep_points : int
        Cap of closed bars in the candle figure, and bars kept by the redraw the cap
        forces (``keep_points <= max_points``).
    source : dict, optional
        Where the data comes from (``dashboard.sourcebadge.source_info``): the status
        line's badge.

    Raises
    ------
    ValueError
        If ``keep_points`` is not in ``1..max_points``.
    """
    if not 0 < keep_points <= max_points:
        raise ValueError(f"keep_points must be in 1..max_points ({max_points}), not {keep_points}")
    _register_tick(app, engine, max_points, keep_points, source)
    _register_subscribe(app, engine)
    _register_bars(app, engine)
    _register_export(app, engine)
    history.register(app, engine)  # panning left loads older bars
    # The browser's own zone, for the "browser's zone" time-zone choice.
    app.clientside_callback(
        "function(_) { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || null; }"
        " catch (e) { return null; } }",
        Output(ids.BROWSER_TZ, "data"),
        Input(ids.TIMEZONE, "id"),
    )
    register_orderflow(app, engine)  # the order-flow block: dashboard/orderflow_callbacks.py


def _register_tick(app: Any, engine: Any, max_points: int, keep_points: int, source: dict | None) -> None:
    @app.callback(
        Output(ids.CANDLES, "figure"),
        Output(ids.CANDLES_STORE, "data"),
        Output(ids.DEPTH, "figure"),
        Output(ids.DEPTH_STORE, "data"),
        Output(ids.STATUS, "children"),
        Output(ids.STATUS_BANNER, "children"),
        Output(ids.STATUS_STORE, "data"),
        Output(ids.SUBSCRIBE_MESSAGE, "children", allow_duplicate=True),
        Output(ids.SYMBOL, "options", allow_duplicate=True),
        Input(ids.PULSE, "data"),  # the timer, through the tick gate
        Input(ids.SYMBOL, "value"),
        Input(ids.BAR_SIZE, "value"),
        Input(ids.BAR_LABEL, "value"),
        Input(ids.TIMEZONE, "value"),
        State(ids.BROWSER_TZ, "data"),
        State(ids.CANDLES_STORE, "data"),
        State(ids.DEPTH_STORE, "data"),
        State(ids.STATUS_STORE, "data"),
        State(ids.SUBSCRIBE_STORE, "data"),
        State(ids.SYMBOL, "options"),
        prevent_initial_call="initial_duplicate",  # the first tick draws at page load
        # No new tick while one is in flight: the page keeps only the newest request's
        # answer, so ticks slower than the interval (a loaded machine, a first full draw)
        # would otherwise never land and the page would stay "loading" for good.
        running=[(Output(ids.TICK, "disabled"), True, False)],
    )
    def tick(_n, symbol, spec_text, label, zone, browser_zone, candles_store, depth_store, status_store,
             pending, options):
        # Every value may be forged: anything the page would not send is dropped (redraw).
        symbol, spec_text = inputs.text(symbol), inputs.text(spec_text)
        label = inputs.choice(label, figures.LABELS, "start")
        candles_store = inputs.candles_store(candles_store)
        depth_store = inputs.depth_store(depth_store)
        status_store, pending = inputs.status_store(status_store), inputs.subscribe_store(pending)
        options = inputs.symbol_options(options)
        status = engine.status()
        # The selected symbol's own feed state where the reader knows it (under ``serve`` one
        # collector may be stale while the others are live), else the whole feed's.
        state = engine.symbol_state(symbol, status) if hasattr(engine, "symbol_state") else status.state
        out = (
            *updates.candles_update(engine, symbol, spec_text, candles_store, max_points, keep_points, label,
                                    state=state, tz=timezones.resolve(zone, browser_zone)),
            *updates.depth_update(engine, symbol, depth_store, state, status),
            *updates.status_update(engine, symbol, status_store, pending, options, now=time.time(),
                                   source=source, status=status),
        )
        if all(o is no_update for o in out):
            raise PreventUpdate
        return out

    # One full figure per switch: ticks wait while it is drawn (dashboard.tickgate).
    app.clientside_callback(
        tickgate.GATE_JS,
        Output(ids.PULSE, "data"),
        Input(ids.TICK, "n_intervals"),
        State(ids.CANDLES_STORE, "data"),
        State(ids.SYMBOL, "value"),
        State(ids.BAR_SIZE, "value"),
    )


def _register_subscribe(app: Any, engine: Any) -> None:
    @app.callback(
        Output(ids.SYMBOL, "options"),
        Output(ids.SYMBOL, "value"),
        Output(ids.SUBSCRIBE_MESSAGE, "children"),
        Output(ids.SUBSCRIBE_INPUT, "value"),
        Output(ids.SUBSCRIBE_STORE, "data"),
        Input(ids.SUBSCRIBE_BUTTON, "n_clicks"),
        Input(ids.SUBSCRIBE_INPUT, "n_submit"),
        State(ids.SUBSCRIBE_INPUT, "value"),
        State(ids.SYMBOL, "value"),
        prevent_initial_call=True,
    )
    def subscribe(_clicks, _submits, text, selected):
        checked = inputs.text(text)
        if text is not None and checked is None:
            return (no_update, no_update, f"not a symbol: type at most {inputs.MAX_TEXT} characters",
                    no_update, None)
        return updates.subscribe_from_box(engine, checked, inputs.text(selected), now_ns=time.time_ns())

    @app.callback(
        Output(ids.SYMBOL, "options", allow_duplicate=True),
        Output(ids.SYMBOL, "value", allow_duplicate=True),
        Output(ids.SUBSCRIBE_MESSAGE, "children", allow_duplicate=True),
        Input(ids.UNSUBSCRIBE_BUTTON, "n_clicks"),
        State(ids.SYMBOL, "value"),
        prevent_initial_call=True,
    )
    def unsubscribe(_clicks, selected):
        return updates.unsubscribe_selected(engine, inputs.text(selected))

    app.clientside_callback(
        _SYMBOL_GONE_JS,
        Output(ids.SYMBOL, "value", allow_duplicate=True),
        Input(ids.SYMBOL, "options"),
        Input(ids.SYMBOL, "value"),  # the dropdown clears a value that left its options
        State(ids.SUBSCRIBE_STORE, "data"),
        prevent_initial_call=True,
    )


def _register_bars(app: Any, engine: Any) -> None:
    @app.callback(
        Output(ids.BAR_KIND, "value"),
        Output(ids.BAR_SIZE, "options"),
        Output(ids.BAR_SIZE, "value"),
        Output(ids.BAR_MESSAGE, "children"),
        Input(ids.BAR_KIND, "value"),
        Input(ids.BAR_CUSTOM, "n_submit"),
        Input(ids.BAR_CUSTOM_BUTTON, "n_clicks"),
        State(ids.BAR_CUSTOM, "value"),
        State(ids.BAR_SIZE, "value"),
        State(ids.SYMBOL, "value"),
        prevent_initial_call=True,
    )
    def choose_bars(kind, _submits, _clicks, text, current, symbol):
        if text is not None and inputs.text(text) is None:
            return no_update, no_update, no_update, f"type a bar spec of at most {inputs.MAX_TEXT} characters"
        out = updates.bar_choice(inputs.choice(kind, BAR_KINDS), ctx.triggered_id == ids.BAR_KIND,
                                 inputs.text(text), inputs.text(current), engine, inputs.text(symbol))
        if out is None:
            raise PreventUpdate
        return out

    # The label toggle applies to time bars only: disabled for the other kinds (pure UI).
    app.clientside_callback(
        _LABEL_OPTIONS_JS,
        Output(ids.BAR_LABEL, "options"),
        Input(ids.BAR_KIND, "value"),
    )


def _register_export(app: Any, engine: Any) -> None:
    app.clientside_callback(
        _EXPORT_JS % ids.CANDLES,
        Output(ids.EXPORT_REQUEST, "data"),
        Input(ids.EXPORT_BUTTON, "n_clicks"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.DOWNLOAD, "data"),
        Output(ids.EXPORT_MESSAGE, "children"),
        Input(ids.EXPORT_REQUEST, "data"),
        State(ids.SYMBOL, "value"),
        State(ids.BAR_SIZE, "value"),
        State(ids.CANDLES_STORE, "data"),
        State(ids.TIMEZONE, "value"),
        State(ids.BROWSER_TZ, "data"),
        prevent_initial_call=True,
    )
    def export(request, symbol, spec_text, drawn, zone, browser_zone):
        request, symbol, spec_text = inputs.export_request(request), inputs.text(symbol), inputs.text(spec_text)
        if not request or not symbol or not spec_text:
            raise PreventUpdate
        tz = timezones.resolve(zone, browser_zone)
        with timezones.display_tz(tz):  # the range read in the browser is in the chart's zone
            return export_download(engine, request, symbol, spec_text, inputs.candles_store(drawn), tz)
