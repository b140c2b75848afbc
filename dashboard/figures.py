"""Pure figure builders: DataFrames and lists in, plotly figures or ``dash.Patch`` out.

Nothing here reads the engine or a clock (DESIGN.md: callbacks only wire inputs to these
functions), so every function is unit-tested without a browser.

Candle figure
-------------
Four traces in a fixed order (the ``TRACE_*`` constants), on two rows sharing one x-axis
(price candles above, volume below):

====================  ==========================================================
``TRACE_CANDLES``     closed bars; append-only between full draws
``TRACE_LIVE``        the in-progress bar alone, drawn hollow and translucent
``TRACE_VOLUME``      volume of the closed bars, coloured by up/down
``TRACE_LIVE_VOLUME`` volume of the in-progress bar, translucent
====================  ==========================================================

Keeping the in-progress bar in its own one-point traces makes it visibly distinct (a
candlestick trace has no per-point opacity) and keeps the closed traces append-only: a
steady-state update (:func:`candles_patch`) extends the closed traces with the bars that
closed since the last update and replaces the one-point live traces. Anything that changes
bars already drawn (a late-trade revision, a rebuild, history truncation) changes the
series ``generation`` and :func:`plan_candles` asks for a full figure instead.

x-axis: time bars are placed at their start time on a date axis (UTC), so an empty
interval shows as a gap. Tick, volume and value bars have no fixed length; they are placed
at their bar index on a linear axis (evenly spaced, as trading platforms draw range and
volume bars) and the hover text gives their start and end times. The index is the
engine's bar index within the series generation, so it is stable across updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Patch
from plotly.subplots import make_subplots

from feed.models import BarSpec

__all__ = [
    "UP",
    "DOWN",
    "BID",
    "ASK",
    "TRACE_CANDLES",
    "TRACE_LIVE",
    "TRACE_VOLUME",
    "TRACE_LIVE_VOLUME",
    "x_values",
    "current_signature",
    "plan_candles",
    "candles_figure",
    "candles_patch",
    "placeholder_figure",
    "depth_figure",
    "depth_signature",
    "price_decimals",
    "format_price",
]

# -- palette (matches assets/tickscope.css) -----------------------------------------------
UP = "#26a69a"  # close >= open
DOWN = "#ef5350"  # close < open
BID = UP
ASK = DOWN
_BG = "#0b0e11"
_PANEL = "#11151b"
_GRID = "#1c222b"
_AXIS = "#2a313c"
_TEXT = "#aab2bf"
_MUTED = "#6b7480"
_MID = "#e0b341"
_FONT = "Inter, 'Segoe UI', system-ui, -apple-system, sans-serif"

TRACE_CANDLES = 0
TRACE_LIVE = 1
TRACE_VOLUME = 2
TRACE_LIVE_VOLUME = 3

# Layout items the patches address by position.
_SHAPE_LAST = 0  # dotted horizontal line at the last price
_ANNOTATION_LAST = 0  # last-price tag at the right edge


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _base_layout(uirevision: str | None) -> dict:
    # Shared dark styling of every figure.
    return dict(
        paper_bgcolor=_PANEL,
        plot_bgcolor=_PANEL,
        font=dict(family=_FONT, size=11, color=_TEXT),
        margin=dict(l=8, r=8, t=28, b=8),
        showlegend=False,
        uirevision=uirevision,
        hoverlabel=dict(bgcolor="#1a2029", bordercolor=_AXIS, font=dict(family=_FONT, color="#e6e9ee")),
        title=dict(x=0.01, xanchor="left", y=0.985, yanchor="top", font=dict(size=12, color=_TEXT)),
    )


def _axis(**overrides) -> dict:
    axis = dict(
        gridcolor=_GRID,
        zerolinecolor=_GRID,
        linecolor=_AXIS,
        tickcolor=_AXIS,
        tickfont=dict(color=_MUTED, size=10),
        showspikes=True,
        spikecolor=_MUTED,
        spikethickness=1,
        spikedash="dot",
        spikemode="across",
        spikesnap="cursor",
    )
    axis.update(overrides)
    return axis


# -- formatting -------------------------------------------------------------------------


def _decimals_of(values: Sequence[float], cap: int = 10) -> int:
    # Decimals needed to print the values exactly (shortest repr, "3e-05" -> 5), at most cap.
    best = 0
    for v in values:
        v = float(v)
        if not math.isfinite(v):
            continue
        exponent = Decimal(repr(v)).normalize().as_tuple().exponent
        best = max(best, -int(exponent))
    return min(best, cap)


def price_decimals(df: pd.DataFrame, rows: int = 500) -> int:
    """Return the decimals needed to print the prices of the last ``rows`` bars exactly.

    The instrument's tick is not in a bars frame; the prices themselves show it (a single
    price does not: 60027.1 may be 60027.10).
    """
    tail = df.tail(rows)
    values = [v for c in ("open", "high", "low", "close") for v in tail[c].tolist()]
    return _decimals_of(values)


def format_price(x: float | None, decimals: int) -> str:
    """Return ``x`` with a fixed number of decimals and thousands separators; ``"–"`` for None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{decimals}f}"


