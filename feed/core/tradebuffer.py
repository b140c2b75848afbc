"""The trades held per symbol, in columns: a few dozen bytes a trade instead of ~270.

A :class:`~feed.core.models.Trade` object costs about 270 bytes held in a deque (the
object, its int and float objects, the deque slot); the default cap of 2,000,000 trades
per symbol made that about 550 MB each. :class:`TradeBuffer` keeps the newest trades as
Trade objects only until :data:`CHUNK` of them have gathered (appending one is a list
append, on the engine's hot path), then seals them into one chunk of numpy columns:

==========  =======  ============================================================
column      dtype    meaning
==========  =======  ============================================================
``ts``      int64    exchange trade time, UTC ns (``Trade.ts_ns``)
``price``   float64  quote currency
``size``    float64  base units
``id``      int64    vendor trade id; ``-1`` when the vendor has none (see ``flags``)
``recv``    int64    local receive time, UTC ns (0 unknown)
``side``    int8     taker side: 1 buy, -1 sell, 0 unknown
``flags``   int8     bit 0: has a trade id; bit 1: ``in_bars``
``count``   int64    exchange trades the row holds (``Trade.count``: 1, or ``l - f + 1``
                     for a Binance aggregate trade)
==========  =======  ============================================================

50 bytes a trade, plus the unsealed tail (at most CHUNK objects). Sealed chunks are never
written in place: dropping the oldest trades only advances an offset or lets a chunk go,
and :meth:`TradeBuffer.insert` builds new arrays for the chunks it changes. So a
:class:`TradeView` (what :meth:`TradeBuffer.snapshot` returns under the engine lock, in
O(chunks)) can be read outside the lock while the buffer moves on -- a bar series rebuild
reads one.

Readers get Trade objects back (:meth:`TradeBuffer.last`, iteration of a view) or whole
columns (:meth:`TradeView.columns`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from feed.core.models import BarSpec, Trade

__all__ = ["TradeBuffer", "TradeView", "CHUNK", "COLUMNS", "HAS_ID", "IN_BARS", "estimate_held"]

#: Trades gathered as objects before they are sealed into a columnar chunk.
CHUNK = 4096
#: Column names and dtypes of a sealed chunk (see the module docstring).
COLUMNS = (("ts", np.int64), ("price", np.float64), ("size", np.float64), ("id", np.int64),
           ("recv", np.int64), ("side", np.int8), ("flags", np.int8), ("count", np.int64))
#: Bits of the ``flags`` column: the trade has a vendor id; the trade counts in bars.
HAS_ID, IN_BARS = 1, 2


def _seal(trades: Sequence[Trade]) -> tuple[np.ndarray, ...]:
    # Trade objects -> one chunk of columns (one pass over the objects).
    rows = [(t.ts_ns, t.price, t.size, -1 if t.trade_id is None else t.trade_id, t.recv_ns, t.side,
             (0 if t.trade_id is None else HAS_ID) | (IN_BARS if t.in_bars else 0), t.count)
            for t in trades]
    cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    return tuple(np.array(c, dtype=dt) for c, (_, dt) in zip(cols, COLUMNS))


def _slice(chunk: tuple[np.ndarray, ...], lo: int, hi: int | None = None) -> tuple[np.ndarray, ...]:
    return tuple(c[lo:hi] for c in chunk)


def _objects(symbol: str, chunk: tuple[np.ndarray, ...]) -> list[Trade]:
    # One chunk of columns -> Trade objects, oldest first.
    ts, price, size, tid, recv, side, flags, count = (c.tolist() for c in chunk)
    return [Trade(symbol, t, p, s, d, i if f & HAS_ID else None, r, bool(f & IN_BARS), n)
            for t, p, s, i, r, d, f, n in zip(ts, price, size, tid, recv, side, flags, count)]


class TradeView:
    """A read-only snapshot of a :class:`TradeBuffer`, safe to read without its lock.

    Iterating yields Trade objects oldest first (made chunk by chunk, so a rebuild from
    millions of trades never holds them all as objects); ``len`` is the trade count.
    """

    __slots__ = ("symbol", "_chunks", "_tail", "_n")

    def __init__(self, symbol: str, chunks: tuple, tail: list[Trade]) -> None:
        self.symbol = symbol
        self._chunks = chunks  # tuples of column arrays, never written
        self._tail = tail  # a copy of the unsealed Trade objects
        self._n = sum(len(c[0]) for c in chunks) + len(tail)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Trade]:
        for chunk in self._chunks:
            yield from _objects(self.symbol, chunk)
        yield from self._tail

    def columns(self) -> dict[str, np.ndarray]:
        """Return every trade as whole columns (``COLUMNS`` names and dtypes), oldest first."""
        parts = list(self._chunks)
        if self._tail:
            parts.append(_seal(self._tail))
        if not parts:
            return {name: np.empty(0, dtype=dt) for name, dt in COLUMNS}
        return {name: np.concatenate([p[k] for p in parts]) for k, (name, _) in enumerate(COLUMNS)}


def estimate_held(spec: BarSpec, trades: TradeView | Sequence[Trade], empty: str = "gap") -> float:
    """Return about how many bars ``spec`` makes from ``trades``, as
    ``feed.core.batch.estimate_bars`` does, in numpy for a :class:`TradeView`."""
    if not isinstance(trades, TradeView):
        from feed.core.batch import estimate_bars

        return estimate_bars(spec, trades, empty)
    n = len(trades)
    if not n:
        return 0.0
    if spec.kind == "tick":
        return n / spec.step
    cols = trades.columns()
    if spec.kind == "volume":
        return float(cols["size"].sum()) / spec.step
    if spec.kind == "value":
        return float((cols["price"] * cols["size"]).sum()) / spec.step
    span = int(cols["ts"].max()) - int(cols["ts"].min())
    intervals = span / spec.interval_ns + 1
    return intervals if empty == "flat" else min(float(n), intervals)


class TradeBuffer:
    """The newest ``max_trades`` trades of one symbol, oldest first, in columns.

    Parameters
    ----------
    symbol : str
        The symbol every trade held belongs to (Trade objects handed back carry it).
    max_trades : int
        Trades held at most; the oldest go first.

    Raises
    ------
    ValueError
        If ``max_trades`` < 1.
    """

    __slots__ = ("symbol", "max_trades", "_chunks", "_start", "_sealed", "_tail")

    def __init__(self, symbol: str, max_trades: int) -> None:
        if max_trades < 1:
            raise ValueError(f"max_trades must be >= 1, not {max_trades!r}")
        self.symbol = symbol
        self.max_trades = int(max_trades)
        self._chunks: deque[tuple[np.ndarray, ...]] = deque()  # sealed, oldest first
        self._start = 0  # trades of _chunks[0] already dropped
        self._sealed = 0  # trades held in _chunks (after _start)
        self._tail: list[Trade] = []  # newest trades, not yet sealed

    def __len__(self) -> int:
        return self._sealed + len(self._tail)

    @property
    def nbytes(self) -> int:
        """Return the bytes of the sealed columns (the tail's objects not counted)."""
        return sum(c.nbytes for chunk in self._chunks for c in chunk)

    # -- writing --------------------------------------------------------------------

    def append(self, trade: Trade) -> None:
        """Add the newest trade (O(1); every CHUNK-th call seals a chunk)."""
        tail = self._tail
        tail.append(trade)
        if len(tail) >= CHUNK:
            self._seal_tail()
        elif self._sealed + len(tail) > self.max_trades:
            self._trim()  # full: the oldest goes (an offset step)

    def extend(self, trades: Iterable[Trade]) -> None:
        """Add trades, oldest first, as :meth:`append` does."""
        for trade in trades:
            self.append(trade)

    def insert(self, trades: Iterable[Trade]) -> int:
        """Put trades into their place by trade id, keeping the held trades in id order;
        return how many went in.

        For repairing a trade-id gap: the trades held must be in id order (they are for
        vendors with consecutive ids, ``adapter.consecutive_trade_ids``). An id already
        held is skipped; one older than every trade held is dropped when the buffer is
        full (the cap keeps the newest ``max_trades`` by position). Sealed chunks touched
        get new arrays (never written in place), so earlier views stay valid.

        Raises
        ------
        ValueError
            For a trade without a trade id, or of another symbol.
        """
        new = sorted(trades, key=_id_of)
        for t in new:
            if t.symbol != self.symbol:
                raise ValueError(f"insert: trade of {t.symbol} into {self.symbol}'s trades")
        new = [t for i, t in enumerate(new) if i == 0 or t.trade_id != new[i - 1].trade_id]
        if not new:
            return 0
        chunks = list(self._chunks)
        if chunks:  # the first chunk seen through _start, so positions are simple
            chunks[0] = _slice(chunks[0], self._start)
        # Sorted by id: those up to the newest sealed id go into chunks, the rest the tail.
        split = 0
        if chunks:
            split = bisect.bisect_right([t.trade_id for t in new], int(chunks[-1][3][-1]))
        done = self._insert_sealed(chunks, new[:split]) if split else 0
        if split < len(new):
            held = {x.trade_id for x in self._tail}
            add = [t for t in new[split:] if t.trade_id not in held]
            if add:
                self._tail = sorted(self._tail + add, key=_id_of)
                done += len(add)
        self._chunks = deque(c for c in chunks if len(c[0]))
        self._start = 0
        self._sealed = sum(len(c[0]) for c in self._chunks)
        if len(self._tail) >= CHUNK:
            self._seal_tail()
        self._trim()
        return done

    @staticmethod
    def _insert_sealed(chunks: list, new: list[Trade]) -> int:
        # Put ``new`` (sorted, unique ids, none above the newest sealed) into ``chunks``
        # (replaced, never written): a block older than every trade held (a backfill page)
        # becomes chunks of its own; the rest merge into the chunk their ids fall in.
        oldest = int(chunks[0][3][0]) if len(chunks[0][0]) else None
        ids = np.fromiter((t.trade_id for t in new), np.int64, len(new))
        n_before = int(np.searchsorted(ids, oldest)) if oldest is not None else 0
        done = first = 0
        if n_before:
            front = [_seal(new[i:min(i + CHUNK, n_before)]) for i in range(0, n_before, CHUNK)]
            chunks[:0] = front
            done, first = n_before, len(front)
            new, ids = new[n_before:], ids[n_before:]
        if not new:
            return done
        lasts = np.array([int(c[3][-1]) if len(c[0]) else -1 for c in chunks[first:]], np.int64)
        dest = np.searchsorted(lasts, ids) + first  # the first chunk whose last id >= the id
        for k in np.unique(dest).tolist():
            sel = np.flatnonzero(dest == k)
            chunk, gids = chunks[k], ids[sel]
            pos = np.searchsorted(chunk[3], gids)
            held = chunk[3][np.minimum(pos, len(chunk[3]) - 1)] == gids
            keep = ~held
            if not keep.any():
                continue
            add = _seal([new[i] for i in sel[keep].tolist()])
            chunks[k] = tuple(np.insert(c, pos[keep], r) for c, r in zip(chunk, add))
            done += int(keep.sum())
        return done

    def _seal_tail(self) -> None:
        tail, self._tail = self._tail, []
        self._chunks.append(_seal(tail))
        self._sealed += len(tail)
        self._trim()

    def _trim(self) -> None:
        # Drop the oldest trades beyond max_trades (whole chunks, then an offset).
        excess = len(self) - self.max_trades
        while excess > 0 and self._chunks:
            first = len(self._chunks[0][0]) - self._start
            if first <= excess:
                self._chunks.popleft()
                self._start = 0
                self._sealed -= first
                excess -= first
            else:
                self._start += excess
                self._sealed -= excess
                excess = 0
        if excess > 0:  # max_trades below one chunk: the tail itself is trimmed
            del self._tail[:excess]

    # -- reading --------------------------------------------------------------------

    def oldest(self) -> Trade | None:
        """Return the oldest trade held by position (None when empty)."""
        if self._chunks:
            return _objects(self.symbol, _slice(self._chunks[0], self._start, self._start + 1))[0]
        return self._tail[0] if self._tail else None

    def newest(self) -> Trade | None:
        """Return the newest trade held by position (None when empty)."""
        return self.last(1)[0] if len(self) else None

    def last(self, limit: int) -> list[Trade]:
        """Return the newest ``limit`` trades as Trade objects, oldest first."""
        if limit <= 0:
            return []
        tail = self._tail
        if limit <= len(tail):
            return tail[len(tail) - limit:]
        need = limit - len(tail)
        out: list[list[Trade]] = []
        for i in range(len(self._chunks) - 1, -1, -1):
            if need <= 0:
                break
            chunk = self._chunks[i]
            lo = self._start if i == 0 else 0
            n = len(chunk[0]) - lo
            take = min(n, need)
            out.append(_objects(self.symbol, _slice(chunk, len(chunk[0]) - take)))
            need -= take
        return [t for part in reversed(out) for t in part] + list(tail)

    def snapshot(self) -> TradeView:
        """Return a :class:`TradeView` of every trade held (O(chunks + tail))."""
        chunks = list(self._chunks)
        if chunks and self._start:
            chunks[0] = _slice(chunks[0], self._start)
        return TradeView(self.symbol, tuple(chunks), list(self._tail))


def _id_of(trade: Trade) -> int:
    if trade.trade_id is None:
        raise ValueError(f"insert: a {trade.symbol} trade at {trade.ts_ns} ns has no trade id")
    return trade.trade_id
