"""Typed values that cross the boundaries between the feed, the engine and the market state.

Data flows one way (DESIGN.md): the feed client thread and the snapshot fetcher hand
*queue items* to a :class:`Sink` (the engine); the engine worker parses them and hands the
market state *inputs*; :meth:`feed.core.market.MarketState.apply` returns :class:`Effects`
that the engine carries out (fetch a snapshot, reconnect, fail, unsubscribe, persist). The
engine talks back to the connection only through the narrow :class:`FeedControl` protocol.

Queue items (producer threads -> engine queue)
    :class:`RawMessage`       one text/binary frame as received (``submit``)
    :class:`RejectedFrame`    a frame the client did not deliver (binary, too large)
    :class:`SnapshotBody`     a REST depth snapshot body
    :data:`ControlEvent`      connection life cycle: :class:`FeedOpened`, :class:`FeedClosed`,
                              :class:`FeedError`, :class:`SnapshotFailed`, :class:`SourceFinished`
    :class:`HistoryPage`      aggregate trades fetched from REST history for a
                              :class:`HistoryRequest` (backfill or gap repair)
    :class:`HistoryFailed`    a history request given up, with the reason
    :class:`HistoryKlines`    vendor 1m klines fetched over REST (verification)
    :class:`VendorCandles`    vendor 1m candles (TickDB seed) drawn apart from own bars

Market-state inputs (engine worker -> ``MarketState.apply``)
    :class:`Parsed`           the events of one raw message (``adapter.parse``)
    :class:`Malformed`        a message refused by the adapter or the client
    :class:`PlannedDisconnect` the vendor's notice of a planned disconnect
    :class:`SnapshotBody` and the :data:`ControlEvent` items, as queued

Every timestamp is an int of UTC nanoseconds (``recv_ns``: local receive time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Union

from feed.core.models import AggTrade, Event

__all__ = [
    "RawMessage", "RejectedFrame", "SnapshotBody", "FeedOpened", "FeedClosed", "FeedError",
    "SnapshotFailed", "SourceFinished", "ControlEvent", "QueueItem", "Parsed", "Malformed",
    "PlannedDisconnect", "MarketInput", "Effects", "FeedStatus", "Sink", "FeedControl",
    "HistoryRequest", "HistoryPage", "HistoryFailed", "HistoryKlines", "VendorCandles",
]


# -- queue items ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One frame as received from the vendor (or the embedded exchange).

    Parameters
    ----------
    recv_ns : int
        Local receive time, UTC ns.
    data : str or bytes
        The frame; bytes when the client skips UTF-8 validation.
    """

    recv_ns: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    """A frame the feed client did not deliver, counted as malformed under ``reason``.

    Parameters
    ----------
    recv_ns : int
        Local receive time, UTC ns.
    reason : str
        Counter key, ``"binary_frame"`` or ``"too_large"``.
    sample : str or bytes
        At most the first 120 characters of the frame, for the log.
    """

    recv_ns: int
    reason: str
    sample: str | bytes


@dataclass(frozen=True, slots=True)
class SnapshotBody:
    """A REST depth-snapshot response body for one symbol, not yet parsed."""

    recv_ns: int
    symbol: str
    body: bytes


@dataclass(frozen=True, slots=True)
class FeedOpened:
    """A connection opened; ``generation`` counts connections (1 = the first)."""

    recv_ns: int
    generation: int = 1


@dataclass(frozen=True, slots=True)
class FeedClosed:
    """A connection closed (``code``/``reason`` as the peer sent them, if any)."""

    recv_ns: int
    generation: int = 0
    code: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FeedError:
    """A connection failed. ``message`` is in words (no secrets); ``planned`` marks a
    reconnect the vendor announced, which is not shown as an error; ``fatal`` marks one
    that will not be retried; ``retry_in_s`` is the wait before the next attempt, seconds
    (None when fatal); ``stale`` marks a reconnect forced by the stale-feed watchdog."""

    recv_ns: int
    message: str
    generation: int = 0
    planned: bool = False
    fatal: bool = False
    retry_in_s: float | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotFailed:
    """A REST depth-snapshot request failed; ``status`` is the HTTP status if one came."""

    recv_ns: int
    symbol: str
    error: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class SourceFinished:
    """A replay source has played out."""

    recv_ns: int


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """Trades to fetch from the vendor's REST history (asked for by the market state).

    Parameters
    ----------
    kind : {"backfill", "repair", "tail", "klines"}
        Backfill before the first live trade, repair of a trade-id gap, the tail (every
        trade after the newest held, ids from ``lo_id`` on: asked when a replay source has
        played out, since trades published while the connection was down at its end are
        followed by no live trade whose id jump would reveal them), or the vendor's final
        1m klines of ``[start_ns, end_ns)`` (for verification; ids unused).
    symbol : str
    lo_id : int or None
        First trade id wanted; None for a backfill (bounded by ``start_ns`` instead).
    hi_id : int
        Last trade id wanted (the one before the first live trade, or before the gap's end).
    start_ns : int
        UTC ns: a backfill wants trades at or after it; a repair's missing trades are at
        or after it (the time of the trade before the gap).
    end_ns : int
        UTC ns of the trade after the range (the first live trade, or the one after the gap).
    """

    kind: str
    symbol: str
    lo_id: int | None
    hi_id: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of aggregate trades fetched for ``request`` (backfill pages come newest
    first, repair pages oldest first); ``done`` marks the last page. ``calls`` and
    ``weight`` are the REST calls made and the weight the vendor reported used
    (``X-MBX-USED-WEIGHT-1M``, None when absent) for this page."""

    recv_ns: int
    request: HistoryRequest
    rows: tuple[AggTrade, ...]
    done: bool = False
    calls: int = 1
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryKlines:
    """Final vendor 1m klines fetched over REST for ``symbol`` (closed minutes only)."""

    recv_ns: int
    symbol: str
    klines: tuple


@dataclass(frozen=True, slots=True)
class VendorCandles:
    """The vendor's own 1m candles for ``symbol`` (e.g. TickDB's REST klines) where no
    trade history exists; ``error`` in words when the seed failed (no candles then)."""

    recv_ns: int
    symbol: str
    klines: tuple
    error: str = ""


@dataclass(frozen=True, slots=True)
class HistoryFailed:
    """A history request given up (``error`` in words: endpoint down, history no longer
    served, rate-limit ban...); what was fetched before stays applied."""

    recv_ns: int
    request: HistoryRequest
    error: str


ControlEvent = Union[FeedOpened, FeedClosed, FeedError, SnapshotFailed, SourceFinished,
                     HistoryPage, HistoryFailed, HistoryKlines, VendorCandles]
QueueItem = Union[RawMessage, RejectedFrame, SnapshotBody, ControlEvent]


# -- market-state inputs -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """The events one raw message held (``adapter.parse``), in wire order."""

    recv_ns: int
    events: list[Event]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message refused as unusable: counted under ``reason``, logged with ``sample``."""

    recv_ns: int
    reason: str
    detail: str
    sample: str | bytes | None = None


