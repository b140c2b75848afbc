"""Market-data value types shared by every layer of tickscope.

Conventions
-----------
* Every timestamp is an ``int`` of UTC nanoseconds since the Unix epoch and its name ends
  in ``_ns``: ``ts_ns`` is exchange (venue) time, ``recv_ns`` is local arrival time.
* Sizes are in base units (BTC for BTCUSDT, contracts for COIN-M), prices and turnover in
  quote currency (USDT for BTCUSDT).
* ``side`` is the taker (aggressor) side: ``BUY`` (+1), ``SELL`` (-1) or ``UNKNOWN`` (0).
  Binance's ``m`` flag ("buyer is maker") true means the taker sold.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal, Union

__all__ = [
    "BUY",
    "SELL",
    "UNKNOWN",
    "NS_PER_SECOND",
    "Trade",
    "AggTrade",
    "BookSnapshot",
    "BookDelta",
    "BookTicker",
    "BarSpec",
    "Bar",
    "TIME_UNITS_NS",
    "MalformedMessage",
    "VendorReply",
    "decimals_of",
    "iso_ms",
]

BUY = 1
SELL = -1
UNKNOWN = 0

NS_PER_SECOND = 1_000_000_000

#: Nanoseconds per time-bar unit letter in a bar spec string.
TIME_UNITS_NS: dict[str, int] = {
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
    "d": 86400 * NS_PER_SECOND,
}
# The unit each time unit must divide evenly into (nautilus_trader's rule): 7m would not
# tile an hour, so bars would drift against the clock.
_TIME_UNIT_PARENT = {"s": 60, "m": 60, "h": 24, "d": 1}


def decimals_of(x: float) -> int:
    """Return the decimals needed to print ``x`` exactly, from its shortest repr.

    ``3e-05`` -> 5, ``0.1`` -> 1, ``61837.63`` -> 2, ``100.0`` -> 0; NaN and inf -> 0.
    """
    if not math.isfinite(x):
        return 0
    return max(0, -int(Decimal(repr(float(x))).normalize().as_tuple().exponent))


def iso_ms(ts_ns: int) -> str:
    """Return UTC ns as ISO-8601 with milliseconds (truncated) and ``Z``.

    ``1723161300000000000`` -> ``"2024-08-08T23:55:00.000Z"``; ``""`` for a time that
    has no ISO form (outside years 1 to 9999), so readers never fail on a bad stamp.
    """
    try:
        ts_ns = int(ts_ns)
        dt = datetime.fromtimestamp(ts_ns // NS_PER_SECOND, tz=timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError):
        return ""  # a time outside years 1..9999 (a vendor's bad stamp): total, never raises
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ts_ns // 1_000_000) % 1000:03d}Z"


@dataclass(slots=True, frozen=True)
class Trade:
    """One executed trade (a tick).

    Parameters
    ----------
    symbol : str
        Vendor-neutral upper-case symbol, e.g. ``"BTCUSDT"``.
    ts_ns : int
        Exchange trade time, UTC ns (Binance ``T``).
    price : float
        Trade price in quote currency.
    size : float
        Trade size in base units (> 0).
    side : int
        Taker side: ``BUY`` (1), ``SELL`` (-1) or ``UNKNOWN`` (0).
    trade_id : int or None
        Vendor trade id (Binance ``t``), used for gap detection; None when the vendor has none.
    recv_ns : int
        Local receive time, UTC ns; 0 when unknown (batch input).
    in_bars : bool
        False for trades shown on the tape but excluded from bars. Binance futures klines
        leave out trades whose ``X`` is not ``MARKET`` (e.g. ``INSURANCE_FUND``); see
        shared/data/binance-ws-captures-hftbacktest/PROVENANCE.md.
    count : int
        Exchange trades this one stands for (>= 1): 1 for a single trade; ``l - f + 1``
        for a Binance aggregate trade (the fills of one taker order at one price and time),
        so bars built from aggregates count the same ``trade_count`` as from the fills.
        With ``count > 1``, ``trade_id`` is the last trade id it holds (Binance ``l``).
    """

    symbol: str
    ts_ns: int
    price: float
    size: float
    side: int = UNKNOWN
    trade_id: int | None = None
    recv_ns: int = 0
    in_bars: bool = True
    count: int = 1


@dataclass(slots=True, frozen=True)
class AggTrade:
    """One Binance aggregate trade (REST ``aggTrades`` row): the fills of one taker order
    at one price and time, exchange trade ids ``first_id..last_id``.

    Parameters
    ----------
    agg_id : int
        Aggregate id (``a``), consecutive per symbol.
    price : float
        Quote currency (``p``).
    size : float
        Base units, the sum of the fills (``q``), > 0.
    first_id, last_id : int
        First and last trade id held (``f``, ``l``), ``first_id <= last_id``.
    ts_ns : int
        Trade time, UTC ns (``T`` ms).
    side : int
        Taker side: ``SELL`` when ``m`` (buyer is maker), else ``BUY``.
    """

    agg_id: int
    price: float
    size: float
    first_id: int
    last_id: int
    ts_ns: int
    side: int


@dataclass(slots=True, frozen=True)
class BookSnapshot:
    """A full (or top-N) order-book image.

    Parameters
    ----------
    symbol : str
        Upper-case symbol.
    ts_ns : int
        Exchange time of the image, UTC ns; 0 when the vendor gives none (Binance REST depth).
    last_update_id : int or None
        Binance ``lastUpdateId``; None for vendors without update ids.
    bids, asks : tuple of (price, size)
        Levels, best first. Prices in quote currency, sizes in base units.
    is_partial : bool
        True for a top-N image (Binance ``@depth5/10/20``, AllTick, iTick) that replaces the
        book wholesale and needs no diff sequencing.
    """

    symbol: str
    ts_ns: int
    last_update_id: int | None
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    is_partial: bool = False


@dataclass(slots=True, frozen=True)
class BookDelta:
    """A diff-depth event (Binance ``depthUpdate``).

    Parameters
    ----------
    symbol : str
        Upper-case symbol.
    ts_ns : int
        Exchange event time, UTC ns (Binance ``E``).
    first_update_id : int
        Binance ``U``.
    final_update_id : int
        Binance ``u``.
    prev_final_update_id : int or None
        Binance USD-M/COIN-M ``pu`` (the previous event's ``u``); None on spot. Its
        presence selects the futures sequencing rule in ``feed.core.book.OrderBook``.
    bids, asks : tuple of (price, size)
        Changed levels; size 0 deletes the level.
    """

    symbol: str
    ts_ns: int
    first_update_id: int
    final_update_id: int
    prev_final_update_id: int | None
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@dataclass(slots=True, frozen=True)
class BookTicker:
    """Best bid and ask (Binance ``@bookTicker``); used to verify local books.

    Parameters
    ----------
    symbol : str
        Upper-case symbol.
    update_id : int
        Binance ``u`` (order-book update id).
    bid, bid_size, ask, ask_size : float
        Best bid/ask price (quote currency) and size (base units).
    ts_ns : int
        Exchange time, UTC ns, when given (futures ``E``), else 0.
    """

    symbol: str
    update_id: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    ts_ns: int = 0


class MalformedMessage(ValueError):
    """A vendor message that cannot be used; counted under ``reason`` and skipped.

    Parameters
    ----------
    reason : str
        Short stable counter key, e.g. ``"bad_json"``, ``"bad_price"``, ``"unknown_event"``.
    detail : str
        Human-readable explanation (never contains secrets).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True, frozen=True)
