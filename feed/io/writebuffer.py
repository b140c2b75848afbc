"""The trade store's write buffer: trades appended and not yet written, bounded per symbol.

Normally it holds at most about a second of trades (the store keeper flushes once a
second). While flushes fail (disk full, a locked database) it would grow without limit,
so it keeps at most ``max_per_symbol`` trades a symbol: beyond that the oldest unsaved
trades are dropped, counted in :attr:`WriteBuffer.dropped` and logged (rate-limited).
Not thread-safe on its own: :class:`feed.io.store.TradeStore` holds its lock around it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from feed.core.models import Trade

__all__ = ["WriteBuffer"]

log = logging.getLogger("tickscope.store")

_LOG_EVERY = 100_000  # dropped trades between two warnings


class WriteBuffer:
    """Unsaved trades per symbol in arrival order, at most ``max_per_symbol`` each.

    Parameters
    ----------
    max_per_symbol : int
        Trades kept per symbol (>= 1); the oldest beyond it are dropped.
    name : str
        What the warnings name (the store directory).

    Raises
    ------
    ValueError
        If ``max_per_symbol`` is not a whole number >= 1.
    """

    def __init__(self, max_per_symbol: int, name: str) -> None:
        if type(max_per_symbol) is not int or max_per_symbol < 1:
            raise ValueError(f"max_pending_trades must be a whole number >= 1, not {max_per_symbol!r}")
        self.max_per_symbol = max_per_symbol
        self.name = name
        self._by_symbol: dict[str, deque[Trade]] = {}
        self._n = 0  # trades held, all symbols
        self._since: float | None = None  # caller's clock, s, when trades started waiting
        self.dropped = 0  # trades dropped unsaved since start

    def __len__(self) -> int:
        return self._n

    def append(self, trade: Trade) -> None:
        """Hold one trade; drop the symbol's oldest when it already holds the maximum."""
        bucket = self._by_symbol.get(trade.symbol)
        if bucket is None:
            bucket = self._by_symbol[trade.symbol] = deque(maxlen=self.max_per_symbol)
        if len(bucket) == self.max_per_symbol:
            self._count_dropped(trade.symbol, 1)  # the deque drops the oldest itself
        else:
            self._n += 1
        bucket.append(trade)

    def of(self, symbol: str) -> Sequence[Trade]:
        """Return the held trades of ``symbol`` (oldest first; do not modify)."""
        return self._by_symbol.get(symbol, ())

    def symbols(self) -> set[str]:
        """Return the symbols holding trades."""
        return {s for s, b in self._by_symbol.items() if b}

    def waited(self, now_s: float) -> float | None:
        """Return seconds the held trades have waited by ``now_s`` (the caller's steady clock,
        counted from the first call that saw trades held); None when nothing is held."""
        if not self._n:
            self._since = None
            return None
        if self._since is None:
            self._since = now_s
        return now_s - self._since

    def take(self) -> dict[str, deque[Trade]]:
        """Return everything held and empty the buffer."""
        taken, self._by_symbol, self._n, self._since = self._by_symbol, {}, 0, None
        return taken

    def put_back(self, taken: dict[str, deque[Trade]]) -> None:
        """Return trades :meth:`take` gave (their write failed) in front of newer ones,
        dropping the oldest beyond the maximum."""
        for symbol, trades in taken.items():
            newer = self._by_symbol.get(symbol, ())
            merged = deque(trades, maxlen=self.max_per_symbol)
            over = len(trades) + len(newer) - self.max_per_symbol
            merged.extend(newer)
            self._by_symbol[symbol] = merged
            self._n += len(merged) - len(newer)
            if over > 0:
                self._count_dropped(symbol, over)

    def _count_dropped(self, symbol: str, n: int) -> None:
        before, self.dropped = self.dropped, self.dropped + n
        if before == 0 or before // _LOG_EVERY != self.dropped // _LOG_EVERY:
            log.warning("trade store %s: %d unsaved trades of %s wait (flushes are failing); dropped "
                        "the oldest: %d trades dropped unsaved so far",
                        self.name, self.max_per_symbol, symbol, self.dropped)
