"""Trade files: detect the format and read every trade into one DataFrame.

Formats: recorded sessions (parsed by the Binance adapter), Binance public-data trades
and aggTrades CSVs (data.binance.vision), Tardis.dev trades CSVs, and generic CSV/Parquet
with named columns. CSV and Parquet are read in chunks converted by
:mod:`feed.io.tradecolumns`; ``tickscope bars`` (:mod:`feed.io.convert`) is the user.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from feed.core.models import MalformedMessage, Trade
from feed.io.fastcsv import read_binance_csv, repeated_str
from feed.io.readers import RecordingError, fail_at, open_binary, recording_lines
from feed.io.tradecolumns import TRADE_COLUMNS, ChunkState, convert_chunk, trade_frame

__all__ = ["FORMATS", "TRADE_COLUMNS", "detect_format", "read_trades"]

#: Trade-file formats :func:`read_trades` understands (``fmt`` values, ``--format`` choices).
FORMATS: tuple[str, ...] = ("recording", "binance-trades", "binance-aggtrades", "tardis", "generic")

# Rows per pandas chunk: bounded memory for the parser's intermediate objects, and a
# progress update every few MB.
_CHUNK_ROWS = 250_000
# Bytes of decompressed head read to detect a format.
_HEAD_BYTES = 64 * 1024
# Recording lines between two progress reports.
_PROGRESS_LINES = 4096

# Columns by position in Binance's public-data CSVs (data.binance.vision), whose headers
# differ between spot and futures and across years, so they are read by position:
#   trades:    id, price, qty, quote_qty, time, is_buyer_maker[, is_best_match]
#   aggTrades: agg_trade_id, price, quantity, first_trade_id, last_trade_id,
#              transact_time, is_buyer_maker[, is_best_match]
_BINANCE_POSITIONS: dict[str, dict[str, int]] = {
    "binance-trades": {"trade_id": 0, "price": 1, "size": 2, "ts": 4, "buyer_maker": 5},
    "binance-aggtrades": {"trade_id": 0, "price": 1, "size": 2, "first_id": 3, "last_id": 4, "ts": 5,
                          "buyer_maker": 6},
}

# Tardis.dev ``trades`` CSV: exchange,symbol,timestamp,local_timestamp,id,side,price,amount
# (timestamp = exchange time, µs).
_TARDIS_COLUMNS = {"symbol": "symbol", "ts": "timestamp", "trade_id": "id", "side": "side",
                   "price": "price", "size": "amount"}

# Generic CSV/Parquet: accepted column names per field, first match wins (case-insensitive).
_GENERIC_ALIASES: dict[str, tuple[str, ...]] = {
    # Exchange time before receive time: Bitstamp-style files carry both.
    "ts": ("ts", "ts_ns", "exchange_timestamp", "exchange_time", "timestamp", "time",
           "trade_time", "trade_time_ms", "time_ms", "transact_time", "datetime", "date"),
    "price": ("price",),
    "size": ("size", "qty", "quantity", "amount"),
    "side": ("side", "taker_side"),
    "buyer_maker": ("is_buyer_maker", "buyer_maker"),
    "symbol": ("symbol",),
    "trade_id": ("trade_id", "id"),
    "trade_type": ("trade_type",),
}

# Binance public-data file names start with the symbol: BTCUSDT-trades-2024-01-01.csv,
# BTCUSDT-aggTrades-2024-01.zip (also XRPETH_aggTrades_... as freqtrade names them).
_SYMBOL_IN_NAME = re.compile(r"^([A-Za-z0-9]{5,20})[-_.](?:trades|aggtrades)(?:[-_.]|$)", re.I)
_RECORDING_LINE = re.compile(r"^\d+ [\[{]")


def detect_format(path: str | os.PathLike) -> str:
    """Return the trade-file format of ``path``: one of :data:`FORMATS`.

    Looks at magic bytes (Parquet, gzip, zip), the extension and the first non-blank line:

    ========================= =================================================================
    ``recording``             ``<receive time> <JSON>`` lines (tickscope/hftbacktest captures)
    ``tardis``                header with exchange, symbol, timestamp, local_timestamp, ...,
                              amount
    ``binance-aggtrades``     header naming ``agg_trade_id`` or ``first_trade_id``, or no
                              header and 7-8 fields with the buyer-maker flag in field 7
    ``binance-trades``        header naming ``quote_qty`` (or ``id`` ... ``is_buyer_maker``),
                              or no header and 6-7 fields with the buyer-maker flag in field 6
    ``generic``               Parquet, or a CSV header naming a time, a price and a size
                              column (see :func:`read_trades`)
    ========================= =================================================================

    Raises
    ------
    RecordingError
        If the file cannot be read, is empty or matches no format (the message suggests
        ``--format``).
    """
    p = Path(path)
    head = _head_bytes(p)
    if head.startswith(b"PAR1") or p.suffix.lower() == ".parquet":
        return "generic"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lineno, first = _first_line(text)
    if first is None:
        raise RecordingError(f"{p}: empty file: no trades")
    if _RECORDING_LINE.match(first):
        return "recording"
    try:
        fields = next(csv.reader([first]))
    except csv.Error as exc:
        raise RecordingError(f"{p}:{lineno}: not CSV: {exc}") from None
    names = [f.strip().lower() for f in fields]
    if len(fields) >= 3 and not _is_number(fields[0]):
        return _format_of_header(p, lineno, names)
    n = len(fields)
    if n in (6, 7) and _is_bool(fields[5]) and all(_is_number(f) for f in fields[:5]):
        return "binance-trades"
    if n in (7, 8) and _is_bool(fields[6]) and all(_is_number(f) for f in fields[:6]):
        return "binance-aggtrades"
    raise RecordingError(
        f"{p}:{lineno}: cannot tell the format from the first row {first[:80]!r}: expected a "
        f"header, a Binance trades/aggTrades row or '<receive time> <JSON>'; name one with "
        f"--format ({', '.join(FORMATS)})"
    )


def read_trades(
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    symbol: str | None = None,
    on_progress: Callable[[int], object] | None = None,
    symbol_column: bool = True,
) -> pd.DataFrame:
    """Return every trade in one file as a DataFrame with columns :data:`TRADE_COLUMNS`.

    ============ ============ =============================================================
    column       dtype        meaning
    ============ ============ =============================================================
    ts_ns        int64        exchange trade time, UTC ns
    price        float64      quote currency
    size         float64      base units (> 0)
    side         int8         taker side: +1 buy, -1 sell, 0 unknown
    in_bars      bool         False for trades Binance leaves out of klines (futures ``X``
                              other than ``MARKET``; generic ``trade_type`` likewise)
    trade_id     Int64        vendor trade id (aggregate id for aggTrades); <NA> if none
    symbol       str          upper case; from the file, else from a Binance public-data
                              file name (``BTCUSDT-trades-...``), else ``symbol``, else ""
    ============ ============ =============================================================

    Rows keep file order. Times are epoch s/ms/µs/ns detected by magnitude from the first
    row (every row must use the same unit); generic files may also give ISO-8601 strings
    (UTC unless they carry an offset). Plain, gzip and (single-member) zip files are read.
    CSV files are parsed in chunks of 250,000 rows; every row must have as many fields as
    the first.

    Generic files name their columns (case-insensitive, first alias found wins): time
    ``ts``, ``ts_ns``, ``exchange_timestamp``, ``timestamp``, ``time``, ``trade_time_ms``,
    ``time_ms``, ...; ``price``; size ``size``, ``qty``, ``quantity``, ``amount``;
    optionally side ``side`` (buy/sell/b/s/1/-1, empty = unknown) or ``is_buyer_maker``
    (true = the taker sold), ``symbol``, ``trade_id``/``id``, and ``trade_type`` (rows
    other than empty or ``MARKET`` get ``in_bars=False``, as in the hftbacktest trade CSVs).

    Parameters
    ----------
    path : path
    fmt : str, optional
        One of :data:`FORMATS`; None detects it (:func:`detect_format`).
    symbol : str, optional
        Keep only this symbol's trades (case-insensitive). For files that do not name
        their symbol, it labels the trades.
    on_progress : callable, optional
        Called with the number of (compressed) file bytes consumed since the last call.
    symbol_column : bool, default True
        False leaves the ``symbol`` column out; ``attrs["row_symbols"]`` then lists the
        distinct symbols of the rows returned. ``tickscope bars`` reads files of millions
        of trades of one symbol, whose column would cost more than the rest of the frame.

    Returns
    -------
    pandas.DataFrame
        ``attrs["symbols"]`` lists every symbol seen in the file (before filtering) and
        ``attrs["format"]`` the format read.

    Raises
    ------
    RecordingError
        On unreadable files and bad rows; the message names the file, the line (the row
        for Parquet) and the problem.
    """
    p = Path(path)
    if fmt is None:
        fmt = detect_format(p)
    elif fmt not in FORMATS:
        raise RecordingError(f"{p}: unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    want = symbol.strip().upper() if symbol else None
    progress = on_progress or (lambda n: None)
    label = None  # the symbol of every row, when the reader gives one for all
    if fmt == "recording":
        parts, seen = _recording_trades(p, want, progress)
    elif fmt == "generic" and _is_parquet(p):
        parts, seen = _parquet_trades(p, want, progress)
    else:
        parts, seen, label = _csv_trades(p, fmt, want, progress)
    # One part (a fast-path file, or a small one) is used as is: a concat would copy it.
    if not parts:
        frame, label = trade_frame({}), None
    else:
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    if label is not None:
        if symbol_column:
            frame.insert(TRADE_COLUMNS.index("symbol"), "symbol", repeated_str(label, len(frame)))
        else:
            frame.attrs["row_symbols"] = [label]
    elif not symbol_column:
        frame.attrs["row_symbols"] = sorted(frame.pop("symbol").unique().tolist())
    frame.attrs["symbols"] = sorted(seen)
    frame.attrs["format"] = fmt
    return frame


# -- private: files and lines ------------------------------------------------------------


def _head_bytes(path: Path) -> bytes:
    with open_binary(path) as fh:
        try:
            return fh.read(_HEAD_BYTES)
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise RecordingError(f"{path}:1: unreadable: {exc}") from None


def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open: {exc.strerror or exc}") from exc


def _first_line(text: str) -> tuple[int, str | None]:
    # (1-based line number, text) of the first non-blank line.
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            return lineno, line.strip()
    return 0, None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_bool(text: str) -> bool:
    return text.strip().lower() in ("true", "false")


def _format_of_header(path: Path, lineno: int, names: list[str]) -> str:
    # Format named by a CSV header row (lower-cased field names).
    have = set(names)
    if {"exchange", "symbol", "timestamp", "local_timestamp", "amount"} <= have:
        return "tardis"
    if "first_trade_id" in have or names[0] == "agg_trade_id":
        return "binance-aggtrades"
    if "quote_qty" in have or (names[0] == "id" and "is_buyer_maker" in have):
        return "binance-trades"
    if _generic_columns(names).keys() >= {"ts", "price", "size"}:
        return "generic"
    raise RecordingError(
        f"{path}:{lineno}: unknown header {','.join(names)[:120]!r}: a generic file needs "
        f"columns ts, price and size (optional side, symbol, trade_id); name the format "
        f"with --format ({', '.join(FORMATS)})"
    )


def _generic_columns(names: list[str]) -> dict[str, str]:
    # Field -> column name for a generic file (case-insensitive alias match).
    lower = {n.strip().lower(): n for n in names}
    found = {}
    for field, aliases in _GENERIC_ALIASES.items():
        for alias in aliases:
            if alias in lower:
                found[field] = lower[alias]
                break
    return found


def _symbol_from_name(path: Path) -> str | None:
    m = _SYMBOL_IN_NAME.match(path.name)
    return m.group(1).upper() if m else None



# -- private: recordings -----------------------------------------------------------------


def _numbered_recording(path: Path, report: Callable[[int], object]) -> Iterator[tuple[int, int, str]]:
    # (line number, recv_ns, raw JSON) per non-blank line of a plain, gzip or zip recording.
    opened = open_binary(path, report)
    yield from recording_lines(path, io.TextIOWrapper(opened, encoding="utf-8", newline="\n"))


def _recording_trades(path: Path, want: str | None, progress: Callable[[int], object]):
    # Trades of a recorded session, parsed by the Binance adapter. Only lines that can hold
    # a trade are parsed (depth and bookTicker lines are most of a capture); a malformed
    # trade message is an error here, unlike live, where it is counted and skipped.
    # The Binance parsers are the same for every market (futures' ``X`` sets in_bars per
    # message); USD-M reads spot and COIN-M captures as well.
    # Imported here: `tickscope bars` on a CSV file (the big inputs) never needs the
    # adapter, and its import is a noticeable part of a whole-process conversion.
    from feed.vendors.binance import BinanceAdapter

    adapter = BinanceAdapter("usdm")
    ts, price, size, side, in_bars, tid, sym = [], [], [], [], [], [], []
    seen: set[str] = set()
    pending = 0

    def count(n: int) -> None:
        nonlocal pending
        pending += n

    for lineno, recv_ns, raw in _numbered_recording(path, count):
        if pending and lineno % _PROGRESS_LINES == 0:
            progress(pending)
            pending = 0
        if '"trade"' not in raw and '@trade"' not in raw and "aggTrade" not in raw:
            continue
        try:
            events = adapter.parse(raw, recv_ns)
        except MalformedMessage as exc:
            fail_at(path, lineno, f"bad trade message: {exc}")
        for ev in events:
            if type(ev) is not Trade:
                continue
            s = ev.symbol.upper()
            seen.add(s)
            if want is not None and s != want:
                continue
            ts.append(ev.ts_ns)
            price.append(ev.price)
            size.append(ev.size)
            side.append(ev.side)
            in_bars.append(ev.in_bars)
            tid.append(ev.trade_id)
            sym.append(s)
    if pending:
        progress(pending)
    cols = {"ts_ns": ts, "price": price, "size": size, "side": side, "in_bars": in_bars,
            "trade_id": tid, "symbol": sym}
    return [trade_frame(cols)], seen


# -- private: CSV ------------------------------------------------------------------------


def _csv_trades(path: Path, fmt: str, want: str | None, progress: Callable[[int], object]):
    # Trades of a CSV file in ``fmt``, chunk by chunk.
    header_line, names = _csv_header(path)
    if fmt in _BINANCE_POSITIONS:
        positions = _BINANCE_POSITIONS[fmt]
        has_header = names is not None and not _is_number(names[0])
        reader_kw = {"header": None, "skiprows": header_line if has_header else 0}
        columns = dict(positions)
        first_row_line = header_line + 1 if has_header else header_line
    else:
        if names is None or _is_number(names[0]):
            fail_at(path, header_line or 1, f"a {fmt} file needs a header row")
        if fmt == "tardis":
            lower = {n.strip().lower(): n for n in names}
            missing = [c for c in _TARDIS_COLUMNS.values() if c not in lower]
            if missing:
                fail_at(path, header_line, f"tardis header lacks column(s) {', '.join(missing)}")
            columns = {field: lower[c] for field, c in _TARDIS_COLUMNS.items()}
        else:
            columns = _generic_columns(names)
            missing = [f for f in ("ts", "price", "size") if f not in columns]
            if missing:
                fail_at(path, header_line, f"generic header lacks column(s) {', '.join(missing)}: "
                      f"expected ts, price, size[, side, symbol, trade_id]")
        reader_kw = {"header": 0, "skiprows": header_line - 1}
        if fmt == "generic":
            # Times as text: decimal epochs ("1723161255.342") convert exactly, not via float.
            reader_kw["dtype"] = {columns["ts"]: str}
        first_row_line = header_line + 1
    name_symbol = _symbol_from_name(path)
    if fmt in _BINANCE_POSITIONS and header_line == 1:
        fast = read_binance_csv(path, positions, reader_kw["skiprows"], len(names or ()), name_symbol,
                                want, progress)
        if fast is not None:
            return fast
    state = ChunkState(path, first_row_line)
    parts, seen = [], set()
    try:
        with open_binary(path, progress) as fh:
            # No usecols: pandas then refuses a row with more fields than the first (such
            # as a decimal comma, "1,5"), instead of silently shifting it.
            reader = pd.read_csv(fh, chunksize=_CHUNK_ROWS, encoding="utf-8",
                                 skipinitialspace=True, **reader_kw)
            for chunk in reader:
                frame = convert_chunk(chunk, columns, state, name_symbol, want)
                seen.update(state.symbols)
                if len(frame):
                    parts.append(frame)
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        detail = re.sub(r"^Error tokenizing data\. C error: ", "", str(exc)).strip()
        raise RecordingError(f"{path}:{m.group(1) if m else '?'}: {detail}") from None
    except pd.errors.EmptyDataError:
        raise RecordingError(f"{path}: empty file: no trades") from None
    except (UnicodeDecodeError, EOFError, OSError, zlib.error, zipfile.BadZipFile) as exc:
        # gzip raises BadGzipFile (an OSError), EOFError or zlib.error on damaged files.
        raise RecordingError(f"{path}: unreadable: {exc}") from None
    return parts, seen, None


def _csv_header(path: Path) -> tuple[int, list[str] | None]:
    # (1-based line number of the first non-blank line, its fields).
    text = _head_bytes(path).decode("utf-8", errors="replace").lstrip("\ufeff")
    lineno, first = _first_line(text)
    if first is None:
        raise RecordingError(f"{path}: empty file: no trades")
    return lineno, next(csv.reader([first]))


# -- private: Parquet --------------------------------------------------------------------


def _parquet_trades(path: Path, want: str | None, progress: Callable[[int], object]):
    # Generic Parquet, batch by batch (errors name the 1-based row).
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is installed with pandas here
        raise RecordingError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise RecordingError(f"{path}: not a readable Parquet file: {exc}") from None
    columns = _generic_columns(pf.schema_arrow.names)
    missing = [f for f in ("ts", "price", "size") if f not in columns]
    if missing:
        fail_at(path, None, f"Parquet columns lack {', '.join(missing)}: expected ts, price, "
              f"size[, side, symbol, trade_id] (have {', '.join(pf.schema_arrow.names)})")
    state = ChunkState(path, 1)
    state.row_label = "row"
    name_symbol = _symbol_from_name(path)
    parts, seen, start = [], set(), 0
    size_total = os.path.getsize(path)
    n_total = max(pf.metadata.num_rows, 1)
    for batch in pf.iter_batches(batch_size=_CHUNK_ROWS, columns=list(dict.fromkeys(columns.values()))):
        chunk = batch.to_pandas()
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        start += len(chunk)
        frame = convert_chunk(chunk, columns, state, name_symbol, want)
        seen.update(state.symbols)
        if len(frame):
            parts.append(frame)
        progress(int(size_total * len(chunk) / n_total))
    return parts, seen
