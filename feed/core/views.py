"""Reader copies handed out of the market state: a bar series, a book's top, a series seed.

Everything here is a frozen snapshot; readers (Dash callbacks, HTTP routes) may keep it
without holding any lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from feed.core.models import Bar, BarSpec, Trade

__all__ = ["BarSeries", "DepthView", "SeriesSeed"]


@dataclass(frozen=True, slots=True)
class BarSeries:
    """A reader's copy of one bar series.

    Parameters
    ----------
    key : str
        ``"SYMBOL|SPEC"``.
    generation : int
        Changes whenever closed bars already handed out changed (late-trade revision,
        rebuild); a reader holding older bars must redraw them all.
    n_closed : int
        Closed bars produced in this generation.
    closed : list of Bar
        Copies of closed bars with index >= the ``since`` asked for (and still held).
    current : Bar or None
        Copy of the bar in progress.
    first_index : int
        Index of the oldest closed bar still held.
    price_decimals, size_decimals : int
        Decimals seen in the vendor's prices and sizes (the export's precision).
    """

    key: str
    generation: int
    n_closed: int
    closed: list[Bar]
    current: Bar | None
    first_index: int
    price_decimals: int = 8
    size_decimals: int = 8


@dataclass(frozen=True, slots=True)
class DepthView:
    """A reader's copy of the top of one order book.

    Parameters
    ----------
    symbol : str
    ts_ns : int
        Exchange time of the last book change, UTC ns (0 if unknown).
    bids, asks : list of (price, size)
        Best first; prices in quote currency, sizes in base units.
    best_bid, best_ask, mid, spread : float or None
    synced : bool
        False while the book waits for a snapshot (then bids/asks may be empty).
    """

    symbol: str
    ts_ns: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    best_bid: float | None
    best_ask: float | None
    mid: float | None
    spread: float | None
    synced: bool


@dataclass(frozen=True, slots=True)
class SeriesSeed:
    """What a new bar series is built from outside the engine lock.

    ``trades`` is a view of the symbol's tape (``TradeView``) when ``n_trades`` trades had
    been applied; :meth:`MarketState.install_series` catches the built series up with the
    trades applied since, or rebuilds it when trades were put in place inside the tape
    meanwhile (``inserts``: the symbol's count of history inserts then).
    """

    symbol: str
    spec: BarSpec
    trades: list[Trade]
    n_trades: int
    clock_ns: int
    inserts: int = 0
