"""AllTick (stocks, forex, metals, crypto): vendor facts and adapter.

Wire format: ../shared/vendor-protocols.md section 2 and the AllTick repository
``websocket_interface/*.md`` (alltick-realtime-forex-crypto-stock-tick-finance-websocket-api).
The module opens with the vendor facts as data (endpoints, command ids, depth levels,
plan limits, heartbeat); :class:`AllTickAdapter` builds requests and routes received
frames by ``cmd_id`` to the pure parsers of :mod:`feed.vendors.alltick_wire`.

Caveats (the reference marks these [?]; each choice is tolerant or configurable)
---------------------------------------------------------------------------------
* ``seq`` and ``tick_time`` arrive as JSON strings or integers; both are accepted. The
  time unit is inferred from the magnitude (< 1e11 seconds, < 1e14 ms, < 1e17 us, else ns),
  because the documented unit is ms while the documented example has 10 digits.
* Depth pushes carry no update ids, so each 22999 is a full top-N image
  (``BookSnapshot(is_partial=True)``): replace, never merge.
* The depth limit of US stocks is not documented; :data:`DEPTH_LEVELS` asks for 5. AllTick
  documents that asking for more levels than exist returns the levels that exist, so a too
  large request costs nothing.
* ``HK-1288`` (one depth doc example) is read as the documented form ``1288.HK``; HK codes
  lose leading zeros (``00700.HK`` -> ``700.HK``, the form of every documented example).
* Free-plan connections serve 5 symbols per kind and silently ignore the rest, so
  :meth:`AllTickAdapter.subscribe_messages` refuses more than ``max_symbols_per_connection``
  instead of letting symbols disappear without a word.
* FX/metals have no real volume: trade and level volumes of 0 (or a missing level volume)
  are accepted; ``trade_direction`` is then always 0 (unknown side).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote

from feed.core.models import BookSnapshot, MalformedMessage, VendorReply
from feed.vendors._common import (  # Secret and ts_to_ns: re-exported (public here)
    Secret,
    call_parser,
    load_object,
    load_token,
    redact,
    ts_to_ns,
)
from feed.vendors._common import dumps as _dumps
from feed.vendors.alltick_wire import (  # endpoints_from: re-exported (public here)
    FOREX_CRYPTO_PATH,
    STOCK_PATH,
    SYMBOL_PATTERN,
    ack_text,
    check_ws_url,
    endpoints_from,
    with_token,
    asset_class_of,
    depth_market_of,
    normalize_code,
    parse_ack,
    parse_depth,
    parse_trade,
    refusal_text,
)
from feed.vendors.base import Event, VendorBase, time_window_ns

__all__ = [
    "AllTickAdapter", "Secret", "STOCK_URL", "FOREX_CRYPTO_URL", "CMD", "DEPTH_LEVELS",
    "PLAN_SYMBOLS_PER_CONNECTION", "RET_WORDS", "FATAL_RETS", "ts_to_ns", "endpoints_from",
    "HTTP_HINTS",
]

# ======================================================================================
# Vendor facts
# ======================================================================================

#: Stocks (US, HK, A-shares, indices). Token goes in ``?token=``. Other documented hosts:
#: ``quote.alltick.io``, ``quote.tradeswitcher.com`` (pass them as ``stock_url``).
STOCK_URL = "wss://quote.alltick.co" + STOCK_PATH            # /quote-stock-b-ws-api
#: Forex, metals, crypto, commodities/CFD.
FOREX_CRYPTO_URL = "wss://quote.alltick.co" + FOREX_CRYPTO_PATH  # /quote-b-ws-api

#: Command ids (AT common_standard_header.md). A reply's cmd_id is its request's + 1.
CMD: dict[str, int] = {
    "heartbeat": 22000,      # -> 22001
    "depth": 22002,          # subscribe order book -> 22003
    "trades": 22004,         # subscribe trade ticks -> 22005
    "cancel": 22006,         # -> 22007; data.cancel_type 0 all, 1 depth, 2 trades
    "trade_push": 22998,
    "depth_push": 22999,
}
#: Reply cmd_id -> what the request was (for the reply's wording).
_REPLY_KIND: dict[int, str] = {22001: "heartbeat", 22003: "depth", 22005: "trades", 22007: "cancel"}
#: 22006 cancel_type values.
CANCEL_ALL, CANCEL_DEPTH, CANCEL_TRADES = 0, 1, 2

#: depth_level asked for per market (AT realtime_order_book_quote_subscription.md: FX and
#: metals 1, crypto 5, HK 10, CN 5). US is not documented: 5 is an assumption (asking for
#: more than exists returns what exists). Without depth_level AllTick sends 1 level.
DEPTH_LEVELS: dict[str, int] = {"US": 5, "HK": 10, "SH": 5, "SZ": 5, "crypto": 5, "fx": 1}

#: Symbols per connection, per subscription kind (AT interface_limitation.md); extras are
#: silently ignored by AllTick.
PLAN_SYMBOLS_PER_CONNECTION: dict[str, int] = {
    "free": 5, "basic": 100, "premium": 200, "professional": 3000,
}

#: Minimum seconds between two requests on one connection (heartbeats included).
MIN_REQUEST_INTERVAL_S = 1.0
#: Heartbeat period and the silence after which AllTick closes the connection, seconds.
HEARTBEAT_INTERVAL_S = 10.0
HEARTBEAT_TIMEOUT_S = 30.0

#: ``ret`` codes in plain words (AT error_code_description.md).
RET_WORDS: dict[int, str] = {
    400: "request rejected: header or data parameter invalid",
    401: "token invalid or expired (check ALLTICK_TOKEN)",
    402: "query invalid",
    429: "rate limit: requests sent too fast (keep at least 1 s between requests)",
    600: "symbol code invalid, or sent to the wrong endpoint for its asset class",
    601: "request body empty",
    603: "token plan level not enough for this data",
    604: "symbol not authorized for this token",
    605: "too many requests",
    606: "too many requests; AllTick will close the connection",
}
#: ``ret`` codes that retrying with the same token cannot fix.
FATAL_RETS = frozenset({401, 603})
#: ``ret`` codes that refuse symbols (the request named one the vendor will not serve).
SYMBOL_RETS = frozenset({600, 604})

#: Handshake statuses explained in AllTick's terms (``feed.io.policy.explain_error`` hints).
HTTP_HINTS: dict[int, str] = {
    401: "AllTick refused the token: check ALLTICK_TOKEN (or [alltick] token in --config)",
    403: "AllTick refused the token or this plan: check ALLTICK_TOKEN and the plan",
    429: "AllTick rate limit: too many connections or requests; waiting {wait:g} s",
}

_UINT32 = 0xFFFFFFFF
#: Requests remembered while their replies are awaited; beyond it the oldest is forgotten.
_MAX_PENDING = 1024

def _check_options(max_symbols_per_connection: object, asset_class: object) -> None:
    # The constructor's plan limit and pinned asset class, or ValueError in the user's words.
    if type(max_symbols_per_connection) is not int or max_symbols_per_connection < 1:
        raise ValueError(
            f"max_symbols_per_connection must be a whole number >= 1, not {max_symbols_per_connection!r}")
    if asset_class not in (None, "stock", "forex_crypto"):
        raise ValueError(f"asset_class must be 'stock', 'forex_crypto' or None, not {asset_class!r}")


def _depth_levels(overrides: dict[str, int] | None) -> dict[str, int]:
    # DEPTH_LEVELS with the user's overrides, each checked.
    levels = dict(DEPTH_LEVELS)
    for key, n in (overrides or {}).items():
        if key not in levels or type(n) is not int or n < 1:
            raise ValueError(f"depth_levels: {key!r} -> {n!r}; keys {', '.join(levels)}, values >= 1")
        levels[key] = n
    return levels


def _one_class(symbols: list[str]) -> str | None:
    # The asset class all ``symbols`` share (None for none), or ValueError naming both
    # groups: one connection serves one endpoint.
    stocks = [s for s in symbols if asset_class_of(s) == "stock"]
    if stocks and len(stocks) < len(symbols):
        others = [s for s in symbols if s not in stocks]
        raise ValueError(
            "AllTick serves stocks and crypto/forex on separate endpoints: "
            f"{', '.join(stocks)} and {', '.join(others)} need separate feeds")
    return None if not symbols else "stock" if stocks else "forex_crypto"


def _refused_ret(event: object) -> int | None:
    # The ``ret`` code of a refusal VendorReply (its text starts "AllTick error <ret>:").
    if not isinstance(event, VendorReply) or event.ok:
        return None
    m = re.match(r"AllTick error (\d+):", event.message)
    return int(m.group(1)) if m else None


class _Requests:
    # Request frames with their seq_id (uint32, 1 .. 2**32 - 1, wrapping) and the
    # (kind, symbols) of those awaiting a reply; a heartbeat is not remembered.

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._pending: dict[int, tuple[str, tuple[str, ...]]] = {}

    def frame(self, kind: str, data: dict, symbols: tuple[str, ...] | None = None) -> str:
        seq = (next(self._seq) - 1) % _UINT32 + 1
        if symbols is not None:
            if len(self._pending) >= _MAX_PENDING:  # replies never came; forget the oldest
                self._pending.pop(next(iter(self._pending)))
            self._pending[seq] = (kind, symbols)
        return _dumps({"cmd_id": CMD[kind], "seq_id": seq, "trace": f"tickscope-{kind}-{seq}",
                       "data": data})

    def pop(self, seq: int | None) -> tuple[str, tuple[str, ...]] | None:
        return None if seq is None else self._pending.pop(seq, None)


#: Push cmd_id -> parser (feed.vendors.alltick_wire).
_PUSHES: dict[int, Callable[[dict, int], Event]] = {
    CMD["trade_push"]: parse_trade,
    CMD["depth_push"]: parse_depth,
}


# ======================================================================================
# Adapter
# ======================================================================================


class AllTickAdapter(VendorBase):
    """AllTick real-time trades and top-N depth (token required).

    One connection serves one asset class: stocks (``.US``, ``.HK``, ``.SH``, ``.SZ``)
    on the stock endpoint, everything else (crypto, forex, metals) on the forex/crypto
    endpoint. :meth:`url` picks it from the symbols.

    Parameters
    ----------
    token : str, optional
        API token; default: environment variable ``ALLTICK_TOKEN``. It is sent only in
        the URL's ``token`` query and never appears in ``repr``, ``display_url`` or errors.
    stock_url, forex_crypto_url : str, optional
        Endpoints without the token (e.g. another documented host, or a local fake).
    max_symbols_per_connection : int, default 5
        Plan limit per subscription kind (free 5, basic 100, premium 200, professional
        3000; :data:`PLAN_SYMBOLS_PER_CONNECTION`).
    asset_class : {"stock", "forex_crypto"}, optional
        Pin the connection to one endpoint; symbols of the other class are then refused
        by :meth:`normalize_symbol`. Default: chosen by the symbols (stock when none).
    depth_levels : dict, optional
        Overrides of :data:`DEPTH_LEVELS` (keys ``US HK SH SZ crypto fx``).
    time_window_s : float, optional
        Pushes stamped further than this from their receive time are refused as
        ``time_out_of_window``. None (the default): no check here; the app passes one day
        (``dashboard.sources.make_adapter``).

    Raises
    ------
    ValueError
        If there is no token, a URL is not ws:// or wss://, or an option is out of range.
    """

    name = "alltick"
    symbol_pattern: re.Pattern[str] = SYMBOL_PATTERN
    heartbeat_interval_s: float | None = HEARTBEAT_INTERVAL_S   # AllTick closes after 30 s
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    #: >= 1 s between requests is documented; 1.25 s leaves a margin, because two frames
    #: sent exactly 1.000 s apart can arrive less than 1 s apart (jitter) and get a 429.
    max_messages_per_s: float = 0.8 / MIN_REQUEST_INTERVAL_S
    #: Each 22004/22002 replaces that kind's previous subscription: the client must always
    #: pass the FULL current symbol list to :meth:`subscribe_messages`.
    replaces_subscriptions = True
    #: AllTick authenticates in the URL; there is no auth reply to wait for.
    requires_auth_reply = False
    #: ``seq`` (-> ``Trade.trade_id``) rises in every documented sample, but whether it
    #: steps by exactly 1 per trade of a symbol is undocumented [?]: trade-id gap counts
    #: are advisory for AllTick, and duplicates should only be dropped on equal ids.
    consecutive_trade_ids = False
    channels: dict[str, int] = {"trades": CMD["trades"], "depth": CMD["depth"]}
    http_hints: dict[int, str] = HTTP_HINTS

    def __init__(
        self,
        *,
        token: str | None = None,
        stock_url: str | None = None,
        forex_crypto_url: str | None = None,
        max_symbols_per_connection: int = PLAN_SYMBOLS_PER_CONNECTION["free"],
        asset_class: str | None = None,
        depth_levels: dict[str, int] | None = None,
        time_window_s: float | None = None,
    ) -> None:
        self.time_window_ns = time_window_ns(time_window_s)
        self._token = load_token(
            token, "ALLTICK_TOKEN", "AllTick", "free registration at alltick.co")
        self._urls = {  # asset class -> endpoint without token
            "stock": check_ws_url(stock_url or STOCK_URL, "stock_url"),
            "forex_crypto": check_ws_url(forex_crypto_url or FOREX_CRYPTO_URL, "forex_crypto_url"),
        }
        _check_options(max_symbols_per_connection, asset_class)
        self.max_symbols_per_connection = max_symbols_per_connection  # plan limit per kind
        self.asset_class = asset_class  # pinned endpoint, or None: chosen by symbols
        self.depth_levels = _depth_levels(depth_levels)  # market -> depth_level asked for
        # seq_ids, and what each request awaiting a reply asked, to word the reply.
        self._requests = _Requests()
        # The full list last subscribed: unsubscribe_messages resends it minus the removed.
        self._current: tuple[str, ...] = ()
        # The list AllTick last acknowledged (ret 200 to a 22004), to name the symbols a
        # refused request added. Written by the parser only.
        self._accepted: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"AllTickAdapter(stock_url={self._urls['stock']!r}, "
            f"forex_crypto_url={self._urls['forex_crypto']!r}, "
            f"max_symbols_per_connection={self.max_symbols_per_connection}, token='***')"
        )

    __str__ = __repr__

    # -- symbols and URLs ------------------------------------------------------------

    def normalize_symbol(self, text: str) -> str:
        """Return ``text`` as an AllTick code.

        Upper-cases, strips white space and ``/`` (``btc/usdt`` -> ``BTCUSDT``), drops
        leading zeros of HK codes (``00700.HK`` -> ``700.HK``) and reads ``HK-1288`` as
        ``1288.HK``. Accepted: ``AAPL.US``, ``BRK.B.US``, ``700.HK``, ``600519.SH``,
        ``000001.SZ``, and plain codes of 2-20 letters/digits (``BTCUSDT``, ``EURUSD``,
        ``GOLD``).

        Raises
        ------
        ValueError
            With a message for the user when ``text`` is not a valid code, or belongs to
            the other asset class than a pinned ``asset_class``.
        """
        sym = normalize_code(text)
        if self.asset_class is not None and self.asset_class_of(sym) != self.asset_class:
            raise ValueError(
                f"{sym} is not served on this feed's {self.asset_class.replace('_', '/')} "
                "endpoint; stocks and crypto/forex need separate AllTick feeds"
            )
        return sym

    #: ``"stock"`` for ``.US/.HK/.SH/.SZ`` codes, else ``"forex_crypto"``.
    asset_class_of = staticmethod(asset_class_of)

    def depth_level_of(self, symbol: str) -> int:
        """Return the depth_level requested for ``symbol`` (see :data:`DEPTH_LEVELS`)."""
        return self.depth_levels[depth_market_of(symbol)]

    def validate_subscription(self, symbols: Iterable[str]) -> list[str]:
        """Return the normalised, de-duplicated list, or say why it cannot be subscribed.

        Raises
        ------
        ValueError
            For a bad symbol, a mix of stocks and crypto/forex (two endpoints), or more
            symbols than the plan serves on one connection.
        """
        syms = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        _one_class(syms)
        if len(syms) > self.max_symbols_per_connection:
            raise ValueError(
                f"{len(syms)} symbols exceed the AllTick plan limit of "
                f"{self.max_symbols_per_connection} per connection (AllTick would silently "
                "ignore the rest); remove some, or raise the limit to your plan's "
                "(max_symbols_per_connection; tickscope --config: [alltick] plan or max_symbols)"
            )
        return syms

    def endpoint(self, symbols: Iterable[str] = ()) -> str:
        """Return ``"stock"`` or ``"forex_crypto"``: the endpoint ``symbols`` need.

        Raises
        ------
        ValueError
            If the symbols mix both classes.
        """
        return _one_class([self.normalize_symbol(s) for s in symbols]) or self.asset_class or "stock"

    def url(self, symbols: Iterable[str] = ()) -> str:
        """Return the WebSocket URL for ``symbols`` WITH the token (to connect; never show it).

        Raises
        ------
        ValueError
            If a symbol is invalid or the symbols mix stocks and crypto/forex.
        """
        token = quote(self._token.reveal(), safe="")
        return with_token(self._urls[self.endpoint(symbols)], token)

    def display_url(self, symbols: Iterable[str] = ()) -> str:
        """Return :meth:`url` with the token replaced by ``***`` (for logs and the UI)."""
        return with_token(self._urls[self.endpoint(symbols)], "***")

    def redact(self, text: str) -> str:
        """Return ``text`` with every occurrence of the token replaced by ``***``.

        Tokens shorter than 4 characters are not searched for (they would mangle words).
        """
        return redact(text, self._token, url_quoted=True)

    def snapshot_url(self, symbol: str) -> None:
        """Return None: every depth push is a full top-N image."""
        return None

    # -- control messages ------------------------------------------------------------

    def subscribe_messages(self, symbols: Iterable[str]) -> list[str]:
        """Return the 22004 (trades) and 22002 (depth) requests for the FULL list ``symbols``.

        Each request replaces that kind's previous subscription on the connection, so
        ``symbols`` must be every symbol wanted, not just new ones
        (:attr:`replaces_subscriptions`). Two frames; the client spaces them >= 1 s.
        An empty list returns no frames (use :meth:`unsubscribe_messages` to cancel).

        Raises
        ------
        ValueError
            See :meth:`validate_subscription`; nothing is sent then.
        """
        syms = self.validate_subscription(symbols)
        self._current = tuple(syms)
        if not syms:
            return []
        trades = {"symbol_list": [{"code": s} for s in syms]}
        depth = {"symbol_list": [{"code": s, "depth_level": self.depth_level_of(s)} for s in syms]}
        return [
            self._requests.frame("trades", trades, tuple(syms)),
            self._requests.frame("depth", depth, tuple(syms)),
        ]

    def unsubscribe_messages(self, symbols: Iterable[str]) -> list[str]:
        """Return the frames that drop ``symbols`` from the current subscription.

        AllTick can only cancel a whole kind (22006 ``cancel_type``), not a symbol, so:
        while symbols remain, the reduced list is resent (22004 + 22002, replacing the
        previous subscriptions); when none remain, one 22006 with ``cancel_type`` 0 (all).
        "Current" is the list last given to :meth:`subscribe_messages`.
        """
        gone = {self.normalize_symbol(s) for s in symbols}
        remaining = [s for s in self._current if s not in gone]
        if remaining:
            return self.subscribe_messages(remaining)
        had = self._current
        self._current = ()
        return [self._requests.frame("cancel", {"cancel_type": CANCEL_ALL}, had)] if had or gone else []

    def heartbeat_message(self) -> str:
        """Return the 22000 heartbeat (send every 10 s; AllTick closes after 30 s without)."""
        return self._requests.frame("heartbeat", {})

    # -- parsing ---------------------------------------------------------------------

    def parse(self, raw: str | bytes, recv_ns: int) -> list[Event]:
        """Return the events in one frame.

        ``raw`` (JSON text as received) and ``recv_ns`` (local receive time, UTC ns) as in
        :meth:`feed.vendors.base.VendorAdapter.parse`.

        Returns
        -------
        list
            One ``Trade`` (22998), ``BookSnapshot`` (22999, partial) or ``VendorReply``
            (a reply with ``ret``); empty for a successful heartbeat reply (22001).

        Raises
        ------
        MalformedMessage
            ``bad_json``, ``bad_shape``, ``missing_field``, ``bad_field``, ``bad_symbol``,
            ``bad_price``, ``bad_size``, ``bad_trade_id``, ``bad_time``,
            ``time_out_of_window``, ``bad_level``, ``bad_reply`` or ``unknown_event``.
        """
        msg = load_object(raw)
        cmd = msg.get("cmd_id")
        if "ret" in msg:
            reply = self._reply(msg)
            return [] if reply is None else [reply]
        parser = _PUSHES.get(cmd) if type(cmd) is int else None
        if parser is None:
            raise MalformedMessage("unknown_event", f"cmd_id {cmd!r}, keys {sorted(msg)[:8]}")
        data = msg.get("data")
        if type(data) is not dict:
            raise MalformedMessage("bad_shape", f"cmd_id {cmd}: data is not an object")
        return [self.check_time(call_parser(f"cmd_id {cmd}", parser, data, recv_ns), recv_ns)]

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> BookSnapshot:
        """Refuse: AllTick has no REST depth snapshot (depth pushes are snapshots).

        Raises
        ------
        MalformedMessage
            Always, ``no_snapshot``.
        """
        raise MalformedMessage(
            "no_snapshot", "AllTick depth pushes are full images; there is no REST snapshot")

    @staticmethod
    def is_fatal_reply(event: object) -> bool:
        """Return True for a reply that retrying with the same token cannot fix (401, 603)."""
        return _refused_ret(event) in FATAL_RETS

    def rejected_symbols(self, event: object) -> tuple[str, ...]:
        """Return the symbols a refusal (600 invalid code, 604 unauthorized) is about.

        AllTick answers a whole request, not a symbol; a request resends the accepted list
        plus new symbols, so the new ones are the suspects. With nothing to tell them
        apart (several new symbols in a first request) nothing is returned and the user
        sees the refusal in words.
        """
        if _refused_ret(event) not in SYMBOL_RETS:
            return ()
        suspects = tuple(s for s in event.symbols if s not in self._accepted)
        if len(event.symbols) == 1 or 0 < len(suspects) < len(event.symbols):
            return suspects or tuple(event.symbols)
        return ()

    # -- private ---------------------------------------------------------------------

    def _reply(self, msg: dict) -> VendorReply | None:
        # A reply frame (alltick_wire.parse_ack) matched with the request it answers; a
        # 200 to a trades request records the list AllTick accepted.
        ack = parse_ack(msg)
        kind = _REPLY_KIND.get(ack.cmd_id) if ack.cmd_id is not None else None
        pending = self._requests.pop(ack.seq_id)
        if kind is None and pending is not None:
            kind = pending[0]
        symbols = pending[1] if pending else ()
        if kind == "heartbeat" and ack.ret == 200:
            return None
        if ack.ret == 200:
            if kind == "trades" and pending is not None:
                self._accepted = symbols
            elif kind == "cancel":
                self._accepted = ()
            return VendorReply(True, ack_text(kind, symbols), ack.request_id, symbols)
        added = []
        if ack.ret in SYMBOL_RETS and kind in ("trades", "depth"):
            added = [s for s in symbols if s not in self._accepted]
        text = refusal_text(ack.ret, RET_WORDS.get(ack.ret, "unknown error"), kind, symbols,
                            added, self.redact(ack.said))
        return VendorReply(False, text, ack.request_id, symbols)
