"""iTick (stocks, forex, indices, crypto): adapter and parsers.

Wire format: ../shared/vendor-protocols.md section 3 (itick-org/free-stock-api
``websocket/*.md``, itick-org/all-example, the official SDKs). The module opens with the
vendor facts as data; below them, one pure parser per wire message (its docstring is the
vendor's sample payload) and :class:`ITickAdapter`, which routes frames to them.

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

import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from feed.core.models import UNKNOWN, BookSnapshot, MalformedMessage, Trade, VendorReply
from feed.vendors._common import (
    Secret,
    call_parser,
    clean_symbol,
    load_object,
    load_token,
    redact,
    shown_url,
    ts_to_ns,
)
from feed.vendors._common import dumps as _dumps
from feed.vendors._common import number as _number
from feed.vendors.base import Event, VendorBase

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
#: Handshake statuses explained in iTick's terms (``feed.io.client.explain_error`` hints).
HTTP_HINTS: dict[int, str] = {
    401: "iTick refused the API key: check ITICK_TOKEN (or [itick] token in --config)",
    403: "iTick refused the API key or this market for its plan: check ITICK_TOKEN",
    404: "iTick has no such market path: check --itick-market and --url",
    429: "iTick rate limit: too many connections or requests; waiting {wait:g} s",
}

#: Vendor messages (lower case, substring) -> plain words for the user.
MESSAGE_WORDS: dict[str, str] = {
    "auth failed": "authentication failed: the API key was refused (check ITICK_TOKEN)",
    "cannot be resolved action": (
        "request not understood (sent before authentication finished, or an action "
        "iTick does not support)"
    ),
    "exceeding the maximum subscription limit": "too many symbols for this iTick plan",
    "e001": "product not found (check the symbol and its region)",
    "e002": "authentication failed (check ITICK_TOKEN)",
    "e003": "subscription limit of this iTick plan reached",
}

_CODE = r"[A-Z0-9][A-Z0-9.\-]{0,19}"
SYMBOL_PATTERN = re.compile(rf"^{_CODE}\$[A-Z]{{2}}$")
_DOT_FORM = re.compile(rf"^({_CODE})\.([A-Z]{{2}})$")      # AAPL.US, BRK.B.US
_BARE = re.compile(r"^[A-Z0-9][A-Z0-9\-]{0,19}$")
_SYMBOL_HELP = (
    "expected CODE$REGION such as AAPL$US, 700$HK, EURUSD$GB or BTCUSDT$BA (AAPL.US also works)"
)
_INF = math.inf


# ======================================================================================
# Parsers: one per wire message. Each takes the ``data`` object, the symbol resolver and
# the receive time. Missing keys raise KeyError -> MalformedMessage("missing_field").
# ======================================================================================


def _tick(d: dict, symbol_of: Callable[[object], str], recv_ns: int) -> Trade:
    """Parse a tick push (one trade).

    ::

        {"code": 1,
         "data": {"s": "AAPL",            # AAPL, AAPL.US or AAPL$US -> subscribed AAPL$US
                  "ld": 191.52,           # last (trade) price
                  "v": 100,               # trade volume
                  "t": 1717000000123,     # trade time, ms -> ts_ns
                  "type": "tick"}}        # no aggressor side, no trade id
    """
    price = _number(d["ld"], "ld")
    size = _number(d["v"], "v")
    if not 0.0 < price < _INF:
        raise MalformedMessage("bad_price", f"tick ld {d['ld']!r}")
    if not 0.0 <= size < _INF:
        raise MalformedMessage("bad_size", f"tick v {d['v']!r}")
    return Trade(symbol_of(d["s"]), ts_to_ns(d["t"], "t"), price, size, UNKNOWN, None, recv_ns)


def _levels(rows: object, field: str, descending: bool) -> tuple[tuple[float, float], ...]:
    # [{"po": level, "p": price, "v": volume, "o": orders}, ...] -> best first. Ordered by
    # ``po`` when every row has one, else by price.
    if rows is None:
        return ()
    if type(rows) is not list:
        raise MalformedMessage("bad_level", f"{field} is {type(rows).__name__}, not a list")
    keyed = []
    for row in rows:
        if type(row) is not dict or "p" not in row:
            raise MalformedMessage("bad_level", f"{field} row {row!r}")
        try:
            p = _number(row["p"], f"{field} p")
            v = row.get("v")
            q = 0.0 if v is None else _number(v, f"{field} v")
        except MalformedMessage:
            raise MalformedMessage("bad_level", f"{field} level {row!r}") from None
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise MalformedMessage("bad_level", f"{field} level {row!r}")
        po = row.get("po")
        keyed.append((po if type(po) is int else None, p, q))
    if keyed and all(k[0] is not None for k in keyed):
        keyed.sort(key=lambda k: k[0])
    else:
        keyed.sort(key=lambda k: k[1], reverse=descending)
    return tuple((p, q) for _, p, q in keyed)


def _depth(d: dict, symbol_of: Callable[[object], str], recv_ns: int) -> BookSnapshot:
    """Parse a depth push: a full top-N image, replace the book.

    ::

        {"code": 1,
         "data": {"s": "AAPL",
                  "a": [{"po": 1, "p": 191.53, "v": 300, "o": 3}],   # asks: level, price,
                  "b": [{"po": 1, "p": 191.51, "v": 200, "o": 2}],   # volume, orders
                  "type": "depth"}}

    No time field is documented; ``t`` is used when present, else ``ts_ns`` is 0.
    """
    if "a" not in d and "b" not in d:
        raise MalformedMessage("missing_field", "depth push has neither a (asks) nor b (bids)")
    t = d.get("t")
    return BookSnapshot(
        symbol_of(d["s"]), 0 if t is None else ts_to_ns(t, "t"), None,
        _levels(d.get("b"), "b", True), _levels(d.get("a"), "a", False), is_partial=True,
    )


def _ignored(d: dict, symbol_of: Callable[[object], str], recv_ns: int) -> None:
    """Skip a documented push tickscope does not use (``quote``, ``kline@N``).

    ::

        {"code": 1, "data": {"s": "AAPL", "ld": 191.5, "o": 190.1, "h": 192.0, "l": 189.9,
                             "t": 1717000000123, "v": 123456, "tu": 2.3e7, "ts": 0,
                             "type": "quote"}}
    """
    return None


_PUSHES: dict[str, Callable[[dict, Callable[[object], str], int], object]] = {
    "tick": _tick,
    "depth": _depth,
    "quote": _ignored,
}


def _words(vendor_msg: object) -> str:
    # The vendor's message in plain words (known phrases), else as said.
    text = str(vendor_msg or "").strip()
    low = text.lower()
    for phrase, words in MESSAGE_WORDS.items():
        if phrase in low:
            return words
    return text or "no reason given"


def _code_of(msg: dict) -> int | None:
    # "code": 1 / 0, sometimes as a string; None when absent or not a number.
    code = msg.get("code")
    if type(code) is int:
        return code
    if type(code) is str and code.isdigit():
        return int(code)
    return None


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
    ) -> None:
        self._token: Secret = load_token(token, "ITICK_TOKEN", "iTick", "register at itick.org")
        if not isinstance(market, str) or not re.fullmatch(r"[a-z]{2,20}", market):
            raise ValueError(f"iTick market must be a lower-case word such as stock, not {market!r}")
        if market not in MARKETS and not allow_unknown_market:
            raise ValueError(f"unknown iTick market {market!r}: use one of {', '.join(MARKETS)}")
        self.market = market  # URL path and default-region key
        base = (base_url or BASE_URL).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.query or parts.password:
            raise ValueError(
                f"iTick base_url must be ws:// or wss:// without a query, not {shown_url(parts)!r}")
        self._url = f"{base}/{market}"  # no secret in it
        if max_symbols_per_connection is not None and (
            type(max_symbols_per_connection) is not int or max_symbols_per_connection < 1
        ):
            raise ValueError(
                "max_symbols_per_connection must be None or a whole number >= 1, "
                f"not {max_symbols_per_connection!r}"
            )
        self.max_symbols_per_connection = max_symbols_per_connection
        # Wire form of a pushed symbol ("AAPL", "AAPL.US", "AAPL$US") -> subscribed symbol;
        # None marks a bare code shared by two subscribed regions. Kept after unsubscribe
        # so late pushes still name the right symbol (the engine ignores them).
        self._by_wire: dict[str, str | None] = {}
        # Control requests awaiting a reply (iTick echoes no id): (action, symbols). Built on
        # the client's threads, answered on the engine's: guarded by _pending_lock.
        self._pending: deque[tuple[str, tuple[str, ...]]] = deque(maxlen=64)
        self._pending_lock = threading.Lock()
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
        sym = clean_symbol(text)
        if SYMBOL_PATTERN.match(sym):
            return sym
        m = _DOT_FORM.match(sym)
        if m:
            return f"{m.group(1)}${m.group(2)}"
        default = MARKETS.get(self.market)
        if default and _BARE.match(sym):
            return f"{sym}${default}"
        if _BARE.match(sym):
            raise ValueError(
                f"{text.strip()!r} needs a region on the iTick {self.market} market, "
                f"e.g. {sym}$US or {sym}$HK"
            )
        raise ValueError(f"{text.strip()!r} is not an iTick symbol: {_SYMBOL_HELP}")

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
        self._remember(syms)
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
            ``bad_size``, ``bad_time``, ``bad_level``, ``bad_symbol``, ``unknown_symbol``,
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
            return [] if event is None else [event]
        code = _code_of(msg)
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
        with self._pending_lock:
            self._pending.clear()

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
        marker = b'"auth"' if isinstance(raw, (bytes, bytearray)) else '"auth"'
        if marker not in raw:
            return None
        try:
            msg = json.loads(raw)
        except (ValueError, TypeError, RecursionError):
            return None
        if type(msg) is not dict or msg.get("resAc") != "auth":
            return None
        return _code_of(msg) == 1

    @staticmethod
    def is_fatal_reply(event: object) -> bool:
        """Return True for a reply that retrying with the same key cannot fix (auth failed)."""
        return isinstance(event, VendorReply) and event.request_id == "auth" and not event.ok

    # -- private -----------------------------------------------------------------------

    def _control(self, action: str, syms: list[str]) -> str:
        with self._pending_lock:
            self._pending.append((action, tuple(syms)))
        return _dumps({"ac": action, "params": ",".join(syms), "types": ",".join(self.types)})

    def _remember(self, syms: list[str]) -> None:
        # Record every wire form a push may use for each subscribed symbol.
        for sym in syms:
            code, _, region = sym.rpartition("$")
            self._by_wire[sym] = sym
            self._by_wire[f"{code}.{region}"] = sym
            if self._by_wire.get(code, sym) != sym:
                self._by_wire[code] = None  # the same code in two regions: ambiguous
            else:
                self._by_wire[code] = sym
        if len(self._by_wire) > 30_000:  # bound the map; keep only what is subscribed now
            self._by_wire.clear()
            self._remember(list(self._current))

    def _symbol_of(self, s: object) -> str:
        # A pushed ``s`` -> the subscribed symbol.
        if type(s) is not str or not s:
            raise MalformedMessage("bad_symbol", f"s {s!r}")
        key = s.strip().upper()
        if key in self._by_wire:
            sym = self._by_wire[key]
            if sym is None:
                raise MalformedMessage("ambiguous_symbol", f"{s!r} is subscribed in several regions")
            return sym
        try:
            return self.normalize_symbol(key)
        except ValueError:
            raise MalformedMessage(
                "unknown_symbol", f"{s!r} has no region and is not subscribed") from None

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
        code = _code_of(msg)
        vendor = self.redact(str(msg.get("msg") or ""))[:160]
        if res_ac == "auth":
            if code == 1:
                return [VendorReply(True, "iTick: authenticated", "auth")]
            return [VendorReply(False, f"iTick: {_words(vendor)} (iTick says {vendor!r})", "auth")]
        action = str(res_ac)[:40]
        symbols: tuple[str, ...] = ()
        with self._pending_lock:
            for i, (act, syms) in enumerate(self._pending):
                if act == action:
                    symbols = syms
                    del self._pending[i]
                    break
        listed = f" {', '.join(symbols)}" if symbols else ""
        if code == 1:
            done = f"{action}d" if action in ("subscribe", "unsubscribe") else f"{action} ok"
            return [VendorReply(True, f"iTick: {done}{listed}", action, symbols)]
        said = f" (iTick says {vendor!r})" if vendor and _words(vendor) != vendor else ""
        text = f"iTick refused {action}{listed}: {_words(vendor)}{said}"
        return [VendorReply(False, text, action, symbols)]

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
        with self._pending_lock:
            action, symbols = self._pending.popleft() if self._pending else (None, ())
        about = f" ({action} {', '.join(symbols)})" if action else ""
        said = f" (iTick says {vendor!r})" if vendor and _words(vendor) != vendor else ""
        return VendorReply(False, f"iTick error: {_words(vendor)}{about}{said}", action, symbols)


def base_url_of(url: str, market: str) -> str:
    """Return the ``base_url`` for an endpoint URL: ``url`` without a trailing ``/<market>``.

    ``ws://127.0.0.1:9000`` and ``ws://127.0.0.1:9000/stock`` (market ``stock``) both give
    ``ws://127.0.0.1:9000``; ``wss://h/websocket`` (the Python SDK's prefix) stays as is,
    so the market is appended after it.
    """
    base = url.rstrip("/")
    suffix = f"/{market}"
    return base[: -len(suffix)] if base.endswith(suffix) else base

