"""The bar CSV writer: one format for the "Export CSV" button, ``GET /api/bars`` and ``tickscope bars``.

Pure: DataFrame in, text out (no files, no clock). ``dashboard.export`` adds the
dashboard-only helpers (visible range, file names); ``feed.io.convert`` writes the same
format offline.

Format
------
* Columns, in order: ``feed.core.models.BAR_COLUMNS`` = symbol, bar, start, end, open, high,
  low, close, volume, turnover, vwap, trade_count, buy_volume, sell_volume, closed,
  amplitude, change (the last two appended after the others, so readers by
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
from collections.abc import Sequence

import pandas as pd

from feed.core.models import BAR_COLUMNS, iso_ms

__all__ = [
    "VWAP_EXTRA_DECIMALS",
    "RATIO_DECIMALS",
    "bars_to_csv",
    "inert",
]

#: Decimals the vwap column carries beyond the price decimals (see the module docstring).
VWAP_EXTRA_DECIMALS = 4

_PRICE_COLUMNS = ("open", "high", "low", "close")
_SIZE_COLUMNS = ("volume", "buy_volume", "sell_volume")
_TEXT_COLUMNS = ("symbol", "bar")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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
