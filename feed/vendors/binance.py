"""Binance public market streams (spot, USD-M and COIN-M futures): adapter and parsers.

Wire format: ../shared/vendor-protocols.md section 1 and binance-spot-api-docs
``web-socket-streams.md``; futures: developers.binance.com ``derivatives/.../
websocket-market-streams``. The module opens with the vendor facts as data; below them,
one pure parser per wire message (its docstring is the vendor's sample payload) and the
:class:`BinanceAdapter` that routes frames to them by a dict.

Caveats
-------
* tickscope connects to the combined endpoint (``/stream``), whose wrapper names the stream.
  On a raw ``/ws`` connection spot ``@depthN`` images carry no symbol (refused as
  ``no_symbol``) and futures ``@depthN`` images look exactly like diffs (``depthUpdate``).
* All times are taken in ms (no ``timeUnit=MICROSECOND`` in the URL) and returned in ns.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from feed.core.models import (
    BUY,
    SELL,
    BookDelta,
    BookSnapshot,
    BookTicker,
    Kline,
    MalformedMessage,
    Trade,
    VendorReply,
)
from feed.vendors._common import call_parser, clean_symbol, dumps, load_object
from feed.vendors.base import Event, VendorBase

__all__ = ["BinanceAdapter", "BinanceMarket", "MARKETS", "STREAMS", "KLINE_INTERVALS", "HTTP_HINTS"]

# ======================================================================================
# Vendor facts
# ======================================================================================


@dataclass(frozen=True, slots=True)
class BinanceMarket:
    """Endpoints and limits of one Binance market (data only; see ``MARKETS``).

    Parameters
    ----------
    name : str
        Adapter name used in logs and the UI.
    ws_url : str
        Combined-stream WebSocket endpoint.
    rest_base : str
        REST base URL (scheme and host).
    depth_path : str
        REST path of the order-book snapshot.
    symbol_pattern : re.Pattern
        Shape of a normalised symbol.
    symbol_example : str
        Shown in the error for a bad symbol.
    max_messages_per_s : float
        Incoming (client -> server) messages per second per connection, control
        messages and pings included; above it Binance disconnects.
    ping_interval_s : float
        How often the server sends protocol pings (answered by websocket-client).
    kline_intervals : tuple of str
        Kline intervals the market streams (``@kline_<i>``) that tickscope can compare.
    data_ws_url, data_rest_base : str or None
        The market-data-only hosts (no account endpoints), or None when the market has
        none (BN faqs/market_data_only.md: spot only).
    """

    name: str
    ws_url: str
    rest_base: str
    depth_path: str
    symbol_pattern: re.Pattern[str]
    symbol_example: str
    max_messages_per_s: float
    ping_interval_s: float
    kline_intervals: tuple[str, ...] = ()
    data_ws_url: str | None = None
    data_rest_base: str | None = None


_SPOT_SYMBOL = re.compile(r"^[A-Z0-9]{5,20}$")
# Futures add a contract suffix: BTCUSD_PERP, BTCUSD_240927, BTCUSDT_240927.
_FUTURES_SYMBOL = re.compile(r"^[A-Z0-9]{5,20}(?:_[A-Z0-9]{4,6})?$")

#: Kline intervals tickscope's time bars can reproduce (no 3d, 1w, 1M: calendar units).
KLINE_INTERVALS: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
)

MARKETS: dict[str, BinanceMarket] = {
    "spot": BinanceMarket(
        name="binance",
        ws_url="wss://stream.binance.com:9443/stream",
        rest_base="https://api.binance.com",
        depth_path="/api/v3/depth",
        symbol_pattern=_SPOT_SYMBOL,
        symbol_example="BTCUSDT",
        # BN web-socket-streams.md "WebSocket Limits": 5 incoming messages/s, pings and
        # pongs included; control messages use 4 to leave room for pongs.
        max_messages_per_s=4,
        ping_interval_s=20,        # pong within 1 min (CHANGELOG 2025-01-28)
        kline_intervals=("1s", *KLINE_INTERVALS),  # 1s: spot only
        # BN faqs/market_data_only.md: public market data without account endpoints.
        data_ws_url="wss://data-stream.binance.vision/stream",
        data_rest_base="https://data-api.binance.vision",
    ),
    "usdm": BinanceMarket(
        name="binance-usdm",
        ws_url="wss://fstream.binance.com/stream",
        rest_base="https://fapi.binance.com",
        depth_path="/fapi/v1/depth",
        symbol_pattern=_FUTURES_SYMBOL,
        symbol_example="BTCUSDT",
        max_messages_per_s=8,      # usds-margined-futures/websocket-market-streams: 10/s, headroom for pongs
        ping_interval_s=180,       # pong within 10 min
        kline_intervals=KLINE_INTERVALS,
    ),
    "coinm": BinanceMarket(
        name="binance-coinm",
        ws_url="wss://dstream.binance.com/stream",
        rest_base="https://dapi.binance.com",
        depth_path="/dapi/v1/depth",
        symbol_pattern=_FUTURES_SYMBOL,
        symbol_example="BTCUSD_PERP",
        max_messages_per_s=10,
        ping_interval_s=180,
        kline_intervals=KLINE_INTERVALS,
    ),
}

#: Standard channel -> stream suffix subscribed for every symbol.
STREAMS: dict[str, str] = {
    "trades": "trade",
    "depth": "depth@100ms",
}

#: REST snapshot depth: 1000 levels (weight 50 on spot, 20 on USD-M).
SNAPSHOT_LIMIT = 1000
#: Streams per SUBSCRIBE/UNSUBSCRIBE frame (Binance refuses "too many params", code 2,
#: without documenting the number).
MAX_PARAMS_PER_MESSAGE = 100
#: Streams one connection may carry (spot and futures).
MAX_STREAMS_PER_CONNECTION = 1024

#: What to tell the user for HTTP statuses of the WebSocket handshake or a REST request
#: (``feed.io.client.explain_error`` hints; ``{wait}`` is the wait in seconds). 451: binance.com
#: geo-blocks some regions (US, some clouds) [3P]; whether data-stream.binance.vision is
#: blocked there too is unconfirmed [?]. 429/418: BN rest-api.md "LIMITS".
HTTP_HINTS: dict[int, str] = {
    451: ("Binance refuses connections from your location (restricted region); try "
          "--binance-host data (market-data-only host), --market usdm, or a VPN or network "
          "in a permitted region"),
    429: ("Binance rate limit: too many connection attempts or requests from this IP; "
          "waiting {wait:g} s as its Retry-After says (ignoring it gets the IP banned, HTTP 418)"),
    418: ("Binance has banned this IP for ignoring rate limits (2 minutes to 3 days); "
          "waiting {wait:g} s as its Retry-After says"),
    403: "Binance's firewall (WAF) blocked this client; check the URL, proxy or VPN",
}

_INF = math.inf
_MS_TO_NS = 1_000_000

# ======================================================================================
# Parsers: one per wire message. Each takes the payload dict, the symbol named by the
# combined stream (None on a raw connection) and the receive time, and returns one event.
# Missing keys and wrong types raise KeyError/TypeError/ValueError, which ``parse`` turns
# into MalformedMessage; range checks raise MalformedMessage themselves.
# ======================================================================================


def _trade(d: dict, symbol: str | None, recv_ns: int) -> Trade:
    """Parse a ``<symbol>@trade`` event.

    Spot::

        {"e": "trade",          # event type
         "E": 1723161255343,    # event time, ms
         "s": "BTCUSDT",        # symbol
         "t": 3735683259,       # trade id
         "p": "61837.63000000", # price
         "q": "0.02000000",     # quantity, base units
         "T": 1723161255342,    # trade time, ms -> ts_ns
         "m": true,             # buyer is maker: the taker SOLD
         "M": true}             # ignore

    USD-M / COIN-M add ``"X": "MARKET"`` (or ``INSURANCE_FUND``, ``ADL``, ...); only
    MARKET trades are in Binance's klines, so others get ``in_bars=False``.
    """
    x = d.get("X")
    return _fill(d, symbol, recv_ns, "trade", "t", x is None or x == "MARKET")


def _agg_trade(d: dict, symbol: str | None, recv_ns: int) -> Trade:
    """Parse a ``<symbol>@aggTrade`` event (fills of one taker order at one price).

    ::

        {"e": "aggTrade", "E": 1717000000200, "s": "BTCUSDT",
         "a": 2900000001,          # aggregate trade id -> trade_id
         "p": "67000.00", "q": "0.420",
         "f": 3600000002,          # first trade id
         "l": 3600000005,          # last trade id
         "T": 1717000000199,       # trade time, ms
         "m": false,               # buyer is maker (false: the taker bought)
         "M": true}

    Futures aggregate only market trades (no insurance-fund or ADL fills), so every
    aggTrade counts in bars.
    """
    return _fill(d, symbol, recv_ns, "aggTrade", "a", True)


def _fill(d: dict, symbol: str | None, recv_ns: int, event: str, id_key: str, in_bars: bool) -> Trade:
    # The fields trade and aggTrade share (price p, size q, time T, maker flag m), checked;
    # the id is under ``id_key`` (t: trade id, a: aggregate id). Errors name ``event``.
    price = float(d["p"])
    size = float(d["q"])
    ts = d["T"]
    tid = d[id_key]
    m = d["m"]
    if not 0.0 < price < _INF:
        raise MalformedMessage("bad_price", f"{event} price {d['p']!r}")
    if not 0.0 < size < _INF:
        raise MalformedMessage("bad_size", f"{event} size {d['q']!r}")
    if type(ts) is not int or type(tid) is not int or (m is not True and m is not False):
        raise MalformedMessage("bad_field", f"{event} T={ts!r} {id_key}={tid!r} m={m!r}")
    return Trade(
        symbol or d["s"], ts * _MS_TO_NS, price, size, SELL if m else BUY, tid, recv_ns, in_bars,
    )


def _levels(rows: list, field: str) -> tuple[tuple[float, float], ...]:
    # [[price, size], ...] strings -> floats; price > 0, size >= 0 (0 deletes), finite.
    if type(rows) is not list:
        raise MalformedMessage("bad_level", f"{field} is {type(rows).__name__}, not a list")
    out = []
    append = out.append
    for row in rows:
        if type(row) is not list:
            raise MalformedMessage("bad_level", f"{field} row {row!r} is not a list")
        p = float(row[0])
        q = float(row[1])
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise MalformedMessage("bad_level", f"{field} level {row!r}")
        append((p, q))
    return tuple(out)


def _depth_update(d: dict, symbol: str | None, recv_ns: int) -> BookDelta:
    """Parse a diff-depth event (``@depth``, ``@depth@100ms``, futures ``@depth@0ms``).

    Spot::

        {"e": "depthUpdate", "E": 1723161255208, "s": "BTCUSDT",
         "U": 50093239189,      # first update id in the event
         "u": 50093239202,      # final update id in the event
         "b": [["61737.63000000", "0.00000000"]],   # bids [price, absolute size]; 0 deletes
         "a": [["61837.64000000", "1.54698000"]]}   # asks

    USD-M / COIN-M add ``"T"`` (transaction time) and ``"pu"`` (the previous event's
    ``u``), which selects the futures sequencing rule in ``feed.core.book.OrderBook``::

        {"e": "depthUpdate", "E": 1723161256299, "T": 1723161256298, "s": "BTCUSDT",
         "U": 5123107832006, "u": 5123107837557, "pu": 5123107831937,
         "b": [["58710.20", "0.014"]], "a": [["61800.30", "2.510"]]}
    """
    ev, first, final = d["E"], d["U"], d["u"]
    pu = d.get("pu")
    if (
        type(ev) is not int or type(first) is not int or type(final) is not int
        or first > final or (pu is not None and type(pu) is not int)
    ):
        raise MalformedMessage(
            "bad_update_id", f"depthUpdate E={ev!r} U={first!r} u={final!r} pu={pu!r}"
        )
    return BookDelta(
        symbol or d["s"], ev * _MS_TO_NS, first, final, pu,
        _levels(d["b"], "b"), _levels(d["a"], "a"),
    )


def _partial_depth(d: dict, symbol: str | None, recv_ns: int) -> BookSnapshot:
    """Parse a top-N image (``@depth5``, ``@depth10``, ``@depth20``, optionally ``@100ms``).

    Spot (no event type, no symbol: the symbol comes from the stream name)::

        {"lastUpdateId": 160,
         "bids": [["0.0024", "10"]],     # best first
         "asks": [["0.0026", "100"]]}

    USD-M / COIN-M send the diff shape, but with the top N levels in full::

        {"e": "depthUpdate", "E": 1571889248277, "T": 1571889248276, "s": "BTCUSDT",
         "U": 390497796, "u": 390497878, "pu": 390497794,
         "b": [["7403.89", "0.002"]], "a": [["7405.96", "3.340"]]}
    """
    if "lastUpdateId" in d:
        lid, bids, asks, ts = d["lastUpdateId"], d["bids"], d["asks"], 0
    else:
        lid, bids, asks, ev = d["u"], d["b"], d["a"], d["E"]
        if type(ev) is not int:
            raise MalformedMessage("bad_field", f"depth E={ev!r}")
        ts = ev * _MS_TO_NS
    if type(lid) is not int:
        raise MalformedMessage("bad_update_id", f"partial depth update id {lid!r}")
    symbol = symbol or d.get("s")
    if not symbol:
        raise MalformedMessage(
            "no_symbol", "partial depth without a symbol: use the combined /stream endpoint"
        )
    return BookSnapshot(
        symbol, ts, lid, _levels(bids, "bids"), _levels(asks, "asks"), is_partial=True
    )


def _book_ticker(d: dict, symbol: str | None, recv_ns: int) -> BookTicker:
    """Parse a ``<symbol>@bookTicker`` event (best bid/ask on every change).

    Spot (no event type, no event time)::

        {"u": 50093239212,          # order-book update id
         "s": "BTCUSDT",
         "b": "61837.63000000",     # best bid price
         "B": "3.78826000",         # best bid size
         "a": "61837.64000000",     # best ask price
         "A": "1.54698000"}         # best ask size

    USD-M / COIN-M add ``"e": "bookTicker"``, ``"E"`` (event time, ms -> ts_ns) and
    ``"T"`` (transaction time).
    """
    uid = d["u"]
    bid, bid_size, ask, ask_size = float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"])
    if type(uid) is not int:
        raise MalformedMessage("bad_update_id", f"bookTicker u={uid!r}")
    if not (0.0 <= bid < _INF and 0.0 <= ask < _INF):
        raise MalformedMessage("bad_price", f"bookTicker b={d['b']!r} a={d['a']!r}")
    if not (0.0 <= bid_size < _INF and 0.0 <= ask_size < _INF):
        raise MalformedMessage("bad_size", f"bookTicker B={d['B']!r} A={d['A']!r}")
    ev = d.get("E")
    return BookTicker(
        symbol or d["s"], uid, bid, bid_size, ask, ask_size,
        ev * _MS_TO_NS if type(ev) is int else 0,
    )


def _kline(d: dict, symbol: str | None, recv_ns: int) -> Kline:
    """Parse a ``<symbol>@kline_<interval>`` event (the candle so far, or final).

    ::

        {"e": "kline", "E": 1633998523963, "s": "NKNUSDT",
         "k": {"t": 1633998480000,      # open time, ms -> start_ns
               "T": 1633998539999,      # close time, ms (last ms inside) -> end_ns = T + 1 ms
               "s": "NKNUSDT",
               "i": "1m",               # interval
               "f": 19862761,           # first trade id (-1: none)
               "L": 19862790,           # last trade id (-1: none)
               "o": "0.35270000", "c": "0.35280000", "h": "0.35280000", "l": "0.35220000",
               "v": "25877.00000000",   # base volume
               "n": 30,                 # trades
               "x": false,              # final?
               "q": "9116.04600000",    # quote volume
               "V": "58.00000000",      # taker-buy base volume
               "Q": "20.46240000",      # taker-buy quote volume
               "B": "0"}}               # ignore

    Futures klines count MARKET trades only (as ``Trade.in_bars``).
    """
    k = d["k"]
    if type(k) is not dict:
        raise MalformedMessage("bad_field", f"kline k is {type(k).__name__}, not an object")
    t, end, n, x, ev = k["t"], k["T"], k["n"], k["x"], d.get("E", 0)
    if (type(t) is not int or type(end) is not int or end < t or type(n) is not int or n < 0
            or (x is not True and x is not False) or type(ev) is not int):
        raise MalformedMessage("bad_field", f"kline t={t!r} T={end!r} n={n!r} x={x!r}")
    o, h, lo, c = float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"])
    v, q, vb = float(k["v"]), float(k["q"]), float(k["V"])
    if not all(0.0 <= p < _INF for p in (o, h, lo, c)) or (n and not lo <= min(o, c) <= max(o, c) <= h):
        raise MalformedMessage("bad_price", f"kline o={k['o']!r} h={k['h']!r} l={k['l']!r} c={k['c']!r}")
    if not all(0.0 <= x_ < _INF for x_ in (v, q, vb)):
        raise MalformedMessage("bad_size", f"kline v={k['v']!r} q={k['q']!r} V={k['V']!r}")
    first, last = k.get("f"), k.get("L")
    return Kline(
        symbol or k.get("s") or d["s"], str(k["i"]), t * _MS_TO_NS, (end + 1) * _MS_TO_NS,
        o, h, lo, c, v, q, vb, n, x,
        first if type(first) is int and first >= 0 else None,
        last if type(last) is int and last >= 0 else None,
        ev * _MS_TO_NS,
    )


def _reply(d: dict, request: tuple[str, tuple[str, ...]] | None) -> VendorReply:
    """Parse the answer to a control request, given what that request was.

    Success (``result`` is null for SUBSCRIBE/UNSUBSCRIBE, a list for LIST_SUBSCRIPTIONS)::

        {"result": null, "id": 1}
        {"result": ["btcusdt@trade", "btcusdt@depth@100ms"], "id": 3}

    Error (the documented form, and the flat form some servers send)::

        {"error": {"code": 2, "msg": "Invalid request: too many params"}, "id": 1}
        {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1", "id": null}
    """
    rid = d.get("id")
    request_id = None if rid is None else str(rid)
    method, symbols = request if request else ("", ())
    if "result" in d:
        result = d["result"]
        if isinstance(result, list):
            names = [s for s in result if isinstance(s, str)]
            symbols = tuple(dict.fromkeys(s.partition("@")[0].upper() for s in names))
            return VendorReply(True, "subscribed: " + ", ".join(names), request_id, symbols)
        what = f"{method.lower()}d" if method else "ok"
        text = f"{what} {', '.join(symbols)}" if symbols else what
        return VendorReply(True, text, request_id, symbols)
    err = d.get("error", d)
    if not isinstance(err, dict):
        raise MalformedMessage("bad_reply", f"error field {err!r}")
    code, msg = err.get("code"), err.get("msg", "")
    doing = f" ({method} {', '.join(symbols)})" if method else ""
    return VendorReply(False, f"Binance error {code}: {msg}{doing}", request_id, symbols, method)


_Parser = Callable[[dict, "str | None", int], object]

#: Stream suffix (after "<symbol>@") -> parser.
_BY_SUFFIX: dict[str, _Parser] = {
    "trade": _trade,
    "aggTrade": _agg_trade,
    "bookTicker": _book_ticker,
    **{f"depth{ms}": _depth_update for ms in ("", "@0ms", "@100ms", "@250ms", "@500ms")},
    **{
        f"depth{n}{ms}": _partial_depth
        for n in (5, 10, 20)
        for ms in ("", "@0ms", "@100ms", "@250ms", "@500ms")
    },
}

#: Event type ``e`` -> parser, for raw (unwrapped) payloads and unknown stream suffixes.
_BY_EVENT: dict[str, _Parser] = {
    "trade": _trade,
    "aggTrade": _agg_trade,
    "depthUpdate": _depth_update,
    "bookTicker": _book_ticker,
    "kline": _kline,  # every @kline_<i> suffix routes here through _by_event
}

#: Documented events tickscope does not use: skipped without counting them as malformed.
_IGNORED_EVENTS = frozenset(
    {"markPriceUpdate", "24hrTicker", "24hrMiniTicker", "forceOrder", "avgPrice"}
)


def _by_event(d: dict, symbol: str | None, recv_ns: int):
    # Route on the payload's own event type (raw streams, unknown suffixes).
    e = d.get("e")
    parser = _BY_EVENT.get(e) if isinstance(e, str) else None
    if parser is not None:
        return parser(d, symbol, recv_ns)
    if e in _IGNORED_EVENTS:
        return None
    if e == "serverShutdown":
        raise MalformedMessage("server_shutdown", "Binance announced a server shutdown: reconnect")
    if e is None:
        if "lastUpdateId" in d:
            return _partial_depth(d, symbol, recv_ns)
        if "u" in d and "b" in d and "a" in d:
            return _book_ticker(d, symbol, recv_ns)
    raise MalformedMessage("unknown_event", f"event type {e!r}, keys {sorted(d)[:8]}")


_ROUTE_CACHE_MAX = 4096


# ======================================================================================
# Adapter
# ======================================================================================


class BinanceAdapter(VendorBase):
    """Binance spot, USD-M or COIN-M public market data (no API key).

    Parameters
    ----------
    market : {"spot", "usdm", "coinm"}, default "spot"
    ws_url : str, optional
        WebSocket URL to connect to instead of Binance's (e.g. the embedded exchange,
        ``ws://127.0.0.1:9000/stream``).
    rest_url : str, optional
        REST base (``http://127.0.0.1:9000``) or full depth URL (ending in ``/depth``) for
        snapshots. Default: Binance's when ``ws_url`` is not given, else ``http(s)`` on
        the ``ws_url``'s host and port with Binance's depth path.
    host : {"main", "data"}, default "main"
        ``"data"``: Binance's market-data-only hosts (``data-stream.binance.vision`` and
        ``data-api.binance.vision``; spot only). Ignored for a URL given explicitly.
    klines : str, optional
        Also subscribe ``<symbol>@kline_<klines>`` (e.g. ``"1m"``) for the kline cross-check
        (``feed.core.klinecheck``); the candles parse into ``Kline`` events.

    Raises
    ------
    ValueError
        For an unknown market, host or kline interval, or a URL with the wrong scheme.
    """

    heartbeat_interval_s: float | None = None  # the server pings; websocket-client pongs
    streams: dict[str, str] = STREAMS
    #: Handshake / REST statuses explained in Binance's terms (``feed.io.client``).
    http_hints: dict[int, str] = HTTP_HINTS

    def __init__(
        self, market: str = "spot", *, ws_url: str | None = None, rest_url: str | None = None,
        host: str = "main", klines: str | None = None,
    ) -> None:
        if market not in MARKETS:
            raise ValueError(f"unknown Binance market {market!r}: use one of {', '.join(MARKETS)}")
        spec = MARKETS[market]
        if host not in ("main", "data"):
            raise ValueError(f"Binance host must be 'main' or 'data', not {host!r}")
        if host == "data":
            if spec.data_ws_url is None:
                raise ValueError(
                    f"Binance has no market-data-only host for {market}; it exists for spot only")
            spec = replace(spec, ws_url=spec.data_ws_url, rest_base=spec.data_rest_base or spec.rest_base)
        if klines is not None and klines not in spec.kline_intervals:
            raise ValueError(
                f"kline interval {klines!r} is not available on Binance {market} for the cross-check: "
                f"use one of {', '.join(spec.kline_intervals)}")
        self.market = market
        self.spec = spec
        self.host = host  # "main" or "data"
        self.klines = klines  # kline interval subscribed for the cross-check, or None
        if klines is not None:
            self.streams = {**STREAMS, "kline": f"kline_{klines}"}
        self.name = spec.name
        self.symbol_pattern = spec.symbol_pattern
        self.max_messages_per_s = spec.max_messages_per_s
        self._ws_url = ws_url or spec.ws_url
        parts = urlsplit(self._ws_url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"WebSocket URL must start with ws:// or wss://, not {self._ws_url!r}")
        if rest_url is not None:
            rparts = urlsplit(rest_url)
            if rparts.scheme not in ("http", "https") or not rparts.netloc:
                raise ValueError(f"REST URL must start with http:// or https://, not {rest_url!r}")
            base = rest_url.rstrip("/")
            full = rparts.path.rstrip("/").endswith("/depth")
            self._depth_url = base if full else base + spec.depth_path
        elif ws_url is not None:
            scheme = "https" if parts.scheme == "wss" else "http"
            self._depth_url = f"{scheme}://{parts.netloc}{spec.depth_path}"
        else:
            self._depth_url = spec.rest_base + spec.depth_path
        # Stream name -> (parser, symbol); stream names repeat, so split each once.
        self._routes: dict[str, tuple[_Parser, str]] = {}
        # Request ids for control messages, and what each one asked, to word the reply.
        self._ids = itertools.count(1)
        self._requests: dict[int, tuple[str, tuple[str, ...]]] = {}

    # -- symbols and URLs ------------------------------------------------------------

    def normalize_symbol(self, text: str) -> str:
        """Return ``text`` as a Binance symbol (upper case, ``/`` removed).

        Raises
        ------
        ValueError
            With a message for the user when the result is not a valid symbol.
        """
        sym = clean_symbol(text)
        if not self.symbol_pattern.match(sym):
            raise ValueError(
                f"{text.strip()!r} is not a Binance {self.market} symbol: expected 5-20 "
                f"letters and digits such as {self.spec.symbol_example}"
            )
        return sym

    def url(self, symbols: Iterable[str] = ()) -> str:
        """Return the combined-stream URL; subscriptions follow via SUBSCRIBE frames."""
        return self._ws_url

    def snapshot_url(self, symbol: str) -> str:
        """Return the REST URL of a 1000-level depth snapshot for ``symbol``."""
        return f"{self._depth_url}?symbol={self.normalize_symbol(symbol)}&limit={SNAPSHOT_LIMIT}"

    def stream_names(self, symbols: Iterable[str]) -> list[str]:
        """Return the stream names for ``symbols`` (``btcusdt@trade``, ``btcusdt@depth@100ms``).

        Raises
        ------
        ValueError
            If a symbol is invalid (nothing is sent then).
        """
        syms = [self.normalize_symbol(s) for s in symbols]
        return [f"{s.lower()}@{suffix}" for s in syms for suffix in self.streams.values()]

    # -- control messages ------------------------------------------------------------

    def subscribe_messages(self, symbols: Iterable[str]) -> list[str]:
        """Return SUBSCRIBE frames for the trade and diff-depth streams of ``symbols``.

        ``{"method":"SUBSCRIBE","params":[...],"id":n}`` with increasing ids and at most
        ``MAX_PARAMS_PER_MESSAGE`` streams per frame. The client must space them to
        ``max_messages_per_s``. Kline streams (``klines``) go in frames of their own, so a
        server that refuses them (a replay without recorded klines) still serves trades.

        Raises
        ------
        ValueError
            If a symbol is invalid.
        """
        return self._control("SUBSCRIBE", symbols)

    def unsubscribe_messages(self, symbols: Iterable[str]) -> list[str]:
        """Return UNSUBSCRIBE frames for ``symbols`` (same shape as SUBSCRIBE).

        Raises
        ------
        ValueError
            If a symbol is invalid.
        """
        return self._control("UNSUBSCRIBE", symbols)

    def heartbeat_message(self) -> None:
        """Return None: Binance needs no application heartbeat (protocol pings only)."""
        return None

    # -- parsing ---------------------------------------------------------------------

    def parse(self, raw: str | bytes, recv_ns: int) -> list[Event]:
        """Return the events in one frame: combined-stream wrappers or raw payloads.

        ``raw`` (JSON text as received) and ``recv_ns`` (local receive time, UTC ns) as in
        :meth:`feed.vendors.base.VendorAdapter.parse`.

        Returns
        -------
        list
            One ``Trade``, ``BookDelta``, ``BookSnapshot`` (partial), ``BookTicker``,
            ``Kline`` (``feed.core.klinecheck``) or ``VendorReply``; empty for documented events
            tickscope does not use.

        Raises
        ------
        MalformedMessage
            ``bad_json``, ``bad_shape``, ``missing_field``, ``bad_field``, ``bad_price``,
            ``bad_size``, ``bad_level``, ``bad_update_id``, ``no_symbol``, ``bad_reply``,
            ``unknown_event`` or ``server_shutdown``.
        """
        msg = load_object(raw)
        stream = msg.get("stream")
        event = call_parser(stream or "raw", self._event, msg, stream, recv_ns)
        return [] if event is None else [event]

    @staticmethod
    def rejected_symbols(event: object) -> tuple[str, ...]:
        """Return the symbols of a refused SUBSCRIBE request (an error reply to it)."""
        if isinstance(event, VendorReply) and not event.ok and event.request == "SUBSCRIBE":
            return event.symbols
        return ()

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> BookSnapshot:
        """Return the full book in a REST depth response.

        ::

            {"lastUpdateId": 50093239218,      # update id the image reflects
             "E": 1723161256501, "T": ...,     # futures only: event/transaction time, ms
             "bids": [["61837.63000000", "3.78826000"], ...],   # best first
             "asks": [["61837.64000000", "1.54698000"], ...]}

        Parameters
        ----------
        symbol : str
            The symbol requested (the spot body does not name it).
        body : bytes
            Response body.
        recv_ns : int
            Local receive time, UTC ns (unused: the image is stamped with ``E`` if any).

        Raises
        ------
        MalformedMessage
            ``bad_json``, ``vendor_error`` (a ``{"code":..,"msg":..}`` body),
            ``missing_field``, ``bad_field``, ``bad_level``, ``bad_update_id`` or
            ``wrong_symbol``.
        """
        sym = symbol.strip().upper()
        try:
            d = json.loads(body)
        except (ValueError, TypeError, RecursionError) as exc:
            raise MalformedMessage("bad_json", f"depth snapshot: {str(exc)[:200]}") from None
        if type(d) is not dict:
            raise MalformedMessage("bad_shape", "depth snapshot is not an object")
        if "lastUpdateId" not in d:
            if "code" in d:
                raise MalformedMessage(
                    "vendor_error", f"Binance error {d.get('code')}: {d.get('msg', '')}"
                )
            raise MalformedMessage("missing_field", "depth snapshot has no lastUpdateId")
        lid, ev = d["lastUpdateId"], d.get("E")
        if type(lid) is not int:
            raise MalformedMessage("bad_update_id", f"lastUpdateId {lid!r}")
        named = d.get("symbol")
        if named is not None and named != sym:
            raise MalformedMessage("wrong_symbol", f"asked for {sym}, got {named!r}")
        bids, asks = call_parser(
            "depth snapshot", lambda: (_levels(d["bids"], "bids"), _levels(d["asks"], "asks")))
        ts = ev * _MS_TO_NS if type(ev) is int else 0
        return BookSnapshot(sym, ts, lid, bids, asks, is_partial=False)

    # -- private ---------------------------------------------------------------------

    def _event(self, msg: dict, stream: object, recv_ns: int) -> object:
        # The event in a decoded frame: a combined-stream wrapper, a control reply or a
        # raw payload. Field errors are turned into MalformedMessage by ``parse``.
        if stream is not None:
            route = self._routes.get(stream) or self._route(stream)
            data = msg.get("data")
            if type(data) is not dict:
                raise MalformedMessage("bad_shape", f"{stream}: data is not an object")
            return route[0](data, route[1], recv_ns)
        if "id" in msg and ("result" in msg or "error" in msg or "code" in msg):
            rid = msg["id"]
            request = self._requests.pop(rid, None) if type(rid) is int else None
            return _reply(msg, request)
        return _by_event(msg, None, recv_ns)

    def _route(self, stream: str) -> tuple[_Parser, str]:
        # Split "<symbol>@<suffix>" once per stream name; unknown suffixes route on "e".
        if type(stream) is not str:
            raise MalformedMessage("bad_shape", f"stream name {stream!r}")
        sym, _, suffix = stream.partition("@")
        route = (_BY_SUFFIX.get(suffix, _by_event), sym.upper())
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[stream] = route
        return route

    def _control(self, method: str, symbols: Iterable[str]) -> list[str]:
        names = self.stream_names(symbols)
        kline = "@kline_"
        chunks = [n for n in names if kline not in n], [n for n in names if kline in n]
        out = []
        for group in chunks:
            out.extend(self._frames(method, group))
        return out

    def _frames(self, method: str, names: list[str]) -> list[str]:
        out = []
        for i in range(0, len(names), MAX_PARAMS_PER_MESSAGE):
            chunk = names[i : i + MAX_PARAMS_PER_MESSAGE]
            rid = next(self._ids)
            chunk_syms = tuple(dict.fromkeys(n.partition("@")[0].upper() for n in chunk))
            if len(self._requests) >= 1024:  # replies never came; forget the oldest
                self._requests.pop(next(iter(self._requests)))
            self._requests[rid] = (method, chunk_syms)
            request = {"method": method, "params": chunk, "id": rid}
            out.append(dumps(request))
        return out
