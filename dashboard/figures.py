"""Pure figure builders: DataFrames and lists in, plotly figures or ``dash.Patch`` out.

Nothing here reads the engine or a clock (DESIGN.md: callbacks only wire inputs to these
functions), so every function is unit-tested without a browser.

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
====================  ==========================================================

Keeping the in-progress bar in its own one-point traces makes it visibly distinct (a
candlestick trace has no per-point opacity) and keeps the closed traces append-only: a
steady-state update (:func:`candles_patch`) extends the closed traces with the bars that
closed since the last update and replaces the one-point live traces. Anything that changes
bars already drawn (a late-trade revision, a rebuild, history truncation) changes the
series ``generation`` and :func:`plan_candles` asks for a full figure instead.

x-axis: time bars are placed on a date axis (UTC) at their interval start, or at their
interval end with ``label="end"`` (vendors differ; DESIGN.md "Time and bars"), so an
empty interval shows as a gap. Tick, volume and value bars have no fixed length; they are
placed at their bar index on a linear axis (evenly spaced, as trading platforms draw range
and volume bars) and the hover text gives their start and end times. The index is the
engine's bar index within the series generation, so it is stable across updates.

Framing: plotly sizes candle bodies by the smallest distance between candle positions and
autoranges x to the data, so a fresh series (one candle) draws a hairline over a chart
filled by one volume bar. ``TRACE_FRAME`` holds two transparent, hover-less candles on the
bar grid, ``MIN_SLOTS - 1`` bars left of the newest and one to its right: bodies get one
bar's width, a young series fills a ``MIN_SLOTS`` window from the right (where new bars
appear), and there is always one free slot right of the newest candle. With more bars
than that the left one sits on a candle and changes nothing. On a bar-number axis there
is no bar before number 0, so a young series fills bars 0 .. ``MIN_SLOTS - 1`` from the
left instead.

Gap marks (``Engine.gap_marks``): a time bar's mark is at the exact time of the first
trade after the gap; a tick, volume or value bar's mark is at the bar holding that trade.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Patch
from plotly.subplots import make_subplots

from feed.core.models import BarSpec, decimals_of

__all__ = [
    "UP",
    "DOWN",
    "BID",
    "ASK",
    "TRACE_CANDLES",
    "TRACE_LIVE",
    "TRACE_VOLUME",
    "TRACE_LIVE_VOLUME",
    "TRACE_GAPS",
    "TRACE_FRAME",
    "LABELS",
    "MIN_SLOTS",
    "x_values",
    "format_pct",
    "hover_text",
    "gap_columns",
    "current_signature",
    "plan_candles",
    "candles_figure",
    "candles_patch",
    "candles_redraw",
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
_GAP = "#c792ea"  # trade-id gap marks: apart from up/down, bid/ask and the last price
_FONT = "Inter, 'Segoe UI', system-ui, -apple-system, sans-serif"

TRACE_CANDLES = 0
TRACE_LIVE = 1
TRACE_VOLUME = 2
TRACE_LIVE_VOLUME = 3
TRACE_GAPS = 4
TRACE_FRAME = 5

#: Where a time bar is placed on the x-axis: its interval start (default) or end.
LABELS: tuple[str, ...] = ("start", "end")

#: Fewest bar slots the candle chart shows (see "Framing" above).
MIN_SLOTS = 40

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
    return min(max((decimals_of(float(v)) for v in values), default=0), cap)


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


def _spec(spec: BarSpec | str) -> BarSpec:
    return BarSpec.from_str(spec) if isinstance(spec, str) else spec


def _is_time(spec: BarSpec | str) -> bool:
    return _spec(spec).is_time


def _check_label(label: str) -> str:
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    return label


def _label_column(label: str) -> str:
    # The bars-frame column a time bar is placed at.
    return "end" if _check_label(label) == "end" else "start"


def x_values(df: pd.DataFrame, spec: BarSpec | str, first_index: int = 0, label: str = "start") -> list:
    """Return the x coordinate of each row of ``df`` (bars in index order).

    Parameters
    ----------
    df : DataFrame
        Bars with ``start`` and ``end`` columns (UTC ns), rows in bar-index order.
    spec : BarSpec or str
        Time bars get date strings (UTC, milliseconds) of ``start``, or of ``end`` with
        ``label="end"``; other kinds get the bar index ``first_index + row``.
    first_index : int
        Bar index of the first row.
    label : {"start", "end"}
        Where a time bar is placed: its interval start (default) or end. Ignored for
        other kinds.

    Raises
    ------
    ValueError
        If ``label`` is not one of ``LABELS``.
    """
    column = _label_column(label)
    if _is_time(spec):
        return _iso(df[column]).tolist()
    return list(range(first_index, first_index + len(df)))


def _positions(df: pd.DataFrame, spec: BarSpec, first_index: int, label: str) -> np.ndarray:
    # x positions as integers: UTC ns of the label time (time bars) or bar indices.
    if spec.is_time:
        return df[_label_column(label)].to_numpy(np.int64)
    return np.arange(first_index, first_index + len(df), dtype=np.int64)


def format_pct(x: float | None, *, signed: bool = False) -> str:
    """Return a fraction as a percentage to three significant digits, at least two decimals.

    ``0.0123`` -> ``"1.23 %"``, ``-0.0000123`` (signed) -> ``"-0.00123 %"``; a value that
    rounds to zero is ``"0.00 %"`` (no sign); None or NaN (a series' first bar has no
    previous close) -> ``"–"``.
    """
    if x is None or not math.isfinite(float(x)):
        return "–"
    p = float(x) * 100.0
    a = abs(p)
    decimals = 2 if a == 0 or a >= 1 else min(8, 2 - math.floor(math.log10(a)))
    text = f"{p:+.{decimals}f}" if signed else f"{p:.{decimals}f}"
    if not text.strip("+-0."):
        text = f"{0:.2f}"
    return text + " %"


def hover_text(df: pd.DataFrame, spec: BarSpec | str, label: str = "start") -> list[str]:
    """Return each bar's hover text (besides the OHLC plotly shows itself).

    Tick, volume and value bars: start and end times (their x is a bar number); time bars
    placed at their end: the start time. Then the trade count, ``change`` (close against
    the previous close, signed) and ``amplitude`` ((high - low) / previous close), both in
    percent (``feed.core.models.Bar``).
    """
    time_axis = _is_time(spec)
    show_start = not time_axis or _check_label(label) == "end"
    starts = _iso(df["start"]).tolist() if show_start else None
    ends = None if time_axis else _iso(df["end"]).tolist()
    counts = df["trade_count"].astype("int64").tolist()
    nan = [math.nan] * len(df)
    change = df["change"].tolist() if "change" in df else nan
    amplitude = df["amplitude"].tolist() if "amplitude" in df else nan
    out = []
    for i, n in enumerate(counts):
        parts = []
        if starts is not None:
            parts.append(f"start {starts[i]}")
        if ends is not None:
            parts.append(f"end {ends[i]}")
        parts.append(f"{n:,} trade{'' if n == 1 else 's'}")
        parts.append(f"change {format_pct(change[i], signed=True)}")
        parts.append(f"amplitude {format_pct(amplitude[i])}")
        out.append("<br>".join(parts))
    return out


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
    spec = _spec(spec)
    return spec.interval_ns / 1e6 * 0.8 if spec.is_time else 0.8


def _live_columns(live: pd.DataFrame, spec: BarSpec | str, index: int, label: str) -> dict:
    # Arrays of the one-point live traces (empty lists when no bar is in progress).
    if live.empty:
        return dict(x=[], open=[], high=[], low=[], close=[], text=[], volume=[], colour=[])
    return dict(
        x=x_values(live, spec, index, label),
        open=live["open"].tolist(),
        high=live["high"].tolist(),
        low=live["low"].tolist(),
        close=live["close"].tolist(),
        text=[t + "<br>in progress" for t in hover_text(live, spec, label)],
        volume=live["volume"].tolist(),
        colour=_up_down(live, 0.45),
    )


def _iso_one(ts_ns: int) -> str:
    return _iso(pd.Series([ts_ns], dtype="int64"))[0]


def _axis_x(spec: BarSpec, pos: int):
    # An integer position as an x value (date string on a time axis).
    return _iso_one(pos) if spec.is_time else int(pos)


def _frame_columns(df: pd.DataFrame, spec: BarSpec | str, first_index: int, label: str) -> dict:
    # The two invisible framing candles ("Framing" in the module docstring), at the newest
    # close. Time axis: one MIN_SLOTS - 1 bars before the newest bar, one a bar after it;
    # when the left one falls among the bars it is moved onto the bar at or before it, so
    # that it never sits closer than a bar to a candle (a daylight-saving day on a session
    # grid is an hour short) and then changes nothing. Bar-number axis: no bar numbers
    # below 0 -- a young series fills bars 0 .. MIN_SLOTS - 1 from the left instead.
    if df.empty:
        return dict(x=[], price=[])
    spec = _spec(spec)
    pos = _positions(df, spec, first_index, label)
    newest = int(pos[-1])
    price = float(df["close"].iloc[-1])
    if not spec.is_time:
        left = max(newest - (MIN_SLOTS - 1), 0)
        return dict(x=[left, max(newest + 1, left + MIN_SLOTS - 1)], price=[price, price])
    step = spec.interval_ns
    left = newest - (MIN_SLOTS - 1) * step
    if left >= int(pos[0]):
        left = int(pos[int(np.searchsorted(pos, left, side="right")) - 1])
    return dict(x=[_axis_x(spec, left), _axis_x(spec, newest + step)], price=[price, price])


def gap_columns(
    marks: Sequence[tuple[int, int]],
    df: pd.DataFrame,
    spec: BarSpec | str,
    first_index: int = 0,
    label: str = "start",
    *,
    drop_older: bool = True,
) -> dict:
    """Return the arrays of the gap trace (``TRACE_GAPS``) for trade-id gap marks.

    Parameters
    ----------
    marks : sequence of (ts_ns, missing_trades)
        ``Engine.gap_marks(symbol)``: the exchange time (UTC ns) of the first trade after
        each gap and how many trade ids it skipped, oldest first.
    df : DataFrame
        The bars the marks go with (``start``/``end`` UTC ns), in index order.
    spec : BarSpec or str
        Time bars: a mark is placed at its exact time (whatever ``label``). Tick, volume
        and value bars: at the index of the first bar whose ``end`` is at or after it --
        the bar holding that trade.
    first_index : int
        Bar index of the first row of ``df``.
    label : {"start", "end"}
        How the candles are placed (checked; time marks do not move with it).
    drop_older : bool
        Leave out marks older than the first bar of ``df`` (a full figure, which must not
        stretch its x-range back to them); False places them at the first bar (a patch,
        whose ``df`` holds only the newest bars).

    Returns
    -------
    dict
        ``x``, ``y``, ``text``, ``size``: three points per mark -- the line's foot
        (``y`` 0) and head (``y`` 1, on the hidden 0..1 axis over the price pane, with a
        marker) and a ``None`` break -- and the hover text ``"N trades missing"``.
    """
    _check_label(label)
    spec = _spec(spec)
    out: dict[str, list] = {"x": [], "y": [], "text": [], "size": []}
    if df.empty or not marks:
        return out
    starts = df["start"].to_numpy(np.int64)
    ends = df["end"].to_numpy(np.int64)
    for ts_ns, missing in marks:
        ts_ns, missing = int(ts_ns), int(missing)
        if ts_ns < starts[0] and drop_older:
            continue
        if spec.is_time:
            x = _axis_x(spec, ts_ns)
        else:
            i = min(int(np.searchsorted(ends, ts_ns, side="left")), len(df) - 1)
            x = first_index + i
        text = f"{missing:,} trade{'' if missing == 1 else 's'} missing<br>{_iso_one(ts_ns)}"
        out["x"] += [x, x, None]
        out["y"] += [0, 1, None]
        out["text"] += [text, text, None]
        out["size"] += [0, 7, 0]
    return out


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

    Raises
    ------
    ValueError
        If ``label`` is not one of ``LABELS``.
    """
    spec = _spec(spec)
    spec_str = str(spec)
    _check_label(label)
    if decimals is None:
        decimals = price_decimals(df)
    time_axis = spec.is_time
    closed, live = _split(df)
    xs = x_values(closed, spec, first_index, label)
    live_cols = _live_columns(live, spec, first_index + len(closed), label)
    frame = _frame_columns(df, spec, first_index, label)
    gaps = gap_columns(gap_marks, df, spec, first_index, label)
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
            text=hover_text(closed, spec, label),
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
    fig.add_trace(
        go.Scatter(
            x=gaps["x"], y=gaps["y"], text=gaps["text"],
            mode="lines+markers",
            line=dict(color=_rgba(_GAP, 0.75), width=1, dash="dot"),
            marker=dict(symbol="triangle-down", size=gaps["size"], color=_GAP, line=dict(width=0)),
            connectgaps=False,
            cliponaxis=False,
            name="trade-id gaps",
            hovertemplate="%{text}<extra></extra>",
            xaxis="x", yaxis="y3",
        )
    )
    clear = dict(line=dict(color="rgba(0,0,0,0)", width=0), fillcolor="rgba(0,0,0,0)")
    fig.add_trace(
        go.Candlestick(
            x=frame["x"], open=frame["price"], high=frame["price"], low=frame["price"],
            close=frame["price"], name="frame", hoverinfo="skip",
            increasing=clear, decreasing=clear, whiskerwidth=0,
        ),
        row=1, col=1,
    )
    last = _last_close(closed, live)
    layout = _base_layout(uirevision if uirevision is not None else f"{symbol}|{spec_str}")
    title = f"<b>{symbol}</b> · {spec_str}"
    if not time_axis:
        title += " · x = bar #"
    elif label == "end":
        title += " · labelled at interval end"
    layout["title"]["text"] = title
    layout["margin"] = dict(l=8, r=78, t=28, b=8)  # the right margin holds the last-price tag
    fig.update_layout(
        **layout,
        barmode="overlay",  # closed and in-progress volume share x positions, no grouping
        hovermode="x",
        dragmode="pan",
        shapes=[_last_line(last)],
        annotations=[_last_tag(last, decimals)],
        # The gap lines' 0..1 axis: over the price pane, never zoomed or shown.
        yaxis3=dict(overlaying="y", range=[0, 1], fixedrange=True, visible=False),
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
    spec = _spec(spec)
    closed, live = _split(df)
    patch = Patch()
    if not closed.empty:
        xs = x_values(closed, spec, first_index, label)
        candles = patch["data"][TRACE_CANDLES]
        candles["x"].extend(xs)
        for col in ("open", "high", "low", "close"):
            candles[col].extend(closed[col].tolist())
        candles["text"].extend(hover_text(closed, spec, label))
        volume = patch["data"][TRACE_VOLUME]
        volume["x"].extend(xs)
        volume["y"].extend(closed["volume"].tolist())
        volume["marker"]["color"].extend(_up_down(closed, 0.55))
    cols = _live_columns(live, spec, first_index + len(closed), label)
    live_trace = patch["data"][TRACE_LIVE]
    for col in ("x", "open", "high", "low", "close", "text"):
        live_trace[col] = cols[col]
    live_volume = patch["data"][TRACE_LIVE_VOLUME]
    live_volume["x"] = cols["x"]
    live_volume["y"] = cols["volume"]
    live_volume["marker"]["color"] = cols["colour"]
    gaps = gap_columns(gap_marks, df, spec, first_index, label, drop_older=False)
    if gaps["x"]:
        trace = patch["data"][TRACE_GAPS]
        for col in ("x", "y", "text"):
            trace[col].extend(gaps[col])
        trace["marker"]["size"].extend(gaps["size"])
    if not df.empty:
        frame = _frame_columns(df, spec, first_index, label)
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
