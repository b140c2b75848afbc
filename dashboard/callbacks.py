"""Callbacks: wire component inputs to engine reads and the pure helpers.

Everything is registered by :func:`register` on the app it is given, with the engine as
an argument (closures, no module globals), so two apps with two engines can live in one
process (tests). Each callback reads the engine, calls ``figures``/``export``/``layout``
helpers and returns what they return.

Live updates
------------
One ``dcc.Interval`` drives one callback (:func:`register`'s ``tick``) that returns the
candle figure, the depth figure and the status line, each with its own store:

* candles (store ``{key, view, generation, first_index, n_closed, n_points, current,
  decimals, gap_total}``, ``view`` the ``SYMBOL|SPEC`` drawn, ``current`` a signature of
  the in-progress bar, ``gap_total`` the number of trade-id gap marks drawn, i.e. the
  sequence index of the next one, ``Engine.gap_marks_since``): a full figure when the
  symbol or spec changed (a new ``uirevision``: the view resets); a redraw that keeps the
  user's zoom (``figures.candles_redraw``) when the label changed, the series generation
  changed, the client fell behind the oldest bar held, gap marks were dropped by the
  engine before the client drew them, or the figure would exceed ``max_points`` closed
  bars (it is then redrawn with the newest ``keep_points``); otherwise a ``dash.Patch``
  appending the bars closed and the gap marks seen since the last update and replacing
  the in-progress bar (``figures.plan_candles``/``figures.candles_patch``);
* depth: a full (small) figure only when the book changed;
* status: the status line and the failed-feed banner, re-rendered only when their text
  changed; also the vendor's refusal of the symbol last subscribed from the box (the
  inline message next to it, :func:`subscribe_errors`, when it arrives within
  ``SUBSCRIBE_ERRORS_FOR_S``) and the symbol options without the symbols the engine
  dropped (a vendor-refused symbol is unsubscribed; a clientside callback then moves the
  selection off it, back to the symbol selected before);

and ``PreventUpdate`` when none changed.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Sequence
from typing import Any

from dash import Input, Output, State, ctx, dcc, no_update
from dash.exceptions import PreventUpdate

from feed.core.bars import bars_to_frame
from feed.core.csvformat import bars_to_csv
from feed.core.models import BarSpec

from . import figures, ids
from .export import bars_in_view, export_filename
from .layout import kind_default, size_options, status_banner, status_children

__all__ = ["register", "new_errors", "subscribe_errors", "MAX_POINTS", "KEEP_POINTS", "DEPTH_LEVELS",
           "DROPPING_FOR_S", "SUBSCRIBE_ERRORS_FOR_S"]

#: Most closed bars the candle figure holds before a full redraw.
MAX_POINTS = 600
#: Closed bars drawn by a full redraw (the newest); patches then append up to MAX_POINTS.
KEEP_POINTS = 400
#: Book levels per side in the depth chart.
DEPTH_LEVELS = 50
#: Seconds the status dot stays amber after the dropped-message counter grew.
DROPPING_FOR_S = 5.0
#: Seconds after a subscribe from the box during which a vendor error naming the symbol is
#: shown as the box's inline message.
SUBSCRIBE_ERRORS_FOR_S = 10.0

_LAST = 2**62  # a bar index beyond any series: asks the engine for no closed bars

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


def _crc(value: Any) -> str:
    # Stable short signature of rendered output (stores round-trip through the browser).
    return f"{zlib.crc32(repr(value).encode()):08x}"


# -- vendor errors after a subscribe (pure) ----------------------------------------------


def new_errors(before: Sequence[str], now: Sequence[str]) -> list[str]:
    """Return the entries of ``now`` that came after ``before`` was read.

    Both are ``Engine.status().errors`` (the latest few, newest last, so old ones fall
    off the front): the new ones are ``now`` after its longest prefix that is a suffix of
    ``before``. A repeat of the same text counts as new (``[A] -> [A, A]``) unless the
    list was already full of it.
    """
    before, now = list(before), list(now)
    for k in range(min(len(before), len(now)), 0, -1):
        if before[-k:] == now[:k]:
            return now[k:]
    return now


def subscribe_errors(before: Sequence[str], now: Sequence[str], symbol: str) -> list[str]:
    """Return the vendor errors in ``now`` but not ``before`` (:func:`new_errors`) that name
    ``symbol``, oldest first.

    The symbol is matched as a whole word, case-insensitively ("ZZZZ.US" in "AllTick error
    600: symbol code invalid (trades ZZZZ.US)", "ADAUSDT" in "... adausdt@trade"), not
    inside a longer code ("BTC" does not match "BTCUSDT").
    """
    if not symbol:
        return []
    word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(symbol)}(?![A-Za-z0-9])", re.IGNORECASE)
    return [e for e in new_errors(before, now) if word.search(str(e))]


def _option_values(options: Sequence) -> list:
    return [o.get("value") if isinstance(o, dict) else o for o in options]


def _symbol_options(options: Sequence | None, subscribed: Any) -> Any:
    # The dropdown's options without the symbols no longer subscribed (no_update when all
    # still are). Symbols are only ever added by the subscribe callback, so a tick that
    # read the engine just before a subscribe cannot take the new symbol away.
    if not options or subscribed is None:
        return no_update
    kept = [o for o, v in zip(options, _option_values(options)) if v in subscribed]
    return no_update if len(kept) == len(options) else kept


# -- tick helpers (each returns (output, store) or (no_update, no_update)) --------------


def _candles(engine: Any, symbol: str | None, spec_text: str | None, store: dict | None,
             max_points: int, keep_points: int, label: str | None = "start") -> tuple[Any, Any]:
    if not symbol or not spec_text:
        return figures.placeholder_figure("subscribe a symbol to start"), None
    spec = BarSpec.from_str(spec_text)
    label = label if label in figures.LABELS else "start"
    view = f"{symbol}|{spec}"  # uirevision: the user's zoom survives a label change
    key = view + ("|end" if spec.is_time and label == "end" else "")
    try:
        # Marks first: every mark's trade is then in the bars read next.
        patchable = bool(store) and store.get("key") == key and "n_closed" in store and "gap_total" in store
        drawn = int(store["gap_total"]) if patchable else 0
        total, marks = engine.gap_marks_since(symbol, drawn)
        if patchable:
            since = int(store["n_closed"])
            series = engine.bar_series(symbol, spec, since)
            plan = figures.plan_candles(
                store, key=key, generation=series.generation, n_closed=series.n_closed,
                first_index=series.first_index, max_points=max_points,
            )
            # exactly the marks numbered drawn.. (else some were dropped unseen: redraw)
            if plan == "patch" and total - len(marks) == drawn:
                signature = figures.current_signature(series.current)
                if not series.closed and not marks and signature == store.get("current"):
                    return no_update, no_update
                bars = series.closed + ([series.current] if series.current is not None else [])
                patch = figures.candles_patch(bars_to_frame(bars), spec=spec, first_index=since,
                                              decimals=store.get("decimals"), label=label,
                                              gap_marks=marks)
                return patch, {
                    **store,
                    "first_index": series.first_index,
                    "n_closed": series.n_closed,
                    "n_points": int(store["n_points"]) + len(series.closed),
                    "current": signature,
                    "gap_total": total,
                }
            if drawn:  # a full draw holds every mark still held
                total, marks = engine.gap_marks_since(symbol, 0)
        head = engine.bar_series(symbol, spec, _LAST)
        series = engine.bar_series(symbol, spec, max(head.n_closed - keep_points, 0))
    except KeyError:
        return figures.placeholder_figure(f"{symbol} is not subscribed", uirevision=view), None
    closed = series.closed[-keep_points:] if keep_points else []
    if not closed and series.current is None:
        if store and store.get("key") == key and store.get("empty"):
            return no_update, no_update
        return (figures.placeholder_figure(f"waiting for {symbol} trades…", uirevision=view),
                {"key": key, "empty": True})
    start_index = series.n_closed - len(closed)
    bars = closed + ([series.current] if series.current is not None else [])
    frame = bars_to_frame(bars)
    decimals = figures.price_decimals(frame)
    figure = figures.candles_figure(
        frame, symbol=symbol, spec=spec, first_index=start_index, uirevision=view,
        decimals=decimals, label=label, gap_marks=marks,
    )
    if store and store.get("view") == view and "n_closed" in store:
        figure = figures.candles_redraw(figure)  # same chart redrawn: keep the user's view
    return figure, {
        "key": key,
        "view": view,
        "generation": series.generation,
        "first_index": series.first_index,
        "n_closed": series.n_closed,
        "n_points": len(closed),
        "current": figures.current_signature(series.current),
        "decimals": decimals,
        "gap_total": total,
    }


def _depth(engine: Any, symbol: str | None, store: str | None) -> tuple[Any, Any]:
    view = engine.depth(symbol, DEPTH_LEVELS) if symbol else None
    if view is None:
        signature = f"none|{symbol}"
        figure = None if signature == store else figures.placeholder_figure(
            "no order book" if symbol else "subscribe a symbol to start")
    else:
        signature = f"{symbol}|{figures.depth_signature(view.bids, view.asks, view.synced)}"
        figure = None if signature == store else figures.depth_figure(
            view.bids, view.asks, symbol=symbol, mid=view.mid, spread=view.spread,
            synced=view.synced, uirevision=symbol,
        )
    return (no_update, no_update) if figure is None else (figure, signature)


def _status(engine: Any, symbol: str | None, store: dict | None, pending: dict | None = None,
            options: Sequence | None = None) -> tuple[Any, Any, Any, Any, Any]:
    # (status line, banner, store, subscribe message, symbol options). ``pending`` is the
    # subscribe store (the last subscribe from the box); its vendor error is shown once
    # (the store's ``sub_done`` names the subscribe it was shown for).
    status = engine.status()
    dropped = status.counters.dropped
    now = time.time()
    store = store or {}
    drop_seen = store.get("drop_seen")
    if "dropped" in store and dropped > int(store["dropped"]):
        drop_seen = now
    dropping = drop_seen is not None and now - float(drop_seen) < DROPPING_FOR_S
    children = status_children(status, symbol, dropping=dropping)
    banner = status_banner(status)
    signature = _crc((children, banner))
    new_store = {"dropped": dropped, "drop_seen": drop_seen, "sig": signature, "sub_done": store.get("sub_done")}
    message = no_update
    if (pending and pending.get("symbol") and pending.get("n") != store.get("sub_done")
            and 0 <= now - float(pending.get("at") or 0) <= SUBSCRIBE_ERRORS_FOR_S):
        found = subscribe_errors(pending.get("errors") or [], status.errors, pending["symbol"])
        if found:
            message, new_store["sub_done"] = found[-1], pending.get("n")
    options_out = _symbol_options(options, status.symbols)
    store_out = no_update if new_store == store else new_store
    if signature == store.get("sig"):
        return no_update, no_update, store_out, message, options_out
    return children, banner, store_out, message, options_out


def _export(engine: Any, request: dict, symbol: str, spec_text: str, drawn: dict | None) -> tuple[Any, str]:
    # (download, inline message) for Export CSV: the bars in the visible x-range
    # (``request``, read in the browser) of the chart as drawn (its store, ``drawn``).
    spec = BarSpec.from_str(spec_text)
    drawn = drawn or {}
    if drawn.get("empty") and drawn.get("key") == f"{symbol}|{spec}":
        return no_update, "no bars in view"
    if (request.get("type") != ("date" if spec.is_time else "linear")
            or drawn.get("view") != f"{symbol}|{spec}"):
        return no_update, "chart is updating, try again"  # still drawn for another choice
    # Bars in view as drawn: at their end when the chart labels them so (see _candles).
    label = "end" if str(drawn.get("key", "")).endswith("|end") else "start"
    try:
        series = engine.bar_series(symbol, spec, 0)
    except KeyError:
        return no_update, f"{symbol} is not subscribed"
    bars = series.closed + ([series.current] if series.current is not None else [])
    frame = bars_to_frame(bars)
    try:
        frame = bars_in_view(frame, request.get("range"), spec=spec, first_index=series.first_index,
                             label=label)
    except ValueError:
        return no_update, "chart is updating, try again"
    if frame.empty:
        return no_update, "no bars in view"
    text = bars_to_csv(frame, price_decimals=series.price_decimals,
                       size_decimals=series.size_decimals)
    return dcc.send_string(text, export_filename(symbol, spec, frame), type="text/csv"), ""


def register(app: Any, engine: Any, *, max_points: int = MAX_POINTS, keep_points: int = KEEP_POINTS) -> None:
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

    Raises
    ------
    ValueError
        If ``keep_points`` is not in ``1..max_points``.
    """
    if not 0 < keep_points <= max_points:
        raise ValueError(f"keep_points must be in 1..max_points ({max_points}), not {keep_points}")

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
        Input(ids.TICK, "n_intervals"),
        Input(ids.SYMBOL, "value"),
        Input(ids.BAR_SIZE, "value"),
        Input(ids.BAR_LABEL, "value"),
        State(ids.CANDLES_STORE, "data"),
        State(ids.DEPTH_STORE, "data"),
        State(ids.STATUS_STORE, "data"),
        State(ids.SUBSCRIBE_STORE, "data"),
        State(ids.SYMBOL, "options"),
        prevent_initial_call="initial_duplicate",  # the first tick draws at page load
    )
    def tick(_n, symbol, spec_text, label, candles_store, depth_store, status_store, pending, options):
        out = (
            *_candles(engine, symbol, spec_text, candles_store, max_points, keep_points, label),
            *_depth(engine, symbol, depth_store),
            *_status(engine, symbol, status_store, pending, options),
        )
        if all(o is no_update for o in out):
            raise PreventUpdate
        return out

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
        # Every attempt replaces the subscribe store: a vendor error is looked for only
        # for the symbol just subscribed.
        text = (text or "").strip()
        if not text:
            return no_update, no_update, "type a symbol, e.g. ETHUSDT", no_update, None
        errors = list(engine.status().errors)  # before: the refusal comes after
        try:
            symbol = engine.subscribe(text)
        except ValueError as exc:
            return no_update, no_update, str(exc), no_update, None
        pending = {"n": str(time.time_ns()), "symbol": symbol, "at": time.time(), "errors": errors,
                   "previous": selected}
        return engine.symbols(), symbol, "", "", pending

    app.clientside_callback(
        _SYMBOL_GONE_JS,
        Output(ids.SYMBOL, "value", allow_duplicate=True),
        Input(ids.SYMBOL, "options"),
        Input(ids.SYMBOL, "value"),  # the dropdown clears a value that left its options
        State(ids.SUBSCRIBE_STORE, "data"),
        prevent_initial_call=True,
    )

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
        prevent_initial_call=True,
    )
    def choose_bars(kind, _submits, _clicks, text, current):
        if ctx.triggered_id == ids.BAR_KIND:
            if current and BarSpec.from_str(current).kind == kind:
                raise PreventUpdate
            return no_update, size_options(kind), kind_default(kind), ""
        text = (text or "").strip()
        if not text:
            return no_update, no_update, no_update, "type a bar spec, e.g. 3m, 250t, 0.5v"
        try:
            spec = BarSpec.from_str(text)
        except ValueError as exc:
            return no_update, no_update, no_update, str(exc)
        return spec.kind, size_options(spec.kind, str(spec)), str(spec), ""

    # The label toggle applies to time bars only: disabled for the other kinds (pure UI).
    app.clientside_callback(
        _LABEL_OPTIONS_JS,
        Output(ids.BAR_LABEL, "options"),
        Input(ids.BAR_KIND, "value"),
    )

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
        prevent_initial_call=True,
    )
    def export(request, symbol, spec_text, drawn):
        if not request or not symbol or not spec_text:
            raise PreventUpdate
        return _export(engine, request, symbol, spec_text, drawn)
