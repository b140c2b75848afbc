"""What each dashboard callback returns, computed from engine reads and the pure figure
builders: the live update of the candle chart, the depth chart and the status line, the
subscribe box and the bar chooser. ``dashboard.callbacks`` wires components to these
functions (and holds the CSV export's, beside its download).

Nothing here reads a clock: the caller passes the time in. The engine is passed as an
argument (its read API: ``bar_series``, ``gap_marks_since``, ``depth``, ``status``,
``subscribe``, ``symbols``).

Live updates
------------
One ``dcc.Interval`` drives one callback that returns the candle figure, the depth figure
and the status line, each with its own store:

* candles (:func:`candles_update`; store ``{key, view, generation, first_index,
  n_closed, n_points, current, decimals, gap_total}``, ``view`` the ``SYMBOL|SPEC``
  drawn, ``current`` a signature of the in-progress bar, ``gap_total`` the number of
  trade-id gap marks drawn, i.e. the sequence index of the next one,
  ``Engine.gap_marks_since``): a full figure when the symbol or spec changed (a new
  ``uirevision``: the view resets); a redraw that keeps the user's zoom
  (``candles.candles_redraw``) when the label changed, the series generation changed, the
  client fell behind the oldest bar held, gap marks were dropped by the engine before the
  client drew them, or the figure would exceed ``max_points`` closed bars (it is then
  redrawn with the newest ``keep_points``); otherwise a ``dash.Patch`` appending the bars
  closed and the gap marks seen since the last update and replacing the in-progress bar
  (``candles.plan_candles`` / ``candles.candles_patch``);
* depth (:func:`depth_update`): nothing while the book is unchanged, a Patch of the
  changed sides, mid/spread text and mid line while the frame is the same, else the
  whole figure (``depth.depth_delta``);
* status (:func:`status_update`): the status line and the failed-feed banner,
  re-rendered only when their text changed; also the vendor's refusal of the symbol last
  subscribed from the box (the inline message next to it, :func:`subscribe_errors`, when
  it arrives within ``SUBSCRIBE_ERRORS_FOR_S``) and the symbol options without the
  symbols the engine dropped (a vendor-refused symbol is unsubscribed; a clientside
  callback then moves the selection off it, back to the symbol selected before).

Each returns ``(output, store)`` or ``no_update`` for what did not change.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

from dash import no_update

from feed.core.batch import bars_to_frame
from feed.core.models import BarSpec

from . import candles, depth, figures
from .layout import BAR_KINDS, kind_default, size_options
from .statusline import status_banner, status_children
from .timezones import DISPLAY_TZ, display_tz
from .wording import feed_down_words, stale_reason

__all__ = [
    "MAX_POINTS", "KEEP_POINTS", "DEPTH_LEVELS", "DROPPING_FOR_S", "SUBSCRIBE_ERRORS_FOR_S",
    "new_errors", "subscribe_errors", "candles_update", "depth_update", "status_update",
    "subscribe_from_box", "unsubscribe_selected", "bar_choice",
]

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


def _crc(value: Any) -> str:
    # Stable short signature of rendered output (stores round-trip through the browser).
    return f"{zlib.crc32(repr(value).encode()):08x}"


# -- vendor errors after a subscribe ------------------------------------------------------


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


# -- the live update ----------------------------------------------------------------------


def candles_update(engine: Any, symbol: str | None, spec_text: str | None, store: dict | None,
                   max_points: int, keep_points: int, label: str | None = "start",
                   state: str | None = None, tz: str = "UTC") -> tuple[Any, Any]:
    """Return (candle figure or patch, candle store) for the selection, or no_update twice.

    Parameters
    ----------
    engine
        Engine read API (``bar_series``, ``gap_marks_since``).
    symbol, spec_text : str or None
        The selected symbol and bar spec.
    store : dict or None
        The candle store written with the figure drawn last (see the module docstring).
    max_points, keep_points : int
        Cap of closed bars drawn, and bars kept by the redraw the cap forces.
    label : {"start", "end"}
        Where time bars are placed; anything else is taken as ``"start"``.
    state : str, optional
        The feed's state: an empty chart says "feed down" rather than "no trades yet"
        while the feed is not live.
    tz : str
        The chart's time zone (an IANA name, ``dashboard.timezones``): dates on the axis
        and in hover are written in it; a change redraws and resets the view.
    """
    if not symbol or not spec_text:
        return figures.placeholder_figure("subscribe a symbol to start"), None
    try:
        spec = BarSpec.from_str(spec_text)
    except ValueError as exc:
        return figures.placeholder_figure(f"choose another bar size: {exc}"), None
    label = label if label in figures.LABELS else "start"
    view = chart_view(symbol, spec, tz)  # uirevision: the user's zoom survives a label change
    key = view + ("|end" if spec.is_time and label == "end" else "")
    try:
        # Marks first: every mark's trade is then in the bars read next.
        patchable = bool(store) and store.get("key") == key and "n_closed" in store and "gap_total" in store
        drawn = int(store["gap_total"]) if patchable else 0
        total, marks = engine.gap_marks_since(symbol, drawn)
        verdicts = _verdicts(engine, symbol, spec)
        vendor = _vendor_frame(engine, symbol, spec)
        if patchable and store.get("verified", 0) != _verified_signature(verdicts, vendor):
            patchable = False  # new verification marks: drawn by a full figure
        if patchable:
            with display_tz(tz):
                out = _patch_candles(engine, symbol, spec, store, key, label, max_points, total, marks)
            if out is not None:
                return out
            if drawn:  # a full draw holds every mark still held
                total, marks = engine.gap_marks_since(symbol, 0)
        head = engine.bar_series(symbol, spec, _LAST)
        series = engine.bar_series(symbol, spec, max(head.n_closed - keep_points, 0))
    except KeyError:
        return figures.placeholder_figure(f"{symbol} is not subscribed", uirevision=view), None
    except ValueError as exc:  # the engine refuses a spec too costly to build
        return figures.placeholder_figure(str(exc), uirevision=view), None
    with display_tz(tz):
        out = _draw_candles(symbol, spec, series, store, key, view, label, keep_points, total, marks,
                            state, verdicts, vendor)
    signature = _verified_signature(verdicts, vendor)
    if signature and isinstance(out[1], dict) and "n_closed" in out[1]:
        out[1]["verified"] = signature
    return out


def chart_view(symbol: str, spec: BarSpec, tz: str = "UTC") -> str:
    """Return what the candle chart shows, ``"SYMBOL|SPEC"`` (plus ``"|ZONE"`` when not
    UTC): its ``uirevision`` and the candle store's ``view``."""
    return f"{symbol}|{spec}" + ("" if tz == "UTC" else f"|{tz}")


