"""Dashboard-only helpers around the bar CSV export: the chart's visible bars and file names.

The CSV writer itself (columns, fixed decimals, spreadsheet-injection guard) is
:mod:`feed.core.csvformat`, shared with ``GET /api/bars`` and ``tickscope bars``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from feed.core.models import BarSpec, iso_ms

from .timezones import DISPLAY_TZ

__all__ = [
    "axis_value_ns",
    "bars_in_view",
    "export_filename",
]

_NS_PER_MS = 1_000_000


def axis_value_ns(value: object) -> int:
    """Return a plotly date-axis value as UTC ns.

    Plotly reports date ranges as strings without a zone (``"2024-08-08 23:55:12.3456"``),
    read here in the chart's zone like the figure's x values (``timezones.DISPLAY_TZ``,
    UTC by default), or as epoch milliseconds (numbers).

    Raises
    ------
    ValueError
        If ``value`` is neither.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a date-axis value: {value!r}")
    if isinstance(value, (int, float)):
        return _from_display_zone(_ms_to_ns(value))
    try:
        ts = pd.Timestamp(str(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a date-axis value: {value!r}") from exc
    if ts.tzinfo is not None:
        return int(ts.tz_convert("UTC").tz_localize(None).value)
    return _from_display_zone(int(ts.value))


def _ms_to_ns(value: int | float) -> int:
    if isinstance(value, int):
        return value * _NS_PER_MS
    if not math.isfinite(value):
        raise ValueError(f"not a date-axis value: {value!r}")
    whole = math.floor(value)  # ms; split so the ns part keeps its precision
    return int(whole) * _NS_PER_MS + round((value - whole) * _NS_PER_MS)


def _from_display_zone(naive_ns: int) -> int:
    # The chart's dates are wall times of its zone (figures.plotly_dates): back to UTC.
    zone = DISPLAY_TZ.get()
    if zone == "UTC":
        return naive_ns
    ts = pd.Timestamp(naive_ns).tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
    return int(ts.tz_convert("UTC").tz_localize(None).value)


def bars_in_view(
    df: pd.DataFrame,
    x_range: Sequence | None,
    *,
    spec: BarSpec | str,
    first_index: int = 0,
    label: str = "start",
) -> pd.DataFrame:
    """Return the rows of ``df`` whose x position lies inside the chart's visible x-range.

    Parameters
    ----------
    df : DataFrame
        Bars (``BAR_COLUMNS``, start as int UTC ns) in bar-index order.
    x_range : pair or None
        The candle chart's x-axis range as plotly reports it; None selects every row.
        Time bars: dates (see :func:`axis_value_ns`), compared with ``start`` (or
        ``end``, see ``label``). Tick, volume and value bars: bar indices (their x
        position, see ``figures``). Both ends are inclusive.
    spec : BarSpec or str
    first_index : int
        Bar index of the first row (for tick, volume and value bars).
    label : {"start", "end"}
        Where the chart places time bars (``figures.x_values``): a bar is in view when
        that time is.

    Raises
    ------
    ValueError
        If ``x_range`` is not a pair of values of the axis type, or ``label`` is not
        ``"start"`` or ``"end"``.
    """
    if label not in ("start", "end"):
        raise ValueError(f"label must be 'start' or 'end', not {label!r}")
    if x_range is None:
        return df
    if len(x_range) != 2:
        raise ValueError(f"x range must be a pair, not {x_range!r}")
    spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
    if spec.is_time:
        lo, hi = sorted(axis_value_ns(v) for v in x_range)
        at = df[label].astype("int64")
        mask = (at >= lo) & (at <= hi)
    else:
        lo, hi = sorted(float(v) for v in x_range)
        index = pd.Series(range(first_index, first_index + len(df)), index=df.index)
        mask = (index >= lo) & (index <= hi)
    return df[mask]


def _compact(ts_ns: int) -> str:
    # 2024-08-08T23:55:00.000Z -> 20240808T235500Z (safe in every file system).
    return iso_ms(ts_ns)[:19].replace("-", "").replace(":", "") + "Z"


def export_filename(symbol: str, spec: BarSpec | str, df: pd.DataFrame) -> str:
    """Return ``SYMBOL_SPEC_<first start>_<last start>.csv`` for the bars in ``df``.

    Example: ``BTCUSDT_1m_20240808T235500Z_20240809T013000Z.csv``; ``SYMBOL_SPEC.csv``
    when ``df`` is empty. Characters unsafe in file names become ``_``.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", f"{symbol}_{spec}")
    if df.empty:
        return f"{stem}.csv"
    start = df["start"].astype("int64")
    return f"{stem}_{_compact(int(start.iloc[0]))}_{_compact(int(start.iloc[-1]))}.csv"
