"""Batch bar aggregation: ``aggregate`` (vectorised) and ``bars_to_frame``.

``aggregate(trades, spec, **options)`` gives exactly the bars the streaming aggregators of
``feed.core.bars`` give for the same trades, bit for bit (property-tested), with every rule
of that module: alignment, empty intervals, late trades within the tolerance, the overshoot
split of volume and value bars, sessions, and ``in_bars=False`` trades left out. Time and
tick bars are vectorised with numpy; volume and value bars carry each remainder forward, so
they run the streaming loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .bars import EmptyPolicy, make_aggregator
from .models import BAR_COLUMNS, BUY, SELL, Bar, BarSpec, Trade
from .timegrid import EpochGrid, SessionGrid, flat_starts, make_grid

__all__ = ["aggregate", "bars_to_frame", "series_frame", "estimate_bars"]


def bars_to_frame(bars: Sequence[Bar]) -> pd.DataFrame:
    """Return bars as a DataFrame with columns ``BAR_COLUMNS`` (start/end as int ns)."""
    if not bars:
        return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in BAR_COLUMNS})
    return pd.DataFrame([b.as_dict() for b in bars], columns=list(BAR_COLUMNS)).astype(_DTYPES)


def series_frame(series) -> pd.DataFrame:
    """Return a bar series' closed bars and the bar in progress (``feed.core.views.BarSeries``)
    as :func:`bars_to_frame` does; ``attrs["price_decimals"]`` and ``attrs["size_decimals"]``
    give the precision seen in the vendor's prices and sizes (the export's)."""
    bars = series.closed + ([series.current] if series.current is not None else [])
    frame = bars_to_frame(bars)
    frame.attrs["price_decimals"] = series.price_decimals
    frame.attrs["size_decimals"] = series.size_decimals
    return frame


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


def _counted(trades) -> np.ndarray | None:
    # The trades' counts when any differs from 1 (a DataFrame's ``count`` column), else None.
    if isinstance(trades, pd.DataFrame):
        if "count" not in trades:
            return None
        c = trades["count"].to_numpy(np.int64)
        return c if len(c) and (c != 1).any() else None
    if any(t.count != 1 for t in trades):
        return np.fromiter((t.count for t in trades), np.int64, len(trades))
    return None


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
        Columns ``BAR_COLUMNS``; ``start``/``end`` in UTC ns. ``attrs["late"]`` is the
        number of trades left out as late (time bars; the streaming aggregator's ``late``).

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
    # Aggregate trades (``count`` > 1: Binance aggTrades, l - f + 1 trades each) take the
    # streaming path, which counts them; the vectorised one counts rows.
    counted = _counted(trades)
    if spec.kind in ("volume", "value") or counted is not None:
        if isinstance(trades, pd.DataFrame):
            a = _trades_to_arrays(trades)
            counts = counted.tolist() if counted is not None else [1] * len(trades)
            trades = [
                Trade(symbol, int(ts), float(p), float(s), int(sd), None, 0, bool(ib), int(c))
                for ts, p, s, sd, ib, c in zip(
                    a["ts"].tolist(), a["price"].tolist(), a["size"].tolist(),
                    a["side"].tolist(), a["in_bars"].tolist(), counts)
            ]
        kind_options = {"empty": empty, "late_tolerance_ns": late_tolerance_ns} if spec.is_time else {}
        agg = make_aggregator(symbol, spec, session_reset=session_reset, **align, **kind_options)
        agg.on_trades(trades)
        frame = bars_to_frame(agg.bars())
        frame.attrs["late"] = agg.late
        return frame

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
    frame, late = _time_bars(symbol, spec, ts, price, size, side, grid, empty, late_tolerance_ns)
    frame.attrs["late"] = late
    return frame


def _time_bars(symbol, spec, ts, price, size, side, grid, empty, tolerance) -> tuple[pd.DataFrame, int]:
    # Vectorised time bars with the streaming aggregator's late-trade rule; also returns
    # how many trades were late and left out (the aggregator's ``late``).
    in_order = _in_time_order(ts)
    edges = _sorted_bar_starts(grid, ts) if in_order else None
    if edges is not None:
        # Times never fall back (a plain exchange file): no trade is late and every bar is
        # one contiguous run of trades, found by binary search at the bar starts instead of
        # a bucket (an int64 division) per trade.
        idx, bar_start = edges
        frame = _group_frame(symbol, spec, price, size, side, idx, np.diff(np.r_[idx, len(ts)]), None)
        frame["start"] = bar_start
        frame["end"] = bar_start + grid.interval_ns
        return _finish_time_bars(frame, grid, empty), 0
    start, end = _buckets(grid, ts)
    n = len(ts)
    n_late = 0
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
        n_late = n - int(use.sum())
        if end is None:
            end = start + grid.interval_ns
        ts, price, size, side, start, end, late = (
            ts[use], price[use], size[use], side[use], start[use], end[use], late[use])
        n = len(ts)
    # Groups by bucket, in bucket order (late trades join their earlier bucket).
    if any_late and late.any():
        order = np.argsort(start, kind="stable")
        if end is None:
            end = start + grid.interval_ns
        ts, price, size, side, start, end, late = (
            ts[order], price[order], size[order], side[order], start[order], end[order], late[order])
    idx = np.flatnonzero(np.r_[True, start[1:] != start[:-1]])
    counts = np.diff(np.r_[idx, n])
    frame = _group_frame(symbol, spec, price, size, side, idx, counts, None if in_order else ts)
    frame["start"] = start[idx]
    frame["end"] = end[idx] if end is not None else start[idx] + grid.interval_ns
    return _finish_time_bars(frame, grid, empty), n_late


def _finish_time_bars(frame: pd.DataFrame, grid, empty) -> pd.DataFrame:
    # Flat bars for empty intervals if asked, the last bar in progress, the derived
    # columns, and BAR_COLUMNS in order with their dtypes.
    frame["closed"] = True
    if empty == "flat":
        frame = _fill_flat(frame, grid)
    frame.loc[frame.index[-1], "closed"] = False
    return _with_derived(frame)[list(BAR_COLUMNS)].reset_index(drop=True).astype(_DTYPES)


def _in_time_order(ts: np.ndarray) -> bool:
    # No trade older than the one before it (one pass, no temporary of the whole array).
    for lo in range(0, len(ts), _BLOCK):
        part = ts[lo:lo + _BLOCK + 1]
        if bool((part[1:] < part[:-1]).any()):
            return False
    return True


def _sorted_bar_starts(grid, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    # For times in order on an epoch grid: (index of each bar's first trade, bar start ns)
    # of the non-empty intervals, by a binary search of every interval start between the
    # first and last trade. None (take the per-trade path) on a session grid, or when
    # the intervals outnumber the trades (sparse trades on a fine grid).
    if not isinstance(grid, EpochGrid):
        return None
    first = int(grid.bucket(int(ts[0]))[0])
    last = int(grid.bucket(int(ts[-1]))[0])
    n_intervals = (last - first) // grid.interval_ns + 1
    if n_intervals > len(ts):
        return None
    starts = first + grid.interval_ns * np.arange(n_intervals, dtype=np.int64)
    pos = np.searchsorted(ts, starts, side="left")
    used = np.flatnonzero(pos != np.r_[pos[1:], len(ts)])
    return pos[used], starts[used]


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
    frame = _group_frame(symbol, spec, price, size, side, idx, counts, ts)
    last = np.r_[idx[1:], n] - 1
    frame["start"] = ts[idx]
    frame["end"] = ts[last]
    closed = np.ones(len(idx), bool)
    closed[-1] = counts[-1] >= step
    frame["closed"] = closed
    return _with_derived(frame)[list(BAR_COLUMNS)].reset_index(drop=True).astype(_DTYPES)


def _group_frame(symbol, spec, price, size, side, idx, counts, ts) -> pd.DataFrame:
    # OHLCV and taker volumes per contiguous group (trades in arrival order within it;
    # group g is idx[g] .. idx[g] + counts[g] - 1).
    # open/close follow exchange time: open is the earliest trade (ties: first to
    # arrive), close the latest (ties: last to arrive), as _add does.
    n = len(idx)
    last = np.r_[idx[1:], len(price)] - 1
    group = None
    if ts is not None and len(ts) > 1 and bool((ts[1:] < ts[:-1]).any()):
        group = np.repeat(np.arange(n), counts)
        order = np.lexsort((np.arange(len(ts)), ts, group))  # by group, ts, arrival
        open_idx, close_idx = order[idx], order[last]
    else:
        open_idx, close_idx = idx, last
    if group is None and len(price) >= _LOOP_MIN_MEAN * n:
        volume, turnover, buy_volume, sell_volume = _sums_by_blocks(price, size, side, idx)
    else:
        if group is None:
            group = np.repeat(np.arange(n), counts)
        volume = _seq_sum(size, group, n)
        turnover = _seq_sum(price * size, group, n)
        buy_volume, sell_volume = _taker_sums(size, side, group, n)
    frame = pd.DataFrame({
        "symbol": symbol,
        "bar": str(spec),
        "open": price[open_idx],
        "high": np.maximum.reduceat(price, idx),
        "low": np.minimum.reduceat(price, idx),
        "close": price[close_idx],
        "volume": volume,
        "turnover": turnover,
        "trade_count": np.diff(np.r_[idx, len(price)]).astype(np.int64),
        "buy_volume": buy_volume,
        "sell_volume": sell_volume,
    })
    frame["vwap"] = np.where(volume > 0, frame["turnover"] / np.where(volume > 0, volume, 1.0), frame["close"])
    return frame


def _seq_sum(values: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    # Per-group sums accumulated left to right from 0.0, exactly as the streaming
    # aggregator adds them, so both paths give bit-identical floats. np.bincount adds
    # its weights in input order; np.add.reduceat would sum pairwise and differ.
    return np.bincount(group, weights=values, minlength=n)


# Groups at least this long on average (a day of a busy symbol in 1m bars: thousands)
# are summed block by block, in cache; shorter ones by bincount over a group index.
_LOOP_MIN_MEAN = 512

# Trades per block of the blocked passes (temporaries of this many values stay in cache).
_BLOCK = 1 << 16


def _sums_by_blocks(price: np.ndarray, size: np.ndarray, side: np.ndarray,
                    idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # volume, turnover, taker buy and sell volume per contiguous group (group g starts at
    # idx[g]), each summed left to right from 0.0 as the streaming aggregator adds them,
    # so equal to it bit for bit, as _seq_sum is: np.add.at is unbuffered and applies its
    # additions in index order (np.add.reduce and reduceat sum pairwise and would differ).
    # The trades go through in blocks, so the group index, price x size and the taker
    # key are block-sized temporaries in cache, not three whole-array ones.
    n = len(idx)
    if len(side) and (side.min() < SELL or side.max() > BUY):
        group = np.repeat(np.arange(n), np.diff(np.r_[idx, len(price)]))
        buy, sell = _taker_sums(size, side, group, n)
        return _seq_sum(size, group, n), _seq_sum(price * size, group, n), buy, sell
    # Volume and turnover in one pass as the real and imaginary parts of complex sums:
    # complex addition adds the two parts separately, each a float64 addition, so each
    # part is the same running sum as on its own.
    sums, taker = np.zeros(n, np.complex128), np.zeros(3 * n)
    m = min(len(price), _BLOCK)
    gbuf, kbuf, zbuf = np.empty(m, np.intp), np.empty(m, np.intp), np.empty(m, np.complex128)
    add_at = np.add.at
    for lo in range(0, len(price), _BLOCK):
        hi = min(lo + _BLOCK, len(price))
        k = hi - lo
        # Group of each trade of the block: the groups starting at or before it.
        g0 = int(np.searchsorted(idx, lo, side="right")) - 1
        g1 = int(np.searchsorted(idx, hi, side="left"))
        lens = np.diff(np.r_[lo, idx[g0 + 1:g1], hi])
        group = gbuf[:k]
        group[:] = np.repeat(np.arange(g0, g0 + len(lens)), lens)
        s = size[lo:hi]
        z = zbuf[:k]
        z.real = s
        np.multiply(price[lo:hi], s, out=z.imag)
        add_at(sums, group, z)
        # Taker side: slot 3 * group + side + 1 (sell 0, unknown 1, buy 2).
        key = np.multiply(group, 3, out=kbuf[:k])
        key += side[lo:hi]
        key += 1
        add_at(taker, key, s)
    taker = taker.reshape(n, 3)
    return sums.real.copy(), sums.imag.copy(), taker[:, 2].copy(), taker[:, 0].copy()


def _taker_sums(size: np.ndarray, side: np.ndarray, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    # Taker buy and sell volume per group in one pass: trade i adds to slot 3 * group +
    # side + 1 (sell 0, unknown 1, buy 2), still left to right within each slot, so the
    # sums equal the streaming aggregator's. A side other than -1/0/+1 is not a side.
    if len(side) and (side.min() < SELL or side.max() > BUY):
        return (_seq_sum(np.where(side == BUY, size, 0.0), group, n),
                _seq_sum(np.where(side == SELL, size, 0.0), group, n))
    key = group * 3
    key += side
    key += 1
    sums = np.bincount(key, weights=size, minlength=3 * n).reshape(n, 3)
    return sums[:, 2].copy(), sums[:, 0].copy()


def _buckets(grid: EpochGrid | SessionGrid, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    # grid.buckets(ts) with end None for an epoch grid (end = start + interval, computed
    # for the bars only): millions of trades need one array less, and in place.
    if not isinstance(grid, EpochGrid):
        return grid.buckets(ts)
    start = np.subtract(ts, grid.origin_ns)
    np.remainder(start, grid.interval_ns, out=start)
    np.subtract(ts, start, out=start)
    return start, None


def _fill_flat(frame: pd.DataFrame, grid: EpochGrid | SessionGrid) -> pd.DataFrame:
    # Insert zero-volume bars at the previous close for empty intervals; a gap of more
    # than MAX_FLAT_FILL intervals stays a gap, as in the streaming aggregator.
    starts, ends = [], []
    bar_starts = frame["start"].to_numpy(np.int64)
    bar_ends = frame["end"].to_numpy(np.int64)
    for i in range(len(bar_starts)):
        starts.append(int(bar_starts[i]))
        ends.append(int(bar_ends[i]))
        if i + 1 < len(bar_starts):
            for s, e in flat_starts(grid, int(bar_ends[i]), int(bar_starts[i + 1])):
                starts.append(s)
                ends.append(e)
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


def estimate_bars(spec: BarSpec, trades: Sequence[Trade], empty: str = "gap") -> float:
    """Return about how many bars ``spec`` makes from ``trades`` (an upper bound for
    tick, volume and value bars; span / interval for time bars with flat empty intervals)."""
    if not trades:
        return 0.0
    if spec.kind == "tick":
        return len(trades) / spec.step
    if spec.kind == "volume":
        return sum(t.size for t in trades) / spec.step
    if spec.kind == "value":
        return sum(t.price * t.size for t in trades) / spec.step
    span = max(t.ts_ns for t in trades) - min(t.ts_ns for t in trades)
    intervals = span / spec.interval_ns + 1
    return intervals if empty == "flat" else min(float(len(trades)), intervals)
