"""Binance wire messages: one pure parser per message, and the routing tables.

Each ``parse_<message>(d, symbol, recv_ns)`` takes the payload dict of one stream event,
the symbol named by the combined stream (None on a raw connection) and the local receive
time (UTC ns), and returns one ``feed.core.models`` event. Its docstring is the vendor's
sample payload with a comment per field. Nothing here keeps state, does I/O or logs:
:class:`feed.vendors.binance.BinanceAdapter` decodes frames and routes them here through
:data:`BY_SUFFIX` (combined-stream suffix) and :func:`parse_by_event` (the ``e`` field).

Wire format: ../shared/vendor-protocols.md section 1 and binance-spot-api-docs
``web-socket-streams.md``; futures: developers.binance.com ``derivatives/.../
websocket-market-streams``. Times are ms on the wire (no ``timeUnit=MICROSECOND``) and
UTC ns in events.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from feed.core.models import (
    BUY,
    AggTrade,
    SELL,
    BookDelta,
    BookSnapshot,
    BookTicker,
    Kline,
    MalformedMessage,
    Trade,
    VendorReply,
)
from feed.vendors._common import (
    MAX_NOTIONAL,
    MAX_PRICE,
    MAX_SIZE,
    call_parser,
    exchange_ns,
    number,
    price,
    size,
    trade_id,
    ts_to_ns,
)
from feed.vendors.depth_levels import level_sides, levels

__all__ = [
    "parse_trade",
    "parse_agg_trade",
    "parse_depth_update",
    "parse_partial_depth",
    "parse_book_ticker",
    "parse_kline",
    "parse_reply",
    "parse_by_event",
    "parse_depth_snapshot",
    "BY_SUFFIX",
    "Parser",
    "parse_agg_trades_body",
    "parse_klines_body",
]

_MS_TO_NS = 1_000_000

# ======================================================================================
# Parsers: one per wire message. Each takes the payload dict, the symbol named by the
# combined stream (None on a raw connection) and the receive time, and returns one event.
# Missing keys and wrong types raise KeyError/TypeError/ValueError, which ``parse`` turns
# into MalformedMessage; range checks raise MalformedMessage themselves.
# ======================================================================================


def parse_trade(d: dict, symbol: str | None, recv_ns: int) -> Trade:
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


def parse_agg_trade(d: dict, symbol: str | None, recv_ns: int) -> Trade:
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
    # The fields trade and aggTrade share (price p, size q, time T, maker flag m), checked
    # by value (``_common``: price, size, trade_id, exchange_ns give each its own reason);
    # the id is under ``id_key`` (t: trade id, a: aggregate id). Errors name ``event``.
    p = price(d["p"], f"{event} price")
    q = size(d["q"], f"{event} size", price_=p)
    tid = trade_id(d[id_key], f"{event} {id_key}")
    ts = exchange_ns(d["T"], f"{event} T", unit_ns=_MS_TO_NS)
    m = d["m"]
    if m is not True and m is not False:
        raise MalformedMessage("bad_field", f"{event} m={m!r}")
    return Trade(symbol or d["s"], ts, p, q, SELL if m else BUY, tid, recv_ns, in_bars)


def parse_depth_update(d: dict, symbol: str | None, recv_ns: int) -> BookDelta:
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
    symbol = symbol or d["s"]  # before the levels: a missing symbol is reported first
    bids, asks = level_sides(d, "b", "a")
    return BookDelta(symbol, ev * _MS_TO_NS, first, final, pu, bids, asks)


def parse_partial_depth(d: dict, symbol: str | None, recv_ns: int) -> BookSnapshot:
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
        lid, bids, asks = d["u"], d["b"], d["a"]
        ts = ts_to_ns(d["E"], "depth E", unit_ns=_MS_TO_NS)
    if type(lid) is not int:
        raise MalformedMessage("bad_update_id", f"partial depth update id {lid!r}")
    symbol = symbol or d.get("s")
    if not symbol:
        raise MalformedMessage(
            "no_symbol", "partial depth without a symbol: use the combined /stream endpoint"
        )
    return BookSnapshot(
        symbol, ts, lid, levels(bids, "bids"), levels(asks, "asks"), is_partial=True
    )


def parse_book_ticker(d: dict, symbol: str | None, recv_ns: int) -> BookTicker:
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
    bid, ask = (number(d[k], k, finite=False, reason="bad_price") for k in ("b", "a"))
    bid_size, ask_size = (number(d[k], k, finite=False, reason="bad_size") for k in ("B", "A"))
    if type(uid) is not int:
        raise MalformedMessage("bad_update_id", f"bookTicker u={uid!r}")
    if not (0.0 <= bid < MAX_PRICE and 0.0 <= ask < MAX_PRICE):
        raise MalformedMessage("bad_price", f"bookTicker b={d['b']!r} a={d['a']!r}")
    if not (0.0 <= bid_size < MAX_SIZE and 0.0 <= ask_size < MAX_SIZE):
        raise MalformedMessage("bad_size", f"bookTicker B={d['B']!r} A={d['A']!r}")
    ev = d.get("E")
    return BookTicker(
        symbol or d["s"], uid, bid, bid_size, ask, ask_size,
        ev * _MS_TO_NS if type(ev) is int else 0,
    )


def parse_kline(d: dict, symbol: str | None, recv_ns: int) -> Kline:
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
    o, h, lo, c = (number(k[f], f"kline {f}", finite=False, reason="bad_price") for f in "ohlc")
    v, q, vb = (number(k[f], f"kline {f}", finite=False, reason="bad_size") for f in "vqV")
    if not all(0.0 <= p < MAX_PRICE for p in (o, h, lo, c)) or (n and not lo <= min(o, c) <= max(o, c) <= h):
        raise MalformedMessage("bad_price", f"kline o={k['o']!r} h={k['h']!r} l={k['l']!r} c={k['c']!r}")
    # q is quote volume (price x size summed): bounded by the notional, not the size.
    if not (0.0 <= v < MAX_SIZE and 0.0 <= vb < MAX_SIZE and 0.0 <= q < MAX_NOTIONAL):
        raise MalformedMessage("bad_size", f"kline v={k['v']!r} q={k['q']!r} V={k['V']!r}")
    first, last = k.get("f"), k.get("L")
    return Kline(
        symbol or k.get("s") or d["s"], str(k["i"]), t * _MS_TO_NS, (end + 1) * _MS_TO_NS,
        o, h, lo, c, v, q, vb, n, x,
        first if type(first) is int and first >= 0 else None,
        last if type(last) is int and last >= 0 else None,
        ev * _MS_TO_NS,
    )


def parse_reply(d: dict, request: tuple[str, tuple[str, ...]] | None) -> VendorReply:
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


Parser = Callable[[dict, "str | None", int], object]

#: Stream suffix (after "<symbol>@") -> parser.
BY_SUFFIX: dict[str, Parser] = {
    "trade": parse_trade,
    "aggTrade": parse_agg_trade,
    "bookTicker": parse_book_ticker,
    **{f"depth{ms}": parse_depth_update for ms in ("", "@0ms", "@100ms", "@250ms", "@500ms")},
    **{
        f"depth{n}{ms}": parse_partial_depth
        for n in (5, 10, 20)
        for ms in ("", "@0ms", "@100ms", "@250ms", "@500ms")
    },
}

#: Event type ``e`` -> parser, for raw (unwrapped) payloads and unknown stream suffixes.
_BY_EVENT: dict[str, Parser] = {
    "trade": parse_trade,
    "aggTrade": parse_agg_trade,
    "depthUpdate": parse_depth_update,
    "bookTicker": parse_book_ticker,
    "kline": parse_kline,  # every @kline_<i> suffix routes here through parse_by_event
}

#: Documented events tickscope does not use: skipped without counting them as malformed.
_IGNORED_EVENTS = frozenset(
    {"markPriceUpdate", "24hrTicker", "24hrMiniTicker", "forceOrder", "avgPrice"}
)


def parse_by_event(d: dict, symbol: str | None, recv_ns: int):
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
            return parse_partial_depth(d, symbol, recv_ns)
        if "u" in d and "b" in d and "a" in d:
            return parse_book_ticker(d, symbol, recv_ns)
    raise MalformedMessage("unknown_event", f"event type {e!r}, keys {sorted(d)[:8]}")


def parse_depth_snapshot(symbol: str, body: bytes) -> BookSnapshot:
    """Parse a REST depth response (``GET /api/v3/depth``, ``/fapi/v1/depth``): the full book.

    The image is stamped with ``E`` (ms -> ns) when the body has one, else 0.

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
        "depth snapshot", lambda: (levels(d["bids"], "bids"), levels(d["asks"], "asks")))
    ts = ev * _MS_TO_NS if type(ev) is int else 0
    return BookSnapshot(sym, ts, lid, bids, asks, is_partial=False)


