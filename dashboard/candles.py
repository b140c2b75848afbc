"""The candle chart: price candles over volume, drawn whole (:func:`candles_figure`),
advanced by a ``dash.Patch`` (:func:`candles_patch`), or redrawn in place keeping the
user's view (:func:`candles_redraw`); :func:`plan_candles` says which one an update needs.

Pure: DataFrames in, figures or patches out; the arrays come from ``dashboard.candle_data``
and shared styling and x placement from ``dashboard.figures``.

Candle figure
-------------
Six traces in a fixed order (the ``TRACE_*`` constants), on two rows sharing one x-axis
(price candles above, volume below):

====================  ==========================================================
``TRACE_CANDLES``     closed bars; append-only between full draws
``TRACE_LIVE``        the in-progress bar alone, drawn hollow and translucent
``TRACE_VOLUME``      volume of the closed bars, coloured by up/down
``TRACE_LIVE_VOLUME`` volume of the in-progress bar, translucent
``TRACE_GAPS``        trade-id gaps: thin vertical lines over the price pane, hover
                      text "N trades missing"; append-only between full draws
``TRACE_FRAME``       two invisible candles that frame the view (see below)
``TRACE_VERIFY``      per-bar verification: a small mark above each verified 1m candle,
                      green dot ``exact``, red cross ``differs`` (hover: the fields);
                      changed verdicts are drawn by a full figure
``TRACE_VENDOR``      the vendor's own 1m candles (a TickDB seed where no trade history
                      exists) before tickscope's first bar: hollow and grey, apart from
                      tickscope's bars and never verified
====================  ==========================================================

Keeping the in-progress bar in its own one-point traces makes it visibly distinct (a
candlestick trace has no per-point opacity) and keeps the closed traces append-only: a
steady-state update (:func:`candles_patch`) extends the closed traces with the bars that
closed since the last update and replaces the one-point live traces. Anything that changes
bars already drawn (a late-trade revision, a rebuild, history truncation) changes the
series ``generation`` and :func:`plan_candles` asks for a full figure instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
from dash import Patch
from plotly.subplots import make_subplots

from feed.core.models import BarSpec

from .candle_data import (MIN_SLOTS, bar_width, frame_columns, gap_columns, live_columns,
                          split_live, up_down_colours)
from .figures import (BG, DOWN, GAP, MID, UP, as_spec, axis_style, base_layout, check_label,
                      format_price, hover_text, price_decimals, rgba, x_values)

__all__ = [
    "TRACE_CANDLES", "TRACE_LIVE", "TRACE_VOLUME", "TRACE_LIVE_VOLUME", "TRACE_GAPS",
    "TRACE_FRAME", "TRACE_VERIFY", "TRACE_VENDOR", "verify_columns", "MIN_SLOTS", "gap_columns", "current_signature", "plan_candles",
    "candles_figure", "candles_patch", "candles_redraw",
]

TRACE_CANDLES = 0
TRACE_LIVE = 1
TRACE_VOLUME = 2
TRACE_LIVE_VOLUME = 3
TRACE_GAPS = 4
TRACE_FRAME = 5
TRACE_VERIFY = 6
TRACE_VENDOR = 7
#: Vendor candles: hollow grey outlines, unlike tickscope's filled green/red candles.
VENDOR_GREY = "#8a8f98"
#: Verification mark colours: exact, differs.
VERIFIED_OK = "#8bc34a"
VERIFIED_BAD = "#ff5252"

# Layout items the patches address by position.
_SHAPE_LAST = 0  # dotted horizontal line at the last price
_ANNOTATION_LAST = 0  # last-price tag at the right edge


def current_signature(bar: Mapping | None) -> str | None:
    """Return a short string that changes whenever the in-progress bar changes.

    A string, not numbers: a ``dcc.Store`` round-trips through JavaScript, whose numbers
    cannot hold ns timestamps exactly.

    Parameters
    ----------
    bar : mapping or None
        Anything with ``start_ns``/``end_ns``/``trade_count``/``volume``/``close`` as keys
        or attributes (a ``feed.core.models.Bar``), or None when no bar is in progress.
    """
    if bar is None:
        return None
    get = bar.get if isinstance(bar, Mapping) else lambda k: getattr(bar, k)
    return f"{get('start_ns')}:{get('end_ns')}:{get('trade_count')}:{get('volume')!r}:{get('close')!r}"


def plan_candles(
    store: Mapping | None,
    *,
    key: str,
    generation: int,
    n_closed: int,
    first_index: int,
    max_points: int,
) -> Literal["full", "patch"]:
    """Decide whether the candle figure needs a full redraw or a patch.

    Parameters
    ----------
    store : mapping or None
        The candle store written with the figure drawn last: ``key``, ``generation``,
        ``n_closed`` (bars with index below it are drawn), ``n_points`` (closed bars drawn).
    key : str
        What is selected now: ``"SYMBOL|SPEC"`` (plus ``"|end"`` for time bars labelled
        at their end, see ``dashboard.callbacks``).
    generation, n_closed, first_index : int
        From the engine's ``BarSeries`` now.
    max_points : int
        Most closed bars the figure may hold; a patch that would exceed it redraws.

    Returns
    -------
    {"full", "patch"}
        ``"full"`` when nothing was drawn yet, the symbol, spec or label changed, bars
        already drawn changed (new generation), the client fell behind the oldest bar the
        engine still holds, or the cap would be exceeded; else ``"patch"``.
    """
    if not store or store.get("key") != key or store.get("generation") != generation:
        return "full"
    drawn = int(store.get("n_closed", 0))
    if drawn < first_index or drawn > n_closed:
        return "full"
    if int(store.get("n_points", 0)) + (n_closed - drawn) > max_points:
        return "full"
    return "patch"


def candles_figure(
    df: pd.DataFrame,
    *,
    symbol: str,
    spec: BarSpec | str,
    first_index: int = 0,
    uirevision: str | None = None,
    decimals: int | None = None,
    label: str = "start",
    gap_marks: Sequence[tuple[int, int]] = (),
    verdicts: Mapping[int, str] | None = None,
    vendor: pd.DataFrame | None = None,
) -> go.Figure:
    """Return the full candlestick + volume figure.

    Parameters
    ----------
    df : DataFrame
        Bars with ``feed.core.models.BAR_COLUMNS`` (start/end int UTC ns), in index order: the
        closed bars to show, then at most one in-progress row (``closed`` False).
    symbol : str
    spec : BarSpec or str
    first_index : int
        Bar index of the first row (x position of tick, volume and value bars).
    uirevision : str, optional
        Plotly keeps the user's zoom and pan while this stays the same; callers pass
        ``"SYMBOL|SPEC"`` so that choosing another symbol or bar type resets the view.
        Defaults to ``f"{symbol}|{spec}"``.
    decimals : int, optional
        Price decimals of the last-price tag; inferred from the bars when None (see
        :func:`price_decimals`).
    label : {"start", "end"}
        Place time bars at their interval start (default) or end; the title says "end".
    gap_marks : sequence of (ts_ns, missing_trades)
        ``Engine.gap_marks(symbol)``; those older than the first bar are left out (see
        :func:`gap_columns`).
    verdicts : mapping of int to str, optional
        Bar start (UTC ns) -> ``"exact"`` / ``"differs:<fields>"`` / ``""`` (the
        ``verdicts`` of ``Engine.verify``): marks above the closed candles.
    vendor : DataFrame, optional
        The vendor's own 1m candles (``start``, ``open``, ``high``, ``low``, ``close``,
        ``volume``; ``Engine.vendor_candles``), drawn hollow and grey where they are older
        than tickscope's first bar (time bars of 1m only).

    Raises
    ------
    ValueError
        If ``label`` is not one of ``LABELS``.
    """
    spec = as_spec(spec)
    check_label(label)
    if decimals is None:
        decimals = price_decimals(df)
    closed, live = split_live(df)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.02, row_heights=[0.78, 0.22]
    )
    for trace, row in _candle_traces(df, closed, live, spec, first_index, label, gap_marks):
        if row is None:
            fig.add_trace(trace)
        else:
            fig.add_trace(trace, row=row, col=1)
    marks = verify_columns(closed, verdicts or {}, spec, first_index, label)
    fig.add_trace(go.Scatter(
        x=marks["x"], y=marks["y"], text=marks["text"], mode="markers", name="verified",
        marker=dict(symbol=marks["symbol"], size=5, color=marks["colour"], line=dict(width=0)),
        hovertemplate="%{text}<extra></extra>", cliponaxis=False,
    ), row=1, col=1)
    fig.add_trace(_vendor_trace(vendor, df, spec), row=1, col=1)
    view = uirevision if uirevision is not None else f"{symbol}|{spec}"
    fig.update_layout(**_candles_layout(view, _candles_title(symbol, spec, label),
                                        _last_close(closed, live), decimals))
    _style_axes(fig, spec, decimals)
    return fig


def _vendor_trace(vendor: pd.DataFrame | None, df: pd.DataFrame, spec: BarSpec) -> go.Candlestick:
    # The vendor's candles before tickscope's first bar, hollow grey (empty otherwise).
    grey = dict(line=dict(color=VENDOR_GREY, width=1), fillcolor="rgba(0,0,0,0)")
    xs: list = []
    o: list = []
    h: list = []
    lo: list = []
    c: list = []
    text: list = []
    if vendor is not None and len(vendor) and str(spec) == "1m":
        first = int(df["start"].iloc[0]) if not df.empty else None
        rows = vendor[vendor["start"] < first] if first is not None else vendor
        if len(rows):
            xs = x_values(rows.assign(end=rows["start"] + spec.interval_ns), spec, 0, "start")
            o, h, lo, c = (rows[k].tolist() for k in ("open", "high", "low", "close"))
            text = [f"vendor candle (not tickscope's): vol {v:,.6g}" for v in rows["volume"].tolist()]
    return go.Candlestick(
        x=xs, open=o, high=h, low=lo, close=c, text=text, name="vendor candles",
        hoverlabel=dict(namelength=0), increasing=grey, decreasing=grey, whiskerwidth=0, opacity=0.9,
    )


def verify_columns(closed: pd.DataFrame, verdicts: Mapping[int, str], spec: BarSpec, first_index: int,
                   label: str) -> dict:
    """Return the arrays of the verification marks (``TRACE_VERIFY``) of ``closed`` bars.

    One point per bar with a verdict, just above its high (1 % of the price range drawn):
    ``x``, ``y``, ``text`` ("klines ✓ exact" / "klines ✗ differs: volume"), ``symbol`` and
    ``colour``. Bars without a verdict (unverified) get none.
    """
    out: dict[str, list] = {"x": [], "y": [], "text": [], "symbol": [], "colour": []}
    if closed.empty or not verdicts:
        return out
    xs = x_values(closed, spec, first_index, label)
    highs = closed["high"].tolist()
    lift = (max(highs) - float(closed["low"].min())) * 0.01
    for x, start, high in zip(xs, closed["start"].tolist(), highs):
        v = verdicts.get(int(start), "")
        if not v:
            continue
        ok = v == "exact"
        out["x"].append(x)
        out["y"].append(high + lift)
        out["text"].append("vendor kline ✓ exact" if ok else
                           "vendor kline ✗ differs: " + v.partition(":")[2].replace("+", ", "))
        out["symbol"].append("circle" if ok else "x")
        out["colour"].append(VERIFIED_OK if ok else VERIFIED_BAD)
    return out


def _candles_layout(uirevision: str, title: str, last: float | None, decimals: int) -> dict:
    # Layout of the candle figure; the last-price line and tag are at fixed positions.
    layout = base_layout(uirevision)
    layout["title"]["text"] = title
    layout["margin"] = dict(l=8, r=78, t=28, b=8)  # the right margin holds the last-price tag
    return dict(
        **layout,
        barmode="overlay",  # closed and in-progress volume share x positions, no grouping
        hovermode="x",
        dragmode="pan",
        shapes=[_last_line(last)],
        annotations=[_last_tag(last, decimals)],
        # The gap lines' 0..1 axis: over the price pane, never zoomed or shown.
        yaxis3=dict(overlaying="y", range=[0, 1], fixedrange=True, visible=False),
    )


def _style_axes(fig: go.Figure, spec: BarSpec, decimals: int) -> None:
    # Shared x (date or bar number), price axis on the right with fixed decimals, volume below.
    x_kind = dict(type="date") if spec.is_time else dict(type="linear", tickformat="d")
    fig.update_xaxes(axis_style(**x_kind), rangeslider=dict(visible=False))
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_yaxes(axis_style(side="right", exponentformat="none", separatethousands=True,
                                hoverformat=f",.{decimals}f"), row=1, col=1)
    fig.update_yaxes(axis_style(side="right", nticks=3, showspikes=False), row=2, col=1)


def _candles_title(symbol: str, spec: BarSpec, label: str) -> str:
    title = f"<b>{symbol}</b> · {spec}"
    if not spec.is_time:
        return title + " · one slot per bar, labelled at its start"
    return title + " · labelled at interval end" if label == "end" else title


def _candle_traces(df, closed, live, spec, first_index, label, gap_marks) -> list[tuple]:
    # (trace, subplot row or None) in TRACE_* order: candles, live, volume, live volume,
    # gap lines (on their own hidden axis, hence no row), framing candles.
    xs = x_values(closed, spec, first_index, label)
    live_cols = live_columns(live, spec, first_index + len(closed), label)
    frame = frame_columns(df, spec, first_index, label)
    gaps = gap_columns(gap_marks, df, spec, first_index, label)
    clear = dict(line=dict(color="rgba(0,0,0,0)", width=0), fillcolor="rgba(0,0,0,0)")
    return [
        (go.Candlestick(
            x=xs, open=closed["open"].tolist(), high=closed["high"].tolist(),
            low=closed["low"].tolist(), close=closed["close"].tolist(),
            text=hover_text(closed, spec, label), name="closed", hoverlabel=dict(namelength=0),
            increasing=dict(line=dict(color=UP, width=1), fillcolor=UP),
            decreasing=dict(line=dict(color=DOWN, width=1), fillcolor=DOWN), whiskerwidth=0,
        ), 1),
        (go.Candlestick(
            x=live_cols["x"], open=live_cols["open"], high=live_cols["high"], low=live_cols["low"],
            close=live_cols["close"], text=live_cols["text"], name="in progress",
            hoverlabel=dict(namelength=0),
            increasing=dict(line=dict(color=UP, width=1.5), fillcolor=rgba(UP, 0.18)),
            decreasing=dict(line=dict(color=DOWN, width=1.5), fillcolor=rgba(DOWN, 0.18)),
            whiskerwidth=0, opacity=0.85,
        ), 1),
        (go.Bar(
            x=xs, y=closed["volume"].tolist(),
            marker=dict(color=up_down_colours(closed, 0.55), line=dict(width=0)),
            width=bar_width(spec), name="volume", hovertemplate="vol %{y:,.6~f}<extra></extra>",
        ), 2),
        (go.Bar(
            x=live_cols["x"], y=live_cols["volume"],
            marker=dict(color=live_cols["colour"], line=dict(width=0)), width=bar_width(spec),
            name="volume in progress", hovertemplate="vol %{y:,.6~f} (in progress)<extra></extra>",
        ), 2),
        (go.Scatter(
            x=gaps["x"], y=gaps["y"], text=gaps["text"], mode="lines+markers",
            line=dict(color=rgba(GAP, 0.75), width=1, dash="dot"),
            marker=dict(symbol="triangle-down", size=gaps["size"], color=GAP, line=dict(width=0)),
            connectgaps=False, cliponaxis=False, name="trade-id gaps",
            hovertemplate="%{text}<extra></extra>", xaxis="x", yaxis="y3",
        ), None),
        (go.Candlestick(
            x=frame["x"], open=frame["price"], high=frame["price"], low=frame["price"],
            close=frame["price"], name="frame", hoverinfo="skip",
            increasing=clear, decreasing=clear, whiskerwidth=0,
        ), 1),
    ]


def _last_close(closed: pd.DataFrame, live: pd.DataFrame) -> float | None:
    if not live.empty:
        return float(live["close"].iloc[-1])
    if not closed.empty:
        return float(closed["close"].iloc[-1])
    return None


def _last_line(price: float | None) -> dict:
    return dict(
        type="line", xref="paper", yref="y", x0=0, x1=1,
        y0=price if price is not None else 0, y1=price if price is not None else 0,
        line=dict(color=MID, width=1, dash="dot"), visible=price is not None,
    )


def _last_tag(price: float | None, decimals: int) -> dict:
    return dict(
        xref="paper", yref="y", x=1, xanchor="left", y=price if price is not None else 0,
        text=format_price(price, decimals) if price is not None else "", showarrow=False,
        font=dict(size=10, color=BG), bgcolor=MID, borderpad=2,
        visible=price is not None,
    )


def candles_patch(
    df: pd.DataFrame,
    *,
    spec: BarSpec | str,
    first_index: int,
    decimals: int | None = None,
    label: str = "start",
    gap_marks: Sequence[tuple[int, int]] = (),
) -> Patch:
    """Return a ``dash.Patch`` advancing a figure made by :func:`candles_figure`.

    Parameters
    ----------
    df : DataFrame
        Bars (``BAR_COLUMNS``) newer than the figure's: the bars closed since the figure
        was last updated, in index order, then at most one in-progress row. Without an
        in-progress row the live traces are emptied.
    spec : BarSpec or str
    first_index : int
        Bar index of the first row (the figure's previous ``n_closed``).
    decimals : int, optional
        Price decimals of the last-price tag (pass the full figure's, so the tag does not
        change width); inferred from ``df`` when None.
    label : {"start", "end"}
        As the full figure was drawn with.
    gap_marks : sequence of (ts_ns, missing_trades)
        Gap marks that arrived since the figure was last updated (appended).

    Notes
    -----
    The closed traces and the gap trace are only extended, never rewritten, so the patch
    stays small; the one-point live traces, the two framing candles and the last-price
    marker are replaced.
    """
    spec = as_spec(spec)
    closed, live = split_live(df)
    patch = Patch()
    if not closed.empty:
        _extend_closed(patch, closed, spec, first_index, label)
    _replace_live(patch, live_columns(live, spec, first_index + len(closed), label))
    gaps = gap_columns(gap_marks, df, spec, first_index, label, drop_older=False)
    if gaps["x"]:
        trace = patch["data"][TRACE_GAPS]
        for col in ("x", "y", "text"):
            trace[col].extend(gaps[col])
        trace["marker"]["size"].extend(gaps["size"])
    if not df.empty:
        frame = frame_columns(df, spec, first_index, label)
        trace = patch["data"][TRACE_FRAME]
        trace["x"] = frame["x"]
        for col in ("open", "high", "low", "close"):
            trace[col] = frame["price"]
    last = _last_close(closed, live)
    if last is not None:
        patch["layout"]["shapes"][_SHAPE_LAST] = _last_line(last)
        patch["layout"]["annotations"][_ANNOTATION_LAST] = _last_tag(
            last, price_decimals(df) if decimals is None else decimals)
    return patch


def _replace_live(patch: Patch, cols: dict) -> None:
    # Replace the one-point in-progress traces (emptied when no bar is in progress).
    live_trace = patch["data"][TRACE_LIVE]
    for col in ("x", "open", "high", "low", "close", "text"):
        live_trace[col] = cols[col]
    live_volume = patch["data"][TRACE_LIVE_VOLUME]
    live_volume["x"] = cols["x"]
    live_volume["y"] = cols["volume"]
    live_volume["marker"]["color"] = cols["colour"]


def _extend_closed(patch: Patch, closed: pd.DataFrame, spec: BarSpec, first_index: int, label: str) -> None:
    # Append newly closed bars to the candle and volume traces (never rewritten).
    xs = x_values(closed, spec, first_index, label)
    candles = patch["data"][TRACE_CANDLES]
    candles["x"].extend(xs)
    for col in ("open", "high", "low", "close"):
        candles[col].extend(closed[col].tolist())
    candles["text"].extend(hover_text(closed, spec, label))
    volume = patch["data"][TRACE_VOLUME]
    volume["x"].extend(xs)
    volume["y"].extend(closed["volume"].tolist())
    volume["marker"]["color"].extend(up_down_colours(closed, 0.55))


def candles_redraw(figure: go.Figure) -> Patch:
    """Return a ``dash.Patch`` that redraws a candle figure in place, keeping the user's view.

    For a redraw of the same symbol and spec (new bar label, revised or truncated bars):
    every trace and the title, last-price marker and price hover format are replaced;
    the axes are left alone, so a range the user zoomed or panned to stays.

    Parameters
    ----------
    figure : plotly.graph_objects.Figure
        The new full figure (:func:`candles_figure`).

    Notes
    -----
    Plotly's ``uirevision`` alone does not keep the view here: dash-renderer hands plotly
    a new layout, and plotly keeps a user-set range only if it recorded the edit, which
    it does not for an axis matched to another (the price and volume panes share x).
    """
    fig = figure.to_plotly_json()
    layout = fig["layout"]
    patch = Patch()
    patch["data"] = fig["data"]
    for key in ("title", "shapes", "annotations"):
        patch["layout"][key] = layout[key]
    patch["layout"]["yaxis"]["hoverformat"] = layout["yaxis"]["hoverformat"]
    return patch