class VendorReply:
    """A vendor's answer to a control request (subscribe, auth, heartbeat).

    Parameters
    ----------
    ok : bool
        False when the vendor refused the request.
    message : str
        The vendor's words, or ours, fit to show a user (no tokens).
    request_id : str or None
        The request id the vendor echoed, when it has one.
    symbols : tuple of str
        Symbols the reply concerns, when known.
    request : str
        The kind of request answered, when known (e.g. Binance ``"SUBSCRIBE"``).
    """

    ok: bool
    message: str = ""
    request_id: str | None = None
    symbols: tuple[str, ...] = ()
    request: str = ""


BarKind = Literal["time", "tick", "volume", "value"]

_SPEC_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdtvq])\s*$")
_KIND_BY_SUFFIX: dict[str, BarKind] = {
    "s": "time", "m": "time", "h": "time", "d": "time",
    "t": "tick", "v": "volume", "q": "value",
}


def _format_number(x: float) -> str:
    # Integers print without ".0"; other values print their shortest round-trip repr.
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(slots=True, frozen=True, order=True)
class BarSpec:
    """What closes a bar: a kind and a step, written as a short string.

    String forms (round-trip through :meth:`from_str` and ``str``):

    ======  =======  ==============================================================
    kind    example  meaning
    ======  =======  ==============================================================
    time    ``1m``   1-minute bars; units s, m, h, d; step must divide its parent
                     unit evenly (seconds/minutes into 60, hours into 24) and a step
                     equal to the parent is refused in favour of the parent unit
    tick    ``100t`` a bar every 100 trades
    volume  ``50v``  a bar every 50 base units traded
    value   ``1000000q`` a bar every 1,000,000 quote currency of turnover
    ======  =======  ==============================================================

    Parameters
    ----------
    kind : {"time", "tick", "volume", "value"}
    step : float
        Count of ``unit`` for time bars, trades for tick bars, base units for volume bars,
        quote currency for value bars. Must be > 0; integer for time and tick bars.
    unit : str
        For time bars one of ``s m h d``; for the others the suffix letter ``t v q``.

    Raises
    ------
    ValueError
        If the step or unit breaks a rule above; the message states the rule.
    """

    kind: str
    step: float
    unit: str

    def __post_init__(self) -> None:
        if self.kind not in ("time", "tick", "volume", "value"):
            raise ValueError(f"bar kind must be time, tick, volume or value, not {self.kind!r}")
        if not (isinstance(self.step, (int, float)) and math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"bar step must be a positive number, not {self.step!r}")
        if self.kind == "time":
            if self.unit not in TIME_UNITS_NS:
                raise ValueError(f"time bar unit must be one of s, m, h, d, not {self.unit!r}")
            if not float(self.step).is_integer():
                raise ValueError(f"time bar step must be a whole number, not {self.step!r}")
            parent = _TIME_UNIT_PARENT[self.unit]
            if self.unit != "d":
                if parent % int(self.step):
                    raise ValueError(
                        f"time bar step {int(self.step)}{self.unit} must divide {parent} evenly"
                    )
                if int(self.step) == parent:
                    nxt = {"s": "1m", "m": "1h", "h": "1d"}[self.unit]
                    raise ValueError(f"write {nxt} instead of {int(self.step)}{self.unit}")
            elif int(self.step) != 1:
                raise ValueError("time bars longer than a day are not supported; use 1d")
            object.__setattr__(self, "step", int(self.step))
        elif self.kind == "tick":
            if not float(self.step).is_integer():
                raise ValueError(f"tick bar step must be a whole number of trades, not {self.step!r}")
            object.__setattr__(self, "step", int(self.step))
            if self.unit != "t":
                raise ValueError("tick bar unit must be 't'")
        elif self.unit != {"volume": "v", "value": "q"}[self.kind]:
            raise ValueError(f"{self.kind} bar unit must be {'v' if self.kind == 'volume' else 'q'!r}")

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_str(cls, text: str) -> "BarSpec":
        """Parse ``"1m"``, ``"100t"``, ``"50v"``, ``"1000000q"``.

        Raises
        ------
        ValueError
            If ``text`` is not ``<number><s|m|h|d|t|v|q>`` or breaks a rule of the kind.
        """
        m = _SPEC_RE.match(str(text))
        if not m:
            raise ValueError(
                f"bad bar spec {text!r}: expected <number><unit>, unit one of "
                "s m h d (time), t (tick), v (volume), q (value), e.g. 1m, 100t, 50v, 1000000q"
            )
        number, unit = m.groups()
        step = float(number)
        return cls(_KIND_BY_SUFFIX[unit], int(step) if step.is_integer() else step, unit)

    def __str__(self) -> str:
        return f"{_format_number(self.step)}{self.unit}"

    # -- predicates and conversions -----------------------------------------------------

    @property
    def is_time(self) -> bool:
        """Return True for time bars."""
        return self.kind == "time"

    @property
    def interval_ns(self) -> int:
        """Return the bar length in ns (time bars only).

        Raises
        ------
        ValueError
            For tick, volume and value bars, which have no fixed length.
        """
        if self.kind != "time":
            raise ValueError(f"{self} is a {self.kind} bar and has no fixed interval")
        return int(self.step) * TIME_UNITS_NS[self.unit]