def _iso(ns: pd.Series) -> pd.Series:
    # UTC ns -> "YYYY-MM-DD HH:MM:SS.mmm", a date string plotly reads without a zone.
    return pd.to_datetime(ns.astype("int64"), unit="ns").dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]


# -- candles ----------------------------------------------------------------------------


def _is_time(spec: BarSpec | str) -> bool:
    return (BarSpec.from_str(spec) if isinstance(spec, str) else spec).is_time


def x_values(df: pd.DataFrame, spec: BarSpec | str, first_index: int = 0) -> list:
    """Return the x coordinate of each row of ``df`` (bars in index order).

    Parameters
    ----------
    df : DataFrame
        Bars with at least a ``start`` column (UTC ns), rows in bar-index order.
    spec : BarSpec or str
        Time bars get date strings of ``start`` (UTC, milliseconds); other kinds get the
        bar index ``first_index + row``.
    first_index : int
        Bar index of the first row.
    """
    if _is_time(spec):
        return _iso(df["start"]).tolist()
    return list(range(first_index, first_index + len(df)))


def _hover_text(df: pd.DataFrame, time_axis: bool) -> list[str]:
    counts = df["trade_count"].astype("int64").astype(str) + " trades"
    if time_axis:
        return counts.tolist()
    return ("start " + _iso(df["start"]) + "<br>end " + _iso(df["end"]) + "<br>" + counts).tolist()


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    # (closed rows, in-progress rows); the in-progress bar is at most one row, the last.
    closed_mask = df["closed"].astype(bool).to_numpy()
    return df[closed_mask], df[~closed_mask]


def _up_down(df: pd.DataFrame, alpha: float = 1.0) -> list[str]:
    up = (df["close"].to_numpy() >= df["open"].to_numpy())
    up_c, down_c = (UP, DOWN) if alpha >= 1 else (_rgba(UP, alpha), _rgba(DOWN, alpha))
    return np.where(up, up_c, down_c).tolist()


def _bar_width(spec: BarSpec | str) -> float:
    # Volume bar width in x units: 80 % of the interval (ms on a date axis) or of one index.
    spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
    return spec.interval_ns / 1e6 * 0.8 if spec.is_time else 0.8


def _live_columns(live: pd.DataFrame, spec: BarSpec | str, index: int) -> dict:
    # Arrays of the one-point live traces (empty lists when no bar is in progress).
    if live.empty:
        return dict(x=[], open=[], high=[], low=[], close=[], text=[], volume=[], colour=[])
    time_axis = _is_time(spec)
    return dict(
        x=x_values(live, spec, index),
        open=live["open"].tolist(),
        high=live["high"].tolist(),
        low=live["low"].tolist(),
        close=live["close"].tolist(),
        text=[t + "<br>in progress" for t in _hover_text(live, time_axis)],
        volume=live["volume"].tolist(),
        colour=_up_down(live, 0.45),
    )


