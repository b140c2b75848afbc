"""Persistence of raw trades (and closed bars) per symbol, on diskcache.

Raw trades are kept, not just bars, so that a restart keeps history and any bar type can
be rebuilt from it. The engine appends every trade (cheap: a list append in memory) and
calls :meth:`TradeStore.flush` about once a second, which writes what was appended as one
compact batch per symbol.

On disk (one diskcache directory, i.e. one SQLite database in WAL mode)
-----------------------------------------------------------------------
=========================  ==============================================================
key                        value
=========================  ==============================================================
``trades/<symbol>/<seq>``  one batch: a 28-byte header (magic ``TSB1``, format version,
                           record size, trade count, min and max ``ts_ns``) followed by
                           the packed records, ``TRADE_DTYPE`` (42 bytes a trade)
``manifest``               JSON ``{"version": 1, "symbols": {symbol: {"first", "next",
                           "count", "bytes"}}}``: the live batch numbers are
                           ``first <= seq < next``, in arrival order
``meta/<symbol>``          JSON dict (price/size decimals, ...)
``bars/<symbol>/<spec>``   JSON list of closed-bar dicts
=========================  ==============================================================

Atomicity: a flush writes its batches and the updated manifest in one SQLite transaction
(``Cache.transact``), so a process killed at any moment (kill -9) leaves either the whole
flush or none of it; it loses at most the trades appended since the last flush and never
leaves a half-written batch. Batches stay inside the database (``disk_min_file_size`` is
set above any batch), so there are no side files to orphan. diskcache's own eviction is
off: retention is :meth:`TradeStore.prune`, explicit and whole batches at a time.

One process writes a store directory at a time (the manifest is read-modify-written
inside each transaction, so a second writer would not corrupt it, but the engine assumes
it owns its symbols).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import diskcache
import numpy as np

from feed.core.models import Trade

__all__ = ["TRADE_DTYPE", "NO_TRADE_ID", "TradeStore", "StoreError"]

log = logging.getLogger("tickscope.store")

#: One stored trade. ``trade_id`` is ``NO_TRADE_ID`` when the vendor gave none; ``side`` is
#: +1 buy / -1 sell / 0 unknown (taker side, as ``feed.core.models``); times are UTC ns.
TRADE_DTYPE = np.dtype([
    ("ts_ns", "<i8"),
    ("price", "<f8"),
    ("size", "<f8"),
    ("side", "i1"),
    ("trade_id", "<i8"),
    ("in_bars", "?"),
    ("recv_ns", "<i8"),
])
#: ``trade_id`` stored for ``Trade.trade_id is None``.
NO_TRADE_ID = int(np.iinfo(np.int64).min)

_MAGIC = b"TSB1"
_VERSION = 1
# magic, version, record size, trade count, min ts_ns, max ts_ns
_HEADER = struct.Struct("<4sHHIqq")
_MANIFEST_KEY = "manifest"
_MAX_BATCH_TRADES = 100_000  # ~4 MB; a flush splits anything larger
_MIN_FILE_SIZE = 1 << 26  # values below this stay inside SQLite (all of ours)


class StoreError(RuntimeError):
    """The store cannot be used (closed, or unreadable data); the message says which."""


def _batch_key(symbol: str, seq: int) -> str:
    # Unambiguous although symbols may contain "/": the part after the last "/" is digits.
    return f"trades/{symbol}/{seq}"


def _pack(arr: np.ndarray) -> bytes:
    ts = arr["ts_ns"]
    header = _HEADER.pack(_MAGIC, _VERSION, TRADE_DTYPE.itemsize, len(arr), int(ts.min()), int(ts.max()))
    return header + arr.tobytes()


def _header(blob: bytes) -> tuple[int, int, int]:
    # Return (count, min ts_ns, max ts_ns), checking the header against the length.
    if len(blob) < _HEADER.size:
        raise StoreError(f"trade batch of {len(blob)} bytes is shorter than its header")
    magic, version, itemsize, n, lo, hi = _HEADER.unpack_from(blob)
    if magic != _MAGIC or version != _VERSION or itemsize != TRADE_DTYPE.itemsize:
        raise StoreError(f"unknown trade batch format {magic!r} v{version} ({itemsize} B records)")
    if len(blob) != _HEADER.size + n * itemsize:
        raise StoreError(f"trade batch holds {len(blob)} bytes, header says {n} records")
    return n, lo, hi


def _unpack(blob: bytes) -> np.ndarray:
    n, _, _ = _header(blob)
    return np.frombuffer(blob, TRADE_DTYPE, count=n, offset=_HEADER.size)


def _to_array(trades: Sequence[Trade]) -> np.ndarray:
    rows = [
        (t.ts_ns, t.price, t.size, t.side, NO_TRADE_ID if t.trade_id is None else t.trade_id,
         t.in_bars, t.recv_ns)
        for t in trades
    ]
    try:
        return np.array(rows, dtype=TRADE_DTYPE)
    except (OverflowError, TypeError, ValueError):
        # One bad trade (an id beyond int64, a None price) must not sink the batch.
        good = []
        for row in rows:
            try:
                np.array([row], dtype=TRADE_DTYPE)
            except (OverflowError, TypeError, ValueError):
                log.warning("trade store: skipping a trade that does not fit the record: %r", row)
                continue
            good.append(row)
        return np.array(good, dtype=TRADE_DTYPE)


def _to_trades(symbol: str, arr: np.ndarray) -> list[Trade]:
    return [
        Trade(symbol, ts, price, size, side, None if tid == NO_TRADE_ID else tid, recv, in_bars)
        for ts, price, size, side, tid, in_bars, recv in arr.tolist()
    ]


class TradeStore:
    """Raw trades per symbol, appended in memory and flushed to disk in batches.

    Thread-safe: the engine appends and flushes; readers may load from other threads.

    Parameters
    ----------
    directory : str or os.PathLike
        Store directory (created if missing).
    batch_max_delay_s : float
        :meth:`flush_due` turns true this many seconds after trades started waiting.

    Raises
    ------
    diskcache / sqlite3 errors
        If the directory cannot be created or opened.
    """

    def __init__(self, directory: str | os.PathLike, *, batch_max_delay_s: float = 1.0) -> None:
        if not batch_max_delay_s >= 0:
            raise ValueError(f"batch_max_delay_s must be >= 0 seconds, not {batch_max_delay_s!r}")
        self.directory = os.fspath(directory)
        self.batch_max_delay_s = batch_max_delay_s
        self._cache = diskcache.Cache(
            self.directory,
            eviction_policy="none",  # never drop trades behind our back; prune() does
            disk_min_file_size=_MIN_FILE_SIZE,  # batches live in SQLite rows, no side files
            statistics=False,
        )
        self._lock = threading.RLock()  # guards everything below
        self._pending: dict[str, list[Trade]] = {}  # appended, not yet flushed
        self._n_pending = 0
        self._pending_since: float | None = None  # caller's clock, s (flush_due)
        self._meta: dict[str, dict] = {}  # cache of meta/<symbol>
        self._closed = False
        self._manifest = self._read_manifest()

    # -- writing -------------------------------------------------------------------------

    def append(self, trade: Trade) -> None:
        """Buffer one trade in memory; :meth:`flush` writes it. O(1), no I/O."""
        with self._lock:
            bucket = self._pending.get(trade.symbol)
            if bucket is None:
                bucket = self._pending[trade.symbol] = []
            bucket.append(trade)
            self._n_pending += 1

    def extend(self, trades: Iterable[Trade]) -> None:
        """Buffer many trades (see :meth:`append`)."""
        for t in trades:
            self.append(t)

    def flush_due(self, now_s: float) -> bool:
        """Return True when buffered trades have waited ``batch_max_delay_s`` or more.

        Parameters
        ----------
        now_s : float
            The caller's clock in seconds (e.g. ``time.monotonic()``); the wait is counted
            from the first call that saw trades buffered, so any steady clock works.
        """
        with self._lock:
            if not self._n_pending:
                self._pending_since = None
                return False
            if self._n_pending >= _MAX_BATCH_TRADES:
                return True
            if self._pending_since is None:
                self._pending_since = now_s
            return now_s - self._pending_since >= self.batch_max_delay_s

    def flush(self) -> int:
        """Write buffered trades, one batch per symbol, in one transaction.

        Returns
        -------
        int
            Trades written.

        Raises
        ------
        diskcache.Timeout, sqlite3.Error, OSError
            If the write failed; the trades stay buffered for the next flush.
        """
        with self._lock:
            if not self._n_pending:
                return 0
            if self._closed:
                raise StoreError(f"trade store {self.directory} is closed")
            pending, self._pending, n = self._pending, {}, self._n_pending
            self._n_pending, self._pending_since = 0, None
            try:
                # Packing is the costly part; do it before the transaction.
                blobs: list[tuple[str, list[tuple[bytes, int]]]] = []
                for symbol, trades in pending.items():
                    packed = []
                    for i in range(0, len(trades), _MAX_BATCH_TRADES):
                        arr = _to_array(trades[i:i + _MAX_BATCH_TRADES])
                        if len(arr):
                            packed.append((_pack(arr), len(arr)))
                    blobs.append((symbol, packed))
                with self._cache.transact():
                    manifest = self._read_manifest()
                    for symbol, packed in blobs:
                        entry = manifest["symbols"].setdefault(
                            symbol, {"first": 0, "next": 0, "count": 0, "bytes": 0})
                        for blob, count in packed:
                            self._cache.set(_batch_key(symbol, entry["next"]), blob)
                            entry["next"] += 1
                            entry["count"] += count
                            entry["bytes"] += len(blob)
                    self._write_manifest(manifest)
            except BaseException:
                # Nothing was committed: put the trades back in front of newer ones.
                for symbol, trades in pending.items():
                    self._pending[symbol] = trades + self._pending.get(symbol, [])
                self._n_pending += n
                raise
            self._manifest = manifest
            return n

    # -- reading -------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Return the symbols with stored or buffered trades, sorted."""
        with self._lock:
            names = {s for s, e in self._manifest["symbols"].items() if e["count"]}
            names.update(s for s, b in self._pending.items() if b)
            return sorted(names)

    def count(self, symbol: str) -> int:
        """Return the number of trades of ``symbol`` (stored plus buffered)."""
        with self._lock:
            entry = self._manifest["symbols"].get(symbol)
            return (entry["count"] if entry else 0) + len(self._pending.get(symbol, ()))

    def nbytes(self, symbol: str | None = None) -> int:
        """Return the bytes of stored trade batches of ``symbol`` (all symbols if None)."""
        with self._lock:
            entries = self._manifest["symbols"]
            if symbol is not None:
                return entries[symbol]["bytes"] if symbol in entries else 0
            return sum(e["bytes"] for e in entries.values())

    def load_arrays(self, symbol: str, *, since_ns: int | None = None,
                    limit: int | None = None) -> np.ndarray:
        """Return the trades of ``symbol`` as a ``TRADE_DTYPE`` array, in arrival order.

        The fast path for rebuilding bars: no ``Trade`` objects. Includes buffered trades.

        Parameters
        ----------
        symbol : str
            The symbol.
        since_ns : int, optional
            Keep only trades with ``ts_ns >= since_ns`` (exchange time, UTC ns).
        limit : int, optional
            Keep only the last ``limit`` trades (reads only the batches it needs).
        """
        with self._lock:
            entry = self._manifest["symbols"].get(symbol)
            first, nxt = (entry["first"], entry["next"]) if entry else (0, 0)
            tail = _to_array(self._pending.get(symbol, ()))
        parts = [tail[tail["ts_ns"] >= since_ns] if since_ns is not None else tail]
        have = len(parts[0])
        # Newest batch first, so that a limit stops early.
        for seq in range(nxt - 1, first - 1, -1):
            if limit is not None and have >= limit:
                break
            blob = self._cache.get(_batch_key(symbol, seq))
            if blob is None:  # pruned meanwhile
                continue
            arr = _unpack(blob)
            if since_ns is not None:
                arr = arr[arr["ts_ns"] >= since_ns]
            parts.append(arr)
            have += len(arr)
        parts.reverse()
        out = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        if limit is not None and len(out) > limit:
            out = out[len(out) - limit:]
        return out

    def load(self, symbol: str, *, since_ns: int | None = None,
             limit: int | None = None) -> list[Trade]:
        """Return the trades of ``symbol`` as ``Trade`` objects, in arrival order.

        Same parameters as :meth:`load_arrays`; ``recv_ns`` and ``in_bars`` round-trip.
        """
        return _to_trades(symbol, self.load_arrays(symbol, since_ns=since_ns, limit=limit))

    # -- retention -----------------------------------------------------------------------

    def prune(self, max_age_ns: int | None = None, max_bytes: int | None = None, *,
              now_ns: int | None = None) -> int:
        """Delete the oldest stored batches; return the number of trades deleted.

        Whole batches go, oldest first. Buffered trades are not touched.

        Parameters
        ----------
        max_age_ns : int, optional
            Delete batches whose newest trade is older than ``now_ns - max_age_ns``.
        max_bytes : int, optional
            Then delete the oldest batches (across symbols) until the stored batches total
            at most this many bytes. (The SQLite file reuses the space; it does not shrink.)
        now_ns : int, optional
            Reference time, UTC ns. Default: the newest exchange time in the store, so that
            a replayed session from last year is not wiped as "old".
        """
        removed = 0
        with self._lock, self._cache.transact():
            manifest = self._read_manifest()
            entries = manifest["symbols"]
            if max_age_ns is not None:
                ref = now_ns if now_ns is not None else self._newest_ts_ns(entries)
                if ref is not None:
                    cutoff = ref - max_age_ns
                    for symbol, entry in entries.items():
                        while entry["first"] < entry["next"]:
                            blob = self._cache.get(_batch_key(symbol, entry["first"]))
                            if blob is not None and _header(blob)[2] >= cutoff:
                                break
                            removed += self._drop_front(symbol, entry, blob)
            if max_bytes is not None:
                total = sum(e["bytes"] for e in entries.values())
                fronts = []  # (min ts_ns, symbol, blob) of each symbol's oldest batch
                for symbol, entry in entries.items():
                    self._push_front(fronts, symbol, entry)
                while total > max_bytes and fronts:
                    _, symbol, blob = heapq.heappop(fronts)
                    entry = entries[symbol]
                    before = entry["bytes"]
                    removed += self._drop_front(symbol, entry, blob)
                    total -= before - entry["bytes"]
                    self._push_front(fronts, symbol, entry)
            self._write_manifest(manifest)
            self._manifest = manifest
        return removed

    def _drop_front(self, symbol: str, entry: dict, blob: bytes | None) -> int:
        # Delete the oldest batch of a symbol and update its manifest entry.
        self._cache.delete(_batch_key(symbol, entry["first"]))
        entry["first"] += 1
        n = _header(blob)[0] if blob is not None else 0
        entry["count"] = max(0, entry["count"] - n)
        entry["bytes"] = max(0, entry["bytes"] - (len(blob) if blob is not None else 0))
        if entry["first"] >= entry["next"]:
            entry["count"] = entry["bytes"] = 0
        return n

    def _push_front(self, heap: list, symbol: str, entry: dict) -> None:
        while entry["first"] < entry["next"]:
            blob = self._cache.get(_batch_key(symbol, entry["first"]))
            if blob is None:  # missing: skip over it
                entry["first"] += 1
                continue
            heapq.heappush(heap, (_header(blob)[1], symbol, blob))
            return

    def _newest_ts_ns(self, entries: dict) -> int | None:
        newest = None
        for symbol, entry in entries.items():
            if entry["next"] > entry["first"]:
                blob = self._cache.get(_batch_key(symbol, entry["next"] - 1))
                if blob is not None:
                    hi = _header(blob)[2]
                    newest = hi if newest is None else max(newest, hi)
        for trades in self._pending.values():
            for t in trades:
                newest = t.ts_ns if newest is None else max(newest, t.ts_ns)
        return newest

    # -- metadata and bars ---------------------------------------------------------------

    def set_meta(self, symbol: str, meta: dict) -> None:
        """Store a small JSON-able dict for ``symbol`` (e.g. price/size decimals).

        Writes only when it changed, so calling it every flush is cheap.
        """
        meta = dict(meta)
        with self._lock:
            if self._meta.get(symbol) == meta:
                return
            self._cache.set(f"meta/{symbol}", json.dumps(meta, sort_keys=True))
            self._meta[symbol] = meta

    def get_meta(self, symbol: str) -> dict | None:
        """Return the dict stored by :meth:`set_meta`, or None."""
        with self._lock:
            if symbol in self._meta:
                return dict(self._meta[symbol])
            text = self._cache.get(f"meta/{symbol}")
            if text is None:
                return None
            self._meta[symbol] = json.loads(text)
            return dict(self._meta[symbol])

    def save_bars(self, symbol: str, spec: Any, bars: list[dict]) -> None:
        """Replace the stored closed bars of ``symbol`` for bar spec ``spec`` (e.g. ``"1m"``).

        ``bars`` are ``Bar.as_dict()``-like dicts of JSON values; floats round-trip exactly.
        """
        self._cache.set(f"bars/{symbol}/{spec}", json.dumps(list(bars)))

    def load_bars(self, symbol: str, spec: Any) -> list[dict]:
        """Return the bars saved for ``symbol`` and ``spec``, or an empty list."""
        text = self._cache.get(f"bars/{symbol}/{spec}")
        return json.loads(text) if text is not None else []

    # -- life cycle ----------------------------------------------------------------------

    def close(self, *, flush: bool = True) -> None:
        """Flush (unless ``flush=False``) and close the database. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if flush:
                    self.flush()
            finally:
                self._closed = True
                self._cache.close()

    def __enter__(self) -> "TradeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TradeStore({self.directory!r})"

    # -- manifest ------------------------------------------------------------------------

    def _read_manifest(self) -> dict:
        text = self._cache.get(_MANIFEST_KEY)
        if text is None:
            return {"version": 1, "symbols": {}}
        manifest = json.loads(text)
        if manifest.get("version") != 1:
            raise StoreError(f"{self.directory}: unknown store manifest version {manifest.get('version')!r}")
        return manifest

    def _write_manifest(self, manifest: dict) -> None:
        self._cache.set(_MANIFEST_KEY, json.dumps(manifest, sort_keys=True))
