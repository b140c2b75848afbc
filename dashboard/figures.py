"""Shared pieces of the pure figure builders: palette, styling, number and time formats,
where a bar goes on the x-axis, hover text, and the placeholder figure.

The builders themselves are ``dashboard.candles`` (price candles and volume) and
``dashboard.depth`` (order-book depth). Nothing here or there reads the engine or a clock:
DataFrames and lists go in, plotly figures or ``dash.Patch`` objects come out, so every
function is unit-tested without a browser (DESIGN.md: callbacks only wire inputs to them).

x-axis: time bars are placed on a date axis (UTC) at their interval start, or at their
interval end with ``label="end"`` (vendors differ; DESIGN.md "Time and bars"), so an
empty interval shows as a gap. Tick, volume and value bars have no fixed length; they are
placed at their bar index on a linear axis (evenly spaced, as trading platforms draw range
and volume bars) and the hover text gives their start and end times. The index is the
engine's bar index within the series generation, so it is stable across updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from feed.core.models import BarSpec, decimals_of

from .timezones import DISPLAY_TZ

__all__ = [
    "UP", "DOWN", "BID", "ASK", "LABELS",
    "x_values", "positions", "hover_text", "format_pct", "format_price", "price_decimals",
    "max_decimals", "plotly_dates", "plotly_date", "placeholder_figure",
    "as_spec", "check_label", "rgba", "base_layout", "axis_style",
]

# -- palette (matches assets/tickscope.css) -----------------------------------------------
UP = "#26a69a"  # close >= open
DOWN = "#ef5350"  # close < open
BID = UP
ASK = DOWN
BG = "#0b0e11"
PANEL = "#11151b"
GRID = "#1c222b"
AXIS = "#2a313c"
TEXT = "#aab2bf"
MUTED = "#6b7480"
MID = "#e0b341"
GAP = "#c792ea"  # trade-id gap marks: apart from up/down, bid/ask and the last price
FONT = "Inter, 'Segoe UI', system-ui, -apple-system, sans-serif"

#: Where a time bar is placed on the x-axis: its interval start (default) or end.
LABELS: tuple[str, ...] = ("start", "end")


def rgba(hex_colour: str, alpha: float) -> str:
    """Return ``"#rrggbb"`` as a CSS ``rgba(...)`` string with opacity ``alpha`` (0..1)."""
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def base_layout(uirevision: str | None) -> dict:
    """Return the dark layout every figure starts from (``uirevision`` keeps the view)."""
    return dict(
        paper_bgcolor=PANEL,
        plot_bgcolor=PANEL,
        font=dict(family=FONT, size=11, color=TEXT),
        margin=dict(l=8, r=8, t=28, b=8),
        showlegend=False,
        uirevision=uirevision,
        hoverlabel=dict(bgcolor="#1a2029", bordercolor=AXIS, font=dict(family=FONT, color="#e6e9ee")),
        title=dict(x=0.01, xanchor="left", y=0.985, yanchor="top", font=dict(size=12, color=TEXT)),
    )


def axis_style(**overrides) -> dict:
    """Return the shared axis styling with ``overrides`` applied."""
    axis = dict(
        gridcolor=GRID,
        zerolinecolor=GRID,
        linecolor=AXIS,
        tickcolor=AXIS,
        tickfont=dict(color=MUTED, size=10),
        showspikes=True,
        spikecolor=MUTED,
        spikethickness=1,
        spikedash="dot",
        spikemode="across",
        spikesnap="cursor",
    )
    axis.update(overrides)
    return axis


# -- formatting -------------------------------------------------------------------------


def max_decimals(values: Sequence[float], cap: int = 10) -> int:
    """Return the decimals needed to print every value exactly, at most ``cap``.

    The most of ``feed.core.models.decimals_of`` over ``values`` (``3e-05`` -> 5).
    """
    return min(max((decimals_of(float(v)) for v in values), default=0), cap)


def price_decimals(df: pd.DataFrame, rows: int = 500) -> int:
    """Return the decimals needed to print the prices of the last ``rows`` bars exactly.

    The instrument's tick is not in a bars frame; the prices themselves show it (a single
    price does not: 60027.1 may be 60027.10).
    """
    tail = df.tail(rows)
    values = [v for c in ("open", "high", "low", "close") for v in tail[c].tolist()]
    return max_decimals(values)


def format_price(x: float | None, decimals: int) -> str:
    """Return ``x`` with a fixed number of decimals and thousands separators; ``"–"`` for None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{decimals}f}"


