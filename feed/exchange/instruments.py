"""Instruments of the market simulator: symbols, tick and lot sizes, exact formatting.

Owns the table of known pairs (Binance spot's PRICE_FILTER / LOT_SIZE values), the quote
assets a simulated symbol may end with, the inference of an instrument for any other
symbol, and :class:`Instrument`, which turns integer ticks and lots into the exchange's
decimal strings exactly (no float rounding). Pure: no I/O, threads or clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["QUOTE_USD", "Instrument", "instrument_for", "quote_asset_of"]

# -- data block ------------------------------------------------------------------------

#: Quote assets a simulated symbol may end with (lower case) and a rough USD value of one
#: unit, used only to size orders in a plausible notional.
QUOTE_USD: dict[str, float] = {
    "usdt": 1.0, "usdc": 1.0, "fdusd": 1.0, "busd": 1.0,
    "btc": 60_000.0, "eth": 3_000.0, "bnb": 600.0,
}
# Longest first, so "fdusd" is tried before a shorter quote that it ends with.
_QUOTES_BY_LENGTH = sorted(QUOTE_USD, key=len, reverse=True)

# symbol: (tick size, lot size, start price in quote, taker orders per second, daily vol)
# Tick and lot sizes are Binance spot's PRICE_FILTER / LOT_SIZE values for these pairs.
_KNOWN: dict[str, tuple[str, str, float, float, float]] = {
    "BTCUSDT": ("0.01", "0.00001", 60_000.0, 12.0, 0.025),
    "BTCUSDC": ("0.01", "0.00001", 60_000.0, 4.0, 0.03),
    "ETHUSDT": ("0.01", "0.0001", 3_000.0, 8.0, 0.04),
    "SOLUSDT": ("0.01", "0.001", 150.0, 5.0, 0.05),
    "BNBUSDT": ("0.01", "0.001", 600.0, 3.0, 0.04),
    "XRPUSDT": ("0.0001", "0.1", 0.6, 3.0, 0.05),
    "DOGEUSDT": ("0.00001", "1", 0.15, 3.0, 0.06),
    "ETHBTC": ("0.00001", "0.0001", 0.05, 2.0, 0.03),
}


def quote_asset_of(symbol: str) -> str | None:
    """Return the quote asset (lower case) ``symbol`` ends with, or None.

    The base part must be at least two characters (``"usdt"`` alone has no base).
    """
    s = symbol.lower()
    for quote in _QUOTES_BY_LENGTH:
        if s.endswith(quote) and len(s) - len(quote) >= 2:
            return quote
    return None


def _decimal_units(text: str) -> tuple[int, int]:
    # "0.01" -> (1, 2): the value is units * 10**-decimals, exactly.
    d = Decimal(text)
    if d <= 0:
        raise ValueError(f"increment must be positive, not {text!r}")
    decimals = max(0, -d.as_tuple().exponent)
    return int(d.scaleb(decimals)), decimals


def _format_units(units: int, decimals: int) -> str:
    # Exact decimal text of units * 10**-decimals, e.g. (6000012, 2) -> "60000.12".
    if decimals == 0:
        return str(units)
    digits = str(units).rjust(decimals + 1, "0")
    return f"{digits[:-decimals]}.{digits[-decimals:]}"


@dataclass(frozen=True, slots=True)
class Instrument:
    """Static facts of one simulated symbol.

    Parameters
    ----------
    symbol : str
        Upper-case symbol, e.g. ``"BTCUSDT"``.
    tick_size : str
        Price increment in quote currency, as a decimal string (``"0.01"``).
    lot_size : str
        Size increment in base units, as a decimal string (``"0.00001"``).
    start_price : float
        Initial price, quote currency.
    trades_per_s : float
        Mean taker orders per second at long-run volatility (each may print several trades).
    daily_vol : float
        Long-run volatility of log returns over 24 h (0.03 = 3 %).
    quote_usd : float
        Rough USD value of one unit of the quote asset (sizes orders).
    """

    symbol: str
    tick_size: str
    lot_size: str
    start_price: float
    trades_per_s: float
    daily_vol: float
    quote_usd: float = 1.0
    # Derived exact representations (tick = tick_units * 10**-price_decimals).
    tick_units: int = field(init=False, repr=False)
    price_decimals: int = field(init=False, repr=False)
    lot_units: int = field(init=False, repr=False)
    qty_decimals: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tick_units, price_decimals = _decimal_units(self.tick_size)
        lot_units, qty_decimals = _decimal_units(self.lot_size)
        object.__setattr__(self, "tick_units", tick_units)
        object.__setattr__(self, "price_decimals", price_decimals)
        object.__setattr__(self, "lot_units", lot_units)
        object.__setattr__(self, "qty_decimals", qty_decimals)
        if not (self.start_price > 0 and self.trades_per_s > 0 and self.daily_vol > 0):
            raise ValueError("start_price, trades_per_s and daily_vol must be positive")

    @property
    def tick(self) -> float:
        """Return the tick size as a float (quote currency)."""
        return self.tick_units / 10**self.price_decimals

    @property
    def lot(self) -> float:
        """Return the lot size as a float (base units)."""
        return self.lot_units / 10**self.qty_decimals

    def format_price(self, ticks: int) -> str:
        """Return the price of ``ticks`` ticks as the exchange writes it (tick's decimals)."""
        return _format_units(ticks * self.tick_units, self.price_decimals)

    def format_qty(self, lots: int) -> str:
        """Return the size of ``lots`` lots as the exchange writes it (lot's decimals)."""
        return _format_units(lots * self.lot_units, self.qty_decimals)


def instrument_for(symbol: str) -> Instrument:
    """Return the instrument of ``symbol``: known pairs from a table, others inferred.

    An unknown symbol gets a start price drawn log-uniformly between 0.05 and 500 USD
    (stable per symbol name, independent of any seed), a tick of about five significant
    digits and a lot worth about 0.01-0.1 USD.

    Raises
    ------
    ValueError
        If ``symbol`` does not end with a known quote asset (see ``QUOTE_USD``).
    """
    sym = symbol.upper()
    quote = quote_asset_of(sym)
    if quote is None:
        raise ValueError(
            f"symbol {symbol!r} must end with a quote asset: {', '.join(_QUOTES_BY_LENGTH)}"
        )
    if sym in _KNOWN:
        tick, lot, price, rate, vol = _KNOWN[sym]
        return Instrument(sym, tick, lot, price, rate, vol, QUOTE_USD[quote])
    rng = random.Random(f"instrument:{sym}")
    usd_price = 10 ** rng.uniform(math.log10(0.05), math.log10(500.0))
    price = usd_price / QUOTE_USD[quote]
    tick_exp = max(-8, math.floor(math.log10(price)) - 4)
    lot_exp = min(3, max(-8, math.floor(math.log10(0.05 / usd_price))))
    tick = format(Decimal(1).scaleb(tick_exp), "f")
    lot = format(Decimal(1).scaleb(lot_exp), "f")
    price = round(price / 10**tick_exp) * 10**tick_exp
    return Instrument(sym, tick, lot, price, rng.uniform(2.0, 6.0), 0.06, QUOTE_USD[quote])
