"""Binance REST history as the embedded exchange serves it: aggregate trades and 1m klines.

Routes (shared/vendor-protocols.md "REST history"; Binance's spot ``market-data-endpoints``
and USD-M ``Compressed-Aggregate-Trades-List`` / ``Kline-Candlestick-Data`` pages):

* ``GET /api/v3/aggTrades``, ``/fapi/v1/aggTrades`` — ``symbol`` (required), ``fromId``
  (aggregate id, inclusive), ``startTime`` / ``endTime`` (ms, inclusive; together they
  must span less than one hour, else ``-1127``), ``limit`` (default 500, at most 1000).
  Without fromId/startTime/endTime: the most recent aggregates. Ascending by ``a``. Rows
  ``{"a","p","q","f","l","T","m","M"}``; prices and quantities as strings.
* ``GET /api/v3/klines``, ``/fapi/v1/klines`` — ``symbol``, ``interval`` (``1m`` only
  here), ``startTime``, ``endTime``, ``limit`` (default 500, at most 1000 spot / 1500
  USD-M). Rows ``[open_time, open, high, low, close, volume, close_time, quote_volume,
  count, taker_buy_volume, taker_buy_quote_volume, "0"]``, numbers as strings; minutes
  without trades are left out (the embedded exchange does not invent flat candles).

Every answer carries ``X-MBX-USED-WEIGHT-1M`` (the weight used in the current minute,
this request included). A request that would pass ``weight_limit`` is answered ``429``
with ``Retry-After`` (seconds to the next minute window) and ``-1003``; Binance bans
(``418``) clients that keep asking after 429s: here the second 429 in a window is a 418.

Aggregation: trades are held as they are played (replay) or made (simulator). A trade
joins the previous aggregate when it follows it by id with the same time (ms), price and
taker side, as one taker order's fills at one price do; futures trades whose ``X`` is not
``MARKET`` are not aggregated (Binance leaves insurance-fund and ADL fills out of
aggregates and klines). Bars from these aggregates therefore equal bars from the trades.
(Binance's USD-M page words its rule as fills "in 100ms with the same price and the same
taking side"; any such rule keeps ids ``f..l`` consecutive, which is all clients rely on.)

What is uncertain about Binance (and what this server does):

* fromId together with startTime/endTime: older spot docs refused the combination; the
  current ones are silent. Here both filters apply.
* startTime without endTime (or the reverse): Binance documents only the pair. Here a
  lone bound filters on its side only.
* Weights: spot aggTrades 4 (2024 docs; 2 in 2018, 1 in a later connector's docs: uncertain),
  USD-M 20 (current USD-M page); klines spot 2, USD-M by limit (1 / 2 / 5 / 10). Spot limit
  6000 a minute, USD-M 2400 (docs disagree over time): clients must read the header rather
  than trust a table, and so must tickscope (``feed.io.backfill`` lists the sources).
* The weight window: fixed windows of ``window_s`` aligned to the clock here; whether
  Binance's minute is a calendar minute or rolling is uncertain.
* ``Retry-After``: seconds to the end of the window, on 429 and 418 alike (Binance: for a
  429 the wait that prevents a ban, for a 418 until the ban ends, bans 2 min to 3 days).
* A ``limit`` above the maximum: Binance answers -1100/-1130 on some endpoints and caps
  on others; here it is refused with ``-1130``.

Pure apart from the clock handed in (``now_s``): the server calls :meth:`History.respond`.
"""

from __future__ import annotations

import bisect
import http
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from websockets.datastructures import Headers
from websockets.http11 import Response

from feed.exchange.dialect import dumps

__all__ = [
    "AGG_TRADES_PATHS", "KLINES_PATHS", "HISTORY_PATHS", "WEIGHTS", "History", "SymbolHistory",
]

AGG_TRADES_PATHS = ("/api/v3/aggTrades", "/fapi/v1/aggTrades")
KLINES_PATHS = ("/api/v3/klines", "/fapi/v1/klines")
HISTORY_PATHS = AGG_TRADES_PATHS + KLINES_PATHS
#: Request weights by path (klines on USD-M grow with ``limit``: see ``_klines_weight``).
WEIGHTS = {"/api/v3/aggTrades": 4, "/fapi/v1/aggTrades": 20, "/api/v3/klines": 2}
AGG_MAX_LIMIT = 1000
KLINES_MAX_LIMIT = {"/api/v3/klines": 1000, "/fapi/v1/klines": 1500}
DEFAULT_LIMIT = 500
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
#: Aggregates kept per symbol; beyond it the oldest half is let go (bounded memory).
MAX_AGGREGATES = 2_000_000

