"""Typed status values and the pure function that builds the ``/api/health`` body.

The engine gathers a :class:`Status` (market state figures plus its own queue and feed
readings) under its lock; the dashboard reads it for the status line and
:func:`health_json` turns it into the JSON body of ``GET /api/health``. Nothing here reads a
clock: ages and times are computed by the caller and passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from feed.core.events import FeedStatus
from feed.core.models import iso_ms

__all__ = ["Counters", "SymbolStatus", "StoreStatus", "Status", "health_state", "health_json",
           "iso_or_none", "degraded_reasons", "DEGRADED_FOR_S", "UNSYNCED_DEGRADED_S", "BOOK_NOT_RECORDED"]

#: Seconds health stays "degraded" after the last message dropped on a full queue.
DEGRADED_FOR_S = 60.0
#: Seconds a book may buffer depth without a usable snapshot before health is "degraded"
#: (a snapshot normally arrives within a second or two; retries back off to minutes).
UNSYNCED_DEGRADED_S = 30.0
#: ``SymbolStatus.book_absent`` of a replayed symbol whose recording holds no book.
BOOK_NOT_RECORDED = "no order book in the recording"


def iso_or_none(ts_ns: int | None) -> str | None:
    """Return UTC ns as ISO-8601 with milliseconds and ``Z`` (``iso_ms``), None for None."""
    return None if ts_ns is None else iso_ms(ts_ns)


@dataclass(frozen=True, slots=True)
class Counters:
    """The health counters (all counts since start).

    ``messages`` taken off the queue (malformed included), ``trades`` applied,
    ``malformed`` (all reasons), ``dropped`` (queue full), ``reconnects`` (connections
    re-opened), ``gaps`` (trades missing across trade-id jumps), ``late`` (trades too late
    for their time bar, worst series per symbol), ``duplicates`` (trade ids already seen,
    skipped) and ``server_shutdowns`` (planned-disconnect notices). With REST history,
    ``gaps`` counts the trades still missing, ``repaired`` those recovered into gaps and
    ``backfilled`` those fetched at start (exchange trades: an aggregate trade a..l counts
    l - f + 1).
    """

    messages: int = 0
    trades: int = 0
    malformed: int = 0
    dropped: int = 0
    reconnects: int = 0
    gaps: int = 0
    late: int = 0
    duplicates: int = 0
    server_shutdowns: int = 0
    repaired: int = 0
    backfilled: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict (the ``counters`` object of the health JSON)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SymbolStatus:
    """One symbol's figures: trades applied, newest trade time (UTC ns), book state and
    trade-id gaps (``gaps`` trades missing over ``gap_events`` jumps). ``book_unsynced_s``:
    seconds the book has buffered depth without a usable snapshot (None: not waiting).
    ``book_absent``: why the symbol has no book to keep, in words (``"no order book in the
    recording"``: a replayed recording of its trades only); None while a book is kept.
    An absent book is a fact of the source, not a fault: it never degrades health."""

    trades: int = 0
    last_trade_ts_ns: int | None = None
    book_synced: bool = False
    gaps: int = 0
    gap_events: int = 0
    book_resyncs: int = 0
    book_sequence_gaps: int = 0
    book_crossed: int = 0
    book_unsynced_s: float | None = None
    book_absent: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the symbol's object of the health JSON (``last_trade_ts`` as ISO-8601)."""
        out = asdict(self)
        out = {"trades": out.pop("trades"), "last_trade_ts": iso_or_none(out.pop("last_trade_ts_ns")), **out}
        return out


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """The trade store's figures.

    Attributes
    ----------
    directory : str or None
    bytes : int or None
        Bytes of stored trade batches.
    last_flush_age_s : float or None
        Seconds since the last good flush; None before one.
    errors : int
        Failed flushes and retention passes since start.
    pruned_trades : int
        Trades deleted by retention since start.
    retention_max_age_s, retention_max_bytes : float or None, int or None
        The retention limits (seconds, bytes); None: no limit.
    failing : bool
        The latest flush failed (e.g. disk full): new trades are not being saved.
        Health is "degraded" while it is true.
    unsaved_trades : int
        Trades waiting in memory for a flush.
    unsaved_dropped : int
        Trades dropped unsaved from a full write buffer while flushes failed.
    bad_batches : int
        Stored batches found unreadable and skipped (the others load).
    """

    directory: str | None
    bytes: int | None
    last_flush_age_s: float | None
    errors: int
    pruned_trades: int
    retention_max_age_s: float | None
    retention_max_bytes: int | None
    failing: bool = False
    unsaved_trades: int = 0
    unsaved_dropped: int = 0
    bad_batches: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    """What the status line and ``/api/health`` show.

    Attributes
    ----------
    state : str
        The feed's state (connecting, authenticating, live, reconnecting, stale, failed,
        stopped) or ``replay-finished``.
    detail : str
        Why, in words (e.g. "next retry in 2.0 s (...)").
    messages_per_s : float
    queue_depth : int
    counters : Counters
    symbols : mapping of str to SymbolStatus
        In subscription order.
    clock_ns : int
        The engine clock, UTC ns.
    errors : tuple of str
        The vendor's last refusals, in words, newest last.
    degraded : bool
        Messages were dropped recently (queue full).
    feed : FeedStatus or None
        The connection, when there is one.
    vendor : str or None
        The adapter's name.
    kline_check : dict or None
        Per symbol results of the kline cross-check (``KlineChecker.results``); None when off.
    malformed_by_reason : mapping of str to int
    store : StoreStatus or None
    recorder : dict or None
        ``Recorder.stats()``.
    history : dict or None
        REST history progress (``feed.core.history.HistoryLedger.as_json``); None when off.
    """

    state: str
    detail: str = ""
    messages_per_s: float = 0.0
    queue_depth: int = 0
    counters: Counters = field(default_factory=Counters)
    symbols: Mapping[str, SymbolStatus] = field(default_factory=dict)
    clock_ns: int = 0
    errors: tuple[str, ...] = ()
    degraded: bool = False
    feed: FeedStatus | None = None
    vendor: str | None = None
    kline_check: dict | None = None
    malformed_by_reason: Mapping[str, int] = field(default_factory=dict)
    store: StoreStatus | None = None
    recorder: dict | None = None
    history: dict | None = None


def health_state(status: Status) -> str:
    """Return ``"down"`` when failed or stopped; ``"ok"`` when live (or the replay finished),
    nothing was dropped recently, the trade store is saving and no book has waited
    :data:`UNSYNCED_DEGRADED_S` for a snapshot; else ``"degraded"``."""
    if status.state in ("failed", "stopped"):
        return "down"
    store_failing = status.store is not None and status.store.failing
    if (status.state in ("live", "replay-finished") and not status.degraded and not store_failing
            and not degraded_reasons(status)):
        return "ok"
    return "degraded"


def degraded_reasons(status: Status) -> list[str]:
    """Return what degrades health besides the feed state, in words
    (``"BTCUSDT: book unsynced for 42 s"``)."""
    return [f"{symbol}: book unsynced for {s.book_unsynced_s:.0f} s"
            for symbol, s in status.symbols.items()
            if s.book_unsynced_s is not None and s.book_unsynced_s >= UNSYNCED_DEGRADED_S]


_FEED_KEYS = ("url", "generation", "reconnects", "planned_reconnects", "next_retry_in_s",
              "last_retry_delay_s", "last_message_age_s", "connected_for_s", "stale_after_s",
              "binary_frames", "oversize_frames")


def health_json(status: Status) -> dict[str, Any]:
    """Return the JSON body of ``GET /api/health`` for ``status``.

    Shape::

        {"status": "ok" | "degraded" | "down",
         "counters": {"messages", "trades", "malformed", "dropped", "reconnects", "gaps",
                      "late", "duplicates", "server_shutdowns", "repaired", "backfilled"},
         "queue_depth": int,
         "symbols": {"BTCUSDT": {"trades": int, "last_trade_ts": ISO-8601 or null, ...}},
         "feed": {"state", "detail", "messages_per_s", "url", "generation", ...},
         "malformed_by_reason": {...}, "clock": ISO-8601, "store": {...} or null,
         "reasons": ["BTCUSDT: book unsynced for 42 s", ...],
         "recorder": {...} or null, "vendor": str, "errors": [...], "kline_check": ...}
         "recorder": {...} or null, "vendor": str, "errors": [...], "kline_check": ...,
         "history": {"backfilled", "repaired", "calls", "backfill": {symbol: progress},
                     "repairs_fetching", "unrepaired": [...]} or null}
    """
    feed: dict[str, Any] = {"state": status.state, "detail": status.detail,
                            "messages_per_s": round(status.messages_per_s, 1)}
    if status.feed is not None:
        fs = status.feed
        for key in _FEED_KEYS:
            value = getattr(fs, key)
            feed[key] = round(value, 3) if isinstance(value, float) else value
        feed["next_retry_at"] = iso_or_none(fs.next_retry_at_ns)
    return {
        "status": health_state(status),
        "counters": status.counters.as_dict(),
        "queue_depth": status.queue_depth,
        "symbols": {s: v.as_json() for s, v in status.symbols.items()},
        "feed": feed,
        "malformed_by_reason": dict(status.malformed_by_reason),
        "clock": iso_or_none(status.clock_ns),
        "store": asdict(status.store) if status.store is not None else None,
        "recorder": status.recorder,
        "vendor": status.vendor,
        "errors": list(status.errors),
        "kline_check": status.kline_check,
        "reasons": degraded_reasons(status),
        "history": status.history,
    }
