"""CSV export of bars: one format for the "Export CSV" button and ``GET /api/bars``.

Format
------
* Columns, in order: ``feed.core.models.BAR_COLUMNS`` = symbol, bar, start, end, open, high,
  low, close, volume, turnover, vwap, trade_count, buy_volume, sell_volume, closed,
  amplitude, change (the last two appended after the issue-2 columns, so readers by
  position keep working). Both ``start`` and ``end`` are always written, whichever the
  chart labels time bars at.
* ``start``/``end``: ISO-8601 UTC with milliseconds and ``Z``
  (``2024-08-08T23:55:00.000Z``); sub-millisecond digits are truncated, not rounded, so a
  bar never appears to start later than it does.
* Fixed decimals per column so columns align and no float noise (``0.30000000000000004``)
  leaks out; trailing zeros are kept on purpose:

  =====================================  ==============================================
  open, high, low, close                 ``price_decimals`` (the instrument's tick)
  volume, buy_volume, sell_volume        ``size_decimals`` (the instrument's lot)
  turnover                               ``price_decimals + size_decimals`` (exact for
                                         a sum of price x size on those grids)
  vwap                                   ``price_decimals + VWAP_EXTRA_DECIMALS`` (4):
                                         a ratio is off the tick grid; four more digits
                                         keep it to 1/10,000 of a tick
  trade_count                            integer
  closed                                 ``true`` / ``false``
  amplitude, change                      ``RATIO_DECIMALS`` (8): fractions of the
                                         previous bar's close, ``(high - low) / prev``
                                         and ``(close - prev) / prev``; empty for a
                                         series' first bar
  =====================================  ==============================================

* Text cells (symbol, bar) that start with ``=``, ``+``, ``-``, ``@``, tab or carriage
  return are prefixed with ``'`` so a spreadsheet shows them instead of evaluating them
  (OWASP "CSV injection"). Numeric cells are ours and are never prefixed.
* Fields are quoted only when needed (``csv.QUOTE_MINIMAL``); lines end with ``\\n``.
* Missing numbers (NaN) are written as empty cells.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence

import pandas as pd

from feed.core.models import BAR_COLUMNS, BarSpec, iso_ms

__all__ = [
    "VWAP_EXTRA_DECIMALS",
    "RATIO_DECIMALS",
    "bars_to_csv",
    "iso_ms",
    "inert",
    "axis_value_ns",
    "bars_in_view",
    "export_filename",
]

#: Decimals the vwap column carries beyond the price decimals (see the module docstring).
VWAP_EXTRA_DECIMALS = 4

_PRICE_COLUMNS = ("open", "high", "low", "close")
_SIZE_COLUMNS = ("volume", "buy_volume", "sell_volume")
_TEXT_COLUMNS = ("symbol", "bar")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NS_PER_MS = 1_000_000


#: Decimals of ``amplitude`` and ``change`` (fractions of the previous close: 8 decimals
#: resolve 0.000001 %, finer than any tick); empty for a series' first bar.
RATIO_DECIMALS = 8


def inert(text: object) -> str:
    """Return ``text`` as a string a spreadsheet will not evaluate as a formula."""
    s = "" if text is None else str(text)
    return "'" + s if s.startswith(_FORMULA_START) else s


def _fixed(values: Sequence[float], decimals: int) -> list[str]:
    # Fixed-point strings; NaN -> "", and no "-0.00" for values that round to zero.
    out = []
    for v in values:
        v = float(v)
        if math.isnan(v):
            out.append("")
            continue
        s = f"{v:.{decimals}f}"
        if s[0] == "-" and not s.strip("-0."):
            s = s[1:]
        out.append(s)
    return out


def bars_to_csv(df: pd.DataFrame, *, price_decimals: int, size_decimals: int) -> str:
    """Return bars as CSV text in the export format (see the module docstring).

    Parameters
    ----------
    df : DataFrame
        Bars with columns ``BAR_COLUMNS``; ``start``/``end`` as int UTC ns (as
        ``Engine.bars_frame`` returns them). Extra columns are ignored.
    price_decimals, size_decimals : int
        Decimals of the instrument's prices and sizes (``df.attrs`` of
        ``Engine.bars_frame``).

    Raises
    ------
    ValueError
        If a column of ``BAR_COLUMNS`` is missing or a decimals argument is negative.
    """
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"bars frame lacks column(s) {', '.join(missing)}")
    if price_decimals < 0 or size_decimals < 0:
        raise ValueError(
            f"decimals must be >= 0, not price_decimals={price_decimals}, size_decimals={size_decimals}"
        )
    price_decimals, size_decimals = int(price_decimals), int(size_decimals)
    decimals = {c: price_decimals for c in _PRICE_COLUMNS}
    decimals.update({c: size_decimals for c in _SIZE_COLUMNS})
    decimals["turnover"] = price_decimals + size_decimals
    decimals["vwap"] = price_decimals + VWAP_EXTRA_DECIMALS
    decimals["amplitude"] = decimals["change"] = RATIO_DECIMALS

    columns: dict[str, list[str]] = {}
    for c in _TEXT_COLUMNS:
        columns[c] = [inert(v) for v in df[c].tolist()]
    for c in ("start", "end"):
        columns[c] = [iso_ms(v) for v in df[c].tolist()]
    for c, dp in decimals.items():
        columns[c] = _fixed(df[c].tolist(), dp)
    columns["trade_count"] = [str(int(v)) for v in df["trade_count"].tolist()]
    columns["closed"] = ["true" if bool(v) else "false" for v in df["closed"].tolist()]

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(BAR_COLUMNS)
    writer.writerows(zip(*(columns[c] for c in BAR_COLUMNS)))
    return buf.getvalue()


def axis_value_ns(value: object) -> int:
    """Return a plotly date-axis value as UTC ns.

    Plotly reports date ranges as strings without a zone (``"2024-08-08 23:55:12.3456"``),
    read here as UTC like the figure's x values, or as epoch milliseconds (numbers).

    Raises
    ------
    ValueError
        If ``value`` is neither.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a date-axis value: {value!r}")
    if isinstance(value, int):
        return value * _NS_PER_MS
    if isinstance(value, float):
        whole = math.floor(value)  # ms; split so the ns part keeps its precision
        return int(whole) * _NS_PER_MS + round((value - whole) * _NS_PER_MS)
    try:
        ts = pd.Timestamp(str(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a date-axis value: {value!r}") from exc
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value)


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
