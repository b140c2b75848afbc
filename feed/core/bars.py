"""Bar aggregation: streaming aggregators per bar kind and a batch ``aggregate``.

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

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .models import BAR_COLUMNS, BUY, SELL, Bar, BarSpec, Trade
from .timegrid import EpochGrid, SessionGrid, make_grid

__all__ = [
    "BarAggregator",
    "TimeBarAggregator",
    "TickBarAggregator",
    "VolumeBarAggregator",
    "ValueBarAggregator",
    "AGGREGATORS",
    "make_aggregator",
    "aggregate",
    "bars_to_frame",
]

EmptyPolicy = Literal["gap", "flat"]

# Relative slack when comparing a running sum with a threshold: float sums of decimal
# sizes (0.1 + 0.2) must still close a bar "at" the threshold.
_REL_EPS = 1e-9


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

    def on_trades(self, trades: Iterable[Trade]) -> list[Bar]:
        """Add trades in order; return every bar they closed."""
        out: list[Bar] = []
        for t in trades:
            out.extend(self.on_trade(t))
        return out

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


def _add(bar: Bar, price: float, size: float, side: int, ts_ns: int) -> None:
    # Accumulate a (part of a) trade into a bar. Hot path: plain attribute updates.
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
    bar.trade_count += 1
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
            _add(cur, trade.price, trade.size, trade.side, ts)
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
        _add(bar, trade.price, trade.size, trade.side, ts)
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
        # ``upto_start`` (exclusive), when the empty policy asks for them.
        if self.empty != "flat" or not self.closed:
            return []
        out = []
        t = self.closed[-1].end_ns
        price = self.closed[-1].close
        while t < upto_start:
            start, end = self.grid.bucket(t)
            self.current = self._new_bar(start, end, price)
            out.append(self._close_current())
            t = end
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
                _add(bar, trade.price, trade.size, trade.side, trade.ts_ns)
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
        _add(bar, trade.price, trade.size, trade.side, trade.ts_ns)
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
                _add(bar, price, size, side, ts)
                break
            # 2b. Fill the bar to the threshold with part of the trade and close it.
            part = size if need <= room + eps else self._size_for(price, room)
            _add(bar, price, part, side, ts)
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


def bars_to_frame(bars: Sequence[Bar]) -> pd.DataFrame:
    """Return bars as a DataFrame with columns ``BAR_COLUMNS`` (start/end as int ns)."""
    if not bars:
        return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in BAR_COLUMNS})
    return pd.DataFrame([b.as_dict() for b in bars], columns=list(BAR_COLUMNS)).astype(_DTYPES)


_DTYPES = {
    "symbol": "str", "bar": "str", "start": "int64", "end": "int64", "open": "float64",
    "high": "float64", "low": "float64", "close": "float64", "volume": "float64",
    "turnover": "float64", "vwap": "float64", "trade_count": "int64",
    "buy_volume": "float64", "sell_volume": "float64", "closed": bool,
    "amplitude": "float64", "change": "float64",
}


def _with_derived(frame: pd.DataFrame) -> pd.DataFrame:
    # amplitude and change against the previous bar's close (NaN for the first bar).
    prev = frame["close"].shift(1)
    frame["amplitude"] = (frame["high"] - frame["low"]) / prev
    frame["change"] = (frame["close"] - prev) / prev
    return frame


def _trades_to_arrays(trades: Sequence[Trade] | pd.DataFrame) -> dict[str, np.ndarray]:
    # Column arrays from Trade objects or a DataFrame with ts_ns, price, size[, side, in_bars].
    if isinstance(trades, pd.DataFrame):
        n = len(trades)
        return {
            "ts": trades["ts_ns"].to_numpy(np.int64),
            "price": trades["price"].to_numpy(np.float64),
            "size": trades["size"].to_numpy(np.float64),
            "side": trades["side"].to_numpy(np.int8) if "side" in trades else np.zeros(n, np.int8),
            "in_bars": trades["in_bars"].to_numpy(bool) if "in_bars" in trades else np.ones(n, bool),
        }
    return {
        "ts": np.fromiter((t.ts_ns for t in trades), np.int64, len(trades)),
        "price": np.fromiter((t.price for t in trades), np.float64, len(trades)),
        "size": np.fromiter((t.size for t in trades), np.float64, len(trades)),
        "side": np.fromiter((t.side for t in trades), np.int8, len(trades)),
        "in_bars": np.fromiter((t.in_bars for t in trades), bool, len(trades)),
    }


def aggregate(
    trades: Sequence[Trade] | pd.DataFrame,
    spec: BarSpec | str,
    *,
    symbol: str | None = None,
    utc_offset: str | int | None = None,
    session_tz: str | None = None,
    session_open: str = "00:00",
    empty: EmptyPolicy = "gap",
    late_tolerance_ns: int = 2_000_000_000,
    session_reset: bool = False,
) -> pd.DataFrame:
    """Aggregate trades (in arrival order) into bars in one batch.

    Gives exactly the bars the streaming aggregator of the same options would hold after
    ``on_trades(trades)`` (tested property), including late trades (revising within
    ``late_tolerance_ns``, left out beyond it) and the split of overshooting trades.
    Time and tick bars are computed vectorised (numpy group reductions); volume and value
    bars carry each trade's remainder into the next bar, a sequential rule, so they run
    the streaming aggregator itself. The last bar is returned with ``closed=False`` unless
    its threshold was reached, as the streaming aggregator holds it in progress.

    Parameters
    ----------
    trades : sequence of Trade, or DataFrame
        DataFrame columns: ``ts_ns`` (UTC ns), ``price``, ``size`` and optionally
        ``side`` (+1 buy / -1 sell / 0), ``in_bars`` (bool), ``symbol``.
    spec : BarSpec or str
    symbol : str, optional
        Symbol for the ``symbol`` column; defaults to the trades' symbol.
    utc_offset, session_tz, session_open, empty, late_tolerance_ns
        Time-bar options, as for :class:`TimeBarAggregator` (``utc_offset`` and the session
        options also define sessions for ``session_reset``).
    session_reset : bool, default False
        Tick, volume and value bars: a bar never spans a session boundary.

    Returns
    -------
    pandas.DataFrame
        Columns ``BAR_COLUMNS``; ``start``/``end`` in UTC ns.

    Raises
    ------
    ValueError
        If ``spec`` or an option is invalid.
    """
    spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
    if symbol is None:
        if isinstance(trades, pd.DataFrame):
            symbol = str(trades["symbol"].iloc[0]) if "symbol" in trades and len(trades) else ""
        else:
            symbol = trades[0].symbol if len(trades) else ""
    align = dict(utc_offset=utc_offset, session_tz=session_tz, session_open=session_open)
    if spec.kind in ("volume", "value"):
        if isinstance(trades, pd.DataFrame):
            a = _trades_to_arrays(trades)
            trades = [
                Trade(symbol, int(ts), float(p), float(s), int(sd), None, 0, bool(ib))
                for ts, p, s, sd, ib in zip(
                    a["ts"].tolist(), a["price"].tolist(), a["size"].tolist(),
                    a["side"].tolist(), a["in_bars"].tolist())
            ]
        agg = make_aggregator(symbol, spec, session_reset=session_reset, **align)
        agg.on_trades(trades)
        return bars_to_frame(agg.bars())

    a = _trades_to_arrays(trades)
    keep = a["in_bars"]
    if keep.all():
        ts, price, size, side = a["ts"], a["price"], a["size"], a["side"]
    else:
        ts, price, size, side = a["ts"][keep], a["price"][keep], a["size"][keep], a["side"][keep]
    if len(ts) == 0:
        return bars_to_frame([])
    if spec.kind == "tick":
        return _tick_bars(symbol, spec, ts, price, size, side,
                          make_grid(86_400_000_000_000, **align) if session_reset else None)
    grid = make_grid(spec.interval_ns, **align)
    return _time_bars(symbol, spec, ts, price, size, side, grid, empty, late_tolerance_ns)


def _time_bars(symbol, spec, ts, price, size, side, grid, empty, tolerance) -> pd.DataFrame:
    # Vectorised time bars with the streaming aggregator's late-trade rule.
    start, end = grid.buckets(ts)
    n = len(ts)
    # A trade is late when its bucket is before the newest bucket seen before it; with
    # buckets in order (the usual case) no trade is, and the checks below are skipped.
    step_back = start[1:] < start[:-1]
    if step_back.any():
        prev_max = np.maximum.accumulate(start)
        late = start < np.r_[start[0], prev_max[:-1]]
    else:
        late = np.zeros(n, bool)
    any_late = bool(step_back.any())
    if any_late:
        prev_ts = np.r_[ts[0], np.maximum.accumulate(ts)[:-1]]
        on_time = ~late
        # Late trades revise a held bar within tolerance; beyond it, or when no bar exists
        # for their interval (a gap), they are left out, as the streaming aggregator does.
        if empty == "flat":
            exists = start >= start[on_time][0]
        else:
            exists = np.isin(start, start[on_time])
        use = on_time | (late & (prev_ts - ts <= tolerance) & exists)
        ts, price, size, side, start, end, late = (
            ts[use], price[use], size[use], side[use], start[use], end[use], late[use])
        n = len(ts)
    # Groups by bucket, in bucket order (late trades join their earlier bucket).
    if any_late and late.any():
        order = np.argsort(start, kind="stable")
        ts, price, size, side, start, end, late = (
            ts[order], price[order], size[order], side[order], start[order], end[order], late[order])
    idx = np.flatnonzero(np.r_[True, start[1:] != start[:-1]])
    counts = np.diff(np.r_[idx, n])
    group = np.repeat(np.arange(len(idx)), counts)
    frame = _group_frame(symbol, spec, price, size, side, idx, group, ts)
    frame["start"] = start[idx]
    frame["end"] = end[idx]
    frame["closed"] = True
    if empty == "flat":
        frame = _fill_flat(frame, grid)
    frame.loc[frame.index[-1], "closed"] = False
    return _with_derived(frame)[list(BAR_COLUMNS)].reset_index(drop=True).astype(_DTYPES)


def _tick_bars(symbol, spec, ts, price, size, side, sessions) -> pd.DataFrame:
    # Vectorised tick bars: every N trades, restarting the count at session boundaries.
    n, step = len(ts), int(spec.step)
    if sessions is None:
        idx = np.arange(0, n, step)
    else:
        sess = sessions.buckets(ts)[0]
        new_sess = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        sess_start = np.repeat(new_sess, np.diff(np.r_[new_sess, n]))
        rank = np.arange(n) - sess_start
        idx = np.flatnonzero((rank % step) == 0)
    counts = np.diff(np.r_[idx, n])
    group = np.repeat(np.arange(len(idx)), counts)
    frame = _group_frame(symbol, spec, price, size, side, idx, group, ts)
    last = np.r_[idx[1:], n] - 1
    frame["start"] = ts[idx]
    frame["end"] = ts[last]
    closed = np.ones(len(idx), bool)
    closed[-1] = counts[-1] >= step
    frame["closed"] = closed
    return _with_derived(frame)[list(BAR_COLUMNS)].reset_index(drop=True).astype(_DTYPES)


def _group_frame(symbol, spec, price, size, side, idx, group, ts) -> pd.DataFrame:
    # OHLCV and taker volumes per contiguous group (trades in arrival order within it).
    # open/close follow exchange time: open is the earliest trade (ties: first to
    # arrive), close the latest (ties: last to arrive), as _add does.
    n = len(idx)
    last = np.r_[idx[1:], len(price)] - 1
    if ts is not None and len(ts) > 1 and np.any(np.diff(ts) < 0):
        order = np.lexsort((np.arange(len(ts)), ts, group))  # by group, ts, arrival
        open_idx, close_idx = order[idx], order[last]
    else:
        open_idx, close_idx = idx, last
    turnover = price * size
    volume = _seq_sum(size, group, n)
    frame = pd.DataFrame({
        "symbol": symbol,
        "bar": str(spec),
        "open": price[open_idx],
        "high": np.maximum.reduceat(price, idx),
        "low": np.minimum.reduceat(price, idx),
        "close": price[close_idx],
        "volume": volume,
        "turnover": _seq_sum(turnover, group, n),
        "trade_count": np.diff(np.r_[idx, len(price)]).astype(np.int64),
        "buy_volume": _seq_sum(np.where(side == BUY, size, 0.0), group, n),
        "sell_volume": _seq_sum(np.where(side == SELL, size, 0.0), group, n),
    })
    frame["vwap"] = np.where(volume > 0, frame["turnover"] / np.where(volume > 0, volume, 1.0), frame["close"])
    return frame


def _seq_sum(values: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    # Per-group sums accumulated left to right from 0.0, exactly as the streaming
    # aggregator adds them, so both paths give bit-identical floats. np.bincount adds
    # its weights in input order; np.add.reduceat would sum pairwise and differ.
    return np.bincount(group, weights=values, minlength=n)


def _fill_flat(frame: pd.DataFrame, grid: EpochGrid | SessionGrid) -> pd.DataFrame:
    # Insert zero-volume bars at the previous close for empty intervals.
    starts, ends = [], []
    t = int(frame["start"].iloc[0])
    last = int(frame["start"].iloc[-1])
    while t <= last:
        s, e = grid.bucket(t)
        starts.append(s)
        ends.append(e)
        t = e
    out = frame.set_index("start").reindex(np.array(starts, np.int64))
    missing = out["trade_count"].isna()
    prev_close = out["close"].ffill()
    for col in ("open", "high", "low", "close", "vwap"):
        out.loc[missing, col] = prev_close[missing]
    for col in ("volume", "turnover", "buy_volume", "sell_volume"):
        out.loc[missing, col] = 0.0
    out.loc[missing, "trade_count"] = 0
    out["trade_count"] = out["trade_count"].astype(np.int64)
    out.loc[missing, "symbol"] = frame["symbol"].iloc[0]
    out.loc[missing, "bar"] = frame["bar"].iloc[0]
    out.loc[missing, "closed"] = True
    out["closed"] = out["closed"].astype(bool)
    out["end"] = np.array(ends, np.int64)
    return out.reset_index().rename(columns={"index": "start"})
