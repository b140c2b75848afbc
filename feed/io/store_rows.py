"""The trade store's rows, read defensively: trade batches and small JSON values.

:class:`StoreRows` reads and writes the rows of one store database for
:class:`feed.io.store.TradeStore`. A trade batch that cannot be read (bad header,
truncated, wrong type, a refused pickle) yields None: it is logged once and counted in
:attr:`StoreRows.bad_batches`, so the caller skips it and loads the others. A damaged JSON
value (``meta/<symbol>``, ``bars/<symbol>/<spec>``) reads as absent, with a log line.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from typing import Any

import diskcache
import numpy as np

from feed.io.retention import BatchInfo
from feed.io.store_format import (
    PlainDisk,
    StoreCorrupt,
    batch_header,
    empty_manifest,
    parse_manifest,
    unpack_batch,
)

__all__ = ["StoreRows", "batch_key", "open_cache"]

log = logging.getLogger("tickscope.store")

_MANIFEST_KEY = "manifest"
_REMEDY = ("Move that directory away (or delete it if its history is not needed), "
           "or start tickscope with --data-dir pointing elsewhere.")


def open_cache(directory: str) -> diskcache.Cache:
    """Open the store database in ``directory`` with :class:`PlainDisk`.

    Raises
    ------
    StoreCorrupt
        If the file there is not a readable SQLite database; the message says what to do.
    """
    try:
        return diskcache.Cache(
            directory,
            disk=PlainDisk,  # plain values only: never unpickles
            eviction_policy="none",  # never drop trades behind the store's back; prune() does
            statistics=False,
        )
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"the trade store {directory} is not a readable database ({exc}). "
                           f"{_REMEDY}") from None


def batch_key(symbol: str, seq: int) -> str:
    """Return the key of batch ``seq`` of ``symbol``.

    Unambiguous although symbols may contain "/": the part after the last "/" is digits.
    """
    return f"trades/{symbol}/{seq}"


class StoreRows:
    """Rows of one store database (thread-safe).

    Parameters
    ----------
    cache : diskcache.Cache
        The open database (with ``feed.io.store_format.PlainDisk``).
    directory : str
        Named in log lines.
    """

    def __init__(self, cache: diskcache.Cache, directory: str) -> None:
        self.cache = cache
        self.directory = directory
        self._lock = threading.Lock()  # guards _bad and _meta
        self._bad: set[str] = set()  # keys of batches found unreadable
        self._meta: dict[str, dict] = {}  # cache of meta/<symbol>

    # -- trade batches -------------------------------------------------------------------

    @property
    def bad_batches(self) -> int:
        """Batches found unreadable so far, each counted once."""
        with self._lock:
            return len(self._bad)

    def read_batch(self, symbol: str, seq: int) -> np.ndarray | None:
        """Return the records of a batch; None when it is missing or unreadable."""
        key = batch_key(symbol, seq)
        try:
            blob = self.cache.get(key)
            return None if blob is None else unpack_batch(blob)
        except StoreCorrupt as exc:
            self._note_bad(key, exc)
            return None

    def batch_info(self, symbol: str, seq: int) -> BatchInfo | None:
        """Return what retention needs of a batch; None when missing, ``readable`` False
        when damaged."""
        key = batch_key(symbol, seq)
        blob = None
        try:
            blob = self.cache.get(key)
            if blob is None:
                return None
            n, lo, hi = batch_header(blob)
        except StoreCorrupt as exc:
            self._note_bad(key, exc)
            return BatchInfo(len(blob) if type(blob) is bytes else 0, 0, 0, 0, readable=False)
        return BatchInfo(len(blob), n, lo, hi)

    def drop_batch(self, symbol: str, seq: int) -> None:
        """Delete a batch (within the caller's transaction)."""
        key = batch_key(symbol, seq)
        self.cache.delete(key)
        with self._lock:
            self._bad.discard(key)

    def _note_bad(self, key: str, exc: Exception) -> None:
        with self._lock:
            if key in self._bad:
                return
            self._bad.add(key)
        log.warning("trade store %s: skipping unreadable batch %s: %s (the other batches load)",
                    self.directory, key, exc)

    # -- manifest ------------------------------------------------------------------------

    def read_manifest(self) -> dict:
        """Return the manifest (empty for a new store).

        Raises
        ------
        StoreCorrupt
            If it is damaged: naming the directory and what to do.
        """
        try:
            text = self.cache.get(_MANIFEST_KEY)
            return empty_manifest() if text is None else parse_manifest(text)
        except StoreCorrupt as exc:
            raise StoreCorrupt(f"the trade store {self.directory} is damaged: {exc}. {_REMEDY}") from None

    def write_manifest(self, manifest: dict) -> None:
        """Store ``manifest`` (within the caller's transaction)."""
        self.cache.set(_MANIFEST_KEY, json.dumps(manifest, sort_keys=True))

    # -- JSON values ---------------------------------------------------------------------

    def set_meta(self, symbol: str, meta: dict) -> None:
        """Store ``meta`` at ``meta/<symbol>`` unless it is unchanged."""
        meta = dict(meta)
        with self._lock:
            if self._meta.get(symbol) == meta:
                return
        self.cache.set(f"meta/{symbol}", json.dumps(meta, sort_keys=True))
        with self._lock:
            self._meta[symbol] = meta

    def get_meta(self, symbol: str) -> dict | None:
        """Return a copy of ``meta/<symbol>``; None when absent or unreadable."""
        with self._lock:
            if symbol in self._meta:
                return dict(self._meta[symbol])
        meta = self.read_json(f"meta/{symbol}", dict)
        if meta is None:
            return None
        with self._lock:
            self._meta[symbol] = meta
        return dict(meta)

    def read_json(self, key: str, kind: type) -> Any:
        """Return the JSON value of type ``kind`` at ``key``; None when absent or damaged
        (logged)."""
        try:
            text = self.cache.get(key)
            if text is None:
                return None
            if type(text) is not str:
                raise StoreCorrupt(f"a {type(text).__name__}, not JSON text")
            value = json.loads(text)
            if type(value) is not kind:
                raise StoreCorrupt(f"a JSON {type(value).__name__}, not a {kind.__name__}")
        except (StoreCorrupt, ValueError, RecursionError) as exc:
            log.warning("trade store %s: ignoring unreadable %s: %s", self.directory, key, exc)
            return None
        return value
