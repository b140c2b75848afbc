"""The arrays behind the candle traces: closed and in-progress rows, their colours and
widths, the two framing candles and the trade-id gap marks (``dashboard.candles`` draws
them). Pure: DataFrames in, lists and dicts out.

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

from collections.abc import Sequence

import numpy as np
import pandas as pd

from feed.core.models import BarSpec

from .figures import (DOWN, UP, as_spec, check_label, hover_text, plotly_date, positions, rgba,
                      x_values)

__all__ = ["MIN_SLOTS", "split_live", "up_down_colours", "bar_width", "live_columns",
           "frame_columns", "gap_columns"]

#: Fewest bar slots the candle chart shows (see "Framing" above).
MIN_SLOTS = 40


def split_live(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (closed rows, in-progress rows); the in-progress bar is at most one row, the last."""
    closed_mask = df["closed"].astype(bool).to_numpy()
    return df[closed_mask], df[~closed_mask]


def up_down_colours(df: pd.DataFrame, alpha: float = 1.0) -> list[str]:
    """Return each bar's colour: ``UP`` when close >= open, else ``DOWN``, at opacity ``alpha``."""
    up = (df["close"].to_numpy() >= df["open"].to_numpy())
    up_c, down_c = (UP, DOWN) if alpha >= 1 else (rgba(UP, alpha), rgba(DOWN, alpha))
    return np.where(up, up_c, down_c).tolist()


def bar_width(spec: BarSpec | str) -> float:
    """Return the volume bar width in x units: 80 % of the interval (ms on a date axis) or of one index."""
    spec = as_spec(spec)
    return spec.interval_ns / 1e6 * 0.8 if spec.is_time else 0.8


def live_columns(live: pd.DataFrame, spec: BarSpec | str, index: int, label: str) -> dict:
    """Return the arrays of the one-point live traces (empty lists when no bar is in progress)."""
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
        colour=up_down_colours(live, 0.45),
    )


def _axis_x(spec: BarSpec, pos: int):
    # An integer position as an x value (date string on a time axis).
    return plotly_date(pos) if spec.is_time else int(pos)


def frame_columns(df: pd.DataFrame, spec: BarSpec | str, first_index: int, label: str) -> dict:
    """Return ``x`` and ``price`` of the two invisible framing candles ("Framing" above).

    Both are at the newest close; empty lists for an empty ``df``.
    """
    # Time axis: one MIN_SLOTS - 1 bars before the newest bar, one a bar after it;
    # when the left one falls among the bars it is moved onto the bar at or before it, so
    # that it never sits closer than a bar to a candle (a daylight-saving day on a session
    # grid is an hour short) and then changes nothing. Bar-number axis: no bar numbers
    # below 0 -- a young series fills bars 0 .. MIN_SLOTS - 1 from the left instead.
    if df.empty:
        return dict(x=[], price=[])
    spec = as_spec(spec)
    pos = positions(df, spec, first_index, label)
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
        marker) and a ``None`` break -- and the hover text ``"N trades missing"``, or
        ``"repaired: ..."`` (a smaller marker) for a gap whose trades were all fetched back.
    """
    check_label(label)
    spec = as_spec(spec)
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
        if missing > 0:
            text = f"{missing:,} trade{'' if missing == 1 else 's'} missing<br>{plotly_date(ts_ns)}"
        else:  # every missing trade was fetched back from the vendor's history
            text = f"repaired: missing trades fetched from the vendor<br>{plotly_date(ts_ns)}"
        out["x"] += [x, x, None]
        out["y"] += [0, 1, None]
        out["text"] += [text, text, None]
        out["size"] += [0, 7 if missing > 0 else 4, 0]
    return out