def _verdicts(engine, symbol: str, spec: BarSpec) -> dict:
    # Bar start ns -> verdict of the 1m bars ({} for other specs or without verification).
    verify = getattr(engine, "verify", None)
    if verify is None or str(spec) != "1m":
        return {}
    report = verify(symbol)
    return report["verdicts"] if report else {}


def _vendor_frame(engine, symbol: str, spec: BarSpec):
    # The vendor's own 1m candles as a frame (None for other specs or without any).
    get = getattr(engine, "vendor_candles", None)
    candles = get(symbol) if get is not None and str(spec) == "1m" else None
    if not candles:
        return None
    return pd.DataFrame({"start": [k.start_ns for k in candles], "open": [k.open for k in candles],
                         "high": [k.high for k in candles], "low": [k.low for k in candles],
                         "close": [k.close for k in candles], "volume": [k.volume for k in candles]})


def _verified_signature(verdicts: dict, vendor=None) -> int:
    # Changes when a bar gets a verdict or its verdict changes, or vendor candles arrive
    # (a cheap stand-in for equality): those are drawn by a full figure. It goes to the
    # browser in the candle store and comes back: a CRC-32, because the page keeps numbers
    # as doubles (a 64-bit hash() came back rounded, never equal, and every update redrew
    # the whole chart) and because hash() of text differs between processes (serve's workers).
    if not verdicts and vendor is None:
        return 0
    text = repr((sorted((k, v) for k, v in verdicts.items() if v), 0 if vendor is None else len(vendor)))
    return zlib.crc32(text.encode()) or 1


def _patch_candles(engine, symbol, spec, store, key, label, max_points, total, marks) -> tuple | None:
    # (patch, store) or no_update twice when a patch does; None when a full draw is needed.
    since = int(store["n_closed"])
    series = engine.bar_series(symbol, spec, since)
    plan = candles.plan_candles(
        store, key=key, generation=series.generation, n_closed=series.n_closed,
        first_index=series.first_index, max_points=max_points,
    )
    # exactly the marks numbered drawn.. (else some were dropped unseen: redraw)
    if plan != "patch" or total - len(marks) != int(store["gap_total"]):
        return None
    signature = candles.current_signature(series.current)
    if not series.closed and not marks and signature == store.get("current"):
        return no_update, no_update
    bars = series.closed + ([series.current] if series.current is not None else [])
    patch = candles.candles_patch(bars_to_frame(bars), spec=spec, first_index=since,
                                  decimals=store.get("decimals"), label=label, gap_marks=marks)
    return patch, {
        **store,
        "first_index": series.first_index,
        "n_closed": series.n_closed,
        "n_points": int(store["n_points"]) + len(series.closed),
        "current": signature,
        "gap_total": total,
    }


