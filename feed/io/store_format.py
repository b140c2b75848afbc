"""What a trade store directory holds, byte for byte, and how unsafe contents are refused.

Owns the store's error types, the packed trade-batch format, the manifest's shape and
:class:`PlainDisk`, the diskcache serializer that stores only plain values and never
unpickles. :mod:`feed.io.store` builds the store on these.

Errors
------
::

    StoreError            the store cannot be used (closed, unreadable)
     +-- StoreLocked      another process owns the directory
     +-- StoreCorrupt     a value in the directory is not what tickscope wrote

Batch format
------------
A 28-byte header (magic ``TSB1``, format version, record size, trade count, min and max
``ts_ns``) followed by the packed records, ``TRADE_DTYPE`` (46 bytes a trade; version 1,
``TRADE_DTYPE_V1`` without ``count``, 42 bytes, is still read). Records are in arrival
order, which is not time or id order once history was put in place: readers sort.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import diskcache
import numpy as np
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW, MODE_TEXT, UNKNOWN

from feed.core.models import Trade

__all__ = ["StoreError", "StoreLocked", "StoreCorrupt", "TRADE_DTYPE", "TRADE_DTYPE_V1", "NO_TRADE_ID", "PlainDisk",
           "pack_batch", "pack_trades", "batch_header", "unpack_batch", "to_array", "to_trades", "parse_manifest",
           "empty_manifest"]

log = logging.getLogger("tickscope.store")


class StoreError(RuntimeError):
    """The store cannot be used (closed, or unreadable data); the message says which."""


class StoreLocked(StoreError):
    """Another process owns the store directory; the message names it and that process."""


class StoreCorrupt(StoreError):
    """A value in the store directory is not one tickscope wrote (damaged, foreign or
    planted); the message names the directory and what to do."""


#: A trade as format version 1 stored it (42 bytes): no ``count``, so every record held
#: one exchange trade. Still read (``count`` 1).
TRADE_DTYPE_V1 = np.dtype([
    ("ts_ns", "<i8"),
    ("price", "<f8"),
    ("size", "<f8"),
    ("side", "i1"),
    ("trade_id", "<i8"),
    ("in_bars", "?"),
    ("recv_ns", "<i8"),
])
#: One stored trade (format version 2, 46 bytes). ``trade_id`` is ``NO_TRADE_ID`` when the
#: vendor gave none; ``side`` is +1 buy / -1 sell / 0 unknown (taker side, as
#: ``feed.core.models``); times are UTC ns; ``count`` is the exchange trades the record
#: holds (``Trade.count``: 1, or ``l - f + 1`` for a Binance aggregate trade put in place
#: by backfill or gap repair), so bars rebuilt after a restart count them right.
TRADE_DTYPE = np.dtype(TRADE_DTYPE_V1.descr + [("count", "<u4")])
#: ``trade_id`` stored for ``Trade.trade_id is None``.
NO_TRADE_ID = int(np.iinfo(np.int64).min)

_MAGIC = b"TSB1"
_VERSION = 2
#: Format versions read, with their record dtype.
_DTYPES = {1: TRADE_DTYPE_V1, 2: TRADE_DTYPE}
# magic, version, record size, trade count, min ts_ns, max ts_ns
_HEADER = struct.Struct("<4sHHIqq")
_INT64 = (-(1 << 63), (1 << 63) - 1)
_MODE_NAMES = {MODE_BINARY: "file", MODE_TEXT: "text file", MODE_PICKLE: "pickle"}


# -- batches -------------------------------------------------------------------------------


def pack_batch(arr: np.ndarray) -> bytes:
    """Return a non-empty ``TRADE_DTYPE`` array as one batch (header + records)."""
    ts = arr["ts_ns"]
    header = _HEADER.pack(_MAGIC, _VERSION, TRADE_DTYPE.itemsize, len(arr), int(ts.min()), int(ts.max()))
    return header + arr.tobytes()


def batch_header(blob: object) -> tuple[int, int, int]:
    """Return ``(trade count, min ts_ns, max ts_ns)`` of a batch, checked against its length.

    Raises
    ------
    StoreCorrupt
        If ``blob`` is not bytes, has a foreign header, or its length disagrees with it.
    """
    return _header(blob)[:3]


def _header(blob: object) -> tuple[int, int, int, np.dtype]:
    if type(blob) is not bytes:
        raise StoreCorrupt(f"trade batch is a {type(blob).__name__}, not bytes")
    if len(blob) < _HEADER.size:
        raise StoreCorrupt(f"trade batch of {len(blob)} bytes is shorter than its header")
    magic, version, itemsize, n, lo, hi = _HEADER.unpack_from(blob)
    dtype = _DTYPES.get(version) if magic == _MAGIC else None
    if dtype is None or itemsize != dtype.itemsize:
        raise StoreCorrupt(f"unknown trade batch format {magic!r} v{version} ({itemsize} B records)")
    if len(blob) != _HEADER.size + n * itemsize:
        raise StoreCorrupt(f"trade batch holds {len(blob)} bytes, header says {n} records")
    return n, lo, hi, dtype


def unpack_batch(blob: object) -> np.ndarray:
    """Return the records of a batch as a ``TRADE_DTYPE`` array (read-only for the current
    version; a version-1 batch is converted, ``count`` 1).

    Raises
    ------
    StoreCorrupt
        As :func:`batch_header`.
    """
    n, _, _, dtype = _header(blob)
    arr = np.frombuffer(blob, dtype, count=n, offset=_HEADER.size)
    if dtype is TRADE_DTYPE:
        return arr
    out = np.ones(n, TRADE_DTYPE)  # count 1: a version-1 record held one trade
    for name in dtype.names:
        out[name] = arr[name]
    return out


def to_array(trades: Sequence[Trade]) -> np.ndarray:
    """Return ``trades`` as a ``TRADE_DTYPE`` array, leaving out (and logging) any trade
    whose values do not fit a record (an id beyond int64, a None price)."""
    rows = [
        (t.ts_ns, t.price, t.size, t.side, NO_TRADE_ID if t.trade_id is None else t.trade_id,
         t.in_bars, t.recv_ns, t.count)
        for t in trades
    ]
    try:
        return np.array(rows, dtype=TRADE_DTYPE)
    except (OverflowError, TypeError, ValueError):
        # One bad trade must not sink the batch: find it the slow way.
        good = []
        for row in rows:
            try:
                np.array([row], dtype=TRADE_DTYPE)
            except (OverflowError, TypeError, ValueError):
                log.warning("trade store: skipping a trade that does not fit the record: %r", row)
                continue
            good.append(row)
        return np.array(good, dtype=TRADE_DTYPE)


def pack_trades(trades: Iterable[Trade], max_batch: int) -> list[tuple[bytes, int]]:
    """Return ``trades`` packed as ``(batch, trade count)`` pairs of at most ``max_batch``
    trades each (trades that do not fit a record left out, see :func:`to_array`)."""
    trades = list(trades)
    packed = []
    for i in range(0, len(trades), max_batch):
        arr = to_array(trades[i:i + max_batch])
        if len(arr):
            packed.append((pack_batch(arr), len(arr)))
    return packed


def to_trades(symbol: str, arr: np.ndarray) -> list[Trade]:
    """Return the records of ``arr`` as ``Trade`` objects of ``symbol``."""
    return [
        Trade(symbol, ts, price, size, side, None if tid == NO_TRADE_ID else tid, recv, in_bars, count)
        for ts, price, size, side, tid, in_bars, recv, count in arr.tolist()
    ]


# -- manifest ------------------------------------------------------------------------------

_ENTRY_KEYS = ("first", "next", "count", "bytes")


def empty_manifest() -> dict:
    """Return the manifest of an empty store."""
    return {"version": 1, "symbols": {}}


def parse_manifest(text: object) -> dict:
    """Return the manifest decoded from its stored JSON text, its shape checked.

    Shape: ``{"version": 1, "symbols": {symbol: {"first", "next", "count", "bytes"}}}``
    with whole numbers ``0 <= first <= next``, ``count >= 0`` and ``bytes >= 0``.

    Raises
    ------
    StoreCorrupt
        Saying what is wrong (the caller adds the directory and the remedy).
    """
    if type(text) is not str:
        raise StoreCorrupt(f"the manifest is a {type(text).__name__}, not JSON text")
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise StoreCorrupt(f"the manifest is not valid JSON ({exc})") from None
    if type(manifest) is not dict:
        raise StoreCorrupt("the manifest is not a JSON object")
    if manifest.get("version") != 1:
        raise StoreCorrupt(f"unknown store manifest version {manifest.get('version')!r}")
    symbols = manifest.get("symbols")
    if type(symbols) is not dict:
        raise StoreCorrupt("the manifest has no symbols object")
    for symbol, entry in symbols.items():
        if type(entry) is not dict or any(type(entry.get(k)) is not int for k in _ENTRY_KEYS):
            raise StoreCorrupt(f"the manifest entry of {symbol!r} is not four whole numbers {_ENTRY_KEYS}")
        if not (0 <= entry["first"] <= entry["next"] < _INT64[1]) or entry["count"] < 0 or entry["bytes"] < 0:
            raise StoreCorrupt(f"the manifest entry of {symbol!r} is out of range: {entry}")
    return manifest


# -- the serializer ------------------------------------------------------------------------


class PlainDisk(diskcache.Disk):
    """A diskcache serializer for bytes, str, int (int64) and float only, kept in SQLite.

    Values are written in diskcache's raw mode, inside the database (never in side
    files), and only raw values are read back: a value stored in pickle mode (which
    diskcache would unpickle, running whatever code the pickle names) or in a side file is
    refused with :class:`StoreCorrupt`, and so is a pickled key. Files named by a row are
    never removed (tickscope writes none; a row naming one was not written by it).

    Parameters
    ----------
    directory : str
        The cache directory.
    **settings
        diskcache's ``disk_*`` settings (``min_file_size``, ``pickle_protocol``); unknown
        ones, which a damaged Settings table could hold, are ignored.
    """

    def __init__(self, directory: str, min_file_size: int = 0, pickle_protocol: int = 0,
                 **settings: Any) -> None:
        super().__init__(directory, min_file_size=0, pickle_protocol=0)

    def put(self, key: Any) -> tuple[Any, bool]:
        """Return the database key of a plain ``key``; refuse any other type."""
        _check_plain(key, "key")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        """Return the key of a row; a pickled key is refused, never unpickled."""
        if not raw:
            raise StoreCorrupt("refused a pickled key (tickscope stores plain keys only)")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, None, Any]:
        """Return the row fields of a plain ``value``, always raw and in the database."""
        if read:
            raise TypeError("the trade store keeps plain values, not file contents")
        _check_plain(value, "value")
        return 0, MODE_RAW, None, sqlite3.Binary(value) if type(value) is bytes else value

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Return a raw value; anything stored in another mode is refused unread."""
        if mode != MODE_RAW or read:
            raise StoreCorrupt(f"refused a value stored in {_MODE_NAMES.get(mode, f'mode {mode}')} mode "
                               "(tickscope stores plain values only and never unpickles)")
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        """Leave the file alone: tickscope writes none, so this row was not its own."""
        log.warning("trade store: not removing %r, a file named by a row tickscope did not write", file_path)


def _check_plain(obj: Any, what: str) -> None:
    kind = type(obj)
    if kind is int and not _INT64[0] <= obj <= _INT64[1]:
        raise TypeError(f"the trade store keeps int64 {what}s, not {obj!r}")
    if kind not in (bytes, str, int, float):
        raise TypeError(f"the trade store keeps bytes, str, int and float {what}s, not {kind.__name__}")
