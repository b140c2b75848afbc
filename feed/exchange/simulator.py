"""Seeded market simulator for one symbol: trades and a limit order book (pure).

No I/O, threads or wall clock: every method that moves the market takes ``now_ns`` (UTC
nanoseconds) from the caller, so the same seed and the same time inputs give the same
trades, update ids and diffs. ``feed.exchange`` drives it with the wall clock and turns
its output into Binance messages; tests drive it with fixed times.

Prices are integer ticks and sizes integer lots internally; ``Instrument.format_price`` /
``format_qty`` (``feed.exchange.instruments``) turn them into the exchange's decimal
strings exactly (no float rounding).

Model
-----
* Fair price: a geometric random walk in continuous time whose variance follows a
  GARCH(1,1) recursion stepped once per simulated second (volatility clustering), with
  Student-t(5) innovations (fat tails).
* Events: one Poisson process whose rate scales with the current volatility (busy markets
  trade and quote more); each event is a taker order or a maker (limit) update.
* Taker orders: buy with probability logistic in (fair - mid), so taker flow leans the way
  the price is going; size log-normal in quote notional with a Pareto tail; the order
  sweeps the opposite side best level first, one fill (trade) per level, all fills at the
  same time (as on Binance: a buy trade prints at the ask, a sell at the bid).
* Maker updates: an add near the fair price (never crossing the other side) or a cancel:
  quotes left on the wrong side of the fair price are pulled first, otherwise a random
  level shrinks. Each side keeps between ``levels`` and ``2 * levels`` levels.
* Update ids: every level change takes the next id. ``flush_depth`` returns the levels
  changed since the previous flush with ``U`` = previous ``u`` + 1 (Binance spot rule),
  and ``snapshot`` carries the id of the last change, so a client doing the Binance
  snapshot-plus-diff procedure rebuilds this book exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from feed.exchange.instruments import Instrument, instrument_for

__all__ = [
    "Fill",
    "DepthDiff",
    "BookImage",
    "MarketSimulator",
]

# -- model constants ------------------------------------------------------------------

_NS = 1_000_000_000
_GARCH_ALPHA = 0.10            # weight of the last second's squared return
_GARCH_BETA = 0.88             # persistence of variance (alpha + beta < 1)
_VAR_CLIP = (0.1, 50.0)        # variance kept within these multiples of its long-run mean
_RATE_CLIP = (0.5, 4.0)        # event-rate multiplier range (sqrt of variance ratio)
_STUDENT_DF = 5.0
_BOOK_EVENTS_PER_TRADE = 6.0   # maker updates per taker order, on average
_ADD_PROBABILITY = 0.55        # share of maker updates that add liquidity
_STALE_SLACK_GAPS = 0.5       # a quote this many gaps through the fair price is stale
_ADD_OFFSET_GAPS = 3.0         # adds land on average gap / this ticks from the fair price
_LEVEL_GAP_REL = 0.5e-5        # mean gap between levels as a fraction of price (>= 1 tick)
_LEVEL_NOTIONAL_USD = 4_000.0  # median resting size per level
_LEVEL_SIGMA = 1.0
_TRADE_NOTIONAL_USD = 250.0    # median taker order
_TRADE_SIGMA = 1.3
_TAIL_PROBABILITY = 0.02       # share of taker orders scaled by a Pareto factor
_TAIL_ALPHA = 1.5
_TAIL_CAP = 200.0
_MAX_SWEEP = 8                 # most levels one taker order may take
_MIN_LEFT = 2                  # a sweep stops before leaving fewer levels than this
_START_UPDATE_ID = 1_000_000_000
_START_TRADE_ID = 100_000_000


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade: a taker order filled against one price level.

    Parameters
    ----------
    trade_id : int
        Consecutive per symbol (Binance ``t``).
    order_id : int
        Taker order id; the fills of one sweep share it.
    ts_ns : int
        Trade time, UTC ns (Binance ``T``).
    price_ticks : int
        Price in ticks (``Instrument.format_price``).
    qty_lots : int
        Size in lots (``Instrument.format_qty``), > 0.
    buyer_is_maker : bool
        Binance ``m``: True when the taker sold (the fill took a bid).
    """

    trade_id: int
    order_id: int
    ts_ns: int
    price_ticks: int
    qty_lots: int
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """Levels changed since the previous flush (a Binance ``depthUpdate``).

    Parameters
    ----------
    ts_ns : int
        Flush time, UTC ns (Binance ``E``).
    first_update_id, final_update_id : int
        Binance ``U`` and ``u``; ``U`` is the previous diff's ``u`` + 1.
    bids, asks : tuple of (price_ticks, qty_lots)
        New absolute size per changed level, best first; 0 deletes the level.
    """

    ts_ns: int
    first_update_id: int
    final_update_id: int
    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class BookImage:
    """The book as a REST depth snapshot sees it.

    Parameters
    ----------
    last_update_id : int
        Id of the last level change included (Binance ``lastUpdateId``).
    bids, asks : tuple of (price_ticks, qty_lots)
        Best first.
    """

    last_update_id: int
    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]