def _draw_candles(symbol, spec, series, store, key, view, label, keep_points, total, marks, state=None,
                  verdicts=None, vendor=None) -> tuple:
    # (full figure or in-place redraw, store); a placeholder while there are no bars.
    closed = series.closed[-keep_points:] if keep_points else []
    if not closed and series.current is None:
        down = feed_down_words(state)
        if store and store.get("key") == key and store.get("empty") == (down or True):
            return no_update, no_update
        message = f"{down}: no {symbol} trades received" if down else f"no {symbol} trades yet"
        return (figures.placeholder_figure(message, uirevision=view), {"key": key, "empty": down or True})
    bars = closed + ([series.current] if series.current is not None else [])
    frame = bars_to_frame(bars)
    decimals = figures.price_decimals(frame)
    figure = candles.candles_figure(
        frame, symbol=symbol, spec=spec, first_index=series.n_closed - len(closed), uirevision=view,
        decimals=decimals, label=label, gap_marks=marks, verdicts=verdicts, vendor=vendor,
    )
    if spec.is_time:  # the zone the dates are written in (a display choice)
        figure.update_layout(title_text=f"{figure.layout.title.text} · times {DISPLAY_TZ.get()}")
    if store and store.get("view") == view and "n_closed" in store:
        figure = candles.candles_redraw(figure)  # same chart redrawn: keep the user's view
    return figure, {
        "key": key,
        "view": view,
        "generation": series.generation,
        "first_index": series.first_index,
        "n_closed": series.n_closed,
        "n_points": len(closed),
        "current": candles.current_signature(series.current),
        "decimals": decimals,
        "gap_total": total,
    }


def depth_update(engine: Any, symbol: str | None, store: Any,
                 state: str | None = None, status: Any = None) -> tuple[Any, Any]:
    """Return (depth figure or patch, state store), or no_update twice when the book is
    unchanged (``depth.depth_delta``: a Patch of what changed while the frame is the same).

    ``state`` is the feed's (``Engine.status().state``): the book is marked stale while the
    feed is not live or the book is not in sync (``wording.stale_reason``). ``status``
    (``Engine.status()``, optional): a symbol whose source keeps no book
    (``SymbolStatus.book_absent``, a trades-only recording) says so over its empty chart
    instead of "out of sync".
    """
    view = engine.depth(symbol, DEPTH_LEVELS) if symbol else None
    if view is None:
        signature = f"none|{symbol}"
        figure = None if signature == store else figures.placeholder_figure(
            "no order book" if symbol else "subscribe a symbol to start")
    else:
        stale = stale_reason(state, view.synced) if state is not None else ""
        sym = status.symbols.get(symbol) if status is not None else None
        if sym is not None and sym.book_absent and not (view.bids or view.asks):
            stale = sym.book_absent  # "no order book in the recording": a fact, not a fault
        figure, signature = depth.depth_delta(
            view.bids, view.asks, store, symbol=symbol, mid=view.mid, spread=view.spread,
            synced=view.synced, uirevision=symbol, stale=stale,
        )
    return (no_update, no_update) if figure is None else (figure, signature)