@dataclass(frozen=True, slots=True)
class PlannedDisconnect:
    """The vendor announced a disconnect (Binance ``serverShutdown``): reconnect at once."""

    recv_ns: int
    detail: str


MarketInput = Union[Parsed, Malformed, PlannedDisconnect, SnapshotBody, ControlEvent]


# -- effects ---------------------------------------------------------------------------


@dataclass(slots=True)
class Effects:
    """What the market state asks its I/O shell to do after one ``apply``.

    Attributes
    ----------
    snapshots : list of (symbol, url)
        REST depth snapshots to fetch (already spaced per symbol).
    reconnect : str or None
        Reconnect now, planned (the vendor's notice, in words).
    fail : str or None
        Stop the feed for good with this message (a fatal vendor reply).
    unsubscribe : list of (symbol, reason)
        Symbols the vendor refused, to unsubscribe again.
    persist : list of Trade
        Trades applied, in order, for the trade store.
    inserted : list of Trade
        Trades REST history put in place this cycle (backfill, gap repair, tail), in the
        order inserted; each once (ids already held are never inserted). Not in
        ``persist``: the engine stores both; other consumers (a publisher) read both.
    malformed_logs : list of (reason, detail, sample)
        Rate-limited samples of malformed input to log (already redacted).
    snapshot_outcomes : list of (symbol, bool)
        Snapshot bodies applied: True when the book synced, False when the body was
        refused or too old (the fetcher backs that symbol off).
    history : list of HistoryRequest
        Trades to fetch from the vendor's REST history (backfill, gap repair).
    """

    snapshots: list[tuple[str, str]] = field(default_factory=list)
    reconnect: str | None = None
    fail: str | None = None
    unsubscribe: list[tuple[str, str]] = field(default_factory=list)
    persist: list = field(default_factory=list)
    inserted: list = field(default_factory=list)
    malformed_logs: list[tuple[str, str, str]] = field(default_factory=list)
    snapshot_outcomes: list[tuple[str, bool]] = field(default_factory=list)
    history: list[HistoryRequest] = field(default_factory=list)


# -- connection status and the two protocols --------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A snapshot of one feed connection for the status line and ``/api/health``.

    Times: ``*_s`` are seconds, ``*_ns`` UTC ns. ``state`` is the lower-case name of the
    client's state (connecting, authenticating, live, reconnecting, stale, failed, stopped).
    ``url`` carries no user info or tokens; ``last_error`` is in words, without secrets.
    """

    name: str
    state: str
    url: str = ""
    generation: int = 0
    reconnects: int = 0
    planned_reconnects: int = 0
    next_retry_in_s: float | None = None
    next_retry_at_ns: int | None = None
    last_retry_delay_s: float | None = None
    last_message_age_s: float | None = None
    connected_for_s: float | None = None
    stale_after_s: float | None = None
    last_error: str | None = None
    symbols: tuple[str, ...] = ()
    messages: int = 0
    binary_frames: int = 0
    oversize_frames: int = 0


class Sink(Protocol):
    """Where the feed client and the snapshot fetcher put what they receive.

    Every method is called from a producer thread and never blocks.
    """

    def submit(self, raw: str | bytes, recv_ns: int) -> bool:
        """Queue one raw frame; return False (counted as dropped) when the queue is full."""
        ...

    def submit_rejected(self, reason: str, sample: str | bytes, recv_ns: int) -> bool:
        """Queue a frame not delivered (binary, too large); False when the queue is full."""
        ...

    def submit_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> None:
        """Queue a REST depth-snapshot body; never dropped."""
        ...

    def submit_control(self, event: ControlEvent) -> None:
        """Queue a life-cycle event; never dropped, kept in order with the frames."""
        ...


class FeedControl(Protocol):
    """What the engine may ask of the connection (carried out by the client thread)."""

    def subscribe(self, symbols: list[str]) -> None:
        """Add symbols (normalised); raises ValueError with words for a refused list."""
        ...

    def unsubscribe(self, symbols: list[str]) -> None:
        """Remove symbols."""
        ...

    def reconnect(self, reason: str = "reconnect requested", *, planned: bool = False) -> None:
        """Close the connection and open a new one (at once when ``planned``)."""
        ...

    def fail(self, message: str) -> None:
        """Stop for good and show ``message`` (a refusal retrying cannot fix)."""
        ...

    def status(self) -> FeedStatus:
        """Return the connection's :class:`FeedStatus`."""
        ...