class MarketSimulator:
    """Simulate one symbol's trades and order book, driven by caller-supplied time.

    Parameters
    ----------
    symbol : str
        Symbol; must end with a quote asset in ``feed.exchange.instruments.QUOTE_USD``
        unless ``instrument`` is given.
    start_ns : int
        Simulation start, UTC ns. The first events happen after it.
    seed : int
        Random seed; with the same seed and the same ``advance``/``flush_depth`` times
        the output is identical.
    instrument : Instrument, optional
        Overrides ``instrument_for(symbol)``.
    levels : int
        Minimum levels per side (the book holds up to twice as many).
    resume : tuple of (float, int), optional
        ``(last price in quote currency, last trade id)`` of a previous run of this market
        (from the trade store): the fair price starts there and trade ids continue at the
        next id, so a restart continues the stored history instead of re-seeding it (no
        price jump, no trade-id gap). The generator is seeded with the id as well, so the
        continued path is not a replay of the first run's.
    """

    def __init__(
        self,
        symbol: str,
        *,
        start_ns: int,
        seed: int = 7,
        instrument: Instrument | None = None,
        levels: int = 20,
        resume: tuple[float, int] | None = None,
    ) -> None:
        if levels < 5:
            raise ValueError(f"levels must be >= 5, not {levels}")
        if resume is not None and not (math.isfinite(resume[0]) and resume[0] > 0 and resume[1] >= 0):
            raise ValueError(f"resume must be (price > 0, trade id >= 0), not {resume!r}")
        self.instrument = instrument or instrument_for(symbol)
        inst = self.instrument
        # One generator per (seed, symbol): symbols are independent of each other.
        self._rng = random.Random(f"{seed}:{inst.symbol}" + (f":{resume[1]}" if resume else ""))
        # Minimum levels per side.
        self._levels = levels
        # Tick and lot as floats, for sizing only.
        self._tick = inst.tick
        self._lot = inst.lot
        # Fair price in ticks (float) and the time it was last moved.
        start_price = resume[0] if resume is not None else inst.start_price
        self._fair = max(10.0, round(start_price / self._tick))
        self._fair_ns = start_ns
        # GARCH(1,1) on per-second log returns: long-run variance, current, intercept.
        self._var_bar = inst.daily_vol**2 / 86_400
        self._var = self._var_bar
        self._omega = self._var_bar * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
        self._second_start_fair = self._fair
        self._next_garch_ns = start_ns + _NS
        # Mean gap between neighbouring levels, ticks.
        self._gap = max(1.0, start_price * _LEVEL_GAP_REL / self._tick)
        # Event rates at long-run volatility, per second.
        self._trade_rate = inst.trades_per_s
        self._book_rate = inst.trades_per_s * _BOOK_EVENTS_PER_TRADE
        # The book: price (ticks) -> size (lots).
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        # Update ids: last change, and last change already flushed as a diff.
        self._update_id = _START_UPDATE_ID
        self._flushed_update_id = _START_UPDATE_ID
        # Levels changed since the last flush: price -> new size (0 = deleted).
        self._changed_bids: dict[int, int] = {}
        self._changed_asks: dict[int, int] = {}
        # Trade ids grow with the start time (1 per ms), so a restarted simulator never
        # reuses ids a previous run persisted (the engine drops ids it has seen).
        self._trade_id = _START_TRADE_ID + start_ns // 1_000_000 if resume is None else int(resume[1])
        self._order_id = _START_TRADE_ID
        # Time of the last advance() (time never goes back).
        self._now_ns = start_ns
        self._build_initial_book()
        self._next_event_ns = start_ns + self._draw_wait_ns()

    # -- public ------------------------------------------------------------------------

    @property
    def symbol(self) -> str:
        """Return the upper-case symbol."""
        return self.instrument.symbol

    @property
    def next_event_ns(self) -> int:
        """Return the time (UTC ns) of the next trade or book event."""
        return self._next_event_ns

    @property
    def last_trade_id(self) -> int:
        """Return the id of the last trade made (the next one takes this + 1)."""
        return self._trade_id

    @property
    def fair_ticks(self) -> int:
        """Return the fair price, rounded to whole ticks."""
        return max(1, round(self._fair))

    @property
    def last_update_id(self) -> int:
        """Return the id of the last book change."""
        return self._update_id

    def advance(self, now_ns: int) -> list[Fill]:
        """Run the market up to ``now_ns`` (UTC ns) and return the trades made, in order.

        Raises
        ------
        ValueError
            If ``now_ns`` is earlier than a previous call's.
        """
        if now_ns < self._now_ns:
            raise ValueError(f"now_ns went back: {now_ns} < {self._now_ns}")
        fills: list[Fill] = []
        while True:
            if self._next_garch_ns <= self._next_event_ns:
                if self._next_garch_ns > now_ns:
                    break
                self._garch_step(self._next_garch_ns)
                continue
            t = self._next_event_ns
            if t > now_ns:
                break
            self._move_fair(t)
            if self._rng.random() < self._trade_rate / (self._trade_rate + self._book_rate):
                self._taker_order(t, fills)
            else:
                self._maker_update()
            self._next_event_ns = t + self._draw_wait_ns()
        self._now_ns = now_ns
        return fills

    def hold(self, now_ns: int) -> None:
        """Move the market's clock to ``now_ns`` (UTC ns) without trading or moving the book.

        For a market resumed from stored history that nobody receives yet: trades made
        then would take trade ids nobody received (a gap), so time passes without them.

        Raises
        ------
        ValueError
            If ``now_ns`` is earlier than a previous call's.
        """
        if now_ns < self._now_ns:
            raise ValueError(f"now_ns went back: {now_ns} < {self._now_ns}")
        self._now_ns = self._fair_ns = now_ns
        self._next_garch_ns = now_ns + _NS
        self._next_event_ns = now_ns + self._draw_wait_ns()

    def flush_depth(self, now_ns: int) -> DepthDiff | None:
        """Return the levels changed since the previous flush, or None if none changed.

        ``now_ns`` (UTC ns) becomes the diff's event time; call ``advance(now_ns)`` first.
        """
        if self._update_id == self._flushed_update_id:
            return None
        diff = DepthDiff(
            ts_ns=now_ns,
            first_update_id=self._flushed_update_id + 1,
            final_update_id=self._update_id,
            bids=tuple(sorted(self._changed_bids.items(), reverse=True)),
            asks=tuple(sorted(self._changed_asks.items())),
        )
        self._flushed_update_id = self._update_id
        self._changed_bids.clear()
        self._changed_asks.clear()
        return diff

    def snapshot(self, limit: int | None = None) -> BookImage:
        """Return the current book, at most ``limit`` levels a side (None: all)."""
        return BookImage(
            last_update_id=self._update_id,
            bids=tuple(sorted(self._bids.items(), reverse=True)[:limit]),
            asks=tuple(sorted(self._asks.items())[:limit]),
        )

    def top(self) -> tuple[int, int, int, int]:
        """Return (bid ticks, bid lots, ask ticks, ask lots) of the best levels."""
        bid = max(self._bids)
        ask = min(self._asks)
        return bid, self._bids[bid], ask, self._asks[ask]

    # -- private: price and time -------------------------------------------------------

    def _student_t(self) -> float:
        # Student-t(5) scaled to unit variance: fat-tailed returns.
        chi2 = 2.0 * self._rng.gammavariate(_STUDENT_DF / 2.0, 1.0)
        scale = math.sqrt((_STUDENT_DF - 2.0) / _STUDENT_DF)
        return self._rng.gauss(0.0, 1.0) / math.sqrt(chi2 / _STUDENT_DF) * scale

    def _move_fair(self, t_ns: int) -> None:
        # Brownian step of the log fair price over the time since its last move.
        dt = (t_ns - self._fair_ns) / _NS
        if dt > 0:
            self._fair = max(10.0, self._fair * math.exp(math.sqrt(self._var * dt) * self._student_t()))
            self._fair_ns = t_ns

    def _garch_step(self, t_ns: int) -> None:
        # Once per simulated second: variance from the last second's realised return.
        self._move_fair(t_ns)
        r = math.log(self._fair / self._second_start_fair)
        var = self._omega + _GARCH_ALPHA * r * r + _GARCH_BETA * self._var
        self._var = min(max(var, self._var_bar * _VAR_CLIP[0]), self._var_bar * _VAR_CLIP[1])
        self._second_start_fair = self._fair
        self._next_garch_ns = t_ns + _NS

    def _draw_wait_ns(self) -> int:
        # Exponential wait of the Poisson event process; the rate follows volatility.
        mult = min(max(math.sqrt(self._var / self._var_bar), _RATE_CLIP[0]), _RATE_CLIP[1])
        rate = (self._trade_rate + self._book_rate) * mult
        return max(1, int(self._rng.expovariate(rate) * _NS))

    # -- private: sizes ----------------------------------------------------------------

    def _lots(self, notional_usd: float, price_ticks: int) -> int:
        # Size in lots worth about notional_usd at price_ticks (at least one lot).
        quote = notional_usd / self.instrument.quote_usd
        return max(1, round(quote / (price_ticks * self._tick) / self._lot))

    def _level_size(self, price_ticks: int) -> int:
        return self._lots(_LEVEL_NOTIONAL_USD * math.exp(_LEVEL_SIGMA * self._rng.gauss(0, 1)), price_ticks)

    def _draw_gap(self) -> int:
        return 1 + int(self._rng.expovariate(1.0 / self._gap))

    # -- private: book -----------------------------------------------------------------

    def _set_level(self, is_bid: bool, price: int, qty: int) -> None:
        # The one place the book changes: each change takes the next update id.
        book = self._bids if is_bid else self._asks
        if qty <= 0:
            if price not in book:
                return
            del book[price]
            qty = 0
        else:
            book[price] = qty
        self._update_id += 1
        (self._changed_bids if is_bid else self._changed_asks)[price] = qty

    def _build_initial_book(self) -> None:
        # A book of 1.5 x levels a side around the start price, at the start update id.
        bid = int(self._fair)
        ask = bid + 1
        for _ in range(self._levels + self._levels // 2):
            self._bids[bid] = self._level_size(bid)
            self._asks[ask] = self._level_size(ask)
            bid = max(1, bid - self._draw_gap())
            ask += self._draw_gap()
            if bid in self._bids:
                break

    def _replenish(self, is_bid: bool) -> None:
        # Keep at least `levels` levels: add beyond the worst one.
        book = self._bids if is_bid else self._asks
        while len(book) < self._levels:
            if is_bid:
                worst = min(book) if book else min(int(self._fair), min(self._asks) - 1)
                price = worst - self._draw_gap() if book else worst
                if price < 1:
                    return
            else:
                worst = max(book) if book else max(int(self._fair) + 1, max(self._bids) + 1)
                price = worst + self._draw_gap() if book else worst
            self._set_level(is_bid, price, self._level_size(price))

    def _trim(self, is_bid: bool) -> None:
        # Keep at most 2 x levels: drop the worst level.
        book = self._bids if is_bid else self._asks
        while len(book) > 2 * self._levels:
            self._set_level(is_bid, min(book) if is_bid else max(book), 0)

    def _taker_order(self, t_ns: int, fills: list[Fill]) -> None:
        best_bid, best_ask = max(self._bids), min(self._asks)
        mid = (best_bid + best_ask) / 2.0
        scale = max(1.0, (best_ask - best_bid) / 2.0 + self._gap)
        x = max(-30.0, min(30.0, (self._fair - mid) / scale))
        buy = self._rng.random() < 1.0 / (1.0 + math.exp(-x))
        notional = _TRADE_NOTIONAL_USD * math.exp(_TRADE_SIGMA * self._rng.gauss(0.0, 1.0))
        if self._rng.random() < _TAIL_PROBABILITY:
            notional *= min(self._rng.paretovariate(_TAIL_ALPHA), _TAIL_CAP)
        book = self._asks if buy else self._bids
        remaining = self._lots(notional, best_ask if buy else best_bid)
        self._order_id += 1
        # Sweep: best level first, one fill per level, same trade time for all.
        for _ in range(_MAX_SWEEP):
            if remaining <= 0 or len(book) <= _MIN_LEFT:
                break
            price = min(book) if buy else max(book)
            filled = min(remaining, book[price])
            self._trade_id += 1
            fills.append(Fill(self._trade_id, self._order_id, t_ns, price, filled, not buy))
            self._set_level(not buy, price, book[price] - filled)
            remaining -= filled
        self._replenish(not buy)

    def _maker_update(self) -> None:
        rng = self._rng
        is_bid = rng.random() < 0.5
        book = self._bids if is_bid else self._asks
        if rng.random() < _ADD_PROBABILITY:
            # Add near the fair price, never at or through the other side.
            offset = int(rng.expovariate(_ADD_OFFSET_GAPS / self._gap))
            if is_bid:
                price = min(math.floor(self._fair - 0.5) - offset, min(self._asks) - 1)
            else:
                price = max(math.ceil(self._fair + 0.5) + offset, max(self._bids) + 1)
            if price >= 1:
                self._set_level(is_bid, price, book.get(price, 0) + self._level_size(price))
        else:
            # Cancel: quotes left on the wrong side of the fair price are all pulled
            # (makers requote as the price moves); otherwise one random level shrinks.
            slack = self._gap * _STALE_SLACK_GAPS
            if is_bid:
                stale = sorted((p for p in book if p > self._fair + slack), reverse=True)
            else:
                stale = sorted(p for p in book if p < self._fair - slack)
            for price in stale:
                self._set_level(is_bid, price, 0)
            if not stale:
                price = rng.choice(sorted(book))
                self._set_level(is_bid, price, int(book[price] * rng.uniform(0.0, 0.8)))
        self._trim(is_bid)
        self._replenish(is_bid)