# Binance error codes (``{"code": N, "msg": ...}``).
ERR_TOO_MANY_REQUESTS = -1003
ERR_ILLEGAL_CHARS = -1100
ERR_MANDATORY = -1102
ERR_INVALID_SYMBOL = -1121
ERR_INVALID_INTERVAL = -1120
ERR_RANGE = -1127
ERR_BAD_PARAM = -1130


class _Refused(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass(slots=True)
class SymbolHistory:
    """One symbol's aggregate trades, in id order (columns; ``a`` ids are consecutive).

    ``first_a`` is the aggregate id of ``T[0]``; prices are kept as the exchange sent
    them (strings), quantities as Decimal so an aggregate's sum stays exact.
    """

    first_a: int = 1
    T: list[int] = field(default_factory=list)  # trade time, ms
    p: list[str] = field(default_factory=list)
    q: list[Decimal] = field(default_factory=list)
    f: list[int] = field(default_factory=list)
    l: list[int] = field(default_factory=list)  # noqa: E741 - Binance's field name
    m: list[bool] = field(default_factory=list)

    def add(self, trade_id: int, ts_ms: int, price: str, qty: str, buyer_maker: bool) -> None:
        """Add one trade, extending the last aggregate when it is the same order's fill.

        Raises
        ------
        ValueError
            If ``qty`` is not a number.
        """
        try:
            size = Decimal(qty)
        except InvalidOperation:
            raise ValueError(f"quantity {qty!r} is not a number") from None
        if (self.T and self.l[-1] + 1 == trade_id and self.T[-1] == ts_ms and self.p[-1] == price
                and self.m[-1] == buyer_maker):
            self.q[-1] += size
            self.l[-1] = trade_id
            return
        if self.T and trade_id <= self.l[-1]:
            return  # a trade seen already (a file played twice)
        self.T.append(ts_ms)
        self.p.append(price)
        self.q.append(size)
        self.f.append(trade_id)
        self.l.append(trade_id)
        self.m.append(buyer_maker)
        if len(self.T) > MAX_AGGREGATES:
            drop = len(self.T) // 2
            for col in (self.T, self.p, self.q, self.f, self.l, self.m):
                del col[:drop]
            self.first_a += drop

    def extend(self, newer: "SymbolHistory") -> None:
        """Append ``newer``'s aggregates (all after this one's by trade id), renumbered on
        from this one's: for a past made after live trades were already held."""
        if self.l and newer.f and newer.f[0] <= self.l[-1]:
            raise ValueError(f"trade ids overlap: {newer.f[0]} after {self.l[-1]}")
        for name in ("T", "p", "q", "f", "l", "m"):
            getattr(self, name).extend(getattr(newer, name))

    def row(self, i: int) -> dict:
        """Return aggregate ``i`` (position) as Binance's JSON row."""
        return {"a": self.first_a + i, "p": self.p[i], "q": _dec(self.q[i]), "f": self.f[i],
                "l": self.l[i], "T": self.T[i], "m": self.m[i], "M": True}

    def agg_trades(self, from_id: int | None, start: int | None, end: int | None, limit: int) -> list[dict]:
        """Return up to ``limit`` aggregates (ascending) matching Binance's filters."""
        n = len(self.T)
        if from_id is None and start is None and end is None:
            return [self.row(i) for i in range(max(0, n - limit), n)]
        lo = 0 if from_id is None else max(0, from_id - self.first_a)
        if start is not None:
            lo = max(lo, bisect.bisect_left(self.T, start))
        hi = n if end is None else bisect.bisect_right(self.T, end)
        return [self.row(i) for i in range(lo, min(hi, lo + limit))]

    def klines(self, start: int | None, end: int | None, limit: int) -> list[list]:
        """Return up to ``limit`` 1m klines (ascending) with open time in [start, end]."""
        lo = 0 if start is None else bisect.bisect_left(self.T, start - start % MINUTE_MS)
        rows: list[list] = []
        i, n = lo, len(self.T)
        while i < n and len(rows) < limit:
            minute = self.T[i] - self.T[i] % MINUTE_MS
            if end is not None and minute > end:
                break
            j = bisect.bisect_left(self.T, minute + MINUTE_MS, i)
            if start is None or minute >= start:
                rows.append(self._kline(minute, i, j))
            i = j
        return rows

    def _kline(self, minute: int, i: int, j: int) -> list:
        prices = [Decimal(x) for x in self.p[i:j]]
        vol = quote = buy = buy_quote = Decimal(0)
        count = 0
        for k in range(i, j):
            qk, pk = self.q[k], prices[k - i]
            vol += qk
            quote += qk * pk
            count += self.l[k] - self.f[k] + 1
            if not self.m[k]:
                buy += qk
                buy_quote += qk * pk
        return [minute, self.p[i], _dec(max(prices)), _dec(min(prices)), self.p[j - 1], _dec(vol),
                minute + MINUTE_MS - 1, _dec(quote), count, _dec(buy), _dec(buy_quote), "0"]


def _dec(x: Decimal) -> str:
    # Plain notation, no exponent (Binance sends "0.00100000", never "1E-3").
    return format(x, "f")


class History:
    """Aggregate trades of every symbol, the weight meter, and the REST answers.

    Parameters
    ----------
    weight_limit : int
        Request weight allowed per window (Binance: per minute per IP).
    window_s : float
        Length of a weight window, seconds (60 as Binance; tests shorten it).
    clock : callable
        Returns the time in seconds (``time.time`` in the server); windows are aligned to it.
    """

    def __init__(self, weight_limit: int = 6000, window_s: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        if not (isinstance(weight_limit, int) and weight_limit >= 1):
            raise ValueError(f"weight_limit must be an int >= 1, not {weight_limit!r}")
        if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be > 0, not {window_s!r}")
        self.symbols: dict[str, SymbolHistory] = {}  # lower-case symbol
        self.weight_limit = weight_limit
        self.window_s = float(window_s)
        self._clock = clock or time.time
        self._window = -1  # index of the current window
        self._used = 0  # weight used in it
        self._refusals = 0  # 429s answered in it
        # lower-case symbol -> function making its past trades (simulator), run on first use
        self._past: dict[str, Callable[[], list]] = {}
        #: Requests answered, weight charged and 429/418 refusals, for tests and reports.
        self.stats = {"requests": 0, "weight": 0, "refused": 0}

    def add(self, symbol: str, trade_id: int, ts_ms: int, price: str, qty: str, buyer_maker: bool) -> None:
        """Hold one trade of ``symbol`` (any case), as played or made."""
        key = symbol.lower()
        h = self.symbols.get(key)
        if h is None:
            h = self.symbols[key] = SymbolHistory()
        h.add(trade_id, ts_ms, price, qty, buyer_maker)

    def add_past(self, symbol: str, make: Callable[[], list]) -> None:
        """Hold ``make`` for ``symbol``: it returns the trades before the first one held,
        oldest first, as :meth:`add` takes them, and is called when the symbol's history
        is first asked for (making them costs time nobody should wait for at start)."""
        self._past[symbol.lower()] = make

    def _make_past(self, key: str) -> None:
        # The past goes in before any aggregate of the symbol was served, so aggregate
        # ids handed out never change.
        make = self._past.pop(key, None)
        if make is None:
            return
        past = SymbolHistory()
        try:
            for row in make():
                past.add(*row)
        except ValueError:  # a past that cannot be made: the history starts with the live trades
            return
        held = self.symbols.get(key)
        if held is not None:
            past.extend(held)
        self.symbols[key] = past

    def add_trade_event(self, symbol: str, d: dict) -> None:
        """Hold a Binance ``trade`` event body (``t, p, q, T, m[, X]``); others are ignored."""
        x = d.get("X")
        if x is not None and x != "MARKET":
            return
        t, ts, p, q, m = d.get("t"), d.get("T"), d.get("p"), d.get("q"), d.get("m")
        if type(t) is int and type(ts) is int and isinstance(p, str) and isinstance(q, str) and type(m) is bool:
            try:
                self.add(symbol, t, ts, p, q, m)
            except ValueError:
                pass  # a bad recorded line is the replay's business, not the history's

    # -- REST --------------------------------------------------------------------------

    def respond(self, path: str, query: dict[str, list[str]]) -> Response:
        """Answer one REST history request (``path`` in ``HISTORY_PATHS``); never raises."""
        try:
            symbol = _symbol(query)
            limit_max = AGG_MAX_LIMIT if path in AGG_TRADES_PATHS else KLINES_MAX_LIMIT[path]
            limit = _int(query, "limit", 1, limit_max)
            limit = DEFAULT_LIMIT if limit is None else limit
            weight = WEIGHTS.get(path) or _klines_weight(limit)
            refusal = self._charge(weight)
            if refusal is not None:
                return refusal
            start, end = _int(query, "startTime", 0), _int(query, "endTime", 0)
            if self._past:
                self._make_past(symbol.lower())
            h = self.symbols.get(symbol.lower())
            if h is None:
                raise _Refused(400, ERR_INVALID_SYMBOL, "Invalid symbol.")
            if path in AGG_TRADES_PATHS:
                if start is not None and end is not None and not 0 <= end - start < HOUR_MS:
                    raise _Refused(400, ERR_RANGE, "More than 1 hours between startTime and endTime.")
                body = h.agg_trades(_int(query, "fromId", 0), start, end, limit)
            else:
                interval = (query.get("interval") or [""])[0]
                if not interval:
                    raise _Refused(400, ERR_MANDATORY, "Mandatory parameter 'interval' was not sent, "
                                   "was empty/null, or malformed.")
                if interval != "1m":
                    raise _Refused(400, ERR_INVALID_INTERVAL, "Invalid interval (the embedded exchange "
                                   "serves 1m klines only).")
                body = h.klines(start, end, limit)
            return self._reply(200, body)
        except _Refused as exc:
            return self._reply(exc.status, {"code": exc.code, "msg": exc.msg})

    def _charge(self, weight: int) -> Response | None:
        # Meter the request weight in the current window; a 429 (then 418) past the limit.
        now = self._clock()
        window = int(now // self.window_s)
        if window != self._window:
            self._window, self._used, self._refusals = window, 0, 0
        retry = max(1, math.ceil((window + 1) * self.window_s - now))
        if self._used + weight > self.weight_limit:
            self._refusals += 1
            self.stats["refused"] += 1
            status = 429 if self._refusals == 1 else 418
            msg = ("Too many requests; current limit of IP is %d request weight per %g s. Please use "
                   "WebSocket Streams for live updates to avoid polling the API." % (self.weight_limit, self.window_s))
            if status == 418:
                msg = "Way too many requests; IP banned until the window ends (kept asking after a 429)."
            return self._reply(status, {"code": ERR_TOO_MANY_REQUESTS, "msg": msg},
                               extra=[("Retry-After", str(retry))])
        self._used += weight
        self.stats["requests"] += 1
        self.stats["weight"] += weight
        return None

    def _reply(self, status: int, body: object, extra: list[tuple[str, str]] = ()) -> Response:
        data = dumps(body).encode()
        headers = Headers([
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(data))),
            ("X-MBX-USED-WEIGHT-1M", str(self._used)),
            ("Connection", "close"),
            *extra,
        ])
        return Response(status, http.HTTPStatus(status).phrase, headers, data)


def _klines_weight(limit: int) -> int:
    # USD-M klines weight by limit (Kline-Candlestick-Data: [1,100) 1, [100,500) 2,
    # [500,1000] 5, > 1000 10).
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def _symbol(query: dict[str, list[str]]) -> str:
    symbol = (query.get("symbol") or [""])[0]
    if not symbol:
        raise _Refused(400, ERR_MANDATORY, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                       "or malformed.")
    if not (1 <= len(symbol) <= 20 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in symbol)):
        raise _Refused(400, ERR_ILLEGAL_CHARS, "Illegal characters found in parameter 'symbol'; legal "
                       "range is '^[A-Z0-9-_.]{1,20}$'.")
    return symbol


def _int(query: dict[str, list[str]], name: str, lo: int, hi: int = (1 << 63) - 1) -> int | None:
    text = (query.get(name) or [None])[0]
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not lo <= int(text) <= hi:
        raise _Refused(400, ERR_BAD_PARAM, f"Data sent for parameter '{name}' is not valid.")
    return int(text)