@dataclass(slots=True)
class Bar:
    """One OHLCV bar (candle), closed or in progress.

    Parameters
    ----------
    symbol : str
        Upper-case symbol.
    spec : BarSpec
        What closes the bar.
    start_ns, end_ns : int
        UTC ns. Time bars hold trades with ``start_ns <= ts < end_ns`` (label at the
        interval start). Tick, volume and value bars: exchange time of the first and the
        last trade in the bar.
    open, high, low, close : float
        Prices in quote currency.
    volume : float
        Sum of sizes, base units.
    turnover : float
        Sum of price x size, quote currency.
    trade_count : int
        Number of trades (a trade split across threshold bars counts in each).
    buy_volume, sell_volume : float
        Volume whose taker bought / sold (base units); trades with unknown side are in
        neither.
    closed : bool
        False while the bar can still change.
    prev_close : float or None
        Close of the bar before this one in the same series (None for the first bar);
        the base of ``amplitude`` and ``change``.
    first_trade_ns, last_trade_ns : int
        Exchange times (UTC ns) of the trades that set ``open`` and ``close`` (time bars
        order trades by exchange time, so a late trade can move either); 0 when unknown.
    """

    symbol: str
    spec: BarSpec
    start_ns: int
    end_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    turnover: float = 0.0
    trade_count: int = 0
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    closed: bool = False
    prev_close: float | None = None
    first_trade_ns: int = 0
    last_trade_ns: int = 0

    def __post_init__(self) -> None:
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError(
                f"bar OHLC invariant broken: open={self.open} high={self.high} "
                f"low={self.low} close={self.close}"
            )

    @property
    def vwap(self) -> float:
        """Return turnover / volume (quote currency per base unit); close when volume is 0."""
        return self.turnover / self.volume if self.volume else self.close

    @property
    def amplitude(self) -> float:
        """Return (high - low) / previous close, a fraction; NaN for a series' first bar."""
        pc = self.prev_close
        return (self.high - self.low) / pc if pc else math.nan

    @property
    def change(self) -> float:
        """Return (close - previous close) / previous close, a fraction; NaN for the first bar."""
        pc = self.prev_close
        return (self.close - pc) / pc if pc else math.nan

    def as_dict(self) -> dict:
        """Return the bar as a flat dict with the export column names (times as ns)."""
        return {
            "symbol": self.symbol,
            "bar": str(self.spec),
            "start": self.start_ns,
            "end": self.end_ns,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "turnover": self.turnover,
            "vwap": self.vwap,
            "trade_count": self.trade_count,
            "buy_volume": self.buy_volume,
            "sell_volume": self.sell_volume,
            "closed": self.closed,
            "amplitude": self.amplitude,
            "change": self.change,
        }


