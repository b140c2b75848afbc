"""Fast path for clean Binance public-data CSVs: one typed pass of pandas' C reader.

Binance's trades and aggTrades files (data.binance.vision) are the big inputs of
``tickscope bars`` (a busy day is tens of millions of rows). The general reader
(:mod:`feed.io.tradefiles`) parses them in chunks with ``skipinitialspace`` and infers
every column's type, which more than doubles the parse. Here the same C parser is told
every column's dtype, skips the NA check of each field and, given a plain file's path,
reads it in one call: pandas 3.1 then splits the file at line ends and parses the parts on
every core (its tokenizer and conversions release the GIL). ``usecols`` would turn that
off, and would accept a row with more fields than the first, so every column is read.
Same parser, so the same float for every digit string.

The fast path only ever accepts a file it can read completely and that passes every check
of :mod:`feed.io.tradecolumns` (numbers where numbers belong, positive finite prices and
sizes, one epoch unit, the same number of fields on every row, ``last_trade_id >=
first_trade_id``). Anything else -- a parse error, an empty cell, a value out of range,
a leading blank line -- returns None, and the caller reads the file with the chunked
reader, which names the bad line exactly as before. So the fast path changes speed, never
a result or an error message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from feed.io.readers import open_binary
from feed.io.tradecolumns import _EPOCH_UNITS

__all__ = ["read_binance_csv", "repeated_str"]


def read_binance_csv(
    path: Path,
    positions: dict[str, int],
    skip_rows: int,
    n_fields: int,
    name_symbol: str | None,
    want: str | None,
    progress: Callable[[int], object],
) -> tuple[list[pd.DataFrame], set[str], str] | None:
    """Read a clean Binance trades/aggTrades CSV in one typed pass, or return None.

    Parameters
    ----------
    path : Path
        Plain, gzip or single-member zip file.
    positions : dict
        Field -> 0-based column (``trade_id``, ``price``, ``size``, ``ts``, ``buyer_maker``
        and for aggTrades ``first_id``, ``last_id``), as ``feed.io.tradefiles`` defines them.
    skip_rows : int
        Lines before the first data row (0, or 1 for a header on line 1).
    n_fields : int
        Fields in the first row (the header, or the first data row).
    name_symbol : str or None
        Symbol from the file name (``BTCUSDT-trades-...``).
    want : str or None
        Keep only this symbol's trades (upper case).
    progress : callable
        Called with the compressed bytes consumed (once, at the end).

    Returns
    -------
    (list of DataFrame, set of str, str) or None
        The trade frame (``feed.io.tradecolumns.TRADE_COLUMNS`` without ``symbol``, plus
        ``count`` for aggTrades) in a one-element list (empty for no trades), the symbols
        seen, as ``feed.io.tradefiles._csv_trades`` returns them, and the symbol of every
        row (the caller adds the column only if it wants it: millions of copies of one
        string cost more than the rest of the frame); None when the file is not clean
        (the caller then reads it the slow way, which reports the problem).
    """
    if n_fields < max(positions.values()) + 1:
        return None
    # Every column typed (the ones not used as well: an untyped one is inferred, which
    # costs a pass); no ``usecols``, so a row with more fields than the first is refused.
    dtypes: dict[int, object] = {i: np.float64 for i in range(n_fields)}
    dtypes.update({positions[f]: np.int64 for f in ("trade_id", "ts", "first_id", "last_id")
                   if f in positions})
    dtypes[positions["buyer_maker"]] = bool
    if n_fields > positions["buyer_maker"] + 1:
        dtypes[n_fields - 1] = bool  # is_best_match
    try:
        with open(path, "rb") as fh:
            plain = fh.read(4)[:2] not in (b"\x1f\x8b", b"PK")
        if plain:  # the C reader reads a path itself, without a Python read() per block
            col = _parse(str(path), skip_rows, dtypes, positions, n_fields)
        else:
            with open_binary(path) as source:
                col = _parse(source, skip_rows, dtypes, positions, n_fields)
    except Exception:  # RecordingError, OSError (cannot open), zlib errors: slow path
        return None
    if col is None:
        return None
    price, size, ts_raw = col["price"], col["size"], col["ts"]
    if not (_all_positive(price) and _all_positive(size)):
        return None
    v0 = int(ts_raw[0])
    unit = next((u for u in _EPOCH_UNITS if u[1] <= v0 < u[2]), None)
    if unit is None or not (ts_raw.min() >= unit[1] and ts_raw.max() < unit[2]):
        return None
    ts = np.multiply(ts_raw, unit[3], out=ts_raw)  # ours alone (see _parse): in place
    count = None
    if "first_id" in col:
        count = col["last_id"] - col["first_id"] + 1
        if (count < 1).any():
            return None
    n = len(ts)
    label = name_symbol or want or ""
    seen = {label} if label else set()
    progress(_size_of(path))
    if want is not None and name_symbol is not None and name_symbol != want:
        n = 0
        ts, price, size, count = ts[:0], price[:0], size[:0], None if count is None else count[:0]
        col = {k: v[:0] for k, v in col.items()}
    frame = pd.DataFrame({
        "ts_ns": ts,
        "price": price,
        "size": size,
        "side": _sides(col["buyer_maker"]),
        "in_bars": np.ones(n, bool),
        # Ids are never missing here: an all-False mask, and no copy of the values.
        "trade_id": pd.arrays.IntegerArray(col["trade_id"], np.zeros(n, bool)),
    }, copy=False)  # no copy: the columns are fresh, and consolidating them would copy
    if count is not None:
        frame["count"] = count
    return ([frame] if n else []), seen, label


def _parse(source: str | IO[bytes], skip_rows: int, dtypes: dict, positions: dict[str, int],
           n_fields: int) -> dict[str, np.ndarray] | None:
    # The wanted columns of ``source`` (contiguous arrays), or None if it does not parse
    # cleanly with ``dtypes``: ParserError, ValueError (an empty cell in an int or bool
    # column), a row with another number of fields, ... all mean "take the slow path".
    try:
        # No quotes in these files (QUOTE_NONE), and no NA markers: without the NA check
        # of every field, an empty or "NaN" cell fails to convert or fails the checks
        # below, and the slow path reports it.
        raw = pd.read_csv(source, header=None, skiprows=skip_rows, dtype=dtypes,
                          encoding="utf-8", quoting=3, na_filter=False)
    except Exception:
        return None
    if len(raw) == 0 or raw.shape[1] != n_fields:
        return None
    return {field: _owned(raw[i].to_numpy()) for field, i in positions.items()}


def _owned(values: np.ndarray) -> np.ndarray:
    # A column of the parsed frame as a writable contiguous array. pandas hands out
    # read-only views (copy on write), but nothing else ever sees that frame, so its
    # columns are ours to change in place instead of copying millions of values.
    values = np.ascontiguousarray(values)
    try:
        values.flags.writeable = True
    except ValueError:  # pragma: no cover - a view of memory pandas does not own
        values = values.copy()
    return values


def _sides(buyer_maker: np.ndarray) -> np.ndarray:
    # Taker side from Binance's is_buyer_maker: True (the buyer made, the taker sold)
    # -> SELL (-1), False -> BUY (+1); as int8 arithmetic, one pass per step.
    side = buyer_maker.view(np.int8) * np.int8(-2)
    side += np.int8(1)
    return side


def repeated_str(label: str, n: int) -> pd.Series:
    """Return a ``str`` Series of ``n`` times ``label`` (the symbol column of one file).

    Built as one Arrow string array from its offsets and bytes; pandas would take (copy)
    a Python object per row.
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pandas' "str" dtype is Arrow-backed here
        return pd.Series(label, index=pd.RangeIndex(n), dtype="str")
    data = label.encode()
    step = len(data)
    offsets = np.arange(0, (n + 1) * step, step, dtype=np.int64) if step else np.zeros(n + 1, np.int64)
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
    return pd.Series(pd.arrays.ArrowStringArray(arr), dtype="str")


def _all_positive(values: np.ndarray) -> bool:
    # Every value > 0 and finite (NaN fails the first test).
    return bool(len(values)) and bool(values.min() > 0.0) and bool(np.isfinite(values.max()))


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
