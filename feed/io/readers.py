"""Readers for recorded market data.

Recorded sessions (the replay format)
-------------------------------------
Text, plain or gzip, one message a line: ``<receive time> <JSON message as sent>``. The
receive time is an integer epoch in nanoseconds or microseconds (detected per line by
magnitude). A Binance REST depth snapshot appears as a bare JSON object
(``{"lastUpdateId": ..., "bids": ..., "asks": ...}``) instead of a stream wrapper. This is
exactly the format of the raw captures recorded by hftbacktest's collector and of
``tickscope --record``.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from feed.core.models import MalformedMessage, Trade
from feed.vendors.binance import BinanceAdapter

__all__ = [
    "RecordingError", "open_text", "read_recording", "merge_recordings", "to_ns",
    "FORMATS", "TRADE_COLUMNS", "detect_format", "read_trades",
]

# Epochs after 2001-09-09 in ns are > 1e18, in µs > 1e15, in ms > 1e12.
_NS_MIN = 10**17
_US_MIN = 10**14
_MS_MIN = 10**11


class RecordingError(ValueError):
    """A recorded file cannot be read; the message names the file and line."""


def to_ns(epoch: int) -> int:
    """Return an epoch timestamp in s, ms, µs or ns as UTC ns (unit detected by magnitude).

    Raises
    ------
    ValueError
        If ``epoch`` is negative.
    """
    if epoch < 0:
        raise ValueError(f"negative timestamp {epoch}")
    if epoch >= _NS_MIN:
        return epoch
    if epoch >= _US_MIN:
        return epoch * 1_000
    if epoch >= _MS_MIN:
        return epoch * 1_000_000
    return epoch * 1_000_000_000


def open_text(path: str | os.PathLike) -> "Iterable[str]":
    """Open ``path`` for text reading, transparently gunzipping (by magic bytes).

    Raises
    ------
    RecordingError
        If the file does not exist or cannot be opened.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(p, "rt", encoding="utf-8", newline="\n")
        return open(p, "rt", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise RecordingError(f"{p}: cannot open: {exc.strerror or exc}") from exc


def read_recording(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(recv_ns, raw_json_text)`` for every line of a recorded session.

    Blank lines are skipped. The JSON text is returned as recorded (not parsed).

    Raises
    ------
    RecordingError
        If a line has no ``<int> <json>`` shape or the file is not readable text; the
        message names the file and the 1-based line number.
    """
    fh = open_text(path)
    for _, recv_ns, raw in _recording_lines(path, fh):
        yield recv_ns, raw


def merge_recordings(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[int, int, str]]:
    """Yield ``(recv_ns, file_index, raw)`` from several recordings in receive-time order.

    Files are merged lazily (a heap over one iterator per file); ties keep file order and,
    within a file, line order.
    """
    # A generator function binds each file's index; a generator expression in the list
    # comprehension would see only the last index (late binding).
    iters = [_tagged(p, i) for i, p in enumerate(paths)]
    yield from heapq.merge(*iters, key=lambda item: (item[0], item[1]))


def _tagged(path: str | os.PathLike, index: int) -> Iterator[tuple[int, int, str]]:
    for ts, raw in read_recording(path):
        yield ts, index, raw


# ======================================================================================
# Trade files: recorded sessions, Binance public data, Tardis, generic CSV/Parquet
# ======================================================================================

#: Trade-file formats :func:`read_trades` understands (``fmt`` values, ``--format`` choices).
FORMATS: tuple[str, ...] = ("recording", "binance-trades", "binance-aggtrades", "tardis", "generic")

#: Columns of the frame :func:`read_trades` returns, in order.
TRADE_COLUMNS: tuple[str, ...] = ("ts_ns", "price", "size", "side", "in_bars", "trade_id", "symbol")

# Rows per pandas chunk: bounded memory for the parser's intermediate objects, and a
# progress update every few MB.
_CHUNK_ROWS = 250_000
# Bytes of decompressed head read to detect a format.
_HEAD_BYTES = 64 * 1024
# Recording lines between two progress reports.
_PROGRESS_LINES = 4096

# Epoch magnitude ranges [lo, hi) per unit and the factor to ns (see ``to_ns``).
_EPOCH_UNITS: tuple[tuple[str, int, float, int], ...] = (
    ("ns", _NS_MIN, float("inf"), 1),
    ("µs", _US_MIN, _NS_MIN, 1_000),
    ("ms", _MS_MIN, _US_MIN, 1_000_000),
    ("s", 0, _MS_MIN, 1_000_000_000),
)

# Columns by position in Binance's public-data CSVs (data.binance.vision), whose headers
# differ between spot and futures and across years, so they are read by position:
#   trades:    id, price, qty, quote_qty, time, is_buyer_maker[, is_best_match]
#   aggTrades: agg_trade_id, price, quantity, first_trade_id, last_trade_id,
#              transact_time, is_buyer_maker[, is_best_match]
_BINANCE_POSITIONS: dict[str, dict[str, int]] = {
    "binance-trades": {"trade_id": 0, "price": 1, "size": 2, "ts": 4, "buyer_maker": 5},
    "binance-aggtrades": {"trade_id": 0, "price": 1, "size": 2, "ts": 5, "buyer_maker": 6},
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

# Taker side spellings (lower case) -> BUY/SELL/UNKNOWN.
_SIDES = {"buy": 1, "b": 1, "1": 1, "+1": 1, "1.0": 1, "sell": -1, "s": -1, "-1": -1,
          "-1.0": -1, "": 0, "0": 0, "0.0": 0, "unknown": 0, "nan": 0}
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "t": True, "f": False}

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
    if fmt == "recording":
        parts, seen = _recording_trades(p, want, progress)
    elif fmt == "generic" and _is_parquet(p):
        parts, seen = _parquet_trades(p, want, progress)
    else:
        parts, seen = _csv_trades(p, fmt, want, progress)
    frame = pd.concat(parts, ignore_index=True) if parts else _trade_frame({})
    frame.attrs["symbols"] = sorted(seen)
    frame.attrs["format"] = fmt
    return frame


# -- private: files and lines ------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    # A binary file that reports how many bytes were read from it, for progress bars.

    def __init__(self, fh, report: Callable[[int], object]) -> None:
        self._fh = fh
        self._report = report

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._fh.readinto(buf)
        if n:
            self._report(n)
        return n

    def seekable(self) -> bool:
        return self._fh.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_binary(path: Path, report: Callable[[int], object] = lambda n: None):
    # Decompressed binary stream of a plain, gzip or single-member zip file; ``report``
    # gets the compressed bytes read.
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    magic = raw.read(4)
    raw.seek(0)
    counted = io.BufferedReader(_CountingReader(raw, report), 1 << 20)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=counted, mode="rb")
    if magic == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(counted)
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise RecordingError(f"{path}: zip holds {len(members)} files; expected exactly one")
            return zf.open(members[0])
        except zipfile.BadZipFile as exc:
            raise RecordingError(f"{path}: bad zip file: {exc}") from None
    return counted


def _head_bytes(path: Path) -> bytes:
    with _open_binary(path) as fh:
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


def _fail(path: Path, where: int | str | None, problem: str) -> None:
    raise RecordingError(f"{path}:{where}: {problem}" if where is not None else f"{path}: {problem}")


def _symbol_from_name(path: Path) -> str | None:
    m = _SYMBOL_IN_NAME.match(path.name)
    return m.group(1).upper() if m else None


def _trade_frame(cols: dict) -> pd.DataFrame:
    # The result frame with TRADE_COLUMNS dtypes (empty when ``cols`` is).
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


# -- private: recordings -----------------------------------------------------------------


def _numbered_recording(path: Path, report: Callable[[int], object]) -> Iterator[tuple[int, int, str]]:
    # (line number, recv_ns, raw JSON) per non-blank line of a plain, gzip or zip recording.
    opened = _open_binary(path, report)
    yield from _recording_lines(path, io.TextIOWrapper(opened, encoding="utf-8", newline="\n"))


def _recording_lines(path: str | os.PathLike, fh: IO[str]) -> Iterator[tuple[int, int, str]]:
    # (line number, recv_ns, raw JSON) per non-blank line of the open text ``fh``, which is
    # closed when done: the checks of read_recording, errors naming ``path`` and the line.
    lineno = 0
    try:
        with fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                ts_text, sep, raw = line.partition(" ")
                if not sep or not ts_text.isdigit() or not raw.lstrip().startswith(("{", "[")):
                    _fail(path, lineno, f"expected '<receive time> <JSON message>', got {line[:60]!r}")
                yield lineno, to_ns(int(ts_text)), raw
    except (OSError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"{path}:{lineno + 1}: unreadable: {exc}") from exc


def _recording_trades(path: Path, want: str | None, progress: Callable[[int], object]):
    # Trades of a recorded session, parsed by the Binance adapter. Only lines that can hold
    # a trade are parsed (depth and bookTicker lines are most of a capture); a malformed
    # trade message is an error here, unlike live, where it is counted and skipped.
    # The Binance parsers are the same for every market (futures' ``X`` sets in_bars per
    # message); USD-M reads spot and COIN-M captures as well.
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
            _fail(path, lineno, f"bad trade message: {exc}")
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
    return [_trade_frame(cols)], seen


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
            _fail(path, header_line or 1, f"a {fmt} file needs a header row")
        if fmt == "tardis":
            lower = {n.strip().lower(): n for n in names}
            missing = [c for c in _TARDIS_COLUMNS.values() if c not in lower]
            if missing:
                _fail(path, header_line, f"tardis header lacks column(s) {', '.join(missing)}")
            columns = {field: lower[c] for field, c in _TARDIS_COLUMNS.items()}
        else:
            columns = _generic_columns(names)
            missing = [f for f in ("ts", "price", "size") if f not in columns]
            if missing:
                _fail(path, header_line, f"generic header lacks column(s) {', '.join(missing)}: "
                      f"expected ts, price, size[, side, symbol, trade_id]")
        reader_kw = {"header": 0, "skiprows": header_line - 1}
        if fmt == "generic":
            # Times as text: decimal epochs ("1723161255.342") convert exactly, not via float.
            reader_kw["dtype"] = {columns["ts"]: str}
        first_row_line = header_line + 1
    name_symbol = _symbol_from_name(path)
    state = _ChunkState(path, first_row_line)
    parts, seen = [], set()
    try:
        with _open_binary(path, progress) as fh:
            # No usecols: pandas then refuses a row with more fields than the first (such
            # as a decimal comma, "1,5"), instead of silently shifting it.
            reader = pd.read_csv(fh, chunksize=_CHUNK_ROWS, encoding="utf-8",
                                 skipinitialspace=True, **reader_kw)
            for chunk in reader:
                frame = _convert_chunk(chunk, columns, state, name_symbol, want)
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
    return parts, seen


def _csv_header(path: Path) -> tuple[int, list[str] | None]:
    # (1-based line number of the first non-blank line, its fields).
    text = _head_bytes(path).decode("utf-8", errors="replace").lstrip("\ufeff")
    lineno, first = _first_line(text)
    if first is None:
        raise RecordingError(f"{path}: empty file: no trades")
    return lineno, next(csv.reader([first]))


class _ChunkState:
    # What one file's chunks share: the time unit (fixed by the first row), the rows
    # read so far (to name lines), the symbols seen in the last chunk.

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
        with io.TextIOWrapper(_open_binary(self.path), encoding="utf-8", errors="replace") as fh:
            for lineno, text in enumerate(fh, 1):
                if lineno < line:
                    continue
                if text.strip():
                    seen += 1
                    if seen == row:
                        return lineno
        return line + row

    def fail(self, rows: np.ndarray, problem: str) -> None:
        _fail(self.path, self.where(int(rows[0])), problem)


def _convert_chunk(chunk: pd.DataFrame, columns: dict, state: _ChunkState,
                   name_symbol: str | None, want: str | None) -> pd.DataFrame:
    # One parsed chunk -> trade frame (TRADE_COLUMNS), validating every field.
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
    frame = _trade_frame({"ts_ns": ts, "price": price, "size": size, "side": side,
                          "in_bars": in_bars, "trade_id": trade_id, "symbol": sym})
    if keep is not None:
        frame = frame[keep].reset_index(drop=True)
    return frame


def _numbers(values: pd.Series, name: str, rows: np.ndarray, state: _ChunkState,
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


def _positive(values: pd.Series, name: str, rows: np.ndarray, state: _ChunkState) -> np.ndarray:
    out = _numbers(values, name, rows, state).to_numpy(np.float64)
    bad = ~((out > 0.0) & np.isfinite(out))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"{name} must be a positive number, not {values.iloc[i]!r}")
    return out


def _epoch_ns(values: pd.Series, rows: np.ndarray, state: _ChunkState) -> np.ndarray:
    # Epoch s/ms/µs/ns (unit from the file's first row) or ISO-8601 text -> int64 UTC ns.
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            state.fail(rows[i:i + 1], "timestamp missing")
        if getattr(values.dt, "tz", None) is not None:
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


def _iso_ns(values: pd.Series, rows: np.ndarray, state: _ChunkState) -> np.ndarray:
    state.iso = True
    parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"timestamp {str(values.iloc[i])[:40]!r} is neither an epoch "
                                  f"number nor an ISO-8601 time")
    return parsed.dt.tz_localize(None).dt.as_unit("ns").to_numpy().view(np.int64)


def _sides(values: pd.Series, rows: np.ndarray, state: _ChunkState) -> np.ndarray:
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


def _bools(values: pd.Series, name: str, rows: np.ndarray, state: _ChunkState) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(bool)
    mapped = values.astype(str).str.strip().str.lower().map(_BOOLS)
    bad = mapped.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"{name} {values.iloc[i]!r}: expected true or false")
    return mapped.to_numpy(bool)


def _trade_ids(values: pd.Series, rows: np.ndarray, state: _ChunkState):
    # Integer ids; empty cells are <NA> (a generic file may lack some).
    if pd.api.types.is_integer_dtype(values):
        return pd.array(values.to_numpy(), dtype="Int64")
    num = pd.to_numeric(values, errors="coerce")
    bad = (num.isna() & values.notna()).to_numpy() | (num.notna() & (num % 1 != 0)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        state.fail(rows[i:i + 1], f"trade id {values.iloc[i]!r} is not an integer")
    return pd.array(num, dtype="Int64")


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
        _fail(path, None, f"Parquet columns lack {', '.join(missing)}: expected ts, price, "
              f"size[, side, symbol, trade_id] (have {', '.join(pf.schema_arrow.names)})")
    state = _ChunkState(path, 1)
    state.row_label = "row"
    name_symbol = _symbol_from_name(path)
    parts, seen, start = [], set(), 0
    size_total = os.path.getsize(path)
    n_total = max(pf.metadata.num_rows, 1)
    for batch in pf.iter_batches(batch_size=_CHUNK_ROWS, columns=list(dict.fromkeys(columns.values()))):
        chunk = batch.to_pandas()
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        start += len(chunk)
        frame = _convert_chunk(chunk, columns, state, name_symbol, want)
        seen.update(state.symbols)
        if len(frame):
            parts.append(frame)
        progress(int(size_total * len(chunk) / n_total))
    return parts, seen