# ======================================================================================
# REST history bodies (GET /api/v3/aggTrades, /fapi/v1/aggTrades; /api/v3/klines, ...)
# ======================================================================================

#: Rows accepted in one REST history body (Binance sends at most 1000 / 1500).
MAX_HISTORY_ROWS = 1500


def parse_agg_trades_body(body: bytes | str) -> tuple[AggTrade, ...]:
    """Parse a REST ``aggTrades`` body into aggregate trades, in the order sent.

    ::

        [{"a": 26129,          # aggregate trade id
          "p": "0.01633102",   # price
          "q": "4.70443515",   # quantity, base units
          "f": 27781,          # first trade id
          "l": 27781,          # last trade id
          "T": 1498793709153,  # trade time, ms
          "m": true,           # buyer is maker: the taker SOLD
          "M": true}]          # ignore

    Raises
    ------
    MalformedMessage
        ``bad_history`` naming the first bad row (the whole page is refused: a page is
        applied all or nothing so no trade is half-counted).
    """
    try:
        rows = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage("bad_history", f"aggTrades body is not JSON: {exc}") from None
    if not isinstance(rows, list) or len(rows) > MAX_HISTORY_ROWS:
        raise MalformedMessage("bad_history", "aggTrades body is not a list of at most "
                               f"{MAX_HISTORY_ROWS} rows")
    out = []
    for i, d in enumerate(rows):
        try:
            a, f, last, ts, m = d["a"], d["f"], d["l"], d["T"], d["m"]
            price = number(d["p"], "p")
            size = number(d["q"], "q")
            ok = (all(type(x) is int and 0 <= x < 1 << 63 for x in (a, f, last, ts)) and f <= last
                  and type(m) is bool and 0 < price < MAX_PRICE and 0 < size < MAX_SIZE)
        except (KeyError, TypeError, ValueError, MalformedMessage):
            ok = False
        if not ok:
            raise MalformedMessage("bad_history", f"aggTrades row {i}: {str(d)[:120]}")
        out.append(AggTrade(a, price, size, f, last, ts * _MS_TO_NS, SELL if m else BUY))
    return tuple(out)


