"""One symbol's state: its book, tape, bar series and trade-id bookkeeping, with the
per-symbol rules (trade-time window, gap marks) and the copies readers get of it.

Pure, like the market state that holds one of these per symbol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from feed.core.bars import BarAggregator, TimeBarAggregator
from feed.core.book import OrderBook
from feed.core.health import SymbolStatus
from feed.core.models import BarSpec, Trade, decimals_of
from feed.core.tradebuffer import TradeBuffer
from feed.core.views import BarSeries, DepthView

__all__ = ["SymbolState", "marks_since"]

#: Trade-id gap marks kept per symbol.
GAP_MARKS_KEPT = 1000


def _settled_or_copied(agg: BarAggregator, closed: list) -> list:
    # Closed bars a late trade can no longer reach never change again, so readers may share
    # them; only the tail still within the late tolerance of the newest trade is copied.
    # This keeps a full read (an export) from copying thousands of bars under the lock.
    if not isinstance(agg, TimeBarAggregator):  # threshold bars are never revised once closed
        return list(closed)
    horizon = (agg.last_ts_ns or 0) - agg.late_tolerance_ns
    k = len(closed)
    while k > 0 and closed[k - 1].end_ns > horizon:
        k -= 1
    return closed[:k] + [replace(b) for b in closed[k:]]


class SymbolState:
    """Everything held for one symbol (the market state's unit; no locking here).

    Parameters
    ----------
    symbol : str
        Normalised symbol.
    max_trades : int
        Trades held in the tape (oldest dropped first), in columns
        (:class:`feed.core.tradebuffer.TradeBuffer`: ~42 bytes a trade).
    """

    __slots__ = (
        "symbol", "book", "trades", "series", "n_trades", "last_trade_ts_ns",
        "last_trade_id", "gaps", "missing_trades", "price_dp", "size_dp",
        "snapshot_due_ns", "gap_marks", "suspect", "repaired_trades", "inserts", "book_absent",
    )

    def __init__(self, symbol: str, max_trades: int) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.trades = TradeBuffer(symbol, max_trades)
        self.series: dict[BarSpec, BarAggregator] = {}  # least recently read first
        self.n_trades = 0
        self.last_trade_ts_ns: int | None = None
        self.last_trade_id: int | None = None
        self.gaps = 0  # trade-id jumps seen
        self.missing_trades = 0  # trades missing across those jumps
        self.price_dp = 0
        self.size_dp = 0
        self.snapshot_due_ns: int | None = None  # monotonic ns before which no new request
        self.gap_marks: deque[tuple[int, int]] = deque(maxlen=GAP_MARKS_KEPT)
        self.suspect: Trade | None = None  # a trade whose id jumped far ahead, unconfirmed
        self.repaired_trades = 0  # missing trades recovered from the vendor's history
        self.inserts = 0  # history inserts inside the tape (a series seeded before one is stale)
        self.book_absent: str | None = None  # why no book is kept (the source has none), in words

    def restore(self, restored: Sequence[Trade], meta: dict | None) -> None:
        """Load stored trades (oldest first) and stored decimals."""
        append = self.trades.append
        for trade in restored:
            append(trade)
            self.n_trades += 1
            if trade.trade_id is not None:
                self.last_trade_id = trade.trade_id
            self.last_trade_ts_ns = trade.ts_ns
        meta = meta or {}
        self.price_dp = int(meta.get("price_decimals", 0) or 0)
        self.size_dp = int(meta.get("size_decimals", 0) or 0)
        for trade in self.trades.last(2000):
            self.note_decimals(trade)

    def note_decimals(self, trade: Trade) -> None:
        """Widen the decimals seen in prices and sizes (at most 12: the export's precision)."""
        self.price_dp = max(self.price_dp, min(12, decimals_of(trade.price)))
        self.size_dp = max(self.size_dp, min(12, decimals_of(trade.size)))

    def time_problem(self, trade: Trade, window_ns: int, live: bool) -> str:
        """Return why ``trade``'s exchange time is out of the window, or "".

        Live: within ``window_ns`` of its receive time. Replay (receive times are today,
        exchange times are not): at most ``window_ns`` ahead of the symbol's previous
        trade, so one stamp in 2200 cannot make every later trade late.
        """
        if live and trade.recv_ns:
            if abs(trade.ts_ns - trade.recv_ns) > window_ns:
                return f"{self.symbol} trade at {trade.ts_ns} ns received at {trade.recv_ns} ns"
        elif self.last_trade_ts_ns is not None and trade.ts_ns - self.last_trade_ts_ns > window_ns:
            return f"{self.symbol} trade at {trade.ts_ns} ns after one at {self.last_trade_ts_ns} ns"
        return ""

    def insert_trades(self, new: list[Trade]) -> list[Trade]:
        """Put ``new`` (trades of a vendor with consecutive ids, sorted by id) in place in
        the tape, which is kept in id order; return the trades kept.

        A full tape keeps its newest trades: the oldest of ``new`` that do not fit are
        left out. Every bar series must be rebuilt afterwards (the caller's job).
        """
        if not new:
            return []
        room = self.trades.max_trades - len(self.trades)
        oldest = self.trades.oldest()
        if room < len(new) and (oldest is None or new[0].trade_id < oldest.trade_id):
            new = new[len(new) - max(room, 0):]  # a backfill into a full tape: keep the newest
        if new:
            self.n_trades += self.trades.insert(new)
            self.inserts += 1
        return new

    def note_repaired(self, gap_end_ns: int, recovered: int) -> None:
        """Count ``recovered`` trades of the gap marked at ``gap_end_ns`` as no longer missing
        (its mark keeps its place and shows what is still missing: 0 = repaired)."""
        self.missing_trades = max(0, self.missing_trades - recovered)
        self.repaired_trades += recovered
        marks = self.gap_marks
        for i in range(len(marks) - 1, -1, -1):
            ts, missing = marks[i]
            if ts == gap_end_ns and missing > 0:
                marks[i] = (ts, max(0, missing - recovered))
                return

    def note_tail(self, kept: list[Trade], recovered: int) -> None:
        """Take ``kept`` (trades after every one received, sorted by id, already in the
        tape) as the newest: a gap nobody saw, counted and marked as repaired at once."""
        last = kept[-1]
        self.last_trade_id = max(self.last_trade_id or 0, last.trade_id)
        self.last_trade_ts_ns = max(self.last_trade_ts_ns or 0, max(t.ts_ns for t in kept))
        self.gaps += 1
        self.repaired_trades += recovered
        self.gap_marks.append((kept[0].ts_ns, 0))

    def record_gap(self, trade: Trade) -> None:
        """Count the ids missing before ``trade`` and mark the gap at its time."""
        missing = trade.trade_id - self.last_trade_id - 1
        self.gaps += 1
        self.missing_trades += missing
        self.gap_marks.append((trade.ts_ns, missing))

    # -- reader copies ----------------------------------------------------------------

    def series_copy(self, spec: BarSpec, since: int) -> BarSeries | None:
        """Return copies of ``spec``'s closed bars with index >= ``since`` and the bar in
        progress, or None without such a series; marks the series most recently read."""
        agg = self.series.pop(spec, None)
        if agg is None:
            return None
        self.series[spec] = agg  # most recently read last (eviction order)
        lo = max(since - agg.first_index, 0)
        return BarSeries(
            key=f"{self.symbol}|{spec}",
            generation=agg.generation,
            n_closed=agg.n_closed,
            closed=_settled_or_copied(agg, agg.closed[lo:]),
            current=replace(agg.current) if agg.current is not None else None,
            first_index=agg.first_index,
            price_decimals=self.price_dp,
            size_decimals=self.size_dp,
        )

    def depth(self, levels: int) -> DepthView:
        """Return the top ``levels`` of the book."""
        book = self.book
        bids, asks = book.depth(levels)
        bb, ba = book.best_bid(), book.best_ask()
        return DepthView(
            symbol=self.symbol, ts_ns=book.ts_ns or 0, bids=list(bids), asks=list(asks),
            best_bid=bb[0] if bb else None, best_ask=ba[0] if ba else None,
            mid=book.mid(), spread=book.spread(), synced=book.synced,
        )

    def recent(self, limit: int) -> list[Trade]:
        """Return the last ``limit`` trades, oldest first."""
        return self.trades.last(limit)

    def gap_marks_since(self, since: int) -> tuple[int, list[tuple[int, int]]]:
        """Return ``(total, marks with sequence index >= since still held)``
        (:func:`marks_since`; ValueError if ``since`` is negative)."""
        return marks_since(self.gaps, self.gap_marks, since)

    def late(self) -> int:
        """Return the trades too late for their time bar in the worst series."""
        return max((agg.late for agg in self.series.values()), default=0)

    def status(self) -> SymbolStatus:
        """Return the symbol's figures for the status line and health."""
        return SymbolStatus(
            trades=self.n_trades, last_trade_ts_ns=self.last_trade_ts_ns,
            book_synced=self.book.synced, gaps=self.missing_trades, gap_events=self.gaps,
            book_resyncs=self.book.resyncs, book_sequence_gaps=self.book.sequence_gaps,
            book_crossed=self.book.crossed_resyncs, book_absent=self.book_absent)


def marks_since(total: int, held: Sequence[tuple[int, int]], since: int) -> tuple[int, list[tuple[int, int]]]:
    """Return ``(total, marks)``: the gap marks of ``held`` with sequence index >= ``since``.

    Marks are numbered 0, 1, 2, ... in the order seen (one per trade-id jump); ``held``
    is the newest ``len(held)`` of the ``total`` seen, oldest first. A reader that drew
    marks ``0..since-1`` passes ``since`` and gets exactly the new ones: it missed some
    (and must redraw) when ``total - len(marks) != since``.

    Raises
    ------
    ValueError
        If ``since`` is negative.
    """
    if since < 0:
        raise ValueError(f"since must be >= 0, not {since}")
    skip = max(since - (total - len(held)), 0)
    return total, [held[i] for i in range(skip, len(held))]
