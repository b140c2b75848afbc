"""A reader's replica of collectors' market state: per-symbol tapes and bar series rebuilt
from the trades the collectors publish, with the engine's own code.

Each dashboard worker of ``tickscope serve`` (``feed.io.redis_reader``) holds one. Every
symbol gets a :class:`~feed.core.market.MarketState` of its own, configured like the
market state of the collector that owns it (bar options, close grace, limits), so the
tape is the collector's tape and a bar series of any spec is built and updated by
``MarketState.build_series`` / ``make_aggregator`` exactly as in the collector.

Time bars are closed by a clock handed in per symbol (UTC ns). The reader passes the
newest exchange time of the entries applied while it catches up with a stream, and the
collector's published clock once it has caught up, so a backlog read long after it was
written closes bars as the collector did and not all at once.

Pure: no threads, no I/O, no clock. Not thread-safe: the reader serialises access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feed.core.bars import BarAggregator
from feed.core.config import MarketConfig
from feed.core.events import Effects
from feed.core.market import MarketState
from feed.core.models import BarSpec, Trade
from feed.core.tradebuffer import TradeView
from feed.core.views import BarSeries, SeriesSeed

__all__ = ["Replica", "replica_config"]


class _NoVendor:
    # The market state asks its adapter a few pure questions; a replica parses nothing,
    # fetches nothing and never decides about trade ids (the collector did).
    name = "replica"
    consecutive_trade_ids = False
    serves_history = False

    @staticmethod
    def redact(text: str) -> str:
        return text

    @staticmethod
    def is_fatal_reply(reply) -> bool:
        return False

    @staticmethod
    def rejected_symbols(reply) -> tuple:
        return ()

    @staticmethod
    def snapshot_url(symbol: str) -> None:
        return None


def replica_config(collector: MarketConfig) -> MarketConfig:
    """Return the market config of a replica symbol owned by a collector running
    ``collector``: its bar rules and limits, with the wall clock mode so that the clock
    handed in (the collector's) is the one bars close by, and no history or kline check."""
    return MarketConfig(
        clock="wall", default_spec=collector.default_spec, max_trades=collector.max_trades,
        max_bars=collector.max_bars, bar_options=collector.bar_options,
        close_grace_s=collector.close_grace_s, max_series=collector.max_series,
        max_rebuild_bars=collector.max_rebuild_bars,
    )


@dataclass
class _Held:
    market: MarketState
    config: MarketConfig  # the collector's
    duplicates: int = 0  # appended trades skipped: their id was at or below the last held


class Replica:
    """Symbols held by a reader, each with its own market state (see the module docstring)."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    # -- symbols -------------------------------------------------------------------------

    def hold(self, symbol: str, config: MarketConfig) -> bool:
        """Hold ``symbol`` with its collector's ``config``; False if already held with an
        equal config (a different one starts the symbol over: its bars would differ)."""
        held = self._held.get(symbol)
        if held is not None and held.config == config:
            return False
        market = MarketState(replica_config(config), _NoVendor())
        market.add_symbol(symbol)
        self._held[symbol] = _Held(market, config)
        return True

    def drop(self, symbol: str) -> bool:
        """Forget ``symbol``; False if it was not held."""
        return self._held.pop(symbol, None) is not None

    def symbols(self) -> list[str]:
        """Return the symbols held, in the order first held."""
        return list(self._held)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._held

    def config(self, symbol: str) -> MarketConfig:
        """Return the collector's market config of ``symbol`` (KeyError if not held)."""
        return self._held[symbol].config

    # -- the tape ------------------------------------------------------------------------

    def append(self, symbol: str, trades: Sequence[Trade], clock_ns: int) -> int:
        """Append trades a collector appended to ``symbol``'s tape, in its order, then close
        time bars by ``clock_ns`` (the collector's clock, UTC ns); return the trades taken.

        A trade whose id is at or below the last id held is a duplicate (a collector that
        restarted replays its start) and is skipped; trades without an id are never skipped.
        No other check is made: the collector already decided what its tape holds.

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        held = self._held[symbol]
        market = held.market
        st = market.state_of(symbol)
        fx = Effects()  # what a collector would persist: the replica keeps nothing else
        taken = 0
        for trade in trades:
            tid = trade.trade_id
            if tid is not None and st.last_trade_id is not None and tid <= st.last_trade_id:
                held.duplicates += 1
                continue
            market.take(st, trade, fx)
            taken += 1
        market.close_bars(clock_ns)
        return taken

    def insert(self, symbol: str, trades: Sequence[Trade], clock_ns: int) -> int:
        """Put trades a collector put in place (history: backfill, gap repair) into
        ``symbol``'s tape and rebuild every series of the symbol; return the trades kept.

        A rebuilt series' generation is the symbol's count of inserts, so every reader of
        the same stream hands out the same generation (a page served by several workers
        does not redraw for nothing).

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        market = self._held[symbol].market
        st = market.state_of(symbol)
        new = sorted((t for t in trades if t.trade_id is not None), key=lambda t: t.trade_id)
        kept = st.insert_trades(new)
        if kept:
            market.rebuild_series(st, clock_ns)
            for agg in st.series.values():
                agg.generation = st.inserts
        return len(kept)

    def on_clock(self, symbol: str, clock_ns: int) -> None:
        """Close ``symbol``'s time bars whose interval ended ``close_grace_s`` before
        ``clock_ns`` (UTC ns)."""
        held = self._held.get(symbol)
        if held is not None:
            held.market.close_bars(clock_ns)  # the replica's clock mode is "wall": clock_ns itself

    def set_decimals(self, symbol: str, price_dp: int, size_dp: int) -> None:
        """Use the collector's price and size decimals for ``symbol`` (0..12 each)."""
        held = self._held.get(symbol)
        if held is not None:
            st = held.market.state_of(symbol)
            st.price_dp = min(max(int(price_dp), 0), 12)
            st.size_dp = min(max(int(size_dp), 0), 12)

    def last_ts(self, symbol: str) -> int | None:
        """Return the newest exchange time held for ``symbol``, UTC ns (None: none)."""
        held = self._held.get(symbol)
        return held.market.state_of(symbol).last_trade_ts_ns if held is not None else None

    def duplicates(self) -> int:
        """Return appended trades skipped as duplicates, over every symbol."""
        return sum(h.duplicates for h in self._held.values())

    # -- reads (copies) ------------------------------------------------------------------

    def bar_series(self, symbol: str, spec: BarSpec, since: int = 0) -> BarSeries | None:
        """``MarketState.bar_series`` of ``symbol`` (None: build one from :meth:`series_seed`).

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        return self._held[symbol].market.bar_series(symbol, spec, since)

    def series_seed(self, symbol: str, spec: BarSpec, clock_ns: int) -> SeriesSeed | None:
        """``MarketState.series_seed`` (KeyError if not held)."""
        return self._held[symbol].market.series_seed(symbol, spec, clock_ns)

    def build_series(self, seed: SeriesSeed) -> BarAggregator:
        """``MarketState.build_series`` with the symbol's rules; call without the lock.

        Raises
        ------
        KeyError
            If the symbol is not held. ValueError: a spec too costly for the trades held.
        """
        return self._held[seed.symbol].market.build_series(seed)

    def install_series(self, seed: SeriesSeed, agg: BarAggregator, clock_ns: int) -> None:
        """``MarketState.install_series``, with the series' generation set to the symbol's
        count of inserts (see :meth:`insert`); nothing when the symbol was dropped meanwhile."""
        held = self._held.get(seed.symbol)
        if held is None:
            return
        held.market.install_series(seed, agg, clock_ns)
        st = held.market.state_of(seed.symbol)
        if seed.spec in st.series:
            st.series[seed.spec].generation = st.inserts

    def trade_view(self, symbol: str) -> TradeView:
        """Return a lock-free view of ``symbol``'s tape (KeyError if not held)."""
        return self._held[symbol].market.trade_view(symbol)

    def trades(self, symbol: str, limit: int = 100) -> list[Trade]:
        """Return the last ``limit`` trades of ``symbol``, oldest first ([] if not held)."""
        held = self._held.get(symbol)
        return held.market.trades(symbol, limit) if held is not None else []

    def n_trades(self, symbol: str) -> int:
        """Return trades applied to ``symbol``'s tape (0 if not held)."""
        held = self._held.get(symbol)
        if held is None:
            return 0
        status = held.market.symbol_status().get(symbol)
        return status.trades if status is not None else 0