def status_update(engine: Any, symbol: str | None, store: dict | None, pending: dict | None = None,
                  options: Sequence | None = None, *, now: float,
                  source: dict | None = None, status: Any = None) -> tuple[Any, Any, Any, Any, Any]:
    """Return (status line, banner, store, subscribe message, symbol options).

    Parameters
    ----------
    engine
        Engine read API (``status``).
    symbol : str or None
        The selected symbol.
    store : dict or None
        The status store written last (dropped count, when dropping was seen, signature).
    pending : dict or None
        The subscribe store (the last subscribe from the box); its vendor error is shown
        once (the store's ``sub_done`` names the subscribe it was shown for).
    options : sequence or None
        The symbol dropdown's options.
    now : float
        Wall-clock time, UTC seconds.
    source : dict, optional
        The run's source (``dashboard.sourcebadge.source_info``) for the status line's badge.
    status : feed.core.health.Status, optional
        ``Engine.status()`` when the caller read it already (read here otherwise).
    """
    status = engine.status() if status is None else status
    dropped = status.counters.dropped
    store = store or {}
    drop_seen = store.get("drop_seen")
    if "dropped" in store and dropped > int(store["dropped"]):
        drop_seen = now
    dropping = drop_seen is not None and now - float(drop_seen) < DROPPING_FOR_S
    children = status_children(status, symbol, dropping=dropping, source=source)
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
    if signature == store.get("sig"):
        new_store["banner"] = store.get("banner")
        store_out = no_update if new_store == store else new_store
        return no_update, no_update, store_out, message, options_out
    # The whole line (a Patch of single items made the renderer fail on items holding
    # component lists, React error #31; gzipped the line is a few hundred bytes), the banner
    # only when its text changed.
    new_store["banner"] = _crc(banner)
    banner_out = no_update if new_store["banner"] == store.get("banner") else banner
    store_out = no_update if new_store == store else new_store
    return children, banner_out, store_out, message, options_out


# -- controls -----------------------------------------------------------------------------


def subscribe_from_box(engine: Any, text: str | None, selected: str | None, *,
                       now_ns: int) -> tuple[Any, Any, str, Any, dict | None]:
    """Return (symbol options, selected symbol, message, box text, subscribe store).

    Every attempt replaces the subscribe store, so a vendor error is looked for only for
    the symbol just subscribed. The engine (its adapter) decides what a symbol is.

    Parameters
    ----------
    engine
        Engine (``status``, ``subscribe``, ``symbols``).
    text : str or None
        What the user typed.
    selected : str or None
        The symbol selected before (the selection goes back to it if the vendor refuses).
    now_ns : int
        Wall-clock time, UTC ns.
    """
    text = (text or "").strip()
    if not text:
        return no_update, no_update, "type a symbol, e.g. ETHUSDT", no_update, None
    errors = list(engine.status().errors)  # before: the refusal comes after
    try:
        symbol = engine.subscribe(text)
    except ValueError as exc:
        return no_update, no_update, str(exc), no_update, None
    pending = {"n": str(now_ns), "symbol": symbol, "at": now_ns / 1e9, "errors": errors,
               "previous": selected}
    return engine.symbols(), symbol, "", "", pending


def unsubscribe_selected(engine: Any, symbol: str | None) -> tuple[Any, Any, str]:
    """Return (symbol options, selected symbol, message) after removing ``symbol``.

    The engine stops receiving it (``Engine.unsubscribe``: its stored history stays); the
    selection moves to the first symbol left (None when none is).
    """
    if not symbol:
        return no_update, no_update, "select a symbol to remove"
    if symbol not in engine.symbols():
        return engine.symbols(), no_update, f"{symbol} is not subscribed"
    engine.unsubscribe(symbol)
    left = engine.symbols()
    return left, (left[0] if left else None), f"removed {symbol}"


def bar_choice(kind: str | None, kind_changed: bool, text: str | None, current: str | None,
               engine: Any = None, symbol: str | None = None) -> tuple | None:
    """Return (bar kind, size options, bar spec, message) for the bar chooser.

    ``kind_changed``: the kind toggle fired (else the custom spec box). None when the new
    kind is the current spec's or not a kind (nothing to change). A typed spec is tried on
    ``engine`` for ``symbol`` (when given): one the engine refuses to build (too many bars
    for the trades held) is not chosen, the engine's reason is the message.
    """
    if kind_changed:
        if kind not in BAR_KINDS or (current and _spec_kind(current) == kind):
            return None
        return no_update, size_options(kind), kind_default(kind), ""
    text = (text or "").strip()
    if not text:
        return no_update, no_update, no_update, "type a bar spec, e.g. 3m, 250t, 0.5v"
    try:
        spec = BarSpec.from_str(text)
    except ValueError as exc:
        return no_update, no_update, no_update, str(exc)
    if engine is not None and symbol:
        try:
            engine.bar_series(symbol, spec, _LAST)  # builds it now: the cost is checked here
        except KeyError:
            pass  # not subscribed (any more): the chart says so
        except ValueError as exc:
            return no_update, no_update, no_update, str(exc)
    return spec.kind, size_options(spec.kind, str(spec)), str(spec), ""


def _spec_kind(text: str) -> str | None:
    try:
        return BarSpec.from_str(text).kind
    except ValueError:
        return None
