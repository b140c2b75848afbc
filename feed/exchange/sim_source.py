"""The simulator source of the embedded exchange: seeded markets on the wall clock.

One ``feed.exchange.simulator.MarketSimulator`` per symbol, driven by the wall clock;
``@trade``, ``@aggTrade``, ``@bookTicker`` as they happen and ``@depth`` diffs every
100 ms (every depth speed suffix gets the 100 ms diffs). A symbol of 5-20 lowercase
letters/digits ending with a known quote asset gets a market on first use. With
``klines=True`` also ``@kline_1s`` and ``@kline_1m`` in Binance's payload shape, built
exactly (integer ticks and lots) from the simulated trades: the candle so far every 1 s /
2 s (Binance's cadence) and the final one (``x: true``) as soon as the interval has
passed; an interval without trades gets Binance's flat candle (previous close, ``n: 0``,
``f``/``L`` -1).

The kline builder here (:class:`_SimKline`) is deliberately independent of
``feed.core.bars``: it is the independent reference that the kline cross-check
(``feed.core.klinecheck``) compares tickscope's own bars against, standing in for the
vendor's candles. Sharing code with ``feed.core.bars`` would make that check compare the
aggregation with itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from feed.exchange.dialect import StreamError, dumps, split_stream
from feed.exchange.fanout import Publisher
from feed.exchange.instruments import instrument_for, quote_asset_of
from feed.exchange.sim_past import MAX_PAST_S, past_rows
from feed.exchange.simulator import MarketSimulator

__all__ = ["SimSource", "SIM_CHANNELS", "SIM_KLINES", "check_sim_symbols"]

log = logging.getLogger(__name__)

#: Channels the simulator produces.
SIM_CHANNELS = ("trade", "aggTrade", "bookTicker", "depth")
#: Kline channels the simulator adds with ``klines=True``: interval -> (ms, push every ms).
SIM_KLINES: dict[str, tuple[int, int]] = {"1s": (1_000, 1_000), "1m": (60_000, 2_000)}
#: Most empty intervals one kline closes in a row (a stalled loop catching up).
SIM_KLINE_CATCH_UP = 120
SIM_SYMBOL_RE = re.compile(r"^[a-z0-9]{5,20}$")
#: Simulator diff-depth cadence, ns.
SIM_DEPTH_INTERVAL_NS = 100_000_000
#: Longest simulator sleep, s (bounds the delay before a new market starts producing).
SIM_MAX_SLEEP_S = 0.05


def check_sim_symbols(symbols: Iterable[str]) -> None:
    """Refuse symbols the simulator cannot make a market for.

    Raises
    ------
    ValueError
        Naming the first symbol that is not 5-20 letters/digits ending with a known quote
        asset.
    """
    for s in symbols:
        if not SIM_SYMBOL_RE.match(s.lower()) or quote_asset_of(s) is None:
            raise ValueError(
                f"cannot simulate {s!r}: expected 5-20 letters/digits ending with a "
                "quote asset (usdt, usdc, fdusd, busd, btc, eth, bnb)"
            )


@dataclass
class _SimKline:
    """One simulated candle in progress, as the vendor would build it.

    Exact units: prices in ticks, sizes in lots, quote volumes in tick_units * lot_units
    (decimals = price + qty decimals). Independent of ``feed.core.bars`` on purpose: it
    is the reference the kline cross-check compares tickscope's bars against, so it must
    not share their code.
    """

    interval: str
    interval_ms: int
    push_ms: int  # in-progress pushes every this many ms
    start_ms: int
    prev_close: int | None = None  # ticks; the open/close of a candle without trades
    first_id: int = -1
    last_id: int = -1
    open: int | None = None
    high: int = 0
    low: int = 0
    close: int = 0
    lots: int = 0
    quote: int = 0
    buy_lots: int = 0
    buy_quote: int = 0
    trades: int = 0
    next_push_ms: int = 0

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.interval_ms

    def add(self, fill, ts_ms: int, inst) -> None:
        ticks, lots = fill.price_ticks, fill.qty_lots
        if self.open is None:
            self.open = self.high = self.low = ticks
            self.first_id = fill.trade_id
        self.high = max(self.high, ticks)
        self.low = min(self.low, ticks)
        self.close = ticks
        self.last_id = fill.trade_id
        self.trades += 1
        self.lots += lots
        quote = ticks * inst.tick_units * lots * inst.lot_units
        self.quote += quote
        if not fill.buyer_is_maker:  # the taker bought
            self.buy_lots += lots
            self.buy_quote += quote

    def next(self) -> "_SimKline":
        # The following interval's candle, opening at this close.
        close = self.close if self.open is not None else self.prev_close
        return _SimKline(self.interval, self.interval_ms, self.push_ms, self.end_ms,
                         prev_close=close, next_push_ms=self.end_ms + self.push_ms)

    def payload(self, inst, event_ms: int, final: bool) -> str:
        # Binance's kline event (vendor-protocols.md section 1).
        flat = self.prev_close if self.prev_close is not None else 0
        o = self.open if self.open is not None else flat
        h, lo, c = (self.high, self.low, self.close) if self.open is not None else (flat, flat, flat)
        qd = inst.price_decimals + inst.qty_decimals

        def quote(units: int) -> str:
            return f"{Decimal(units).scaleb(-qd):.{qd}f}"

        return dumps({"e": "kline", "E": event_ms, "s": inst.symbol, "k": {
            "t": self.start_ms, "T": self.end_ms - 1, "s": inst.symbol, "i": self.interval,
            "f": self.first_id, "L": self.last_id,
            "o": inst.format_price(o), "c": inst.format_price(c),
            "h": inst.format_price(h), "l": inst.format_price(lo),
            "v": inst.format_qty(self.lots), "n": self.trades, "x": final,
            "q": quote(self.quote), "V": inst.format_qty(self.buy_lots), "Q": quote(self.buy_quote),
            "B": "0",
        }})


class SimSource:
    """One MarketSimulator per symbol, driven by the wall clock.

    Parameters
    ----------
    symbols : iterable of str
        Markets started when the source starts running (so their clock starts then).
    seed : int
        Simulator seed (one independent generator per symbol).
    allowed : set of str, optional
        Allow-list (lower case); None: any well-formed symbol.
    rate : float
        Trade-rate multiplier applied to every instrument.
    klines : bool
        Also serve ``kline_1s`` and ``kline_1m``.
    resume : dict, optional
        Symbol (any case) -> ``(last price, last trade id)`` of a previous run (the trade
        store's newest trade): that market continues from there
        (``MarketSimulator(resume=...)``). A resumed market is held
        (``MarketSimulator.hold``) until its trade stream has a subscriber: trades made
        before would take ids nobody received, a gap the engine would rightly count.
    """

    #: The simulator never plays out: the exchange's ``finished`` stays unset.
    plays_out = False

    def __init__(self, symbols: Iterable[str], seed: int, allowed: set[str] | None,
                 rate: float = 1.0, klines: bool = False,
                 resume: dict[str, tuple[float, int]] | None = None) -> None:
        # Where resumed markets continue from (lower-case symbol -> (price, trade id)).
        self._resume = {str(k).lower(): v for k, v in (resume or {}).items()}
        # Resumed markets that have not had a trade subscriber yet (held, not trading).
        self._held = set(self._resume)
        # Channels served (klines only on request: Binance-shaped candles cost a little).
        self.channels = SIM_CHANNELS + (tuple(f"kline_{i}" for i in SIM_KLINES) if klines else ())
        # (symbol, interval) -> candle in progress, for every market once klines are on.
        self._klines: dict[tuple[str, str], _SimKline] | None = {} if klines else None
        self._seed = seed
        # Trade-rate multiplier applied to every instrument.
        self._rate = rate
        # Allow-list (lower case) or None for any well-formed symbol.
        self._allowed = allowed
        # Markets started with the exchange (created when the source starts running, so
        # their clock starts then).
        self._initial = [s.lower() for s in symbols if allowed is None or s.lower() in allowed]
        self.markets: dict[str, MarketSimulator] = {}
        # Last top of book sent per symbol, to emit bookTicker on change only.
        self._tops: dict[str, tuple[int, int, int, int]] = {}
        # Last wall-clock reading handed to a simulator (they refuse time going back).
        self._clock_ns = 0
        # Seconds of past trades each new market has, for the exchange's REST history
        # only: on_history_past(symbol, make) is handed a function that makes them
        # (``feed.exchange.sim_past``), called when the history is first asked for.
        self.history_s = 0.0
        self.on_history_past = None

    def _now(self) -> int:
        # Wall clock, UTC ns, never earlier than a previous reading (NTP may step back).
        self._clock_ns = max(time.time_ns(), self._clock_ns)
        return self._clock_ns

    def symbols(self) -> list[str]:
        """Return the upper-case symbols simulated or to be started, sorted."""
        return sorted({s.upper() for s in self._initial} | {s.upper() for s in list(self.markets)})

    def symbol_error(self, symbol: str) -> str | None:
        if self._allowed is not None and symbol not in self._allowed:
            return f"unknown symbol {symbol!r}; this exchange serves {', '.join(sorted(self._allowed))}"
        if not SIM_SYMBOL_RE.match(symbol) or quote_asset_of(symbol) is None:
            return (
                f"unknown symbol {symbol!r}: expected 5-20 lowercase letters/digits ending "
                "with a quote asset (usdt, usdc, fdusd, busd, btc, eth, bnb)"
            )
        return None

    def check(self, symbol: str, channel: str) -> None:
        error = self.symbol_error(symbol)
        if error:
            raise StreamError(error)
        if channel not in self.channels:
            raise StreamError(
                f"{symbol}@{channel} is not simulated (channels: {', '.join(self.channels)})"
            )

    def has_symbol(self, symbol: str) -> bool:
        """Return True if REST depth serves ``symbol`` (lower case)."""
        return symbol in self.markets or self.symbol_error(symbol) is None

    def on_subscribe(self, names: list[str]) -> None:
        """Start the markets of newly subscribed stream names."""
        for name in names:
            self.ensure(split_stream(name)[0])

    def close(self) -> None:
        """Nothing to release: the run loop is cancelled with the server."""

    def ensure(self, symbol: str) -> MarketSimulator:
        # A market starts on first use of its symbol.
        market = self.markets.get(symbol)
        if market is None:
            inst = instrument_for(symbol)
            if self._rate != 1.0:
                inst = dataclasses.replace(inst, trades_per_s=inst.trades_per_s * self._rate)
            now = self._now()
            resume = self._resume.get(symbol)
            market = MarketSimulator(symbol, start_ns=now, seed=self._seed, instrument=inst, resume=resume)
            # A market continued from a previous run has its real history in the store: no
            # made-up past for it. Otherwise the past is made only if someone asks for it.
            if self.history_s > 0 and self.on_history_past is not None and not resume:
                self.on_history_past(symbol, functools.partial(
                    past_rows, inst, end_ns=now, span_s=min(self.history_s, MAX_PAST_S),
                    last_id=market.last_trade_id, end_ticks=market.fair_ticks, seed=self._seed))
            log.info("simulating %s%s", market.symbol,
                     f", continuing from price {resume[0]} and trade id {resume[1]}" if resume else "")
            self.markets[symbol] = market
        return market

    async def depth(self, symbol: str, limit: int) -> dict | None:
        market = self.ensure(symbol)
        inst = market.instrument
        image = market.snapshot(limit)
        return {
            "lastUpdateId": image.last_update_id,
            "bids": [[inst.format_price(p), inst.format_qty(q)] for p, q in image.bids],
            "asks": [[inst.format_price(p), inst.format_qty(q)] for p, q in image.asks],
        }

    async def run(self, out: Publisher) -> None:
        """Run the markets until cancelled, publishing what subscribers want."""
        for symbol in self._initial:
            self.ensure(symbol)
        next_flush = self._now() // SIM_DEPTH_INTERVAL_NS * SIM_DEPTH_INTERVAL_NS
        while True:
            now = self._now()
            for symbol, market in list(self.markets.items()):
                # A market created while this loop waited on backpressure started later.
                now = max(now, self._clock_ns)
                if symbol in self._held:
                    # A connection, not the REST history's tap: trades made before one
                    # subscribes would be ids its client never receives.
                    if not out.subscribed(symbol, "trade"):
                        market.hold(now)
                        continue
                    self._held.discard(symbol)
                await self._emit_trades(out, symbol, market, market.advance(now), now)
            if self._klines is not None:
                await self._emit_klines(out, now)
            if now >= next_flush:
                for symbol, market in list(self.markets.items()):
                    diff = market.flush_depth(now)
                    if diff is not None and out.wanted(symbol, "depth"):
                        await out.publish(symbol, "depth", self._depth_json(market, diff))
                # Skip missed ticks rather than bursting diffs after a stall.
                next_flush = max(next_flush + SIM_DEPTH_INTERVAL_NS, now - now % SIM_DEPTH_INTERVAL_NS)
            wake = min([next_flush] + [m.next_event_ns for m in self.markets.values()])
            await asyncio.sleep(min(max(0.0, (wake - time.time_ns()) / 1e9), SIM_MAX_SLEEP_S))

    async def _emit_klines(self, out: Publisher, now_ns: int) -> None:
        # Final candles of intervals that have passed (every fill in them was emitted: the
        # markets were advanced to now_ns first), and the in-progress ones on cadence.
        now_ms = now_ns // 1_000_000
        for (symbol, interval), k in list(self._klines.items()):
            market = self.markets.get(symbol)
            if market is None:
                continue
            inst = market.instrument
            channel = f"kline_{interval}"
            for _ in range(SIM_KLINE_CATCH_UP):
                if k.end_ms > now_ms:
                    break
                if out.wanted(symbol, channel):
                    await out.publish(symbol, channel, k.payload(inst, now_ms, True))
                k = self._klines[(symbol, interval)] = k.next()
            else:  # far behind (a long stall): jump to the current interval
                start = now_ms - now_ms % k.interval_ms
                k = self._klines[(symbol, interval)] = _SimKline(
                    interval, k.interval_ms, k.push_ms, start, prev_close=k.prev_close,
                    next_push_ms=start + k.push_ms)
            if now_ms >= k.next_push_ms:
                k.next_push_ms = now_ms - now_ms % k.push_ms + k.push_ms
                if out.wanted(symbol, channel):
                    await out.publish(symbol, channel, k.payload(inst, now_ms, False))

    def _kline_fills(self, symbol: str, inst, fills) -> None:
        # Add fills to the symbol's candles (started at the first fill's interval).
        for interval, (ms, push) in SIM_KLINES.items():
            key = (symbol, interval)
            k = self._klines.get(key)
            for f in fills:
                ts_ms = f.ts_ns // 1_000_000  # Binance buckets by the trade time it sends
                if k is None:
                    start = ts_ms - ts_ms % ms
                    k = self._klines[key] = _SimKline(interval, ms, push, start, next_push_ms=start + push)
                while ts_ms >= k.end_ms:  # the run loop closes intervals; this is a safety net
                    k = self._klines[key] = k.next()
                k.add(f, ts_ms, inst)

    async def _emit_trades(self, out: Publisher, symbol, market, fills, now_ns) -> None:
        inst = market.instrument
        event_ms = now_ns // 1_000_000
        if self._klines is not None and fills:
            self._kline_fills(symbol, inst, fills)
        for f in fills:
            price, qty = inst.format_price(f.price_ticks), inst.format_qty(f.qty_lots)
            if out.wanted(symbol, "trade"):
                await out.publish(symbol, "trade", dumps({
                    "e": "trade", "E": event_ms, "s": inst.symbol, "t": f.trade_id,
                    "p": price, "q": qty, "T": f.ts_ns // 1_000_000,
                    "m": f.buyer_is_maker, "M": True,
                }))
            if out.wanted(symbol, "aggTrade"):
                # One fill per price level, so each aggregate trade holds one trade.
                await out.publish(symbol, "aggTrade", dumps({
                    "e": "aggTrade", "E": event_ms, "s": inst.symbol, "a": f.trade_id,
                    "p": price, "q": qty, "f": f.trade_id, "l": f.trade_id,
                    "T": f.ts_ns // 1_000_000, "m": f.buyer_is_maker, "M": True,
                }))
        top = market.top()
        if top != self._tops.get(symbol):
            self._tops[symbol] = top
            if out.wanted(symbol, "bookTicker"):
                bid, bid_qty, ask, ask_qty = top
                await out.publish(symbol, "bookTicker", dumps({
                    "u": market.last_update_id, "s": inst.symbol,
                    "b": inst.format_price(bid), "B": inst.format_qty(bid_qty),
                    "a": inst.format_price(ask), "A": inst.format_qty(ask_qty),
                }))

    @staticmethod
    def _depth_json(market: MarketSimulator, diff) -> str:
        inst = market.instrument
        return dumps({
            "e": "depthUpdate", "E": diff.ts_ns // 1_000_000, "s": inst.symbol,
            "U": diff.first_update_id, "u": diff.final_update_id,
            "b": [[inst.format_price(p), inst.format_qty(q)] for p, q in diff.bids],
            "a": [[inst.format_price(p), inst.format_qty(q)] for p, q in diff.asks],
        })
