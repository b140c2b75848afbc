"""Binance public market streams (spot, USD-M and COIN-M futures): vendor facts and adapter.

Wire format: ../shared/vendor-protocols.md section 1 and binance-spot-api-docs
``web-socket-streams.md``; futures: developers.binance.com ``derivatives/.../
websocket-market-streams``. The module opens with the vendor facts as data (endpoints per
market, standard channel -> stream suffix, limits, heartbeat); the markets differ in data
only. :class:`BinanceAdapter` builds control frames and routes received frames by a dict
to the pure per-message parsers of :mod:`feed.vendors.binance_wire`.

Caveats
-------
* tickscope connects to the combined endpoint (``/stream``), whose wrapper names the stream.
  On a raw ``/ws`` connection spot ``@depthN`` images carry no symbol (refused as
  ``no_symbol``) and futures ``@depthN`` images look exactly like diffs (``depthUpdate``).
* All times are taken in ms (no ``timeUnit=MICROSECOND`` in the URL) and returned in ns.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from feed.core.models import BookSnapshot, MalformedMessage, VendorReply
from feed.vendors._common import call_parser, clean_symbol, dumps, load_object
from feed.vendors.base import Event, VendorBase, time_window_ns
from feed.vendors.binance_wire import (
    BY_SUFFIX,
    Parser,
    parse_by_event,
    parse_depth_snapshot,
    parse_reply,
)

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
#: (``feed.io.policy.explain_error`` hints; ``{wait}`` is the wait in seconds). 451: binance.com
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

#: Stream names whose route (parser, symbol) is cached; beyond it the cache restarts.
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
    time_window_s : float, optional
        Trades and depth events stamped further than this from their receive time are
        refused as ``time_out_of_window``. None (the default, and for replays, whose
        recorded times are old): no check here. The app passes one day for live feeds
        (``dashboard.sources.make_adapter``).

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
        time_window_s: float | None = None,
    ) -> None:
        self.time_window_ns = time_window_ns(time_window_s)
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
        self._routes: dict[str, tuple[Parser, str]] = {}
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

    #: REST history (aggregate trades, klines) serves backfill and gap repair.
    serves_history = True

    def history_url(self, kind: str) -> str:
        """Return the REST URL (no query) of ``kind`` ``"aggTrades"`` or ``"klines"`` on
        the host serving depth snapshots (``/api/v3/...`` spot, ``/fapi/v1/...`` USD-M,
        ``/dapi/v1/...`` COIN-M)."""
        if kind not in ("aggTrades", "klines"):
            raise ValueError(f"unknown history kind {kind!r}")
        return self._depth_url.rsplit("/", 1)[0] + "/" + kind

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
        server that refuses them still serves trades (the embedded replay accepts any
        stream of a recorded symbol and plays what was recorded).

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
            ``bad_size``, ``bad_trade_id``, ``bad_time``, ``time_out_of_window``,
            ``bad_level``, ``bad_update_id``, ``no_symbol``, ``bad_reply``,
            ``unknown_event`` or ``server_shutdown``.
        """
        msg = load_object(raw)
        stream = msg.get("stream")
        event = call_parser(stream or "raw", self._event, msg, stream, recv_ns)
        return [] if event is None else [self.check_time(event, recv_ns)]

    @staticmethod
    def rejected_symbols(event: object) -> tuple[str, ...]:
        """Return the symbols of a refused SUBSCRIBE request (an error reply to it)."""
        if isinstance(event, VendorReply) and not event.ok and event.request == "SUBSCRIBE":
            return event.symbols
        return ()

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> BookSnapshot:
        """Return the full book in a REST depth response (``binance_wire.parse_depth_snapshot``:
        the wire sample and the reasons a body is refused are documented there).

        Raises
        ------
        MalformedMessage
            For anything but a usable snapshot of ``symbol``.
        """
        return parse_depth_snapshot(symbol, body)

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
            return parse_reply(msg, request)
        return parse_by_event(msg, None, recv_ns)

    def _route(self, stream: str) -> tuple[Parser, str]:
        # Split "<symbol>@<suffix>" once per stream name; unknown suffixes route on "e".
        if type(stream) is not str:
            raise MalformedMessage("bad_shape", f"stream name {stream!r}")
        sym, _, suffix = stream.partition("@")
        route = (BY_SUFFIX.get(suffix, parse_by_event), sym.upper())
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
