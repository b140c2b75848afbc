"""The simulator's past: the trades a market made before it started, for the embedded
exchange's REST history (so the default start can backfill), made at once and cheaply.

Simulating the order book through the past (``MarketSimulator.advance``) costs about
0.1 s per symbol per simulated minute, too slow for a default start. The past is only
ever read as aggregate trades and klines, so it is drawn directly, vectorised (numpy):

* taker orders arrive as a Poisson process at the instrument's ``trades_per_s``;
* the price is a geometric random walk at the instrument's ``daily_vol`` (Gaussian steps,
  no GARCH), drawn backwards so that it ends at the market's start price: no jump where
  the live market takes over;
* each order takes 1-4 fills at one price (one Binance aggregate), sizes log-normal in
  quote notional as the live model's median order, taker side 50/50;
* trade ids are consecutive and end at the id just before the market's first live trade,
  so backfill and live trades join with no hole and no overlap.

Pure: no I/O, no clock (the end time comes in); the same arguments give the same trades.
"""

from __future__ import annotations

import hashlib

import numpy as np

from feed.exchange.instruments import Instrument

__all__ = ["past_rows", "MAX_PAST_S"]

#: The longest past made (the exchange serves at most an hour of made-up history).
MAX_PAST_S = 3600.0
_NS = 1_000_000_000
_ORDER_NOTIONAL_USD = 250.0  # median taker order (the live model's)
_ORDER_SIGMA = 1.3
_MAX_FILLS = 4


def past_rows(inst: Instrument, *, end_ns: int, span_s: float, last_id: int, end_ticks: int,
              seed: int = 7) -> list[tuple[int, int, str, str, bool]]:
    """Return the trades of the ``span_s`` seconds before ``end_ns``, oldest first.

    Parameters
    ----------
    inst : Instrument
        Tick, lot, trade rate and daily volatility of the market.
    end_ns : int
        UTC ns the past ends at (the market's start); every trade is before it.
    span_s : float
        Seconds of past, 0 < span_s <= ``MAX_PAST_S``.
    last_id : int
        Trade id of the newest trade made (the one before the first live trade).
    end_ticks : int
        Price in ticks the walk ends at (the market's start price).
    seed : int
        With the symbol, seeds the generator.

    Returns
    -------
    list of (trade_id, ts_ms, price, qty, buyer_is_maker)
        As ``feed.exchange.rest_history.History.add`` takes them: times UTC ms, price and
        quantity as the exchange writes them.

    Raises
    ------
    ValueError
        For a span outside ``(0, MAX_PAST_S]`` or a non-positive end price.
    """
    if not 0 < span_s <= MAX_PAST_S:
        raise ValueError(f"span_s must be in (0, {MAX_PAST_S:g}] seconds, not {span_s!r}")
    if end_ticks < 1:
        raise ValueError(f"end_ticks must be >= 1, not {end_ticks!r}")
    digest = hashlib.sha256(f"{seed}:{inst.symbol}:past:{end_ns}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    n = int(rng.poisson(inst.trades_per_s * span_s))
    if n == 0:
        return []
    span_ns = int(span_s * _NS)
    ts_ns = np.sort(rng.integers(end_ns - span_ns, end_ns, size=n, dtype=np.int64))
    # Backwards walk: the log price before order i is the end price less every step after it.
    dt_s = np.diff(np.append(ts_ns, end_ns)) / _NS
    steps = rng.standard_normal(n) * inst.daily_vol * np.sqrt(dt_s / 86_400)
    log_back = np.cumsum(steps[::-1])[::-1]
    ticks = np.maximum(1, np.rint(end_ticks * np.exp(-log_back))).astype(np.int64)
    fills = np.minimum(rng.geometric(0.6, size=n), _MAX_FILLS)
    price = ticks * inst.tick
    notional = _ORDER_NOTIONAL_USD * np.exp(_ORDER_SIGMA * rng.standard_normal(fills.sum()))
    lots = np.maximum(1, (notional / np.repeat(price, fills) / inst.lot).astype(np.int64))
    sells = rng.random(n) < 0.5
    order_of = np.repeat(np.arange(n), fills)
    first_id = last_id - int(fills.sum()) + 1
    ts_ms = (ts_ns // 1_000_000).tolist()
    prices = [inst.format_price(int(t)) for t in ticks.tolist()]
    sell = sells.tolist()
    return [(first_id + k, ts_ms[o], prices[o], inst.format_qty(q), sell[o])
            for k, (o, q) in enumerate(zip(order_of.tolist(), lots.tolist()))]
