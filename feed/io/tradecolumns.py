"""Vectorised conversion of parsed trade-file columns into the trade frame.

Every field of a chunk (a pandas DataFrame of raw columns) is validated and converted at
once: times to int64 UTC ns, prices and sizes to positive float64, sides to +1/-1/0.
A bad value raises :class:`feed.io.readers.RecordingError` naming the file's physical line
(or Parquet row). Used by :mod:`feed.io.tradefiles` for CSV and Parquet chunks.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from feed.io.readers import MS_MIN, NS_MIN, US_MIN, fail_at, open_binary

__all__ = ["TRADE_COLUMNS", "ChunkState", "convert_chunk", "trade_frame"]

#: Columns of the frame :func:`read_trades` returns, in order.
TRADE_COLUMNS: tuple[str, ...] = ("ts_ns", "price", "size", "side", "in_bars", "trade_id", "symbol")

# Epoch magnitude ranges [lo, hi) per unit and the factor to ns (see ``feed.io.readers.to_ns``).
_EPOCH_UNITS: tuple[tuple[str, int, float, int], ...] = (
    ("ns", NS_MIN, float("inf"), 1),
    ("µs", US_MIN, NS_MIN, 1_000),
    ("ms", MS_MIN, US_MIN, 1_000_000),
    ("s", 0, MS_MIN, 1_000_000_000),
)

# Taker side spellings (lower case) -> BUY/SELL/UNKNOWN.
_SIDES = {"buy": 1, "b": 1, "1": 1, "+1": 1, "1.0": 1, "sell": -1, "s": -1, "-1": -1,
          "-1.0": -1, "": 0, "0": 0, "0.0": 0, "unknown": 0, "nan": 0}
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "t": True, "f": False}


def trade_frame(cols: dict) -> pd.DataFrame:
    """Return a frame with :data:`TRADE_COLUMNS` and their dtypes from column arrays.

    Parameters
    ----------
    cols : dict
        Column name -> values (``ts_ns`` UTC ns, ``price`` quote currency, ``size`` base
        units, ...); missing columns get defaults (side 0, in_bars True, trade_id <NA>,
        symbol ""), and an empty dict gives an empty frame. ``symbol`` may be one string
        for every row.
    """
    n = len(cols.get("ts_ns", ()))
    sym = cols.get("symbol", "")
    return pd.DataFrame({
        "ts_ns": np.asarray(cols.get("ts_ns", ()), np.int64),
        "price": np.asarray(cols.get("price", ()), np.float64),
        "size": np.asarray(cols.get("size", ()), np.float64),
        "side": np.asarray(cols.get("side", np.zeros(n)), np.int8),
        "in_bars": np.asarray(cols.get("in_bars", np.ones(n, bool)), bool),
        "trade_id": pd.array(cols.get("trade_id", [pd.NA] * n), dtype="Int64"),
        "symbol": (pd.Series(sym, index=pd.RangeIndex(n), dtype="str") if isinstance(sym, str)
                   else pd.Series(sym, dtype="str")),
    }, columns=list(TRADE_COLUMNS))


class ChunkState:
    """What the chunks of one file share while they are converted.

    The time unit (fixed by the file's first row), whether times are ISO-8601 text,
    the symbols seen in the last chunk, and how to name a row in an error (its physical
    line, or ``row N`` for Parquet).

    Parameters
    ----------
    path : Path
        The file, for error messages.
    first_row_line : int
        1-based physical line of data row 0.
    """

    def __init__(self, path: Path, first_row_line: int) -> None:
        self.path = path
        self.first_row_line = first_row_line  # physical line of data row 0
        self.unit: tuple[str, int, float, int] | None = None  # epoch unit, from row 0
        self.iso = False  # times are ISO-8601 text (decided by the first chunk)
        self.symbols: set[str] = set()
        self.row_label = "line"

    def where(self, row: int) -> int | str:
        # The physical line (or Parquet row) of data row ``row`` (0-based, file-wide).
        # pandas skips blank lines, so count them, only when an error is reported.
        if self.row_label != "line":
            return f"row {row + 1}"
        line = self.first_row_line
        seen = -1
        with io.TextIOWrapper(open_binary(self.path), encoding="utf-8", errors="replace") as fh:
            for lineno, text in enumerate(fh, 1):
                if lineno < line:
                    continue
                if text.strip():
                    seen += 1
                    if seen == row:
                        return lineno
        return line + row

    def fail(self, rows: np.ndarray, problem: str) -> None:
        fail_at(self.path, self.where(int(rows[0])), problem)


def convert_chunk(chunk: pd.DataFrame, columns: dict, state: ChunkState,
                  name_symbol: str | None, want: str | None) -> pd.DataFrame:
    """Return one parsed chunk as a trade frame (:data:`TRADE_COLUMNS`), every field checked.

    Parameters
    ----------
    chunk : DataFrame
        Raw columns as pandas parsed them; its index numbers the file's data rows.
    columns : dict
        Field (``ts``, ``price``, ``size``, ``side``, ``buyer_maker``, ``symbol``,
        ``trade_id``, ``trade_type``) -> column label in ``chunk``.
    state : ChunkState
        The file's shared state (updated: time unit, symbols seen).
    name_symbol : str or None
        Symbol taken from the file name, for files without a symbol column.
    want : str or None
        Keep only this symbol's trades (upper case).

    Raises
    ------
    feed.io.readers.RecordingError
        For the first bad value, naming the file and line.
    """
    rows = chunk.index.to_numpy()  # file-wide data-row numbers (pandas continues them)
    col = {field: chunk[c] for field, c in columns.items()}
    ts = _epoch_ns(col["ts"], rows, state)
    price = _positive(col["price"], "price", rows, state)
    size = _positive(col["size"], "size", rows, state)
    n = len(chunk)
    if "side" in col:
        side = _sides(col["side"], rows, state)
    elif "buyer_maker" in col:
        side = np.where(_bools(col["buyer_maker"], "is_buyer_maker", rows, state), -1, 1)
    else:
        side = np.zeros(n, np.int8)
    if "trade_type" in col:
        tt = col["trade_type"].fillna("").astype(str).str.strip().str.upper()
        in_bars = tt.isin(["", "MARKET"]).to_numpy()
    else:
        in_bars = np.ones(n, bool)
    if "trade_id" in col:
        trade_id = _trade_ids(col["trade_id"], rows, state)
    else:
        trade_id = pd.array([pd.NA] * n, dtype="Int64")
    if "symbol" in col:
        sym = col["symbol"].astype(str).str.strip().str.upper()
        state.symbols = set(sym.unique().tolist())
        keep = (sym == want).to_numpy() if want is not None else None
        sym = sym.to_numpy()
    else:
        label = name_symbol or want or ""
        state.symbols = {label} if label else set()
        keep = None if want is None or name_symbol is None or name_symbol == want else np.zeros(n, bool)
        sym = label
    frame = trade_frame({"ts_ns": ts, "price": price, "size": size, "side": side,
                          "in_bars": in_bars, "trade_id": trade_id, "symbol": sym})
    if "first_id" in col and "last_id" in col:
        # An aggregate trade holds trades first_id..last_id: bars count l - f + 1 of them.
        count = (_trade_ids(col["last_id"], rows, state) - _trade_ids(col["first_id"], rows, state) + 1)
        count = count.to_numpy(np.int64, na_value=0)
        if (count < 1).any():
            state.fail(rows[np.flatnonzero(count < 1)[:1]], "last_trade_id is before first_trade_id")
        frame["count"] = count
    if keep is not None:
        frame = frame[keep].reset_index(drop=True)
    return frame


def _numbers(values: pd.Series, name: str, rows: np.ndarray, state: ChunkState,
             numeric: pd.Series | None = None) -> pd.Series:
    # Numeric view of a column (``numeric`` if already converted); text that is not a
    # number is an error naming the line.
    if numeric is not None:
        out = numeric
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        out = values
    else:
        out = pd.to_numeric(values, errors="coerce")
    bad = out.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        text = values.iloc[i]
        blank = pd.isna(text) or str(text).strip() == ""
        problem = "missing" if blank else f"{str(text)[:40]!r} is not a number"
        state.fail(rows[i:i + 1], f"{name} {problem}")
    return out


def _positive(values: pd.Series, name: str, rows: np.ndarray, state: ChunkState) -> np.ndarray:
    out = _numbers(values, name, rows, state).to_numpy(np.float64)
    bad = ~((out > 0.0) & np.isfinite(out))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"{name} must be a positive number, not {values.iloc[i]!r}")
    return out


def _epoch_ns(values: pd.Series, rows: np.ndarray, state: ChunkState) -> np.ndarray:
    # Epoch s/ms/µs/ns (unit from the file's first row) or ISO-8601 text -> int64 UTC ns.
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            state.fail(rows[i:i + 1], "timestamp missing")
        if values.dt.tz is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return values.dt.as_unit("ns").to_numpy().view(np.int64)
    text, numeric = None, None
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        numeric = pd.to_numeric(values, errors="coerce")
        if state.iso or (state.unit is None and numeric.isna().all()):
            return _iso_ns(values, rows, state)
        text = values
    arr = _numbers(values, "timestamp", rows, state, numeric).to_numpy()
    if state.unit is None:
        v0 = float(arr[0])
        state.unit = next((u for u in _EPOCH_UNITS if u[1] <= v0 < u[2]), None)
    bad = ~((arr >= state.unit[1]) & (arr < state.unit[2])) if state.unit else np.ones(len(arr), bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        unit = f"in {state.unit[0]} like the file's first row" if state.unit else "(negative)"
        state.fail(rows[i:i + 1], f"timestamp {values.iloc[i]!r} is not an epoch {unit} "
                                  f"(units are told apart by magnitude)")
    factor = state.unit[3]
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64) * factor
    if text is not None:
        exact = _decimal_epoch_ns(text, factor)
        if exact is not None:
            return exact
    # Binary floats (Parquet): exact to the float's precision (about 0.2 µs for seconds).
    whole = np.floor(arr)
    return whole.astype(np.int64) * factor + np.round((arr - whole) * factor).astype(np.int64)


def _decimal_epoch_ns(text: pd.Series, factor: int) -> np.ndarray | None:
    # "1723161255.342" (unit with ``factor`` ns) -> exact ns, digits past 1 ns truncated;
    # None for text that is not plain decimal digits (exponents).
    text = text.astype(str).str.strip()
    if text.str.contains(r"[eE+-]", regex=True).any():
        return None
    parts = text.str.partition(".")
    digits = len(str(factor)) - 1  # fraction digits a ns holds in this unit: s 9, ms 6, µs 3
    whole = parts[0].astype(np.int64).to_numpy() * factor
    if digits == 0:
        return whole
    frac = parts[2].str.ljust(digits, "0").str.slice(0, digits).astype(np.int64).to_numpy()
    return whole + frac  # one fraction digit unit is 1 ns here


def _iso_ns(values: pd.Series, rows: np.ndarray, state: ChunkState) -> np.ndarray:
    state.iso = True
    parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"timestamp {str(values.iloc[i])[:40]!r} is neither an epoch "
                                  f"number nor an ISO-8601 time")
    return parsed.dt.tz_localize(None).dt.as_unit("ns").to_numpy().view(np.int64)


def _sides(values: pd.Series, rows: np.ndarray, state: ChunkState) -> np.ndarray:
    # buy/sell/b/s/1/-1 (any case) -> +1/-1; empty or "unknown" -> 0.
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        arr = values.to_numpy(np.float64)
        arr = np.where(np.isnan(arr), 0.0, arr)
        bad = ~np.isin(arr, (-1.0, 0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            state.fail(rows[i:i + 1], f"side {values.iloc[i]!r}: expected buy, sell, b, s, 1 or -1")
        return arr.astype(np.int8)
    mapped = values.fillna("").astype(str).str.strip().str.lower().map(_SIDES)
    bad = mapped.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"side {values.iloc[i]!r}: expected buy, sell, b, s, 1 or -1")
    return mapped.to_numpy(np.int8)


def _bools(values: pd.Series, name: str, rows: np.ndarray, state: ChunkState) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(bool)
    mapped = values.astype(str).str.strip().str.lower().map(_BOOLS)
    bad = mapped.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"{name} {values.iloc[i]!r}: expected true or false")
    return mapped.to_numpy(bool)


def _trade_ids(values: pd.Series, rows: np.ndarray, state: ChunkState):
    # Integer ids; empty cells are <NA> (a generic file may lack some).
    if pd.api.types.is_integer_dtype(values):
        return pd.array(values.to_numpy(), dtype="Int64")
    num = pd.to_numeric(values, errors="coerce")
    bad = (num.isna() & values.notna()).to_numpy() | (num.notna() & (num % 1 != 0)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"trade id {values.iloc[i]!r} is not an integer")
    return pd.array(num, dtype="Int64")
