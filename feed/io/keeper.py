"""The store keeper: when the trade store and the recorder are flushed and pruned.

The engine worker appends trades to the store as they are applied (an in-memory append);
the keeper flushes the store and the recorder about once a second (``flush_every_s``: at
most about that much is lost to a kill -9) and runs a retention pass every
``prune_every_s`` (the first 5 s after start). It runs on the worker thread, outside the
engine lock, so readers never wait for SQLite. Failures are counted and logged
(rate-limited), never raised: trades stay buffered for the next flush (the store bounds
that buffer), and while flushes fail the store status says ``failing`` and health is
"degraded". Retention measures age from the wall clock (``time.time_ns()``), never from
stored trade times: a replayed session older than ``--retention-days`` is pruned too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from feed.core.config import EngineConfig
from feed.core.health import StoreStatus

__all__ = ["StoreKeeper"]

log = logging.getLogger("tickscope.engine")

_FIRST_PRUNE_S = 5.0  # seconds after start of the first retention pass


class StoreKeeper:
    """Flush and retention cadence of a trade store and a recorder (either may be None).

    Parameters
    ----------
    store : feed.io.store.TradeStore or None
    recorder : feed.io.recorder.Recorder or None
    config : EngineConfig
        ``flush_every_s``, ``prune_every_s``, ``retention_max_age_s``, ``retention_max_bytes``.
    """

    def __init__(self, store: Any, recorder: Any, config: EngineConfig) -> None:
        self.store = store
        self.recorder = recorder
        self.config = config
        now = time.monotonic()
        self._last_flush = now  # monotonic s of the last flush attempt
        self._last_good_flush: float | None = None  # monotonic s of the last good store flush
        self._next_prune = now + min(_FIRST_PRUNE_S, config.prune_every_s)
        self.errors = 0  # failed store flushes and retention passes
        self.failing = False  # the latest store flush failed
        self.pruned = 0  # trades removed by retention

    def flush_due(self, mono: float) -> bool:
        """Return True when a flush is due at monotonic time ``mono`` (seconds)."""
        return mono - self._last_flush >= self.config.flush_every_s

    def tick(self, mono: float, meta: list[tuple[str, dict]] | None) -> None:
        """Flush when ``meta`` (per-symbol decimals to store) is given; prune when due."""
        if meta is not None:
            self._last_flush = mono
            self._flush(meta, mono)
        if mono >= self._next_prune:
            self._next_prune = mono + self.config.prune_every_s
            self._prune()

    def save_subscribed(self, symbols: list[str]) -> None:
        """Store the subscribed ``symbols`` for the next start on this store (a restart
        subscribes them again); a failure is logged and counted, never raised."""
        if self.store is None:
            return
        try:
            self.store.set_subscribed(symbols)
        except Exception:
            self.errors += 1
            log.exception("could not save the subscribed symbols in the trade store")

    def close(self) -> None:
        """Flush what is buffered (on engine stop)."""
        if self.store is not None:
            try:
                self.store.flush()
            except Exception:
                log.exception("trade store flush failed on stop")
        if self.recorder is not None:
            self.recorder.flush()

    def status(self) -> StoreStatus | None:
        """Return the store's figures for ``/api/health``, or None without a store."""
        store = self.store
        if store is None:
            return None
        try:
            stored = store.nbytes()
        except Exception:
            stored = None
        last = self._last_good_flush
        return StoreStatus(
            directory=store.directory, bytes=stored,
            last_flush_age_s=None if last is None else round(time.monotonic() - last, 3),
            errors=self.errors, pruned_trades=self.pruned,
            retention_max_age_s=self.config.retention_max_age_s,
            retention_max_bytes=self.config.retention_max_bytes,
            failing=self.failing, unsaved_trades=store.unsaved,
            unsaved_dropped=store.unsaved_dropped, bad_batches=store.bad_batches,
        )

    def _flush(self, meta: list[tuple[str, dict]], mono: float) -> None:
        if self.store is not None:
            try:
                for symbol, m in meta:
                    self.store.set_meta(symbol, m)
                self.store.flush()
            except Exception:
                self.errors += 1
                if not self.failing or self.errors % 60 == 0:
                    log.exception("trade store flush failed (%d failures); unsaved trades stay buffered",
                                  self.errors)
                self.failing = True
            else:
                if self.failing:
                    log.warning("trade store flush works again (%d failures so far)", self.errors)
                self.failing = False
                self._last_good_flush = mono
        if self.recorder is not None:
            self.recorder.flush()

    def _prune(self) -> None:
        # One retention pass over the store (whole batches, oldest first).
        cfg = self.config
        if self.store is None or (cfg.retention_max_age_s is None and cfg.retention_max_bytes is None):
            return
        try:
            removed = self.store.prune(
                max_age_ns=None if cfg.retention_max_age_s is None else int(cfg.retention_max_age_s * 1e9),
                max_bytes=cfg.retention_max_bytes,
                now_ns=time.time_ns(),  # the wall clock, never a stored trade's time
            )
        except Exception:
            self.errors += 1
            log.exception("trade store retention pass failed")
            return
        if removed:
            self.pruned += removed
            log.info("retention: pruned %d stored trades", removed)
