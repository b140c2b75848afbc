"""iTick (stocks, forex, indices, crypto): vendor facts and adapter.

Wire format: ../shared/vendor-protocols.md section 3 (itick-org/free-stock-api
``websocket/*.md``, itick-org/all-example, the official SDKs). The module opens with the
vendor facts as data (endpoint, markets and their default regions, push types, limits,
heartbeat); :class:`ITickAdapter` builds actions and routes received frames to the pure
parsers of :mod:`feed.vendors.itick_wire`.

Life of a connection::

    connect wss://api.itick.org/<market> with header "token: <key>"
    <- {"code":1,"msg":"Connected Successfully"}
    <- {"code":1,"resAc":"auth","msg":"authenticated","data":{"params":"<key>"}}
       (or {"code":0,"resAc":"auth","msg":"auth failed"} and the socket closes)
    -> {"ac":"subscribe","params":"AAPL$US,TSLA$US","types":"tick,depth"}   # only now
    <- {"code":1,"resAc":"subscribe","msg":"subscribe Successfully"}
    -> {"ac":"ping","params":"1717000000123"} every 15 s  <- {"resAc":"pong",...}

Caveats (the reference marks these [?]; each choice is tolerant or documented)
-------------------------------------------------------------------------------
* Endpoint naming differs between sources (``/stock`` vs ``/sws``, SDK ``/websocket/...``);
  ``base_url`` and ``market`` are configurable and the market name is not restricted to
  the documented four if ``allow_unknown_market`` is set.
* Push ``s`` may be ``AAPL``, ``AAPL.US`` or ``AAPL$US``: all map back to the subscribed
  ``AAPL$US``; a bare code matching two subscribed regions is refused (``ambiguous_symbol``).
* Tick pushes have no aggressor side (``UNKNOWN``) and no trade id (``None``: no gap
  detection for iTick); numbers may be JSON numbers or numeric strings; ``t`` is ms,
  but seconds are recognised by magnitude.
* Depth pushes are treated as full top-N images (``BookSnapshot(is_partial=True)``).
* Heartbeat interval and timeout are undocumented; 15 s is the shorter official example
  (IT-X java; the SDKs use 30 s).
* Whether a subscribe adds to or replaces the previous one is undocumented: the adapter
  always sends the full list (right either way), and removes symbols with an
  ``unsubscribe`` action (undocumented; a refusal is reported, not fatal) followed by the
  reduced list.
* Per-plan symbol limits are undocumented: ``max_symbols_per_connection`` is None (no
  client-side limit) unless given; the vendor's refusal is reported as a VendorReply.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from feed.core.models import BookSnapshot, MalformedMessage, VendorReply
from feed.vendors._common import Secret, call_parser, load_object, load_token, redact, shown_url
from feed.vendors._common import dumps as _dumps
from feed.vendors.base import Event, VendorBase, time_window_ns
from feed.vendors.itick_wire import (  # MESSAGE_WORDS, base_url_of: re-exported (public here)
    MESSAGE_WORDS,
    SYMBOL_PATTERN,
    ack_text,
    auth_status,
    base_url_of,
    code_of,
    normalize_code,
    parse_depth,
    parse_ignored,
    parse_tick,
    refusal_text,
    words,
)

__all__ = ["ITickAdapter", "BASE_URL", "MARKETS", "DEFAULT_TYPES", "MESSAGE_WORDS", "HTTP_HINTS", "base_url_of"]

# ======================================================================================
# Vendor facts
# ======================================================================================

#: Host root; the market is the path (``wss://api.itick.org/stock``).
BASE_URL = "wss://api.itick.org"
#: Market path -> region assumed for a code typed without one (None: a region is required).
#: ``forex``/``indices`` use GB and ``crypto`` BA in the official SDK calls (IT-J, IT-P).
MARKETS: dict[str, str | None] = {
    "stock": None, "forex": "GB", "indices": "GB", "crypto": "BA", "future": None, "fund": None,
}
#: Push types subscribed: trades and depth (``quote`` and ``kline@N`` exist but are unused).
DEFAULT_TYPES: tuple[str, ...] = ("tick", "depth")
#: Seconds between ``ping`` actions (undocumented; official examples use 15 and 30).
PING_INTERVAL_S = 15.0
#: Seconds to wait for the auth reply before the connection is considered failed.
AUTH_TIMEOUT_S = 10.0
#: Control messages per second (undocumented; subscriptions change rarely, so stay low).
MAX_MESSAGES_PER_S = 2.0
#: Handshake statuses explained in iTick's terms (``feed.io.policy.explain_error`` hints).
HTTP_HINTS: dict[int, str] = {
    401: "iTick refused the API key: check ITICK_TOKEN (or [itick] token in --config)",
    403: "iTick refused the API key or this market for its plan: check ITICK_TOKEN",
    404: "iTick has no such market path: check --itick-market and --url",
    429: "iTick rate limit: too many connections or requests; waiting {wait:g} s",
}

def _endpoint(market: object, base_url: str | None, allow_unknown_market: bool) -> str:
    # ``<base_url>/<market>``, or ValueError in the user's words for a bad market or URL.
    if not isinstance(market, str) or not re.fullmatch(r"[a-z]{2,20}", market):
        raise ValueError(f"iTick market must be a lower-case word such as stock, not {market!r}")
    if market not in MARKETS and not allow_unknown_market:
        raise ValueError(f"unknown iTick market {market!r}: use one of {', '.join(MARKETS)}")
    base = (base_url or BASE_URL).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.query or parts.password:
        raise ValueError(
            f"iTick base_url must be ws:// or wss:// without a query, not {shown_url(parts)!r}")
    return f"{base}/{market}"


class _Waiting:
    # Control requests awaiting a reply, oldest first: (action, symbols). Built on the
    # client's threads and answered on the engine's, hence the lock; at most 64 (older
    # ones whose replies never came fall off).

    def __init__(self) -> None:
        self._items: deque[tuple[str, tuple[str, ...]]] = deque(maxlen=64)
        self._lock = threading.Lock()

    def add(self, action: str, symbols: tuple[str, ...]) -> None:
        with self._lock:
            self._items.append((action, symbols))

    def take(self, action: str) -> tuple[str, ...]:
        # The symbols of the oldest waiting ``action`` (removed), () if none waits.
        with self._lock:
            for i, (act, syms) in enumerate(self._items):
                if act == action:
                    del self._items[i]
                    return syms
        return ()

    def take_oldest(self) -> tuple[str | None, tuple[str, ...]]:
        with self._lock:
            return self._items.popleft() if self._items else (None, ())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class _SymbolMap:
    # Wire form of a pushed symbol ("AAPL", "AAPL.US", "AAPL$US") -> subscribed symbol;
    # None marks a bare code shared by two subscribed regions. Kept after unsubscribe so
    # late pushes still name the right symbol (the engine ignores them).

    def __init__(self) -> None:
        self._by_wire: dict[str, str | None] = {}

    def remember(self, syms: Iterable[str], current: Iterable[str]) -> None:
        # Record every wire form a push may use for each of ``syms``; past 30,000 forms
        # start again from ``current`` (what is subscribed now), to bound the map.
        for sym in syms:
            code, _, region = sym.rpartition("$")
            self._by_wire[sym] = sym
            self._by_wire[f"{code}.{region}"] = sym
            if self._by_wire.get(code, sym) != sym:
                self._by_wire[code] = None  # the same code in two regions: ambiguous
            else:
                self._by_wire[code] = sym
        if len(self._by_wire) > 30_000:
            self._by_wire.clear()
            self.remember(current, ())

    def resolve(self, s: object, normalize: Callable[[str], str]) -> str:
        # A pushed ``s`` -> the subscribed symbol; unknown forms go through ``normalize``.
        if type(s) is not str or not s:
            raise MalformedMessage("bad_symbol", f"s {s!r}")
        key = s.strip().upper()
        if key in self._by_wire:
            sym = self._by_wire[key]
            if sym is None:
                raise MalformedMessage("ambiguous_symbol", f"{s!r} is subscribed in several regions")
            return sym
        try:
            return normalize(key)
        except ValueError:
            raise MalformedMessage(
                "unknown_symbol", f"{s!r} has no region and is not subscribed") from None


#: Push ``type`` -> parser (feed.vendors.itick_wire); ``kline@N`` pushes are skipped too.
_PUSHES: dict[str, Callable[[dict, Callable[[object], str], int], object]] = {
    "tick": parse_tick,
    "depth": parse_depth,
    "quote": parse_ignored,
}


# ======================================================================================
# Adapter
# ======================================================================================


class ITickAdapter(VendorBase):
    """iTick real-time ticks and depth (API key required).

    Parameters
    ----------
    token : str, optional
        API key; default: environment variable ``ITICK_TOKEN``. It is sent only in the
        handshake header ``token`` (:meth:`header`), never in the URL, ``repr`` or errors.
    market : str, default "stock"
        URL path: ``stock``, ``forex``, ``indices``, ``crypto``, ``future`` or ``fund``.
    base_url : str, optional
        Host root, default ``wss://api.itick.org``; the market is appended as the path.
    max_symbols_per_connection : int, optional
        Client-side limit (plan limits are undocumented); None: no limit.
    allow_unknown_market : bool, default False
        Accept a market path outside :data:`MARKETS` (e.g. the older ``sws``).
    time_window_s : float, optional
        Pushes stamped further than this from their receive time are refused as
        ``time_out_of_window``. None (the default): no check here; the app passes one day
        (``dashboard.sources.make_adapter``).

    Raises
    ------
    ValueError
        If there is no key, the market is unknown or the URL is not ws:// or wss://.
    """

    name = "itick"
    symbol_pattern: re.Pattern[str] = SYMBOL_PATTERN
    heartbeat_interval_s: float | None = PING_INTERVAL_S
    max_messages_per_s: float = MAX_MESSAGES_PER_S
    #: The full list is sent on every subscribe (right whether iTick adds or replaces).
    replaces_subscriptions = True
    #: Subscribe only after the auth success reply (earlier ones are refused).
    requires_auth_reply = True
    auth_timeout_s: float = AUTH_TIMEOUT_S
    types: tuple[str, ...] = DEFAULT_TYPES
    http_hints: dict[int, str] = HTTP_HINTS

    def __init__(
        self,
        *,
        token: str | None = None,
        market: str = "stock",
        base_url: str | None = None,
        max_symbols_per_connection: int | None = None,
        allow_unknown_market: bool = False,
        time_window_s: float | None = None,
    ) -> None:
        self.time_window_ns = time_window_ns(time_window_s)
        self._token: Secret = load_token(token, "ITICK_TOKEN", "iTick", "register at itick.org")
        self._url = _endpoint(market, base_url, allow_unknown_market)  # no secret in it
        self.market = market  # URL path and default-region key
        if max_symbols_per_connection is not None and (
            type(max_symbols_per_connection) is not int or max_symbols_per_connection < 1
        ):
            raise ValueError("max_symbols_per_connection must be None or a whole number >= 1, "
                             f"not {max_symbols_per_connection!r}")
        self.max_symbols_per_connection = max_symbols_per_connection
        self._symbols = _SymbolMap()  # pushed symbol forms -> subscribed symbol
        # Control requests awaiting a reply (iTick echoes no id), to word the reply.
        self._waiting = _Waiting()
        self._current: tuple[str, ...] = ()  # the full list last subscribed

    def __repr__(self) -> str:
        return f"ITickAdapter(url={self._url!r}, token='***')"

    __str__ = __repr__

    # -- handshake, symbols and URLs ---------------------------------------------------

    def header(self) -> dict[str, str]:
        """Return the handshake headers: ``{"token": <key>}`` (secret; never log it)."""
        return {"token": self._token.reveal()}

    def url(self, symbols: Iterable[str] = ()) -> str:
        """Return ``<base_url>/<market>``; holds no secret (the key goes in the header)."""
        return self._url

    def display_url(self, symbols: Iterable[str] = ()) -> str:
        """Return the URL for logs and the UI (the same as :meth:`url`)."""
        return self._url

    def redact(self, text: str) -> str:
        """Return ``text`` with every occurrence of the key replaced by ``***``.

        Keys shorter than 4 characters are not searched for (they would mangle words).
        """
        return redact(text, self._token)

    def normalize_symbol(self, text: str) -> str:
        """Return ``text`` as ``CODE$REGION`` (upper case).

        Accepts ``AAPL$US``, ``aapl$us``, ``AAPL.US`` (the last dot separates the region:
        ``BRK.B.US`` -> ``BRK.B$US``), and on markets with a default region (forex GB,
        indices GB, crypto BA) a bare code (``EURUSD`` -> ``EURUSD$GB``, ``btc/usdt`` ->
        ``BTCUSDT$BA``). Regions are two letters (US, HK, GB, BA, ...); not checked
        against a list, which iTick does not publish.

        Raises
        ------
        ValueError
            With a message for the user when ``text`` cannot be read as a symbol.
        """
        return normalize_code(text, MARKETS.get(self.market), self.market)

    def validate_subscription(self, symbols: Iterable[str]) -> list[str]:
        """Return the normalised, de-duplicated list, or say why it cannot be subscribed.

        Raises
        ------
        ValueError
            For a bad symbol or more than ``max_symbols_per_connection`` symbols.
        """
        syms = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        limit = self.max_symbols_per_connection
        if limit is not None and len(syms) > limit:
            raise ValueError(f"{len(syms)} symbols exceed the iTick limit of {limit} per connection")
        return syms

    def snapshot_url(self, symbol: str) -> None:
        """Return None: every depth push is a full top-N image."""
        return None

    # -- control messages --------------------------------------------------------------

    def subscribe_messages(self, symbols: Iterable[str]) -> list[str]:
        """Return the subscribe frame for the FULL list ``symbols`` (tick and depth).

        ``{"ac":"subscribe","params":"AAPL$US,TSLA$US","types":"tick,depth"}``. Send it
        only after the auth success reply (:attr:`requires_auth_reply`).

        Raises
        ------
        ValueError
            See :meth:`validate_subscription`; nothing is sent then.
        """
        syms = self.validate_subscription(symbols)
        self._current = tuple(syms)
        if not syms:
            return []
        self._symbols.remember(syms, self._current)
        return [self._control("subscribe", syms)]

    def unsubscribe_messages(self, symbols: Iterable[str]) -> list[str]:
        """Return the frames that drop ``symbols``: an ``unsubscribe`` action for them, then
        the reduced full list as a subscribe (if any symbol remains).

        The ``unsubscribe`` action is undocumented (assumed to mirror ``subscribe``); the
        reduced list covers a server whose subscribe replaces. Pushes that still arrive
        for a removed symbol are ignored by the engine.
        """
        gone = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        remaining = [s for s in self._current if s not in gone]
        out = [self._control("unsubscribe", gone)] if gone else []
        self._current = tuple(remaining)
        if remaining and gone:
            out.append(self._control("subscribe", remaining))
        return out

    def heartbeat_message(self, now_ms: int | None = None) -> str:
        """Return the ping action ``{"ac":"ping","params":"<ms>"}``.

        Parameters
        ----------
        now_ms : int, optional
            UTC ms to send (echoed in the pong); default: the wall clock.
        """
        ms = time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)
        return _dumps({"ac": "ping", "params": str(ms)})

    # -- parsing -----------------------------------------------------------------------

    def parse(self, raw: str | bytes, recv_ns: int) -> list[Event]:
        """Return the events in one frame.

        ``raw`` (JSON text as received) and ``recv_ns`` (local receive time, UTC ns) as in
        :meth:`feed.vendors.base.VendorAdapter.parse`.

        Returns
        -------
        list
            One ``Trade`` (tick), ``BookSnapshot`` (depth, partial) or ``VendorReply``
            (connected, auth, subscribe, errors); empty for pong, quote and kline.

        Raises
        ------
        MalformedMessage
            ``bad_json``, ``bad_shape``, ``missing_field``, ``bad_field``, ``bad_price``,
            ``bad_size``, ``bad_time``, ``time_out_of_window``, ``bad_level``, ``bad_symbol``, ``unknown_symbol``,
            ``ambiguous_symbol`` or ``unknown_event``.
        """
        msg = load_object(raw)
        res_ac = msg.get("resAc")
        if res_ac is not None:
            return self._reply(msg, res_ac)
        data = msg.get("data")
        if type(data) is dict and ("type" in data or "k" in data):
            kind = data.get("type")
            if "k" in data or (type(kind) is str and kind.startswith("kline")):
                return []
            parser = _PUSHES.get(kind) if type(kind) is str else None
            if parser is None:
                raise MalformedMessage("unknown_event", f"push type {kind!r}")
            event = call_parser(kind, parser, data, self._symbol_of, recv_ns)
            return [] if event is None else [self.check_time(event, recv_ns)]
        code = code_of(msg)
        if code is not None and "msg" in msg:
            return [self._status(msg, code)]
        raise MalformedMessage("unknown_event", f"keys {sorted(msg)[:8]}")

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> BookSnapshot:
        """Refuse: iTick has no REST snapshot here (depth pushes are snapshots).

        Raises
        ------
        MalformedMessage
            Always, ``no_snapshot``.
        """
        raise MalformedMessage(
            "no_snapshot", "iTick depth pushes are full images; there is no REST snapshot")

    # -- connection hooks for the feed client ---------------------------------------------

    def on_open(self) -> None:
        """Forget requests of the previous connection (their replies will never come).

        The feed client calls it on each open, before anything is sent on the connection.
        """
        self._waiting.clear()

    @staticmethod
    def is_auth_ok(event: object) -> bool | None:
        """Return True/False for the auth reply event, None for any other event."""
        if isinstance(event, VendorReply) and event.request_id == "auth":
            return event.ok
        return None

    def auth_status(self, raw: str | bytes) -> bool | None:
        """Return True/False if the raw frame is the auth reply, else None.

        For a client that waits for auth on the socket thread: cheap for frames that are
        not the auth reply (a substring test, no JSON), and never raises.
        """
        return auth_status(raw)

    @staticmethod
    def is_fatal_reply(event: object) -> bool:
        """Return True for a reply that retrying with the same key cannot fix (auth failed)."""
        return isinstance(event, VendorReply) and event.request_id == "auth" and not event.ok

    # -- private -----------------------------------------------------------------------

    def _control(self, action: str, syms: list[str]) -> str:
        self._waiting.add(action, tuple(syms))
        return _dumps({"ac": action, "params": ",".join(syms), "types": ",".join(self.types)})

    def _symbol_of(self, s: object) -> str:
        # A pushed ``s`` -> the subscribed symbol (else the normalised form, if it has one).
        return self._symbols.resolve(s, self.normalize_symbol)

    def _reply(self, msg: dict, res_ac: object) -> list[Event]:
        """Parse an answer to an action (``resAc`` names the action).

        ::

            {"code": 1, "resAc": "auth", "msg": "authenticated",
             "data": {"params": "<key>"}}                        # the key: never copied
            {"code": 0, "resAc": "auth", "msg": "auth failed"}   # then the socket closes
            {"code": 1, "resAc": "subscribe", "msg": "subscribe Successfully"}
            {"code": 0, "resAc": "subscribe", "msg": "exceeding the maximum subscription limit"}
            {"resAc": "pong", "data": {"params": "1717000000123"}}   # no code
        """
        if res_ac == "pong":
            return []
        code = code_of(msg)
        vendor = self.redact(str(msg.get("msg") or ""))[:160]
        if res_ac == "auth":
            if code == 1:
                return [VendorReply(True, "iTick: authenticated", "auth")]
            return [VendorReply(False, f"iTick: {words(vendor)} (iTick says {vendor!r})", "auth")]
        action = str(res_ac)[:40]
        symbols = self._waiting.take(action)
        if code == 1:
            return [VendorReply(True, ack_text(action, symbols), action, symbols)]
        return [VendorReply(False, refusal_text(action, symbols, vendor, res_ac=True), action, symbols)]

    def _status(self, msg: dict, code: int) -> VendorReply:
        """Parse a message with ``code`` and ``msg`` but no ``resAc``.

        ::

            {"code": 1, "msg": "Connected Successfully"}     # first frame of a connection
            {"code": 0, "msg": "cannot be resolved action"}  # e.g. a subscribe before auth
        """
        vendor = self.redact(str(msg.get("msg") or ""))[:160]
        if code == 1:
            if "connect" in vendor.lower():
                # (pending requests were forgotten by on_open, on the client's side: this
                # frame is parsed later, possibly after the first subscribe was built)
                return VendorReply(True, "iTick: connected", "connect")
            return VendorReply(True, f"iTick: {vendor or 'ok'}")
        # A refusal without resAc answers the oldest request still waiting.
        action, symbols = self._waiting.take_oldest()
        return VendorReply(False, refusal_text(action, symbols, vendor, res_ac=False), action, symbols)
