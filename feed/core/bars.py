"""Streaming bar aggregation: one aggregator per bar kind (the batch form is ``feed.core.batch``).

Pure: no threads, no I/O, no wall clock. Time comes in as an argument (``Trade.ts_ns``,
``on_clock(now_ns)``), so live, replay and batch produce the same bars.

Rules (see DESIGN.md "Time and bars")
-------------------------------------
* Time bars: a bar labelled ``t`` holds trades with ``t <= ts < t + interval`` (label at the
  interval start). Alignment (``feed.core.timegrid``): epoch/UTC by default; a fixed UTC offset
  (``utc_offset="+08:00"``, as Binance's ``@kline_<i>@+08:00``); or anchored to a daily
  session open in an IANA time zone (``session_tz="America/New_York", session_open="09:30"``),
  where the last interval of a session ends at the next open.
  A bar closes when a trade of a later interval arrives or when ``on_clock(now_ns)`` shows
  its interval has passed, whichever comes first.
* Empty intervals: ``empty="gap"`` (default) emits nothing, leaving a visible gap;
  ``empty="flat"`` emits a bar at the previous close with zero volume for each empty
  interval (the Binance kline convention).
* Within a bar, trades are ordered by exchange time: ``open`` is the earliest trade
  (ties: first to arrive), ``close`` the latest (ties: last to arrive).
* Late trades (``ts`` before the bar in progress): if the trade is at most
  ``late_tolerance_ns`` older than the newest trade seen, it revises the closed bar it
  belongs to — its open or close too when it is that bar's earliest or latest trade; a
  flat bar it lands in becomes a real bar, and a changed close moves the next bar's
  ``prev_close`` and any flat bars after it (``generation`` increases so readers redraw);
  otherwise, or when that bar is no longer held (or is a gap), it is counted in ``late``
  and left out. Never silently dropped.
* Tick bars of N close on the N-th trade.
* Volume bars of V and value bars of X: a trade that overshoots the threshold is split
  (nautilus_trader's convention): the part that fills the bar to exactly the threshold goes
  into it, the bar closes, and the remainder carries into the next bar (possibly closing
  several bars for a huge trade). A split trade counts once in ``trade_count`` of every bar
  it contributes to, and its taker volume is split in the same proportion.
* Trades with ``in_bars=False`` (Binance futures trades whose ``X`` is not ``MARKET``) are
  left out of bars, as Binance's own klines do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from .models import BUY, SELL, Bar, BarSpec, Trade
from .timegrid import EpochGrid, SessionGrid, flat_starts, make_grid

__all__ = [
    "BarAggregator",
    "TimeBarAggregator",
    "TickBarAggregator",
    "VolumeBarAggregator",
    "ValueBarAggregator",
    "AGGREGATORS",
    "make_aggregator",
    "MAX_BARS_PER_TRADE",
]

EmptyPolicy = Literal["gap", "flat"]

# Relative slack when comparing a running sum with a threshold: float sums of decimal
# sizes (0.1 + 0.2) must still close a bar "at" the threshold.
_REL_EPS = 1e-9

#: Most bars one trade may close in a volume or value series; the rest of a larger trade
#: overshoots the last of them (a bounded cost for a tiny threshold and a huge trade).
MAX_BARS_PER_TRADE = 1000


class BarAggregator:
    """Base class: accumulate trades into the bar in progress; subclasses decide closes.

    Parameters
    ----------
    symbol : str
        Symbol stamped on every bar.
    spec : BarSpec
        Bar kind and step.
    max_bars : int or None
        Closed bars held in ``closed`` (oldest dropped first); None keeps all.

    Attributes
    ----------
    closed : list of Bar
        Closed bars held, oldest first; ``closed[i]`` has index ``first_index + i``.
    current : Bar or None
        The bar in progress.
    n_closed : int
        Closed bars produced since construction (``first_index + len(closed)``).
    generation : int
        Increases whenever a bar already closed is revised, so readers can redraw.
    late : int
        Trades counted as late and left out of bars.
    """

    def __init__(self, symbol: str, spec: BarSpec, *, max_bars: int | None = None) -> None:
        self.symbol = symbol
        self.spec = spec
        self.max_bars = max_bars
        self.closed: list[Bar] = []
        self.current: Bar | None = None
        self.first_index = 0  # index of closed[0] among all closed bars produced
        self.generation = 0
        self.late = 0
        self.last_close: float | None = None  # close of the last closed bar
        self.last_ts_ns: int | None = None  # newest trade time seen (ns)

    # -- public ---------------------------------------------------------------------

    @property
    def n_closed(self) -> int:
        """Return the number of closed bars produced (held or already dropped)."""
        return self.first_index + len(self.closed)

    def on_trade(self, trade: Trade) -> list[Bar]:
        """Add one trade; return the bars it closed (oldest first, possibly empty)."""
        raise NotImplementedError

    def on_trades(self, trades: Iterable[Trade]) -> int:
        """Add trades in order; return how many bars they closed.

        The closed bars are in :attr:`closed` (the newest ``max_bars``); they are not
        collected a second time, so a rebuild from millions of trades holds at most
        ``max_bars`` bars.
        """
        n = 0
        on_trade = self.on_trade
        for t in trades:
            n += len(on_trade(t))
        return n

    def on_clock(self, now_ns: int) -> list[Bar]:
        """Advance the clock to ``now_ns`` (UTC ns); return bars closed by time alone.

        Only time bars close on the clock; the base implementation returns ``[]``.
        """
        return []

    def bars(self) -> list[Bar]:
        """Return held closed bars plus the bar in progress (the live objects; copy to share)."""
        return self.closed + [self.current] if self.current is not None else list(self.closed)

    # -- private --------------------------------------------------------------------

    def _new_bar(self, start_ns: int, end_ns: int, price: float, ts_ns: int = 0) -> Bar:
        # A bar at ``price`` whose first trade (if any) is at ``ts_ns``.
        return Bar(self.symbol, self.spec, start_ns, end_ns, price, price, price, price,
                   prev_close=self.last_close, first_trade_ns=ts_ns, last_trade_ns=ts_ns)

    def _close_current(self) -> Bar:
        # Move the bar in progress to the closed list and forget it.
        bar = self.current
        assert bar is not None
        bar.closed = True
        self.closed.append(bar)
        self.last_close = bar.close
        self.current = None
        if self.max_bars is not None and len(self.closed) > self.max_bars:
            drop = len(self.closed) - self.max_bars
            del self.closed[:drop]
            self.first_index += drop
        return bar


def _add(bar: Bar, price: float, size: float, side: int, ts_ns: int, count: int = 1) -> None:
    # Accumulate a (part of a) trade into a bar. Hot path: plain attribute updates.
    # ``count``: the exchange trades it stands for (an aggregate trade a..l holds l - f + 1).
    # open/close follow exchange time: the earliest trade opens (ties: first to arrive),
    # the latest closes (ties: last to arrive).
    if price > bar.high:
        bar.high = price
    elif price < bar.low:
        bar.low = price
    if ts_ns >= bar.last_trade_ns:
        bar.close = price
        bar.last_trade_ns = ts_ns
    if ts_ns < bar.first_trade_ns:
        bar.open = price
        bar.first_trade_ns = ts_ns
    bar.volume += size
    bar.turnover += price * size
    bar.trade_count += count
    if side == BUY:
        bar.buy_volume += size
    elif side == SELL:
        bar.sell_volume += size


class TimeBarAggregator(BarAggregator):
    """Time bars of a fixed interval on an epoch-aligned or session-anchored grid.

    Parameters
    ----------
    symbol : str
    spec : BarSpec
        A time spec (``1s`` .. ``1d``).
    utc_offset : str or int, optional
        Align to a fixed UTC offset instead of UTC: ``"+08:00"`` (or ns, east positive)
        makes 1d bars start at 16:00 UTC, as Binance's ``@kline_1d@+08:00``.
    session_tz : str, optional
        Anchor bars to a daily session open in this IANA time zone (with
        ``session_open``); overrides ``utc_offset``.
    session_open : str, default "00:00"
        Local session open, ``HH:MM`` (``"09:30"`` for US equities).
    empty : {"gap", "flat"}, default "gap"
        What an interval without trades becomes: nothing, or a zero-volume bar at the
        previous close (Binance kline convention).
    late_tolerance_ns : int, default 2_000_000_000
        How far (ns) behind the newest trade a trade may be and still revise its closed
        bar; older trades are counted in ``late``.
    max_bars : int or None
        See :class:`BarAggregator`.

    Raises
    ------
    ValueError
        If ``spec`` is not a time spec, ``empty`` is unknown, or an alignment option is
        malformed.
    """

    def __init__(
        self,
        symbol: str,
        spec: BarSpec,
        *,
        utc_offset: str | int | None = None,
        session_tz: str | None = None,
        session_open: str = "00:00",
        empty: EmptyPolicy = "gap",
        late_tolerance_ns: int = 2_000_000_000,
        max_bars: int | None = None,
    ) -> None:
        if not spec.is_time:
            raise ValueError(f"TimeBarAggregator needs a time spec, got {spec}")
        if empty not in ("gap", "flat"):
            raise ValueError(f"empty must be 'gap' or 'flat', not {empty!r}")
        super().__init__(symbol, spec, max_bars=max_bars)
        self.interval_ns = spec.interval_ns
        self.grid: EpochGrid | SessionGrid = make_grid(
            self.interval_ns, utc_offset=utc_offset, session_tz=session_tz, session_open=session_open)
        self.empty = empty
        self.late_tolerance_ns = late_tolerance_ns

    def bucket_start(self, ts_ns: int) -> int:
        """Return the start (UTC ns) of the interval holding ``ts_ns``."""
        return self.grid.bucket(ts_ns)[0]

    def on_trade(self, trade: Trade) -> list[Bar]:
        if not trade.in_bars:
            return []
        ts = trade.ts_ns
        if self.last_ts_ns is None or ts > self.last_ts_ns:
            self.last_ts_ns = ts
        cur = self.current
        if cur is not None and cur.start_ns <= ts < cur.end_ns:
            _add(cur, trade.price, trade.size, trade.side, ts, trade.count)
            return []
        start, end = self.grid.bucket(ts)
        closed: list[Bar] = []
        if cur is not None:
            if start < cur.start_ns:
                self._late(trade, start)
                return []
            closed.append(self._close_current())
        elif self.closed and start < self.closed[-1].end_ns:
            # Closed by the clock; this trade belongs to a bar already closed.
            self._late(trade, start)
            return []
        closed.extend(self._fill_empty(start))
        bar = self.current = self._new_bar(start, end, trade.price, ts)
        _add(bar, trade.price, trade.size, trade.side, ts, trade.count)
        return closed

    def on_clock(self, now_ns: int) -> list[Bar]:
        closed: list[Bar] = []
        if self.current is not None and now_ns >= self.current.end_ns:
            closed.append(self._close_current())
        if self.empty == "flat" and self.last_close is not None and self.closed:
            # Emit flat bars for intervals that have fully passed with no trade.
            closed.extend(self._fill_empty(self.bucket_start(now_ns)))
        return closed

    # -- private --------------------------------------------------------------------

    def _fill_empty(self, upto_start: int) -> list[Bar]:
        # Flat zero-volume bars for every interval between the last closed bar and
        # ``upto_start`` (exclusive), when the empty policy asks for them. A gap of more
        # than MAX_FLAT_FILL intervals stays a gap: one bad timestamp must not build
        # millions of bars.
        if self.empty != "flat" or not self.closed:
            return []
        starts = flat_starts(self.grid, self.closed[-1].end_ns, upto_start)
        out = []
        price = self.closed[-1].close
        for start, end in starts:
            self.current = self._new_bar(start, end, price)
            out.append(self._close_current())
        return out

    def _late(self, trade: Trade, start: int) -> None:
        # Revise the closed bar the trade belongs to when within tolerance, else count it.
        if self.last_ts_ns is not None and self.last_ts_ns - trade.ts_ns > self.late_tolerance_ns:
            self.late += 1
            return
        for i in range(len(self.closed) - 1, -1, -1):
            bar = self.closed[i]
            if bar.start_ns == start:
                old_close = bar.close
                if bar.trade_count == 0:  # a flat bar: the trade makes it a real one
                    bar.open = bar.high = bar.low = bar.close = trade.price
                    bar.first_trade_ns = bar.last_trade_ns = trade.ts_ns
                _add(bar, trade.price, trade.size, trade.side, trade.ts_ns, trade.count)
                if bar.close != old_close:
                    self._propagate_close(i)
                self.generation += 1
                return
            if bar.start_ns < start:
                break
        self.late += 1

    def _propagate_close(self, i: int) -> None:
        # closed[i]'s close changed: move the next bars' prev_close, and the price of flat
        # bars that carried the old close forward.
        close = self.closed[i].close
        for bar in self.closed[i + 1:]:
            bar.prev_close = close
            if bar.trade_count:
                return
            bar.open = bar.high = bar.low = bar.close = close
        self.last_close = close
        if self.current is not None:
            self.current.prev_close = close


class _ThresholdAggregator(BarAggregator):
    # Shared by tick, volume and value bars: start/end are the first/last trade times.
    # With session_reset, a bar never spans a session boundary: the first trade of a new
    # session closes the bar in progress (short of its threshold) before opening one.

    def __init__(
        self,
        symbol: str,
        spec: BarSpec,
        *,
        session_reset: bool = False,
        utc_offset: str | int | None = None,
        session_tz: str | None = None,
        session_open: str = "00:00",
        max_bars: int | None = None,
    ) -> None:
        super().__init__(symbol, spec, max_bars=max_bars)
        self.sessions = (
            make_grid(86_400 * 1_000_000_000, utc_offset=utc_offset, session_tz=session_tz,
                      session_open=session_open)
            if session_reset else None
        )
        self._session: tuple[int, int] = (0, 0)  # [open, next open) of the bar in progress

    def _reset_if_new_session(self, ts_ns: int) -> list[Bar]:
        # Close the bar in progress when ts_ns falls in a later session than its own.
        if self.sessions is None:
            return []
        lo, hi = self._session
        if lo <= ts_ns < hi:
            return []
        self._session = self.sessions.bucket(ts_ns)
        return [self._close_current()] if self.current is not None else []

    def _open(self, trade: Trade) -> Bar:
        bar = self._new_bar(trade.ts_ns, trade.ts_ns, trade.price, trade.ts_ns)
        self.current = bar
        return bar


class TickBarAggregator(_ThresholdAggregator):
    """Tick bars: a bar closes on its N-th trade (N = ``spec.step``).

    Parameters
    ----------
    symbol : str
    spec : BarSpec
        A tick spec such as ``100t``.
    max_bars : int or None
    """

    def on_trade(self, trade: Trade) -> list[Bar]:
        if not trade.in_bars:
            return []
        closed = self._reset_if_new_session(trade.ts_ns) if self.sessions else []
        bar = self.current or self._open(trade)
        _add(bar, trade.price, trade.size, trade.side, trade.ts_ns, trade.count)
        bar.end_ns = trade.ts_ns
        if bar.trade_count >= self.spec.step:
            closed.append(self._close_current())
        return closed


class VolumeBarAggregator(_ThresholdAggregator):
    """Volume bars: each closed bar holds exactly ``spec.step`` base units.

    A trade that overshoots is split: see the module docstring.

    Parameters
    ----------
    symbol : str
    spec : BarSpec
        A volume spec such as ``50v`` (base units).
    max_bars : int or None
    """

    def _measure(self, price: float, size: float) -> float:
        # How much of the threshold a trade of ``size`` at ``price`` uses.
        return size

    def _size_for(self, price: float, amount: float) -> float:
        # Inverse of _measure: the size that uses ``amount`` of the threshold.
        return amount

    def _filled(self, bar: Bar) -> float:
        return bar.volume

    def on_trade(self, trade: Trade) -> list[Bar]:
        if not trade.in_bars:
            return []
        threshold = float(self.spec.step)
        eps = threshold * _REL_EPS
        price, side, ts = trade.price, trade.side, trade.ts_ns
        size = trade.size
        closed: list[Bar] = self._reset_if_new_session(ts) if self.sessions else []
        splits = 0
        while size > 0.0:
            bar = self.current or self._open(trade)
            bar.end_ns = ts
            # 1. How much room is left in the bar, in threshold units (a bar already full
            #    within float slack closes first, so every pass makes progress).
            room = threshold - self._filled(bar)
            if room <= eps:
                closed.append(self._close_current())
                continue
            need = self._measure(price, size)
            if need < room - eps:
                # 2a. The whole (remaining) trade fits: add it and wait for more.
                _add(bar, price, size, side, ts, trade.count)
                break
            # 2b. Fill the bar to the threshold with part of the trade and close it; past
            #     MAX_BARS_PER_TRADE bars the rest of the trade goes into this last bar
            #     (it overshoots), so one huge trade costs bounded time and memory.
            splits += 1
            part = size if need <= room + eps or splits >= MAX_BARS_PER_TRADE else self._size_for(price, room)
            _add(bar, price, part, side, ts, trade.count)
            closed.append(self._close_current())
            # 3. Carry the remainder into the next bar (loop), dropping float dust.
            size -= part
            if self._measure(price, size) <= eps:
                break
        return closed


class ValueBarAggregator(VolumeBarAggregator):
    """Value bars: each closed bar holds exactly ``spec.step`` of turnover (quote currency).

    A trade that overshoots is split by size at its price: see the module docstring.

    Parameters
    ----------
    symbol : str
    spec : BarSpec
        A value spec such as ``1000000q`` (quote currency).
    max_bars : int or None
    """

    def _measure(self, price: float, size: float) -> float:
        return price * size

    def _size_for(self, price: float, amount: float) -> float:
        return amount / price

    def _filled(self, bar: Bar) -> float:
        return bar.turnover


#: Aggregator class per bar kind.
AGGREGATORS: dict[str, type[BarAggregator]] = {
    "time": TimeBarAggregator,
    "tick": TickBarAggregator,
    "volume": VolumeBarAggregator,
    "value": ValueBarAggregator,
}

_TIME_ONLY = ("empty", "late_tolerance_ns")
_THRESHOLD_ONLY = ("session_reset",)


def make_aggregator(symbol: str, spec: BarSpec | str, **options) -> BarAggregator:
    """Return a streaming aggregator for ``spec``.

    Parameters
    ----------
    symbol : str
    spec : BarSpec or str
        E.g. ``BarSpec.from_str("1m")`` or ``"100t"``.
    **options
        ``max_bars`` for every kind; ``utc_offset``, ``session_tz`` and ``session_open``
        (alignment of time bars; session boundaries of threshold bars with
        ``session_reset=True``); ``empty`` and ``late_tolerance_ns`` for time bars only,
        ``session_reset`` for tick, volume and value bars only (each ignored elsewhere).

    Raises
    ------
    ValueError
        If ``spec`` is not a valid spec string.
    """
    spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
    drop = _THRESHOLD_ONLY if spec.is_time else _TIME_ONLY
    options = {k: v for k, v in options.items() if k not in drop}
    if not spec.is_time and not options.get("session_reset"):
        options = {k: v for k, v in options.items() if k not in ("utc_offset", "session_tz", "session_open")}
    return AGGREGATORS[spec.kind](symbol, spec, **options)
