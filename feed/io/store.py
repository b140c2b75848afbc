"""Persistence of raw trades (and closed bars) per symbol, on diskcache.

Raw trades are kept, not just bars, so that a restart keeps history and any bar type can
be rebuilt from it. The engine appends every trade (cheap: an append in memory) and the
store keeper calls :meth:`TradeStore.flush` about once a second, which writes what was
appended as one compact batch per symbol.

On disk (one diskcache directory, i.e. one SQLite database in WAL mode)
-----------------------------------------------------------------------
=========================  ==============================================================
key                        value
=========================  ==============================================================
``trades/<symbol>/<seq>``  one batch (bytes, ``feed.io.store_format``: a 28-byte header
                           and ``TRADE_DTYPE`` records, 46 bytes a trade, in
                           arrival order: live trades, and history (backfill, gap
                           repair) when it was put in place)
``manifest``               JSON ``{"version": 1, "symbols": {symbol: {"first", "next",
                           "count", "bytes"}}}``: the live batch numbers are
                           ``first <= seq < next``, in arrival order
``meta/<symbol>``          JSON object (price/size decimals, ...)
``bars/<symbol>/<spec>``   JSON list of closed-bar dicts
``subscribed``             JSON list of the symbols subscribed when last saved (restored
                           on the next start of the same source)
=========================  ==============================================================

Plus ``tickscope.lock`` (``feed.io.dirlock``): one process owns a directory at a time; a
second :class:`TradeStore` on it raises :class:`StoreLocked`.

Atomicity: a flush writes its batches and the updated manifest in one SQLite transaction
(``Cache.transact``), so a process killed at any moment (kill -9) leaves either the whole
flush or none of it; it loses at most the trades appended since the last flush and never
leaves a half-written batch. diskcache's own eviction is off: retention is
:meth:`TradeStore.prune`, explicit and whole batches at a time.

Hostile or damaged contents
---------------------------
Values are stored and read as plain bytes, str, int and float only (``PlainDisk``):
nothing in the directory is ever unpickled. A batch that cannot be read (bad header,
truncated, wrong type, refused) is skipped, logged once and counted in
:attr:`TradeStore.bad_batches`; the symbol's other batches load. A damaged manifest or
database raises :class:`StoreCorrupt` on opening, saying what to do; a damaged
``meta/<symbol>`` is ignored with a log line (the decimals are recomputed).

Bounded memory: while flushes fail (disk full), at most ``max_pending_trades`` trades per
symbol wait in memory; beyond that the oldest unsaved ones are dropped and counted in
:attr:`TradeStore.unsaved_dropped`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import diskcache
import numpy as np

from feed.core.models import Trade
from feed.io.dirlock import DirLock
from feed.io.retention import prune_by_age, prune_by_bytes
from feed.io.store_format import (
    NO_TRADE_ID,
    TRADE_DTYPE,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    pack_trades,
    to_array,
    to_trades,
)
from feed.io.store_rows import StoreRows, batch_key, open_cache
from feed.io.writebuffer import WriteBuffer

__all__ = ["TRADE_DTYPE", "NO_TRADE_ID", "TradeStore", "StoreError", "StoreLocked", "StoreCorrupt"]

log = logging.getLogger("tickscope.store")

_MAX_BATCH_TRADES = 100_000  # ~4 MB; a flush splits anything larger
_SUBSCRIBED_KEY = "subscribed"
_MAX_SUBSCRIBED = 1000  # symbols restored at most (a damaged list cannot flood the vendor)
_LAST_SCAN = 10_000  # stored trades read for the newest one (history may be stored after it)


class TradeStore:
    """Raw trades per symbol, appended in memory and flushed to disk in batches.

    Thread-safe: the engine appends and flushes; readers may load from other threads.

    Parameters
    ----------
    directory : str or os.PathLike
        Store directory (created if missing); this store owns it until :meth:`close`.
    batch_max_delay_s : float
        :meth:`flush_due` turns true this many seconds after trades started waiting.
    max_pending_trades : int
        Unsaved trades kept in memory per symbol while flushes fail; the oldest beyond it
        are dropped and counted in :attr:`unsaved_dropped`.

    Raises
    ------
    StoreLocked
        If another process (or another open store) owns the directory.
    StoreCorrupt
        If the database or its manifest is damaged; the message says what to do.
    OSError, sqlite3.Error
        If the directory cannot be created or opened.
    """

    def __init__(self, directory: str | os.PathLike, *, batch_max_delay_s: float = 1.0,
                 max_pending_trades: int = 200_000) -> None:
        if not batch_max_delay_s >= 0:
            raise ValueError(f"batch_max_delay_s must be >= 0 seconds, not {batch_max_delay_s!r}")
        self.directory = os.fspath(directory)
        self.batch_max_delay_s = batch_max_delay_s
        self._lock = threading.RLock()  # guards everything below
        self._pending = WriteBuffer(max_pending_trades, self.directory)  # appended, not yet flushed
        self._closed = False
        self._subscribed: list[str] | None = None  # last list written by set_subscribed
        os.makedirs(self.directory, exist_ok=True)
        self._dirlock = DirLock(self.directory)
        self._cache: diskcache.Cache | None = None
        try:
            self._cache = open_cache(self.directory)
            self._rows = StoreRows(self._cache, self.directory)  # batches, manifest, JSON values
            self._manifest = self._rows.read_manifest()
        except BaseException:
            if self._cache is not None:
                self._cache.close()
            self._dirlock.release()
            raise

    # -- writing -------------------------------------------------------------------------

    def append(self, trade: Trade) -> None:
        """Buffer one trade in memory; :meth:`flush` writes it. O(1), no I/O.

        When ``max_pending_trades`` of its symbol already wait, the oldest is dropped.
        """
        with self._lock:
            self._pending.append(trade)

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
            waited = self._pending.waited(now_s)
            if waited is None:
                return False
            return len(self._pending) >= _MAX_BATCH_TRADES or waited >= self.batch_max_delay_s

    def flush(self) -> int:
        """Write buffered trades, one batch per symbol, in one transaction.

        Returns
        -------
        int
            Trades written.

        Raises
        ------
        StoreError
            If the store is closed.
        diskcache.Timeout, sqlite3.Error, OSError
            If the write failed; the trades stay buffered (up to ``max_pending_trades``
            per symbol) for the next flush.
        """
        with self._lock:
            n = len(self._pending)
            if not n:
                return 0
            if self._closed:
                raise StoreError(f"trade store {self.directory} is closed")
            pending = self._pending.take()
            try:
                blobs = [(symbol, pack_trades(trades, _MAX_BATCH_TRADES)) for symbol, trades in pending.items()]
                with self._cache.transact():
                    manifest = self._rows.read_manifest()
                    for symbol, packed in blobs:
                        entry = manifest["symbols"].setdefault(
                            symbol, {"first": 0, "next": 0, "count": 0, "bytes": 0})
                        for blob, count in packed:
                            self._cache.set(batch_key(symbol, entry["next"]), blob)
                            entry["next"] += 1
                            entry["count"] += count
                            entry["bytes"] += len(blob)
                    self._rows.write_manifest(manifest)
            except BaseException:
                self._pending.put_back(pending)  # nothing was committed
                raise
            self._manifest = manifest
            return n

    # -- reading -------------------------------------------------------------------------

    @property
    def bad_batches(self) -> int:
        """Stored batches found unreadable so far (each counted once; skipped on load)."""
        return self._rows.bad_batches

    @property
    def unsaved(self) -> int:
        """Trades buffered in memory, not yet written."""
        with self._lock:
            return len(self._pending)

    @property
    def unsaved_dropped(self) -> int:
        """Trades dropped unsaved from a full write buffer (``max_pending_trades``)."""
        with self._lock:
            return self._pending.dropped

    def symbols(self) -> list[str]:
        """Return the symbols with stored or buffered trades, sorted."""
        with self._lock:
            names = {s for s, e in self._manifest["symbols"].items() if e["count"]}
            names.update(self._pending.symbols())
            return sorted(names)

    def count(self, symbol: str) -> int:
        """Return the number of trades of ``symbol`` (stored, as the manifest counts them,
        plus buffered)."""
        with self._lock:
            entry = self._manifest["symbols"].get(symbol)
            return (entry["count"] if entry else 0) + len(self._pending.of(symbol))

    def nbytes(self, symbol: str | None = None) -> int:
        """Return the bytes of stored trade batches of ``symbol`` (all symbols if None)."""
        with self._lock:
            entries = self._manifest["symbols"]
            if symbol is not None:
                return entries[symbol]["bytes"] if symbol in entries else 0
            return sum(e["bytes"] for e in entries.values())

    def load_arrays(self, symbol: str, *, since_ns: int | None = None,
                    limit: int | None = None) -> np.ndarray:
        """Return the trades of ``symbol`` as a ``TRADE_DTYPE`` array, in arrival order --
        except that trades put in place by REST history (backfill, gap repair: ``recv_ns``
        0), stored after newer live ones, are returned in trade-id order among them, each
        id once (so bars built from the array equal the repaired bars, none late).

        The fast path for rebuilding bars: no ``Trade`` objects. Includes buffered trades.
        Unreadable batches are skipped (see :attr:`bad_batches`).

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
            tail = to_array(self._pending.of(symbol))
        parts = [tail[tail["ts_ns"] >= since_ns] if since_ns is not None else tail]
        have = len(parts[0])
        # Newest batch first, so that a limit stops early.
        for seq in range(nxt - 1, first - 1, -1):
            if limit is not None and have >= limit:
                break
            arr = self._rows.read_batch(symbol, seq)
            if arr is None:  # pruned meanwhile, or unreadable
                continue
            if since_ns is not None:
                arr = arr[arr["ts_ns"] >= since_ns]
            parts.append(arr)
            have += len(arr)
        parts.reverse()
        out = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        if limit is not None and len(out) > limit:
            out = out[len(out) - limit:]
        return _history_in_place(out)

    def load(self, symbol: str, *, since_ns: int | None = None,
             limit: int | None = None) -> list[Trade]:
        """Return the trades of ``symbol`` as ``Trade`` objects, in arrival order.

        Same parameters as :meth:`load_arrays`; ``recv_ns`` and ``in_bars`` round-trip.
        """
        return to_trades(symbol, self.load_arrays(symbol, since_ns=since_ns, limit=limit))

    # -- retention -----------------------------------------------------------------------

    def prune(self, max_age_ns: int | None = None, max_bytes: int | None = None, *,
              now_ns: int | None = None) -> int:
        """Delete the oldest stored batches; return the number of trades deleted.

        Whole batches go, oldest first (``feed.io.retention`` has the rules, unreadable
        batches included). Buffered trades are not touched.

        Parameters
        ----------
        max_age_ns : int, optional
            Delete batches whose newest trade (exchange time) is older than
            ``now_ns - max_age_ns``.
        max_bytes : int, optional
            Then delete the oldest batches (across symbols) until the stored batches total
            at most this many bytes. (The SQLite file reuses the space; it does not shrink.)
        now_ns : int
            The wall clock, UTC ns (``time.time_ns()``); required with ``max_age_ns``. Age
            is never measured from stored trade times, which a single bad trade could set.

        Raises
        ------
        ValueError
            If ``max_age_ns`` is given without ``now_ns``.
        """
        if max_age_ns is not None and now_ns is None:
            raise ValueError("prune(max_age_ns=...) needs now_ns, the wall clock in UTC ns")
        removed, rows = 0, self._rows
        with self._lock, self._cache.transact():
            manifest = self._rows.read_manifest()
            entries = manifest["symbols"]
            if max_age_ns is not None:
                removed += prune_by_age(entries, rows.batch_info, rows.drop_batch, now_ns - max_age_ns)
            if max_bytes is not None:
                removed += prune_by_bytes(entries, rows.batch_info, rows.drop_batch, max_bytes)
            self._rows.write_manifest(manifest)
            self._manifest = manifest
        return removed

    # -- metadata and bars ---------------------------------------------------------------

    def set_meta(self, symbol: str, meta: dict) -> None:
        """Store a small JSON-able dict for ``symbol`` (e.g. price/size decimals).

        Writes only when it changed, so calling it every flush is cheap.
        """
        with self._lock:
            self._rows.set_meta(symbol, meta)

    def get_meta(self, symbol: str) -> dict | None:
        """Return the dict stored by :meth:`set_meta`; None when there is none or it is
        unreadable (logged: the caller recomputes it)."""
        return self._rows.get_meta(symbol)

    def save_bars(self, symbol: str, spec: Any, bars: list[dict]) -> None:
        """Replace the stored closed bars of ``symbol`` for bar spec ``spec`` (e.g. ``"1m"``).

        ``bars`` are ``Bar.as_dict()``-like dicts of JSON values; floats round-trip exactly.
        """
        self._cache.set(f"bars/{symbol}/{spec}", json.dumps(list(bars)))

    def load_bars(self, symbol: str, spec: Any) -> list[dict]:
        """Return the bars saved for ``symbol`` and ``spec``; empty when none or unreadable."""
        bars = self._rows.read_json(f"bars/{symbol}/{spec}", list)
        return bars if bars is not None and all(type(b) is dict for b in bars) else []

    # -- what a restart continues from ----------------------------------------------------

    def set_subscribed(self, symbols: Iterable[str]) -> None:
        """Store the symbols subscribed now (normalised, in subscription order), so that the
        next start on this directory subscribes them again. Writes only when they changed.

        Raises
        ------
        diskcache.Timeout, sqlite3.Error, OSError
            If the write failed.
        """
        names = [str(s) for s in symbols]
        with self._lock:
            if self._closed or names == self._subscribed:
                return
            self._cache.set(_SUBSCRIBED_KEY, json.dumps(names))
            self._subscribed = names

    def subscribed(self) -> list[str]:
        """Return the symbols stored by :meth:`set_subscribed` (empty when none or
        unreadable; a damaged value is logged and ignored, never trusted)."""
        names = self._rows.read_json(_SUBSCRIBED_KEY, list)
        if names is None:
            return []
        # Bounded and typed: the caller still checks each symbol with the vendor's rules.
        return [s for s in names[:_MAX_SUBSCRIBED] if type(s) is str and 0 < len(s) <= 64]

    def last_trade(self, symbol: str) -> tuple[int, float, int | None] | None:
        """Return ``(ts_ns, price, trade_id)`` of the newest stored or buffered trade of
        ``symbol`` (exchange time UTC ns, quote currency, vendor id or None), or None when
        there is none. Reads the newest few batches only: history put in place (older
        trades) may have been stored last, so the newest by trade id among the last
        ``_LAST_SCAN`` stored wins."""
        arr = self.load_arrays(symbol, limit=_LAST_SCAN)  # in id order when history is among them
        if not len(arr):
            return None
        row = arr[-1]
        tid = int(row["trade_id"])
        return int(row["ts_ns"]), float(row["price"]), None if tid == NO_TRADE_ID else tid

    # -- life cycle ----------------------------------------------------------------------

    def close(self, *, flush: bool = True) -> None:
        """Flush (unless ``flush=False``), close the database and release the directory.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if flush:
                    self.flush()
            finally:
                self._closed = True
                try:
                    self._cache.close()
                finally:
                    self._dirlock.release()

    def __enter__(self) -> "TradeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TradeStore({self.directory!r})"


def _history_in_place(arr: np.ndarray) -> np.ndarray:
    # History arrives after newer live trades; with ids on every trade (a vendor with
    # consecutive ids) id order is the tape's order. Without history, arrival order stays.
    if not len(arr) or not (arr["recv_ns"] == 0).any():
        return arr
    ids = arr["trade_id"]
    if (ids == NO_TRADE_ID).any() or not (ids[1:] <= ids[:-1]).any():  # no id, or in order already
        return arr
    order = np.argsort(ids, kind="stable")
    arr = arr[order]
    first = np.ones(len(arr), bool)
    first[1:] = arr["trade_id"][1:] != arr["trade_id"][:-1]  # the first stored copy of an id
    return arr[first]
