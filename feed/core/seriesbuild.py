"""Reading a bar series that may not exist yet: read, seed, build outside the lock, install.

The engine (one :class:`~feed.core.market.MarketState` for every symbol) and a dashboard
worker's replica (:class:`~feed.core.replica.Replica`, one market state per symbol) both
serve a bar series of any spec on demand. Building one replays every trade held, which
must not stall the writer: the seed (a lock-free view of the tape) is taken under the
lock, the series is built without it, and installed under it again, caught up with the
trades applied meanwhile (``MarketState.install_series``).

Pure: the lock and the clock come in as arguments; no thread is started here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from feed.core.bars import BarAggregator
from feed.core.models import BarSpec
from feed.core.views import BarSeries, SeriesSeed

__all__ = ["SeriesHolder", "series_or_build"]


class SeriesHolder(Protocol):
    """What :func:`series_or_build` needs of the state holding the series (the
    ``MarketState`` methods of the same names)."""

    def bar_series(self, symbol: str, spec: BarSpec, since: int = 0) -> BarSeries | None: ...

    def series_seed(self, symbol: str, spec: BarSpec, now_ns: int) -> SeriesSeed | None: ...

    def build_series(self, seed: SeriesSeed) -> BarAggregator: ...

    def install_series(self, seed: SeriesSeed, agg: BarAggregator, now_ns: int) -> None: ...


def series_or_build(lock: AbstractContextManager, state: SeriesHolder, symbol: str, spec: BarSpec,
                    since: int, clock_ns: Callable[[], int]) -> BarSeries:
    """Return ``state.bar_series(symbol, spec, since)``, building the series first when
    there is none yet.

    Parameters
    ----------
    lock : context manager
        Serialises access to ``state``; held only to read, to seed and to install.
    state : SeriesHolder
        A ``MarketState`` or a ``Replica``.
    symbol : str
    spec : BarSpec
    since : int
        First closed-bar index wanted.
    clock_ns : callable
        Returns the clock new bars are closed by, UTC ns; called under ``lock``.

    Returns
    -------
    BarSeries
        Copies of the closed bars with index >= ``since`` and the bar in progress.

    Raises
    ------
    KeyError
        If ``symbol`` is not held (also when it is dropped while its series is built).
    ValueError
        From ``build_series``: a spec that would make too many bars from the trades held.
    """
    while True:
        with lock:
            series = state.bar_series(symbol, spec, since)
            if series is not None:
                return series
            seed = state.series_seed(symbol, spec, clock_ns())
        agg = state.build_series(seed) if seed is not None else None
        with lock:
            # install_series ignores a symbol dropped meanwhile: the read above then raises.
            if agg is not None:
                state.install_series(seed, agg, clock_ns())
