"""A fake iTick server on loopback (vendor-protocols.md section 3).

Serves ``/<market>`` for each market in ``markets`` (others: HTTP 404). Behaviour, each
documented unless marked *fake's choice*:

* On connect: ``{"code":1,"msg":"Connected Successfully"}``; then, ``auth_delay_s`` later,
  the auth reply for the handshake header ``token``: ``{"code":1,"resAc":"auth",
  "msg":"authenticated","data":{"params":<key>}}`` or ``{"code":0,"resAc":"auth",
  "msg":"auth failed"}`` and the socket is closed. Without the header, an
  ``{"ac":"auth","params":<key>}`` message authenticates (seen in IT-X examples), and
  ``accept_query_token`` also takes ``?token=`` (IT-J).
* Anything sent before the auth reply is answered ``{"code":0,"msg":"cannot be resolved
  action"}`` and ignored [3P].
* ``{"ac":"subscribe","params":"AAPL$US,TSLA$US","types":"tick,depth"}`` ADDS to the
  connection's symbols and types (*fake's choice*; iTick does not document add vs
  replace) -> ``{"code":1,"resAc":"subscribe","msg":"subscribe Successfully"}``. Badly
  formed codes or codes outside ``known_symbols`` -> code 0 ``"E001 product not found"``;
  more than ``max_symbols`` in total -> code 0 ``"exceeding the maximum subscription
  limit"`` (nothing applied). ``unsubscribe`` removes (*fake's choice*, undocumented).
* ``{"ac":"ping","params":"<ms>"}`` -> ``{"resAc":"pong","data":{"params":"<ms>"}}``;
  with ``ping_timeout_s`` set, a connection without a ping for that long is closed
  (*fake's choice*: the real timeout is undocumented).
* A second authenticated connection with the same key kicks the first
  (``kick_previous``, documented).
* Pushes (every ``push_interval_s``, or on :meth:`push_once`): per subscribed symbol a
  tick (``s``, ``ld``, ``v``, ``t`` ms), a depth image (``a``/``b`` rows with ``po p v o``)
  and a quote, as subscribed by ``types``; ``s`` is echoed as ``AAPL`` (``symbol_echo=
  "code"``), ``AAPL.US`` ("dot") or ``AAPL$US`` ("dollar"). Deterministic counters;
  ``t`` = ``ts_start_ms + 100 * n`` (None: the wall clock).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

from tests.fakes import FakeVendorServer

__all__ = ["FakeITickServer", "DEFAULT_PRICES"]

#: Reference prices of the symbols served by default (others price at 100).
DEFAULT_PRICES: dict[str, float] = {
    "AAPL$US": 191.50, "TSLA$US": 180.20, "MSFT$US": 420.10, "700$HK": 380.00,
    "EURUSD$GB": 1.0850, "BTCUSDT$BA": 67000.00, "ETHUSDT$BA": 3500.00,
}
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,19}\$[A-Z]{2}$")
_CANNOT = {"code": 0, "msg": "cannot be resolved action"}


@dataclass(eq=False)
class _Conn:
    # One client connection (mutated on the loop thread under the server's lock).
    id: int
    ws: ServerConnection
    market: str
    token: str | None
    authenticated: bool = False
    symbols: list[str] = field(default_factory=list)
    types: set[str] = field(default_factory=set)
    pings: int = 0
    last_ping: float = 0.0
    closed_for: str | None = None


class FakeITickServer(FakeVendorServer):
    """A fake iTick WebSocket server (see the module docstring for its behaviour).

    Args:
        token: The API key it accepts.
        markets: Path names served.
        auth_delay_s: Seconds between "Connected Successfully" and the auth reply.
        accept_query_token: Also take the key from ``?token=``.
        known_symbols: Symbols that exist; None: any well-formed ``CODE$REGION``.
        max_symbols: Symbols per connection; None: unlimited.
        push_interval_s: Seconds between push rounds; None: only :meth:`push_once`.
        symbol_echo: How pushes name a symbol: ``"code"``, ``"dot"`` or ``"dollar"``.
        ping_timeout_s: Close a connection without a ping for this long; None: never.
        kick_previous: A new authenticated connection closes the key's older one.
        ts_start_ms: Synthetic clock origin (UTC ms); None: wall clock.
        host, port: Bind address (loopback, free port).
    """

    thread_name = "fake-itick"

    def __init__(
        self,
        *,
        token: str = "test-key",
        markets: tuple[str, ...] = ("stock", "forex", "indices", "crypto"),
        auth_delay_s: float = 0.0,
        accept_query_token: bool = False,
        known_symbols: dict[str, float] | frozenset[str] | None = None,
        max_symbols: int | None = None,
        push_interval_s: float | None = None,
        symbol_echo: str = "code",
        ping_timeout_s: float | None = None,
        kick_previous: bool = True,
        ts_start_ms: int | None = 1_717_000_000_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(push_interval_s=push_interval_s, host=host, port=port)
        if symbol_echo not in ("code", "dot", "dollar"):
            raise ValueError(f"symbol_echo must be 'code', 'dot' or 'dollar', not {symbol_echo!r}")
        self.token = token
        self.markets = tuple(markets)
        self.auth_delay_s = auth_delay_s
        self.accept_query_token = accept_query_token
        self.known_symbols = None if known_symbols is None else frozenset(known_symbols)
        self.prices = dict(DEFAULT_PRICES)
        if isinstance(known_symbols, dict):
            self.prices.update(known_symbols)
        self.max_symbols = max_symbols
        self.symbol_echo = symbol_echo
        self.ping_timeout_s = ping_timeout_s
        self.kick_previous = kick_previous
        self.ts_start_ms = ts_start_ms
        self._conns: dict[int, _Conn]
        self._n = 0  # pushes so far (all symbols)

    # -- URLs ---------------------------------------------------------------------------

    def url(self, market: str = "stock") -> str:
        """Return ``ws://127.0.0.1:<port>/<market>`` (the key goes in the header)."""
        return f"{self.base_url}/{market}"

    # -- inspection and control (any thread) ----------------------------------------------

    def subscriptions(self) -> list[dict]:
        """Return the open connections.

        Each: ``{"id", "market", "authenticated", "symbols", "types", "pings"}``.
        """
        with self._cond:
            return [
                {"id": c.id, "market": c.market, "authenticated": c.authenticated,
                 "symbols": list(c.symbols), "types": sorted(c.types), "pings": c.pings}
                for c in self._conns.values()
            ]

    def requests(self, ac: str | None = None) -> list[dict]:
        """Return the messages received (parsed JSON), optionally of one action ``ac``."""
        return self._requests_where("ac", ac)

    # -- server hooks ---------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        if urlsplit(request.path).path.strip("/") not in self.markets:
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown market\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        parts = urlsplit(ws.request.path)
        token = ws.request.headers.get("token")
        if token is None and self.accept_query_token:
            token = (parse_qs(parts.query).get("token") or [None])[0]
        conn = _Conn(next(self._ids), ws, parts.path.strip("/"), token, last_ping=loop.time())
        with self._cond:
            self._conns[conn.id] = conn
        self.record("connect", id=conn.id, market=conn.market, has_token=token is not None)
        await self.send(ws, json.dumps({"code": 1, "msg": "Connected Successfully"}))
        tasks = []
        if token is not None:
            tasks.append(asyncio.create_task(self._authenticate(conn, token, self.auth_delay_s)))
        if self.ping_timeout_s is not None:
            tasks.append(asyncio.create_task(self._close_when_silent(
                conn, float(self.ping_timeout_s), lambda: conn.last_ping, "ping timeout")))
        try:
            async for raw in ws:
                await self._on_message(conn, raw, loop.time())
        finally:
            for t in tasks:
                t.cancel()
            with self._cond:
                self._conns.pop(conn.id, None)
            self.record("disconnect", id=conn.id, reason=conn.closed_for or "client closed")

    # -- auth and messages ---------------------------------------------------------------

    async def _authenticate(self, conn: _Conn, key: str, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if key != self.token:
            self.record("auth", id=conn.id, ok=False)
            await self.send(conn.ws, json.dumps({"code": 0, "resAc": "auth", "msg": "auth failed"}))
            conn.closed_for = "auth failed"
            await conn.ws.close(1000, "auth failed")
            return
        kicked = []
        with self._cond:
            conn.authenticated = True
            conn.last_ping = asyncio.get_running_loop().time()
            if self.kick_previous:
                kicked = [c for c in self._conns.values()
                          if c is not conn and c.authenticated and c.token == conn.token]
            self._cond.notify_all()
        self.record("auth", id=conn.id, ok=True)
        await self.send(conn.ws, json.dumps(
            {"code": 1, "resAc": "auth", "msg": "authenticated", "data": {"params": key}}))
        for old in kicked:
            old.closed_for = "kicked by a new connection"
            await old.ws.close(1000, "kicked by a new connection")

    async def _on_message(self, conn: _Conn, raw: str | bytes, now: float) -> None:
        try:
            msg = json.loads(raw)
            if type(msg) is not dict:
                raise ValueError("not an object")
        except ValueError:
            self.record("request", id=conn.id, request={"raw": str(raw)[:200]})
            await self.send(conn.ws, json.dumps(_CANNOT))
            return
        self.record("request", id=conn.id, request=msg)
        ac = msg.get("ac")
        if ac == "auth" and not conn.authenticated and conn.token is None:
            conn.token = str(msg.get("params"))
            await self._authenticate(conn, conn.token, 0.0)
            return
        if not conn.authenticated:
            await self.send(conn.ws, json.dumps(_CANNOT))
            return
        if ac == "ping":
            with self._cond:
                conn.pings += 1
                conn.last_ping = now
                self._cond.notify_all()
            await self.send(conn.ws, json.dumps({"resAc": "pong", "data": {"params": msg.get("params")}}))
        elif ac in ("subscribe", "unsubscribe"):
            await self.send(conn.ws, json.dumps(self._subscribe(conn, ac, msg)))
        else:
            await self.send(conn.ws, json.dumps(_CANNOT))

    def _subscribe(self, conn: _Conn, ac: str, msg: dict) -> dict:
        params, types = msg.get("params"), msg.get("types", "")
        if type(params) is not str or type(types) is not str:
            return {"code": 0, "resAc": ac, "msg": "params invalid"}
        syms = [s.strip() for s in params.split(",") if s.strip()]
        kinds = {t.strip() for t in types.split(",") if t.strip()}
        for s in syms:
            known = self.known_symbols
            if not _SYMBOL.match(s) or (known is not None and s not in known):
                return {"code": 0, "resAc": ac, "msg": f"E001 product not found: {s}"}
        with self._cond:
            if ac == "subscribe":
                merged = list(dict.fromkeys(conn.symbols + syms))
                if self.max_symbols is not None and len(merged) > self.max_symbols:
                    return {"code": 0, "resAc": ac, "msg": "exceeding the maximum subscription limit"}
                conn.symbols = merged
                conn.types |= kinds
            else:
                conn.symbols = [s for s in conn.symbols if s not in syms]
            self._cond.notify_all()
        return {"code": 1, "resAc": ac, "msg": f"{ac} Successfully"}

    # -- pushes ------------------------------------------------------------------------

    async def _push_round(self) -> int:
        sent = 0
        for conn in list(self._conns.values()):
            if not conn.authenticated:
                continue
            for sym in list(conn.symbols):
                for kind in ("tick", "depth", "quote"):
                    if kind in conn.types:
                        sent += await self.send(conn.ws, self._push(kind, sym))
        return sent

    def _echo(self, sym: str) -> str:
        code, _, region = sym.rpartition("$")
        return {"code": code, "dot": f"{code}.{region}", "dollar": sym}[self.symbol_echo]

    def _push(self, kind: str, sym: str) -> str:
        self._n += 1
        n = self._n
        ref = self.prices.get(sym, 100.0)
        digits = 5 if ref < 10 else 2
        price = round(ref * (1 + 0.0005 * ((n % 9) - 4)), digits)
        t = self.ts_start_ms + 100 * n if self.ts_start_ms is not None else time.time_ns() // 1_000_000
        s = self._echo(sym)
        if kind == "tick":
            data: dict[str, Any] = {"s": s, "ld": price, "v": 100 * (1 + n % 3), "t": t, "type": "tick"}
        elif kind == "depth":
            tick = 10 ** -digits
            data = {
                "s": s,
                "a": [{"po": k + 1, "p": round(price + (k + 1) * tick, digits),
                       "v": 100 * (k + 1), "o": k + 1} for k in range(5)],
                "b": [{"po": k + 1, "p": round(price - (k + 1) * tick, digits),
                       "v": 100 * (k + 1), "o": k + 1} for k in range(5)],
                "type": "depth",
            }
        else:
            data = {"s": s, "ld": price, "o": ref, "h": max(ref, price), "l": min(ref, price),
                    "t": t, "v": 1000 * n, "tu": round(1000 * n * price, 2), "ts": 0, "type": "quote"}
        return json.dumps({"code": 1, "data": data})