#: Export column order (CSV export, ``/api/bars`` and ``tickscope bars``): the issue-2
#: contract columns, then the derived ``amplitude`` and ``change`` (fractions of the
#: previous close), appended so readers by position of the first 15 keep working.
BAR_COLUMNS: tuple[str, ...] = (
    "symbol", "bar", "start", "end", "open", "high", "low", "close", "volume",
    "turnover", "vwap", "trade_count", "buy_volume", "sell_volume", "closed",
    "amplitude", "change",
)
__all__ += ["BAR_COLUMNS", "Kline", "Event"]


@dataclass(frozen=True, slots=True)
class Kline:
    """One vendor candle (Binance ``kline`` event), final or in progress.

    Parameters
    ----------
    symbol : str
        Upper-case symbol.
    interval : str
        Binance interval name, e.g. ``"1m"`` or ``"1s"``.
    start_ns, end_ns : int
        UTC ns; the candle holds trades with ``start_ns <= ts < end_ns`` (Binance ``t`` and
        ``T`` + 1 ms).
    open, high, low, close : float
        Prices in quote currency.
    volume : float
        Base-unit volume (``v``).
    turnover : float
        Quote volume (``q``).
    buy_volume : float
        Taker-buy base volume (``V``).
    trade_count : int
        Trades (``n``).
    closed : bool
        True when the candle is final (``x``).
    first_trade_id, last_trade_id : int or None
        ``f`` and ``L``; None when Binance sends -1 (no trade).
    event_ns : int
        Event time (``E``), UTC ns.
    """

    symbol: str
    interval: str
    start_ns: int
    end_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    buy_volume: float
    trade_count: int
    closed: bool
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    event_ns: int = 0


#: What a vendor adapter's ``parse`` may return (``feed.vendors.base``).
Event = Union[Trade, BookDelta, BookSnapshot, BookTicker, Kline, VendorReply]
