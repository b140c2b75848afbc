"""Local order book rebuilt from a snapshot plus sequenced diff-depth events.

The book is pure: no threads, no I/O, no clock. The engine worker is its only writer;
readers on other threads take an immutable copy with :meth:`OrderBook.copy_levels`.

Sequencing rules (Binance "How to manage a local order book correctly")
-----------------------------------------------------------------------
Spot (binance-spot-api-docs ``web-socket-streams.md``), events without ``pu``:

1. Before a snapshot, buffer diff events.
2. On a REST snapshot with id ``lastUpdateId``: drop buffered events with
   ``u <= lastUpdateId``. The first remaining event must satisfy
   ``U <= lastUpdateId + 1 <= u``; if it starts later (``U > lastUpdateId + 1``) the
   snapshot is too old: fetch another one.
3. Book := snapshot, book id := ``lastUpdateId``. For each further event: ignore it if
   ``u <= book id`` (already contained); if ``U > book id + 1`` events were lost: discard
   the book and start again from 1. Normally ``U == previous u + 1``. Set every level's
   size (0 deletes it), then book id := ``u``.

USD-M / COIN-M futures (developers.binance.com ``.../websocket-market-streams/
How-to-manage-a-local-order-book-correctly``), events with ``pu`` (the previous event's
``u``):

1. Buffer as above.
2. Drop buffered events with ``u < lastUpdateId``; the first processed event must have
   ``U <= lastUpdateId <= u``; otherwise the snapshot is too old.
3. Every following event must have ``pu == previous u``; otherwise start again from the
   snapshot. (Futures update ids are not contiguous, so ``U == u + 1`` does not hold there.)

On top of the vendor rules, a book that ends an event crossed (best bid >= best ask) is
inconsistent and is resynced the same way (counted in ``crossed_resyncs``). Partial
snapshots (``BookSnapshot.is_partial``: Binance ``@depth5/10/20``, AllTick, iTick) replace
the book wholesale and are not sequenced.

Data structure
--------------
Each side is a dict ``price -> size`` plus a binary heap of prices with lazy deletion
(stale heap entries are popped when they surface, and the heap is rebuilt when stale
entries outnumber live ones). A level update is O(1) (plus O(log n) for a new price),
the best level is amortised O(1), and the top N levels cost O(n log N) on read, which
suits thousands of writes per second against a few reads per second.
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush

from feed.core.models import BookDelta, BookSnapshot

__all__ = ["OrderBook"]

Level = tuple[float, float]

# Rebuild a side's heap once it holds this many more entries than the side has levels.
_HEAP_SLACK = 1024


def _top(heap: list[float], side: dict[float, float], n: int, sign: float) -> list[Level]:
    # Pop a copy of the side's heap until n live levels are found: O(len) for the copy
    # (a C memcpy) plus O(log len) per entry passed, live or stale (stale entries cluster
    # near the touch, ~3 per live level on BTCUSDT: ~0.25 ms for 100 levels of a
    # 5,000-level side). A price can sit in the heap twice (re-added after a delete);
    # equal keys pop together.
    h = heap[:]
    out: list[Level] = []
    last = None
    while h and len(out) < n:
        key = heappop(h)
        if key == last:
            continue
        last = key
        price = sign * key
        size = side.get(price)
        if size is not None:
            out.append((price, size))
    return out


class OrderBook:
    """A sequence-checked local order book for one symbol.

    Parameters
    ----------
    symbol : str
        Upper-case symbol; events for another symbol raise ValueError.
    max_buffer : int, default 10_000
        Most diff events held while waiting for a snapshot. When full, the oldest event is
        dropped (counted in ``buffer_overflows``); the snapshot check then finds the hole and
        asks for a newer snapshot if needed.

    Notes
    -----
    States: a new book ``needs_snapshot`` and buffers diffs. A full snapshot that bridges
    the buffer makes it ``synced``; a sequence gap or a crossed book clears it and it
    buffers again from the offending event. Prices are in quote currency, sizes in base
    units, times in UTC nanoseconds.
    """

    def __init__(self, symbol: str, *, max_buffer: int = 10_000) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, not {max_buffer}")
        self.symbol = symbol
        self.max_buffer = max_buffer
        # price -> size per side; the truth of the book.
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        # Heaps of prices (bids negated) for the best level; may hold deleted prices.
        self._bid_heap: list[float] = []
        self._ask_heap: list[float] = []
        # Diff events waiting for a snapshot, oldest first.
        self._buffer: deque[BookDelta] = deque()
        self._needs_snapshot = True
        # Update id the book reflects (snapshot lastUpdateId, then each applied u).
        self._last_update_id: int | None = None
        # True between a full snapshot and the first diff applied on top of it, whose
        # check is the "straddle" rule rather than continuity.
        self._first_pending = False
        # Full snapshots accepted so far (the first is the initial sync).
        self._snapshots_applied = 0
        #: Exchange time of the last change, UTC ns (0 until known).
        self.ts_ns = 0
        #: Diff events that broke the sequence (each forces a new snapshot).
        self.sequence_gaps = 0
        #: Times the book ended an event crossed and was resynced.
        self.crossed_resyncs = 0
        #: Full snapshots refused as older than the buffered events or the synced book.
        self.stale_snapshots = 0
        #: Buffered events dropped because the buffer was full.
        self.buffer_overflows = 0
        #: Events ignored because the book already contained them (u <= book id).
        self.stale_events = 0
        #: Diff events applied to a synced book.
        self.applied_events = 0
        #: Why the book last lost sync, fit for a log line or a status tooltip.
        self.last_problem = ""

    # -- state -----------------------------------------------------------------------

    @property
    def needs_snapshot(self) -> bool:
        """Return True while diffs are buffered until a full snapshot arrives."""
        return self._needs_snapshot

    @property
    def synced(self) -> bool:
        """Return True when the book holds a trustworthy image (diffs bridged or partial)."""
        return not self._needs_snapshot

    @property
    def last_update_id(self) -> int | None:
        """Return the vendor update id the book reflects (None before a snapshot)."""
        return self._last_update_id

    @property
    def resyncs(self) -> int:
        """Return the number of full snapshots applied after the first one."""
        return max(0, self._snapshots_applied - 1)

    @property
    def buffered(self) -> int:
        """Return the number of diff events waiting for a snapshot."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget the book and the buffer and wait for a new snapshot (e.g. on reconnect).

        Counters are kept; nothing is counted as a gap.
        """
        self._clear_levels()
        self._buffer.clear()
        self._needs_snapshot = True
        self._first_pending = False
        self._last_update_id = None

    # -- writes ----------------------------------------------------------------------

    def apply_snapshot(self, snap: BookSnapshot) -> None:
        """Install a snapshot and apply the buffered diffs that follow it.

        Parameters
        ----------
        snap : BookSnapshot
            A full REST snapshot (``is_partial=False``, ``last_update_id`` required) or a
            partial top-N image (``is_partial=True``), which replaces the book as is.

        Raises
        ------
        ValueError
            If the snapshot is for another symbol or a full snapshot has no update id.

        Notes
        -----
        A full snapshot older than the first buffered event (there is a hole between them)
        is refused: ``stale_snapshots`` grows, the buffer is kept and ``needs_snapshot``
        stays True, so the caller fetches again. A full snapshot older than a synced book
        is refused the same way (the book stays as it is); a newer one replaces it and
        counts in ``resyncs``.
        """
        if snap.symbol != self.symbol:
            raise ValueError(f"snapshot for {snap.symbol} applied to the {self.symbol} book")
        if snap.is_partial:
            self._install(snap)
            self._buffer.clear()
            self._first_pending = False
            self._needs_snapshot = False
            return
        lid = snap.last_update_id
        if lid is None:
            raise ValueError(f"{self.symbol}: a full snapshot needs last_update_id")
        current = self._last_update_id
        if not self._needs_snapshot and current is not None and lid < current:
            # A synced book is already newer: installing this image would roll it back.
            self.stale_snapshots += 1
            self.last_problem = f"snapshot {lid} is older than the book ({current})"
            return
        buf = self._buffer
        # Drop buffered events the snapshot already contains (spot u <= id, futures u < id).
        while buf and self._contained(buf[0], lid, first=True):
            buf.popleft()
        if buf and not self._straddles(buf[0], lid):
            self.stale_snapshots += 1
            d = buf[0]
            self.last_problem = (
                f"snapshot {lid} is older than the first buffered event U={d.first_update_id}"
            )
            return
        self._install(snap)
        self._last_update_id = lid
        self._first_pending = True
        self._needs_snapshot = False
        self._snapshots_applied += 1
        pending = list(buf)
        buf.clear()
        for delta in pending:
            # A gap on the way puts the rest back into the buffer (apply_delta buffers).
            self.apply_delta(delta)
        if not self._needs_snapshot and not pending:
            self._check_crossed()

    def apply_delta(self, delta: BookDelta) -> None:
        """Apply one diff-depth event, or buffer it while the book needs a snapshot.

        Parameters
        ----------
        delta : BookDelta
            Spot events have ``prev_final_update_id is None``; futures events carry ``pu``
            and are sequenced by it. Level sizes are absolute; 0 deletes the level.

        Raises
        ------
        ValueError
            If the event is for another symbol.
        """
        if delta.symbol != self.symbol:
            raise ValueError(f"delta for {delta.symbol} applied to the {self.symbol} book")
        if self._needs_snapshot:
            self._buffer_event(delta)
            return
        book_id = self._last_update_id
        if book_id is None:
            # Synced from a partial image without ids: diffs cannot be sequenced on it.
            self._lose_sync(delta, "diff event on a book without an update id")
            self.sequence_gaps += 1
            return
        if self._contained(delta, book_id, first=self._first_pending):
            self.stale_events += 1
            return
        pu = delta.prev_final_update_id
        if self._first_pending:
            ok = self._straddles(delta, book_id)
        elif pu is not None:
            ok = pu == book_id
        else:
            ok = delta.first_update_id <= book_id + 1
        if not ok:
            self.sequence_gaps += 1
            self._lose_sync(
                delta,
                f"sequence gap: book at {book_id}, event U={delta.first_update_id} "
                f"u={delta.final_update_id} pu={pu}",
            )
            return
        self._apply_levels(delta.bids, delta.asks)
        self._last_update_id = delta.final_update_id
        self._first_pending = False
        self.ts_ns = delta.ts_ns
        self.applied_events += 1
        self._check_crossed()

    # -- reads -----------------------------------------------------------------------

    def best_bid(self) -> Level | None:
        """Return the best (highest) bid as (price, size), or None when there is none."""
        heap, side = self._bid_heap, self._bids
        while heap:
            price = -heap[0]
            size = side.get(price)
            if size is not None:
                return price, size
            heappop(heap)
        return None

    def best_ask(self) -> Level | None:
        """Return the best (lowest) ask as (price, size), or None when there is none."""
        heap, side = self._ask_heap, self._asks
        while heap:
            price = heap[0]
            size = side.get(price)
            if size is not None:
                return price, size
            heappop(heap)
        return None

    def mid(self) -> float | None:
        """Return (best bid + best ask) / 2 in quote currency, or None if a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        return (bid[0] + ask[0]) / 2.0

    def spread(self) -> float | None:
        """Return best ask - best bid in quote currency, or None if a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        return ask[0] - bid[0]

    def depth(self, levels: int) -> tuple[list[Level], list[Level]]:
        """Return the top ``levels`` bids and asks as lists of (price, size), best first."""
        if levels <= 0:
            return [], []
        return (
            _top(self._bid_heap, self._bids, levels, -1.0),
            _top(self._ask_heap, self._asks, levels, 1.0),
        )

    def copy_levels(self, levels: int = 100) -> BookSnapshot:
        """Return an immutable top-``levels`` image, safe to hand to other threads.

        The result is a partial ``BookSnapshot`` (best first) stamped with ``ts_ns`` and
        ``last_update_id``. Call it on the writer thread or under the lock that guards
        writes; the image itself can then be shared freely.
        """
        bids, asks = self.depth(levels)
        return BookSnapshot(
            self.symbol, self.ts_ns, self._last_update_id, tuple(bids), tuple(asks),
            is_partial=True,
        )

    def level_counts(self) -> tuple[int, int]:
        """Return the number of bid and ask levels held."""
        return len(self._bids), len(self._asks)

    # -- private ---------------------------------------------------------------------

    def _contained(self, delta: BookDelta, book_id: int, *, first: bool) -> bool:
        # True if the book (at book_id) already holds everything in the event. Futures'
        # first event may end exactly at lastUpdateId (U <= id <= u), so it is kept.
        u = delta.final_update_id
        if first and delta.prev_final_update_id is not None:
            return u < book_id
        return u <= book_id

    def _straddles(self, delta: BookDelta, book_id: int) -> bool:
        # The first event after a snapshot must bridge it: spot U <= id + 1 (and u > id,
        # already ensured by dropping contained events); futures U <= id <= u.
        if delta.prev_final_update_id is not None:
            return delta.first_update_id <= book_id
        return delta.first_update_id <= book_id + 1

    def _buffer_event(self, delta: BookDelta) -> None:
        buf = self._buffer
        if len(buf) >= self.max_buffer:
            buf.popleft()
            self.buffer_overflows += 1
        buf.append(delta)

    def _lose_sync(self, delta: BookDelta | None, why: str) -> None:
        # Discard the book and buffer again from the offending event.
        self.last_problem = why
        self._clear_levels()
        self._buffer.clear()
        self._needs_snapshot = True
        self._first_pending = False
        self._last_update_id = None
        if delta is not None:
            self._buffer.append(delta)

    def _check_crossed(self) -> None:
        bid, ask = self.best_bid(), self.best_ask()
        if bid is not None and ask is not None and bid[0] >= ask[0]:
            self.crossed_resyncs += 1
            self._lose_sync(
                None,
                f"crossed book at update {self._last_update_id}: bid {bid[0]} >= ask {ask[0]}",
            )

    def _clear_levels(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_heap.clear()
        self._ask_heap.clear()

    def _install(self, snap: BookSnapshot) -> None:
        # Replace both sides with the snapshot's levels (size 0 rows are skipped).
        bids = {p: q for p, q in snap.bids if q > 0.0}
        asks = {p: q for p, q in snap.asks if q > 0.0}
        self._bids, self._asks = bids, asks
        self._bid_heap = [-p for p in bids]
        self._ask_heap = list(asks)
        heapify(self._bid_heap)
        heapify(self._ask_heap)
        self._last_update_id = snap.last_update_id
        if snap.ts_ns:
            self.ts_ns = snap.ts_ns

    def _apply_levels(self, bid_rows, ask_rows) -> None:
        # Absolute sizes: set, insert (pushing the new price on the heap) or delete on 0.
        # setdefault inserts a new price and tells it from a known one in one lookup: it
        # returns the size just given only when the price was new (a known price holding
        # this very object would only add a duplicate heap entry, which the heap allows).
        if bid_rows:
            side, heap = self._bids, self._bid_heap
            pop, setdefault = side.pop, side.setdefault
            for price, size in bid_rows:
                if not size:
                    pop(price, None)
                elif setdefault(price, size) is size:
                    heappush(heap, -price)
                else:
                    side[price] = size
            if len(heap) > 2 * len(side) + _HEAP_SLACK:
                heap[:] = [-p for p in side]
                heapify(heap)
        if ask_rows:
            side, heap = self._asks, self._ask_heap
            pop, setdefault = side.pop, side.setdefault
            for price, size in ask_rows:
                if not size:
                    pop(price, None)
                elif setdefault(price, size) is size:
                    heappush(heap, price)
                else:
                    side[price] = size
            if len(heap) > 2 * len(side) + _HEAP_SLACK:
                heap[:] = list(side)
                heapify(heap)
