"""Panning back in time: when the candle chart's x-range moves left of the first bar drawn,
older time bars are loaded from the engine (``Engine.older_bars``: the trades it holds
and, past those, the store's) a chunk at a time and drawn left of the live bars.

How it fits the live update (``dashboard.updates``): the loaded history lives in two
traces of its own appended after the candle figure's eight, ``TRACE_HISTORY`` (candles)
and ``TRACE_HISTORY_VOLUME``, so the live update's patches (which extend traces 0..7 by
position) never touch it and the live end keeps updating while history loads. A live
redraw (new label, revised bars, the ``max_points`` cap) replaces every trace; the
history store ``{view, base, n, first_ns, ranged, done, drawn}`` notices (``base``, written
clientside from the candle store, changes only with a redraw) and draws the history
again -- with the bars the redraw dropped added to it once the user has panned or
zoomed, so no bar vanishes from the range being looked at. ``uirevision`` and the
Patch-only updates leave the user's x-range alone.

Cap: at most ``MAX_HISTORY_BARS`` bars are loaded by panning (the browser's memory);
past that panning further left loads nothing. Only time bars have history: tick,
volume and value bars are counted from where a series starts, so older ones cannot be
joined to it exactly (their bar-number axis would also need renumbering).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from dash import Input, Output, Patch, State, no_update
from dash.exceptions import PreventUpdate

from feed.core.olderbars import MAX_CHUNK
from feed.core.models import BarSpec

from . import figures, ids, inputs, timezones
from .candle_data import bar_width, up_down_colours
from .figures import DOWN, UP, hover_text, x_values
from .timezones import display_tz
from .updates import chart_view

__all__ = ["CHUNK", "MAX_HISTORY_BARS", "TRACE_HISTORY", "TRACE_HISTORY_VOLUME", "left_edge",
           "history_traces", "history_update", "register"]

#: Bars one pan past the first bar drawn loads.
CHUNK = 500
#: Most history bars loaded by panning (a redraw may add the bars it dropped beyond this,
#: up to ``feed.core.olderbars.MAX_CHUNK``).
MAX_HISTORY_BARS = 5_000
#: Positions of the history traces, after the candle figure's own (``dashboard.candles``).
TRACE_HISTORY = 8
TRACE_HISTORY_VOLUME = 9

_MAX_KEYS = 64
_MAX_TEXT = 40

# Browser side: the candle store reduced to what changes only when the live update redraws
# every trace (view, key, generation, first bar drawn); no_update otherwise, so a steady
# tick costs no request here.
_BASE_JS = """
function(cs, prev) {
    var ok = cs && typeof cs === 'object' && typeof cs.view === 'string'
        && typeof cs.n_closed === 'number' && typeof cs.n_points === 'number';
    var base = ok ? [cs.view, cs.key, cs.generation, cs.n_closed - cs.n_points].join('|') : null;
    return base === prev ? window.dash_clientside.no_update : base;
}
"""

# Browser side: the x-range plotly shows now, in relayout form, whenever it changed.
# relayoutData alone is not enough: the price-axis fit (assets/rescale.js) answers each
# x change with a y-only relayout at once, which replaces it before a callback reads it.
_RANGE_JS = """
function(_relayout, prev) {
    var gd = document.querySelector('#%s .js-plotly-plot');
    var xa = gd && gd._fullLayout ? gd._fullLayout.xaxis : null;
    if (!xa || xa.type !== 'date' || !xa.range) { return window.dash_clientside.no_update; }
    var out = xa.autorange ? {'xaxis.autorange': true} : {'xaxis.range': xa.range.slice()};
    return JSON.stringify(out) === JSON.stringify(prev) ? window.dash_clientside.no_update : out;
}
"""


def left_edge(relayout: Any) -> pd.Timestamp | None:
    """Return the left end of the x-range a relayout set (a naive time in the chart's zone),
    or None when it set none (autorange, a y-only change) or is not what plotly sends."""
    if not isinstance(relayout, dict) or len(relayout) > _MAX_KEYS:
        return None
    value = relayout.get("xaxis.range[0]", relayout.get("xaxis2.range[0]"))
    if value is None:
        rng = relayout.get("xaxis.range", relayout.get("xaxis2.range"))
        if isinstance(rng, list) and len(rng) == 2:
            value = min(rng, key=lambda v: str(v))
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is pd.NaT or stamp.tzinfo is not None:
        return None
    return stamp


def history_traces(bars: pd.DataFrame, spec: BarSpec, label: str) -> list[dict]:
    """Return the history candle and volume traces (plotly dicts) for ``bars`` (oldest
    first, ``BAR_COLUMNS``), styled as the closed bars of ``dashboard.candles``; dates
    in the current display zone."""
    xs = x_values(bars, spec, 0, label)
    return [
        dict(type="candlestick", x=xs, open=bars["open"].tolist(), high=bars["high"].tolist(),
             low=bars["low"].tolist(), close=bars["close"].tolist(), text=hover_text(bars, spec, label),
             name="history", hoverlabel=dict(namelength=0), xaxis="x", yaxis="y", showlegend=False,
             increasing=dict(line=dict(color=UP, width=1), fillcolor=UP),
             decreasing=dict(line=dict(color=DOWN, width=1), fillcolor=DOWN), whiskerwidth=0),
        dict(type="bar", x=xs, y=bars["volume"].tolist(), xaxis="x2", yaxis="y2", showlegend=False,
             marker=dict(color=up_down_colours(bars, 0.55), line=dict(width=0)), width=bar_width(spec),
             name="history volume", hovertemplate="vol %{y:,.6~f}<extra></extra>"),
    ]


def _history_store(value: Any) -> dict | None:
    # The history store if it has the types written below; anything else is no history.
    if not isinstance(value, dict):
        return None
    if not all(isinstance(value.get(k), str) for k in ("view", "base", "first_ns")):
        return None
    n = value.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 10 * MAX_HISTORY_BARS:
        return None
    if not all(isinstance(value.get(k), bool) for k in ("ranged", "done", "drawn")):
        return None
    if not all(_is_int_text(t) for t in (value["first_ns"], value["base"].rsplit("|", 1)[-1])):
        return None
    return value


def _is_int_text(text: str) -> bool:
    # A decimal integer as written here (ns times are strings: JavaScript numbers lose them).
    return 0 < len(text) <= 24 and text.lstrip("-").isdigit()


def history_update(engine: Any, relayout: Any, candles_store: Any, symbol: Any, spec_text: Any,
                   label: Any, tz: str, store: Any) -> tuple[Any, Any]:
    """Return (figure patch or no_update, history store or no_update).

    Called whenever the x-range or the live update's redraw base changed. Both are read
    each time, whichever fired: the browser keeps only the newest answer of a callback
    asked again while a request is in flight, so a pan and a redraw close together
    arrive as one call.

    Parameters
    ----------
    engine
        Engine read API (``bar_series``, ``older_bars``).
    relayout
        The candle graph's x-range in ``relayoutData`` form (``{"xaxis.range": [a, b]}``
        or ``{"xaxis.autorange": true}``, read in the browser; checked: forged bodies are
        no_update).
    candles_store
        The live update's candle store (``dashboard.updates``).
    symbol, spec_text, label
        The selection, as the live update reads it.
    tz : str
        The chart's time zone (resolved).
    store
        The history store (module docstring).
    """
    symbol, spec_text = inputs.text(symbol), inputs.text(spec_text)
    label = inputs.choice(label, figures.LABELS, "start")
    cs, hs = inputs.candles_store(candles_store), _history_store(store)
    if not symbol or not spec_text or not cs or "n_closed" not in cs or "n_points" not in cs:
        return no_update, no_update
    try:
        spec = BarSpec.from_str(spec_text)
    except ValueError:
        return no_update, no_update
    view = chart_view(symbol, spec, tz)
    if not spec.is_time or cs.get("view") != view:
        return no_update, no_update  # no history for this chart, or it is being redrawn
    first_drawn = int(cs["n_closed"]) - int(cs["n_points"])
    base = f"{cs.get('key')}|{cs.get('generation')}|{first_drawn}"
    if hs is not None and hs["view"] != view:
        hs = None  # another chart: its traces went with its figure
    same = hs is not None and hs["base"] == base
    left = left_edge(relayout)
    ranged = left is not None if _is_range(relayout) else bool(hs and hs["ranged"])
    n_prev = hs["n"] if hs else 0
    want = n_prev if same else 0
    if hs is not None and not same and (hs["n"] or hs["ranged"]):
        # A live redraw replaced every trace. Bars it dropped join the history while the
        # user looks at a range they chose; on autorange the history keeps its size.
        dropped = max(first_drawn - int(hs["base"].rsplit("|", 1)[1]), 0) if ranged else 0
        want = min(n_prev + dropped, MAX_CHUNK)
    try:
        series = engine.bar_series(symbol, spec, first_drawn)
        if first_drawn < series.first_index:
            return no_update, no_update  # the live update redraws first
        bar = series.closed[0] if series.closed else series.current
        if bar is None:
            return no_update, no_update
        older = engine.older_bars(symbol, spec, bar.start_ns, want) if want and not same else None
        with display_tz(tz):
            if left is not None and not (same and hs["done"]):
                # the first bar shown once the history above is drawn
                edge = (int(older["start"].iloc[0]) if older is not None and len(older)
                        else int(hs["first_ns"]) if same and hs["n"] else bar.start_ns)
                shown = edge + (spec.interval_ns if label == "end" else 0)
                more = min(max(want, n_prev) + CHUNK, max(MAX_HISTORY_BARS, want))
                if left < pd.Timestamp(figures.plotly_date(shown)) and more > want:  # panned past it
                    older = engine.older_bars(symbol, spec, bar.start_ns, more)
                    want = more
            traces = history_traces(older, spec, label) if older is not None and len(older) else None
    except (KeyError, ValueError):
        return no_update, no_update
    if older is None:  # nothing to draw: keep the store in step with the base and the zoom
        if same and hs["ranged"] == ranged:
            return no_update, no_update
        if hs is None and not ranged:
            return no_update, no_update
        return no_update, {"view": view, "base": base, "n": n_prev if same else 0,
                           "first_ns": hs["first_ns"] if same else str(bar.start_ns), "ranged": ranged,
                           "done": bool(same and hs["done"]), "drawn": bool(same and hs["drawn"])}
    drawn = bool(same and hs["drawn"])
    patch = no_update
    if traces is not None:
        patch = Patch()
        if drawn:
            patch["data"][TRACE_HISTORY] = traces[0]
            patch["data"][TRACE_HISTORY_VOLUME] = traces[1]
        else:
            patch["data"].extend(traces)
        drawn = True
    n = len(older)
    return patch, {
        "view": view, "base": base, "n": n,
        "first_ns": str(int(older["start"].iloc[0]) if n else bar.start_ns),
        "ranged": ranged, "done": bool(older.attrs.get("exhausted", False)) or n < want,
        "drawn": drawn,
    }


def _is_range(relayout: Any) -> bool:
    # True when the body says where x is (a range or autorange); else the zoom flag stands.
    return isinstance(relayout, dict) and ("xaxis.autorange" in relayout or left_edge(relayout) is not None)


def register(app: Any, engine: Any) -> None:
    """Register the history callbacks on ``app`` (``dashboard.callbacks.register`` calls it)."""
    app.clientside_callback(
        _RANGE_JS % ids.CANDLES,
        Output(ids.HISTORY_RANGE, "data"),
        Input(ids.CANDLES, "relayoutData"),
        State(ids.HISTORY_RANGE, "data"),
    )
    app.clientside_callback(
        _BASE_JS,
        Output(ids.HISTORY_BASE, "data"),
        Input(ids.CANDLES_STORE, "data"),
        State(ids.HISTORY_BASE, "data"),
    )

    @app.callback(
        Output(ids.CANDLES, "figure", allow_duplicate=True),
        Output(ids.HISTORY_STORE, "data"),
        Input(ids.HISTORY_RANGE, "data"),
        Input(ids.HISTORY_BASE, "data"),
        State(ids.CANDLES_STORE, "data"),
        State(ids.SYMBOL, "value"),
        State(ids.BAR_SIZE, "value"),
        State(ids.BAR_LABEL, "value"),
        State(ids.TIMEZONE, "value"),
        State(ids.BROWSER_TZ, "data"),
        State(ids.HISTORY_STORE, "data"),
        prevent_initial_call=True,
    )
    def load_history(relayout, _base, candles_store, symbol, spec_text, label, zone, browser_zone, store):
        out = history_update(engine, relayout, candles_store, symbol, spec_text, label,
                             timezones.resolve(zone, browser_zone), store)
        if out[0] is no_update and out[1] is no_update:
            raise PreventUpdate
        return out