def plotly_dates(ns: pd.Series) -> pd.Series:
    """Return UTC ns as ``"YYYY-MM-DD HH:MM:SS.mmm"``, the date string plotly reads.

    The vector form used for axes and hover text; it has no ``T`` and no ``Z`` (plotly
    date strings carry no zone), unlike ``feed.core.models.iso_ms`` for files and JSON.
    Written in the chart's zone (``dashboard.timezones.DISPLAY_TZ``, UTC unless a
    callback chose another).
    """
    times = pd.to_datetime(ns.astype("int64"), unit="ns")
    zone = DISPLAY_TZ.get()
    if zone != "UTC":
        times = times.dt.tz_localize("UTC").dt.tz_convert(zone).dt.tz_localize(None)
    return times.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]


def plotly_date(ts_ns: int) -> str:
    """Return one UTC ns time as :func:`plotly_dates` writes it."""
    return plotly_dates(pd.Series([ts_ns], dtype="int64"))[0]


# -- where bars go ---------------------------------------------------------------------


def as_spec(spec: BarSpec | str) -> BarSpec:
    """Return ``spec`` as a :class:`BarSpec` (parsing a string such as ``"1m"``)."""
    return BarSpec.from_str(spec) if isinstance(spec, str) else spec


def _is_time(spec: BarSpec | str) -> bool:
    return as_spec(spec).is_time


def check_label(label: str) -> str:
    """Return ``label`` if it is one of ``LABELS``.

    Raises
    ------
    ValueError
        Naming the allowed labels.
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    return label


def _label_column(label: str) -> str:
    # The bars-frame column a time bar is placed at.
    return "end" if check_label(label) == "end" else "start"


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
        return plotly_dates(df[column]).tolist()
    return list(range(first_index, first_index + len(df)))


def positions(df: pd.DataFrame, spec: BarSpec, first_index: int, label: str) -> np.ndarray:
    """Return x positions as integers: UTC ns of the label time (time bars) or bar indices."""
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
    placed at their end: the start time. Then the volume (base units), the trade count,
    ``change`` (close against the previous close, signed) and ``amplitude`` ((high - low)
    / previous close), both in percent (``feed.core.models.Bar``).
    """
    time_axis = _is_time(spec)
    show_start = not time_axis or check_label(label) == "end"
    starts = plotly_dates(df["start"]).tolist() if show_start else None
    ends = None if time_axis else plotly_dates(df["end"]).tolist()
    counts = df["trade_count"].astype("int64").tolist()
    volumes = df["volume"].astype("float64").tolist()
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
        parts.append(f"volume {volumes[i]:,.8g}")
        parts.append(f"{n:,} trade{'' if n == 1 else 's'}")
        parts.append(f"change {format_pct(change[i], signed=True)}")
        parts.append(f"amplitude {format_pct(amplitude[i])}")
        out.append("<br>".join(parts))
    return out


def placeholder_figure(message: str, *, uirevision: str | None = None) -> go.Figure:
    """Return an empty dark figure with ``message`` in the middle (no data yet, no symbol)."""
    fig = go.Figure()
    fig.update_layout(
        **base_layout(uirevision),
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=[dict(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                          showarrow=False, font=dict(size=13, color=MUTED))],
    )
    return fig