def current_signature(bar: Mapping | None) -> str | None:
    """Return a short string that changes whenever the in-progress bar changes.

    A string, not numbers: a ``dcc.Store`` round-trips through JavaScript, whose numbers
    cannot hold ns timestamps exactly.

    Parameters
    ----------
    bar : mapping or None
        Anything with ``start_ns``/``end_ns``/``trade_count``/``volume``/``close`` as keys
        or attributes (a ``feed.models.Bar``), or None when no bar is in progress.
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
        ``"SYMBOL|SPEC"`` now selected.
    generation, n_closed, first_index : int
        From the engine's ``BarSeries`` now.
    max_points : int
        Most closed bars the figure may hold; a patch that would exceed it redraws.

    Returns
    -------
    {"full", "patch"}
        ``"full"`` when nothing was drawn yet, the symbol or spec changed, bars already
        drawn changed (new generation), the client fell behind the oldest bar the engine
        still holds, or the cap would be exceeded; else ``"patch"``.
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
) -> go.Figure:
    """Return the full candlestick + volume figure.

    Parameters
    ----------
    df : DataFrame
        Bars with ``feed.models.BAR_COLUMNS`` (start/end int UTC ns), in index order: the
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
    """
    spec_str = str(spec)
    if decimals is None:
        decimals = price_decimals(df)
    time_axis = _is_time(spec)
    closed, live = _split(df)
    xs = x_values(closed, spec, first_index)
    live_cols = _live_columns(live, spec, first_index + len(closed))
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.02, row_heights=[0.78, 0.22]
    )
    fig.add_trace(
        go.Candlestick(
            x=xs,
            open=closed["open"].tolist(),
            high=closed["high"].tolist(),
            low=closed["low"].tolist(),
            close=closed["close"].tolist(),
            text=_hover_text(closed, time_axis),
            name="closed",
            hoverlabel=dict(namelength=0),
            increasing=dict(line=dict(color=UP, width=1), fillcolor=UP),
            decreasing=dict(line=dict(color=DOWN, width=1), fillcolor=DOWN),
            whiskerwidth=0,
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Candlestick(
            x=live_cols["x"],
            open=live_cols["open"],
            high=live_cols["high"],
            low=live_cols["low"],
            close=live_cols["close"],
            text=live_cols["text"],
            name="in progress",
            hoverlabel=dict(namelength=0),
            increasing=dict(line=dict(color=UP, width=1.5), fillcolor=_rgba(UP, 0.18)),
            decreasing=dict(line=dict(color=DOWN, width=1.5), fillcolor=_rgba(DOWN, 0.18)),
            whiskerwidth=0,
            opacity=0.85,
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Bar(
            x=xs,
            y=closed["volume"].tolist(),
            marker=dict(color=_up_down(closed, 0.55), line=dict(width=0)),
            width=_bar_width(spec),
            name="volume",
            hovertemplate="vol %{y:,.6~f}<extra></extra>",
        ),
        row=2, col=1,
    )
    fig.add_trace(
        go.Bar(
            x=live_cols["x"],
            y=live_cols["volume"],
            marker=dict(color=live_cols["colour"], line=dict(width=0)),
            width=_bar_width(spec),
            name="volume in progress",
            hovertemplate="vol %{y:,.6~f} (in progress)<extra></extra>",
        ),
        row=2, col=1,
    )
    last = _last_close(closed, live)
    layout = _base_layout(uirevision if uirevision is not None else f"{symbol}|{spec_str}")
    layout["title"]["text"] = f"<b>{symbol}</b> · {spec_str}" + ("" if time_axis else " · x = bar #")
    layout["margin"] = dict(l=8, r=78, t=28, b=8)  # the right margin holds the last-price tag
    fig.update_layout(
        **layout,
        barmode="overlay",  # closed and in-progress volume share x positions, no grouping
        hovermode="x",
        dragmode="pan",
        shapes=[_last_line(last)],
        annotations=[_last_tag(last, decimals)],
    )
    x_kind = dict(type="date") if time_axis else dict(type="linear", tickformat="d")
    fig.update_xaxes(_axis(**x_kind), rangeslider=dict(visible=False))
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_yaxes(_axis(side="right", exponentformat="none", separatethousands=True,
                           hoverformat=f",.{decimals}f"), row=1, col=1)
    fig.update_yaxes(_axis(side="right", nticks=3, showspikes=False), row=2, col=1)
    return fig


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
        line=dict(color=_MID, width=1, dash="dot"), visible=price is not None,
    )


def _last_tag(price: float | None, decimals: int) -> dict:
    return dict(
        xref="paper", yref="y", x=1, xanchor="left", y=price if price is not None else 0,
        text=format_price(price, decimals) if price is not None else "", showarrow=False,
        font=dict(size=10, color=_BG), bgcolor=_MID, borderpad=2,
        visible=price is not None,
    )


def candles_patch(
    df: pd.DataFrame, *, spec: BarSpec | str, first_index: int, decimals: int | None = None
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

    Notes
    -----
    The closed traces are only extended, never rewritten, so the patch stays small; the
    one-point live traces and the last-price marker are replaced.
    """
    time_axis = _is_time(spec)
    closed, live = _split(df)
    patch = Patch()
    if not closed.empty:
        xs = x_values(closed, spec, first_index)
        candles = patch["data"][TRACE_CANDLES]
        candles["x"].extend(xs)
        for col in ("open", "high", "low", "close"):
            candles[col].extend(closed[col].tolist())
        candles["text"].extend(_hover_text(closed, time_axis))
        volume = patch["data"][TRACE_VOLUME]
        volume["x"].extend(xs)
        volume["y"].extend(closed["volume"].tolist())
        volume["marker"]["color"].extend(_up_down(closed, 0.55))
    cols = _live_columns(live, spec, first_index + len(closed))
    live_trace = patch["data"][TRACE_LIVE]
    for col in ("x", "open", "high", "low", "close", "text"):
        live_trace[col] = cols[col]
    live_volume = patch["data"][TRACE_LIVE_VOLUME]
    live_volume["x"] = cols["x"]
    live_volume["y"] = cols["volume"]
    live_volume["marker"]["color"] = cols["colour"]
    last = _last_close(closed, live)
    if last is not None:
        patch["layout"]["shapes"][_SHAPE_LAST] = _last_line(last)
        patch["layout"]["annotations"][_ANNOTATION_LAST] = _last_tag(
            last, price_decimals(df) if decimals is None else decimals)
    return patch