def parse_klines_body(symbol: str, body: bytes | str, interval: str = "1m") -> tuple[Kline, ...]:
    """Parse a REST ``klines`` body into final candles (``closed`` True), in the order sent.

    ::

        [[1499040000000,      # open time, ms
          "0.01634790",       # open
          "0.80000000",       # high
          "0.01575800",       # low
          "0.01577100",       # close
          "148976.11427815",  # volume, base units
          1499644799999,      # close time, ms (open time + interval - 1)
          "2434.19055334",    # quote volume
          308,                # number of trades
          "1756.87402397",    # taker buy base volume
          "28.46694368",      # taker buy quote volume
          "0"]]               # ignore

    The caller decides whether a candle is final (its close time has passed).

    Raises
    ------
    MalformedMessage
        ``bad_history`` naming the first bad row.
    """
    try:
        rows = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage("bad_history", f"klines body is not JSON: {exc}") from None
    if not isinstance(rows, list) or len(rows) > MAX_HISTORY_ROWS:
        raise MalformedMessage("bad_history", f"klines body is not a list of at most {MAX_HISTORY_ROWS} rows")
    out = []
    for i, r in enumerate(rows):
        try:
            t0, t1, n = r[0], r[6], r[8]
            if not (type(t0) is int and type(t1) is int and type(n) is int and t0 <= t1 and n >= 0):
                raise ValueError("bad times or count")
            vals = [number(r[k], str(k)) for k in (1, 2, 3, 4, 5, 7, 9)]
            out.append(Kline(symbol, interval, t0 * _MS_TO_NS, (t1 + 1) * _MS_TO_NS, vals[0], vals[1], vals[2],
                             vals[3], vals[4], vals[5], vals[6], n, True))
        except (IndexError, KeyError, TypeError, ValueError, MalformedMessage):
            raise MalformedMessage("bad_history", f"klines row {i}: {str(r)[:120]}") from None
    return tuple(out)
