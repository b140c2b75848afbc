"""CSV writers of the order-flow endpoints: the tape (``/api/trades``) and the footprint
(``/api/footprint``).

Pure: frames in, text out. Same conventions as the bar export (``feed.core.csvformat``):
times ISO-8601 UTC with milliseconds and ``Z`` (truncated), fixed decimals per column
(prices at the instrument's precision, sizes at its lot precision), text cells made inert
for spreadsheets, ``\\n`` line ends.
"""

from __future__ import annotations

import csv
import io

import pandas as pd

from .csvformat import _fixed, inert
from .models import iso_ms

__all__ = ["TRADES_CSV_COLUMNS", "FOOTPRINT_CSV_COLUMNS", "SIDE_WORDS", "trades_to_csv", "footprint_to_csv"]

#: Columns of ``GET /api/trades``.
TRADES_CSV_COLUMNS = ("symbol", "trade_id", "time", "price", "size", "side")
#: Columns of ``GET /api/footprint``.
FOOTPRINT_CSV_COLUMNS = ("symbol", "bar", "start", "price", "buy_volume", "sell_volume", "trade_count")
#: Taker side as written: +1 ``buy``, -1 ``sell``, 0 (vendor gives none) empty.
SIDE_WORDS = {1: "buy", -1: "sell", 0: ""}


def _write(header, columns) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(zip(*columns))
    return buf.getvalue()


def trades_to_csv(symbol: str, tape: pd.DataFrame, *, price_decimals: int, size_decimals: int) -> str:
    """Return a tape frame (``feed.core.orderflow.tape``) as ``TRADES_CSV_COLUMNS`` CSV.

    ``trade_id`` is empty when the vendor gives none; ``side`` is ``buy``/``sell`` (the
    taker side), empty when unknown.
    """
    n = len(tape)
    return _write(TRADES_CSV_COLUMNS, [
        [inert(symbol)] * n,
        ["" if pd.isna(v) else str(int(v)) for v in tape["trade_id"].tolist()],
        [iso_ms(v) for v in tape["ts_ns"].tolist()],
        _fixed(tape["price"].tolist(), int(price_decimals)),
        _fixed(tape["size"].tolist(), int(size_decimals)),
        [SIDE_WORDS.get(int(v), "") for v in tape["side"].tolist()],
    ])


def footprint_to_csv(symbol: str, bar: str, fp: pd.DataFrame, *, price_decimals: int,
                     size_decimals: int) -> str:
    """Return a footprint frame (``feed.core.orderflow.footprint``) as
    ``FOOTPRINT_CSV_COLUMNS`` CSV: one row per bar and price level, bars in order, prices
    ascending within a bar; ``start`` is the bar's start."""
    n = len(fp)
    return _write(FOOTPRINT_CSV_COLUMNS, [
        [inert(symbol)] * n,
        [inert(bar)] * n,
        [iso_ms(v) for v in fp["start"].tolist()],
        _fixed(fp["price"].tolist(), int(price_decimals)),
        _fixed(fp["buy_volume"].tolist(), int(size_decimals)),
        _fixed(fp["sell_volume"].tolist(), int(size_decimals)),
        [str(int(v)) for v in fp["trade_count"].tolist()],
    ])