def placeholder_figure(message: str, *, uirevision: str | None = None) -> go.Figure:
    """Return an empty dark figure with ``message`` in the middle (no data yet, no symbol)."""
    fig = go.Figure()
    fig.update_layout(
        **_base_layout(uirevision),
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=[dict(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                          showarrow=False, font=dict(size=13, color=_MUTED))],
    )
    return fig


# -- depth ------------------------------------------------------------------------------


def depth_signature(
    bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]], synced: bool
) -> str:
    """Return a short string that changes whenever the drawn depth would change."""
    return f"{hash((tuple(bids), tuple(asks), synced)):x}"


def depth_figure(
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    *,
    symbol: str,
    mid: float | None = None,
    spread: float | None = None,
    synced: bool = True,
    uirevision: str | None = None,
) -> go.Figure:
    """Return the cumulative order-book depth figure.

    Parameters
    ----------
    bids, asks : sequence of (price, size)
        Levels best first (prices in quote currency, sizes in base units).
    symbol : str
    mid, spread : float, optional
        Quote currency; the mid is drawn as a vertical line, and both (the spread also in
        basis points of the mid) are written at the top of the plot.
    synced : bool
        False while the book waits for a snapshot: the figure says so.
    uirevision : str, optional
        Defaults to ``symbol``, so zoom survives updates until the symbol changes.

    Notes
    -----
    Each side is a step line filled to zero. At a price x between two levels the bid
    curve shows the size resting at prices >= x (what a sell down to x would meet) and
    the ask curve the size at prices <= x; hence ``vh`` steps for bids plotted in rising
    price order and ``hv`` for asks.
    """
    decimals = _decimals_of([p for p, _ in list(bids[:20]) + list(asks[:20])])
    bid_px = [p for p, _ in bids][::-1]
    bid_cum = np.cumsum([s for _, s in bids])[::-1].tolist() if bids else []
    ask_px = [p for p, _ in asks]
    ask_cum = np.cumsum([s for _, s in asks]).tolist() if asks else []
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=bid_px, y=bid_cum, name="bids", mode="lines", line=dict(color=BID, width=1.5, shape="vh"),
        fill="tozeroy", fillcolor=_rgba(BID, 0.18), hovertemplate="bid %{x}<br>cum %{y:,.6~f}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=ask_px, y=ask_cum, name="asks", mode="lines", line=dict(color=ASK, width=1.5, shape="hv"),
        fill="tozeroy", fillcolor=_rgba(ASK, 0.18), hovertemplate="ask %{x}<br>cum %{y:,.6~f}<extra></extra>",
    ))
    title = f"<b>{symbol}</b> depth"
    if not synced:
        title += " · <span style='color:#e0b341'>resyncing</span>"
    layout = _base_layout(uirevision if uirevision is not None else symbol)
    layout["title"]["text"] = title
    annotations = []
    if mid is not None or spread is not None:
        parts = []
        if mid is not None:
            # The mid of two prices on the tick grid may need one decimal more.
            mid_dp = decimals if math.isclose(round(mid, decimals), mid, abs_tol=1e-12) else decimals + 1
            parts.append(f"mid {format_price(mid, mid_dp)}")
        if spread is not None:
            bps = f" ({spread / mid * 1e4:.3g} bps)" if mid else ""  # 3 significant digits
            parts.append(f"spread {format_price(spread, decimals)}{bps}")
        annotations.append(dict(
            text=" · ".join(parts), x=0.5, y=1, xref="paper", yref="paper", xanchor="center",
            yanchor="top", showarrow=False, font=dict(size=11, color="#e6e9ee"),
            bgcolor=_rgba(_PANEL, 0.85), borderpad=3,
        ))
    if not bids and not asks:
        annotations.append(dict(
            text="waiting for the order book…" if synced else "resyncing the order book…",
            x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
            font=dict(size=13, color=_MUTED),
        ))
    fig.update_layout(
        **layout,
        hovermode="x",
        dragmode="pan",
        shapes=[dict(type="line", xref="x", yref="paper", x0=mid, x1=mid, y0=0, y1=1,
                     line=dict(color=_MID, width=1, dash="dash"), visible=mid is not None)]
        if mid is not None else [],
        annotations=annotations,
        xaxis=_axis(showspikes=False, tickformat=f",.{decimals}f"),
        yaxis=_axis(side="right", showspikes=False, rangemode="tozero"),
    )
    return fig
