"""Older bars: the time bars of a series before the oldest one it holds, a chunk at a time,
built from trades (the ones the engine holds and, past those, the store's).

Pure: trades come in as columns or through a loader the caller passes; nothing here
reads a file or a clock.

Why a chunk's oldest bar is dropped unless the trades are the whole history: the
trades handed in start wherever the tape or the store's read starts, usually inside a
bar, so that bar would be short of its first trades. Every other bar before
``before_ns`` is whole, so chunks asked one after another (each ``before_ns`` the start
of the previous chunk's first bar) join exactly: their concatenation is the bars
``feed.core.batch.aggregate`` makes from the same trades (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from feed.core.batch import aggregate, bars_to_frame
from feed.core.models import BarSpec

__all__ = ["MAX_CHUNK", "AGGREGATE_OPTIONS", "trade_frame", "bars_before", "older_bars"]

#: Most bars one call returns (a redraw may ask for all loaded history again).
MAX_CHUNK = 20_000
#: Bar options ``feed.core.batch.aggregate`` takes (the engine's ``bar_options`` may hold more).
AGGREGATE_OPTIONS = ("utc_offset", "session_tz", "session_open", "empty", "late_tolerance_ns")


def trade_frame(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Return trades as the DataFrame ``aggregate`` takes, from column arrays.

    Parameters
    ----------
    columns : mapping
        Either ``feed.core.tradebuffer`` columns (``ts``, ``price``, ``size``, ``side``,
        ``flags``, ``count``) or the store's ``TRADE_DTYPE`` fields (``ts_ns``, ``price``, ``size``,
        ``side``, ``in_bars``); times UTC ns, prices quote currency, sizes base units.
    """
    names = columns.dtype.names if isinstance(columns, np.ndarray) else tuple(columns)
    if "ts_ns" in names:
        ts, in_bars = columns["ts_ns"], columns["in_bars"]
    else:  # tradebuffer columns: in_bars is a flag bit
        from feed.core.tradebuffer import IN_BARS

        ts, in_bars = columns["ts"], (columns["flags"] & IN_BARS) != 0
    frame = pd.DataFrame({
        "ts_ns": np.asarray(ts, np.int64), "price": np.asarray(columns["price"], np.float64),
        "size": np.asarray(columns["size"], np.float64), "side": np.asarray(columns["side"], np.int8),
        "in_bars": np.asarray(in_bars, bool),
    })
    if "count" in names:  # aggregate trades (backfill, repair) hold l - f + 1 trades each
        frame["count"] = np.asarray(columns["count"], np.int64)
    return frame


def bars_before(trades: pd.DataFrame, spec: BarSpec, before_ns: int, limit: int, *,
                complete: bool, options: Mapping[str, Any] | None = None) -> pd.DataFrame | None:
    """Return the newest ``limit`` time bars made of ``trades`` that end at or before
    ``before_ns``, oldest first; None when the trades do not reach back far enough.

    Parameters
    ----------
    trades : DataFrame
        :func:`trade_frame` rows in arrival order.
    spec : BarSpec
        A time bar spec.
    before_ns : int
        UTC ns, the start of the oldest bar already drawn (on the bar grid).
    limit : int
        Bars wanted (>= 1).
    complete : bool
        True when ``trades`` are every trade there is before ``before_ns`` (then fewer
        than ``limit`` bars is the whole history, not None).
    options : mapping, optional
        Bar options (``AGGREGATE_OPTIONS``; others are ignored).

    Returns
    -------
    DataFrame or None
        ``BAR_COLUMNS`` rows, all ``closed``.
    """
    opts = {k: v for k, v in (options or {}).items() if k in AGGREGATE_OPTIONS}
    older = trades[trades["ts_ns"].to_numpy(np.int64) < before_ns]
    bars = aggregate(older, spec, **opts) if len(older) else bars_to_frame([])
    if len(bars):
        bars = bars[bars["end"].to_numpy(np.int64) <= before_ns]
    if not complete:
        bars = bars.iloc[1:]  # may be missing its first trades (module docstring)
        if len(bars) < limit:
            return None
    out = bars.iloc[-limit:].reset_index(drop=True) if len(bars) else bars.reset_index(drop=True)
    out["closed"] = True
    return out


def older_bars(held: pd.DataFrame, load: Callable[[int], tuple[pd.DataFrame, bool]] | None,
               spec: BarSpec, before_ns: int, limit: int, *, options: Mapping[str, Any] | None = None,
               max_trades: int = 4_000_000) -> pd.DataFrame:
    """Return up to ``limit`` time bars ending at or before ``before_ns``, oldest first.

    Built from ``held`` (the trades the engine holds) when they reach back far enough,
    else from the store through ``load``, asking for twice as many trades each time up
    to ``max_trades`` (the bound on one call's cost). Fewer bars than ``limit`` means
    the history ends there, or that it lies beyond ``max_trades`` trades
    (``attrs["exhausted"]`` tells which: True when there is no older trade at all).

    Parameters
    ----------
    held : DataFrame
        :func:`trade_frame` of the trades held, arrival order.
    load : callable or None
        ``load(n) -> (trades, complete)``: the last ``n`` stored trades (a
        :func:`trade_frame`) and whether they are all there are; None without a store
        (``held`` is then the whole history).
    spec : BarSpec
        A time bar spec.
    before_ns : int
        UTC ns; the start of the oldest bar drawn.
    limit : int
        Clamped to ``1..MAX_CHUNK``.

    Raises
    ------
    ValueError
        If ``spec`` is not a time bar spec (tick, volume and value bars are counted from
        where a series starts, so older ones cannot be joined to it exactly).
    """
    if not spec.is_time:
        raise ValueError(f"older bars are built for time bars only, not {spec}")
    limit = min(max(int(limit), 1), MAX_CHUNK)
    got = bars_before(held, spec, before_ns, limit, complete=load is None, options=options)
    if got is not None:
        got.attrs["exhausted"] = load is None and len(got) < limit
        return got
    n = max(2 * len(held), 100_000)
    while True:
        n = min(n, max_trades)
        trades, complete = load(n)
        got = bars_before(trades, spec, before_ns, limit, complete=complete, options=options)
        if got is not None:
            got.attrs["exhausted"] = complete and len(got) < limit
            return got
        if n >= max_trades:  # beyond reach this call: give the whole bars found
            got = bars_before(trades, spec, before_ns, MAX_CHUNK + 1, complete=True, options=options)
            got = got.iloc[1:].iloc[-limit:].reset_index(drop=True)  # the first may be partial
            got.attrs["exhausted"] = False
            return got
        n *= 2
