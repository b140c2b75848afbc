"""A fake AllTick server on loopback (vendor-protocols.md section 2).

Serves both documented paths on one port: ``/quote-stock-b-ws-api`` (US, HK, A-share
codes) and ``/quote-b-ws-api`` (crypto, forex, metals). Behaviour, each documented unless
marked *fake's choice*:

* Token from the ``?token=`` query. A wrong token: every request is answered ``ret`` 401
  and the connection is closed (*fake's choice*; ``bad_token="http"`` refuses the
  handshake with HTTP 401 instead). Unknown paths: HTTP 404.
* Heartbeat 22000 -> 22001. No heartbeat for ``heartbeat_timeout_s`` (30 s documented;
  counted from the connect or the last heartbeat) -> the server closes the connection.
* 22004 (trades) / 22002 (depth) each REPLACE that kind's subscription; 22006 cancels
  (``cancel_type`` 0 all, 1 depth, 2 trades).
* Errors: unknown code or a code of the other endpoint's asset class -> 600 (the whole
  request is refused, *fake's choice*); ``unauthorized`` codes -> 604; more than
  ``max_symbols`` -> the extras silently ignored (documented) or ``over_limit="error"``
  -> 603; missing ``data`` -> 601; bad shapes -> 400.
* Rate limit: a request less than ``min_request_interval_s`` after the previous one is
  answered 429 and not applied; the ``close_after_violations``-th violation is answered
  606 and the connection is closed.
* ``max_connections`` per token and endpoint: an excess connection is dropped at once.
* Pushes: every ``push_interval_s`` (None: only on :meth:`push_once`), one 22998 trade per
  trades-subscribed code and one 22999 depth image per depth-subscribed code, with
  ``depth_level`` capped per market (crypto 5, HK 10, CN 5, FX 1; US 5 -- the adapter's
  assumption). Deterministic: prices, sizes, sides and ``seq`` come from counters (trade
  ``seq`` steps by 1 per code, *fake's choice*; :meth:`skip_trade_seq` makes a gap), and
  ``tick_time`` from ``ts_start_ms + 100 * pushes`` (``ts_start_ms=None``: the wall clock).
  ``time_style`` ("string"/"int") and ``time_unit`` ("ms"/"s") vary the field types.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

from tests.fakes import FakeVendorServer

__all__ = ["FakeAllTickServer", "DEFAULT_CODES", "STOCK_PATH", "FOREX_CRYPTO_PATH"]

STOCK_PATH = "/quote-stock-b-ws-api"
FOREX_CRYPTO_PATH = "/quote-b-ws-api"
_ENDPOINT_OF_PATH = {STOCK_PATH: "stock", FOREX_CRYPTO_PATH: "forex_crypto"}

#: code -> (market, reference price). Markets: US HK CN (stock endpoint), crypto fx.
DEFAULT_CODES: dict[str, tuple[str, float]] = {
    "AAPL.US": ("US", 191.50), "TSLA.US": ("US", 180.20), "MSFT.US": ("US", 420.10),
    "NVDA.US": ("US", 120.40), "AMZN.US": ("US", 185.30), "GOOGL.US": ("US", 175.60),
    "700.HK": ("HK", 380.00), "1288.HK": ("HK", 3.50), "9988.HK": ("HK", 78.30),
    "600519.SH": ("CN", 1700.00), "000001.SZ": ("CN", 10.50),
    "BTCUSDT": ("crypto", 67000.00), "ETHUSDT": ("crypto", 3500.00), "SOLUSDT": ("crypto", 160.00),
    "XRPUSDT": ("crypto", 0.52), "DOGEUSDT": ("crypto", 0.16), "BNBUSDT": ("crypto", 600.00),
    "EURUSD": ("fx", 1.0850), "GBPUSD": ("fx", 1.2700), "USDJPY": ("fx", 157.20),
    "GOLD": ("fx", 2350.00), "SILVER": ("fx", 30.50),
}
_DEPTH_CAP = {"US": 5, "HK": 10, "CN": 5, "crypto": 5, "fx": 1}
_ENDPOINT_OF_MARKET = {
    "US": "stock", "HK": "stock", "CN": "stock", "crypto": "forex_crypto", "fx": "forex_crypto",
}


@dataclass(eq=False)
class _Conn:
    # One client connection (mutated on the loop thread under the server's lock).
    id: int
    ws: ServerConnection
    endpoint: str
    token_ok: bool
    last_heartbeat: float
    last_request: float | None = None
    violations: int = 0
    heartbeats: int = 0
    trades: list[str] = field(default_factory=list)
    depth: dict[str, int] = field(default_factory=dict)
    closed_for: str | None = None  # set when the server closed it (heartbeat timeout)


class FakeAllTickServer(FakeVendorServer):
    """A fake AllTick quote server (see the module docstring for its behaviour).

    Args:
        token: The token it accepts.
        codes: Known codes -> (market, reference price); default :data:`DEFAULT_CODES`.
        unauthorized: Codes answered 604 (not in the token's plan).
        max_symbols: Symbols per kind per connection (free plan 5).
        over_limit: ``"ignore"`` (documented: extras dropped silently) or ``"error"`` (603).
        heartbeat_timeout_s: Silence after which the connection is closed (30 s documented).
        min_request_interval_s: Least spacing of requests (1 s documented); 0 disables.
        close_after_violations: Rate violations before 606 and close; None: never close.
        push_interval_s: Seconds between push rounds; None: only :meth:`push_once`.
        max_connections: Open connections per token per endpoint; None: unlimited.
        bad_token: ``"reply"`` (401 replies, then close) or ``"http"`` (handshake 401).
        ts_start_ms: Synthetic clock origin (UTC ms); None: wall clock.
        time_style: ``"string"`` (doc example: ``"seq":"..","tick_time":".."``) or ``"int"``.
        time_unit: ``"ms"`` (documented) or ``"s"`` (as in the doc example value).
        host, port: Bind address (loopback, free port).
    """

    thread_name = "fake-alltick"

    def __init__(
        self,
        *,
        token: str = "test-token",
        codes: dict[str, tuple[str, float]] | None = None,
        unauthorized: tuple[str, ...] | frozenset[str] = (),
        max_symbols: int = 5,
        over_limit: str = "ignore",
        heartbeat_timeout_s: float = 30.0,
        min_request_interval_s: float = 1.0,
        close_after_violations: int | None = 3,
        push_interval_s: float | None = None,
        max_connections: int | None = None,
        bad_token: str = "reply",
        ts_start_ms: int | None = 1_717_000_000_000,
        time_style: str = "string",
        time_unit: str = "ms",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(push_interval_s=push_interval_s, host=host, port=port)
        if over_limit not in ("ignore", "error"):
            raise ValueError(f"over_limit must be 'ignore' or 'error', not {over_limit!r}")
        if bad_token not in ("reply", "http"):
            raise ValueError(f"bad_token must be 'reply' or 'http', not {bad_token!r}")
        if time_style not in ("string", "int") or time_unit not in ("ms", "s"):
            raise ValueError("time_style must be 'string' or 'int'; time_unit 'ms' or 's'")
        self.token = token
        self.codes = dict(DEFAULT_CODES if codes is None else codes)
        self.unauthorized = frozenset(unauthorized)
        self.max_symbols = max_symbols
        self.over_limit = over_limit
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.min_request_interval_s = min_request_interval_s
        self.close_after_violations = close_after_violations
        self.max_connections = max_connections
        self.bad_token = bad_token
        self.ts_start_ms = ts_start_ms
        self.time_style = time_style
        self.time_unit = time_unit
        self._conns: dict[int, _Conn]  # open connections by id
        self._seq = 0  # pushes so far, all symbols and kinds (drives the synthetic clock)
        self._ticks: dict[str, int] = {}  # code -> pushes so far (drives prices)
        self._trade_seq: dict[str, int] = {}  # code -> last trade seq (consecutive per code)
        self._depth_seq: dict[str, int] = {}  # code -> last depth seq

    # -- URLs ---------------------------------------------------------------------------

    @property
    def stock_url(self) -> str:
        """Return the stock endpoint, without the token (pass as ``stock_url``)."""
        return self.base_url + STOCK_PATH

    @property
    def forex_crypto_url(self) -> str:
        """Return the forex/crypto endpoint, without the token."""
        return self.base_url + FOREX_CRYPTO_PATH

    def url(self, endpoint: str = "stock", token: str | None = None) -> str:
        """Return an endpoint URL with ``?token=`` (default: the accepted token)."""
        base = self.stock_url if endpoint == "stock" else self.forex_crypto_url
        return f"{base}?token={self.token if token is None else token}"

    # -- inspection and control (any thread) ----------------------------------------------

    def subscriptions(self) -> list[dict]:
        """Return the open connections: ``{"id", "endpoint", "trades", "depth", "heartbeats"}``."""
        with self._cond:
            return [
                {"id": c.id, "endpoint": c.endpoint, "trades": list(c.trades),
                 "depth": dict(c.depth), "heartbeats": c.heartbeats}
                for c in self._conns.values()
            ]

    def requests(self, cmd_id: int | None = None) -> list[dict]:
        """Return the requests received (parsed JSON), optionally of one ``cmd_id``."""
        return self._requests_where("cmd_id", cmd_id)

    def skip_trade_seq(self, code: str, count: int = 1) -> None:
        """Skip ``count`` trade seqs of ``code``: the next trade push shows a gap."""
        def run() -> None:
            self._trade_seq[code] = self._trade_seq.get(code, 0) + count
        self.call(run)

    # -- server hooks ---------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        parts = urlsplit(request.path)
        if parts.path not in _ENDPOINT_OF_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown path\n")
        if self.bad_token == "http" and self._token_of(request.path) != self.token:
            self.record("refused", reason="token invalid")
            return connection.respond(HTTPStatus.UNAUTHORIZED, "token invalid\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        endpoint = _ENDPOINT_OF_PATH[urlsplit(ws.request.path).path]
        token_ok = self._token_of(ws.request.path) == self.token
        with self._cond:
            same = sum(1 for c in self._conns.values() if c.endpoint == endpoint and c.token_ok)
            excess = token_ok and self.max_connections is not None and same >= self.max_connections
            conn = _Conn(next(self._ids), ws, endpoint, token_ok, loop.time())
            if not excess:
                self._conns[conn.id] = conn
        self.record("connect", id=conn.id, endpoint=endpoint, token_ok=token_ok, dropped=excess)
        if excess:
            self.record("disconnect", id=conn.id, reason="too many connections")
            await ws.close(1008, "too many connections")
            return
        watchdog = asyncio.create_task(self._close_when_silent(
            conn, self.heartbeat_timeout_s, lambda: conn.last_heartbeat, "heartbeat timeout"))
        reason = "client closed"
        try:
            async for raw in ws:
                closing = await self._on_request(conn, raw, loop.time())
                if closing:
                    reason = closing
                    await ws.close(1008, closing)
                    break
        finally:
            watchdog.cancel()
            with self._cond:
                self._conns.pop(conn.id, None)
            self.record("disconnect", id=conn.id, reason=conn.closed_for or reason)

    # -- requests ----------------------------------------------------------------------

    async def _on_request(self, conn: _Conn, raw: str | bytes, now: float) -> str | None:
        # Answer one request; return a close reason to end the connection.
        try:
            req = json.loads(raw)
            if type(req) is not dict:
                raise ValueError("not an object")
        except ValueError:
            self.record("request", id=conn.id, request={"raw": str(raw)[:200]})
            await self._reply(conn, {}, 400, "invalid json")
            return None
        self.record("request", id=conn.id, request=req)
        cmd = req.get("cmd_id")
        interval = self.min_request_interval_s
        if interval and conn.last_request is not None and now - conn.last_request < interval:
            conn.last_request = now
            conn.violations += 1
            limit = self.close_after_violations
            if limit is not None and conn.violations >= limit:
                await self._reply(conn, req, 606, "too many requests, connection will be closed")
                return "too many requests"
            await self._reply(conn, req, 429, "request too frequent")
            return None
        conn.last_request = now
        if not conn.token_ok:
            await self._reply(conn, req, 401, "token invalid")
            return "token invalid"
        if cmd == 22000:
            with self._cond:
                conn.last_heartbeat = now
                conn.heartbeats += 1
                self._cond.notify_all()
            await self._reply(conn, req, 200, "ok")
        elif cmd in (22002, 22004):
            ret, msg = self._subscribe(conn, cmd, req.get("data"))
            await self._reply(conn, req, ret, msg)
        elif cmd == 22006:
            ret, msg = self._cancel(conn, req.get("data"))
            await self._reply(conn, req, ret, msg)
        else:
            await self._reply(conn, req, 400, "unknown cmd_id")
        return None

    def _subscribe(self, conn: _Conn, cmd: int, data: object) -> tuple[int, str]:
        if type(data) is not dict:
            return 601, "body empty"
        rows = data.get("symbol_list")
        if type(rows) is not list or any(
            type(r) is not dict or type(r.get("code")) is not str for r in rows
        ):
            return 400, "symbol_list invalid"
        levels: dict[str, int] = {}
        for r in rows:
            code = r["code"]
            info = self.codes.get(code)
            if info is None or _ENDPOINT_OF_MARKET[info[0]] != conn.endpoint:
                return 600, f"code invalid: {code}"
            if code in self.unauthorized:
                return 604, f"code unauthorized: {code}"
            level = r.get("depth_level", 1)
            if type(level) is not int or level < 1:
                return 400, f"depth_level invalid: {level!r}"
            levels[code] = min(level, _DEPTH_CAP[info[0]])
        codes = list(levels)
        if len(codes) > self.max_symbols:
            if self.over_limit == "error":
                return 603, "token level not enough"
            codes = codes[: self.max_symbols]  # documented: extra symbols silently ignored
        with self._cond:
            if cmd == 22004:
                conn.trades = codes
            else:
                conn.depth = {c: levels[c] for c in codes}
            self._cond.notify_all()
        return 200, "ok"

    def _cancel(self, conn: _Conn, data: object) -> tuple[int, str]:
        kind = data.get("cancel_type") if type(data) is dict else None
        if kind not in (0, 1, 2):
            return 400, "cancel_type invalid"
        with self._cond:
            if kind in (0, 2):
                conn.trades = []
            if kind in (0, 1):
                conn.depth = {}
            self._cond.notify_all()
        return 200, "ok"

    async def _reply(self, conn: _Conn, req: dict, ret: int, msg: str) -> None:
        cmd = req.get("cmd_id")
        reply = {
            "ret": ret, "msg": msg,
            "cmd_id": cmd + 1 if type(cmd) is int else 0,
            "seq_id": req.get("seq_id", 0), "trace": req.get("trace", ""), "data": {},
        }
        await self.send(conn.ws, json.dumps(reply))

    # -- pushes ------------------------------------------------------------------------

    async def _push_round(self) -> int:
        sent = 0
        for conn in list(self._conns.values()):
            if not conn.token_ok:
                continue
            for code in list(conn.trades):
                sent += await self.send(conn.ws, self._trade_push(code))
            for code, level in list(conn.depth.items()):
                sent += await self.send(conn.ws, self._depth_push(code, level))
        return sent

    def _next(self, code: str, seqs: dict[str, int]) -> tuple[int, int, str]:
        # (per-code count, per-code seq of this kind, formatted tick_time) for the next push.
        # Trade seqs step by 1 per code, so an engine counting trade-id gaps sees none
        # unless skip_trade_seq() makes one.
        self._seq += 1
        n = self._ticks[code] = self._ticks.get(code, 0) + 1
        seq = seqs[code] = seqs.get(code, 0) + 1
        if self.ts_start_ms is not None:
            ms = self.ts_start_ms + 100 * self._seq
        else:
            ms = time.time_ns() // 1_000_000
        t: int | str = ms if self.time_unit == "ms" else ms // 1000
        return n, seq, str(t) if self.time_style == "string" else t

    def _price(self, code: str, n: int) -> tuple[float, int]:
        market, ref = self.codes[code]
        digits = 5 if market == "fx" and ref < 10 else 2 if ref >= 10 else 4
        return round(ref * (1 + 0.0005 * ((n % 9) - 4)), digits), digits

    def _trade_push(self, code: str) -> str:
        n, seq, t = self._next(code, self._trade_seq)
        market = self.codes[code][0]
        price, digits = self._price(code, n)
        fx = market == "fx"
        volume = 0.0 if fx else (0.01 * (1 + n % 3) if market == "crypto" else 100.0 * (1 + n % 3))
        data: dict[str, Any] = {
            "code": code,
            "seq": str(seq) if self.time_style == "string" else seq,
            "tick_time": t,
            "price": f"{price:.{digits}f}",
            "volume": f"{volume:g}",
            "trade_direction": 0 if fx else (1, 2, 0)[n % 3],
        }
        if not fx:
            data["turnover"] = f"{price * volume:.4f}"
        return json.dumps({"cmd_id": 22998, "data": data})

    def _depth_push(self, code: str, level: int) -> str:
        n, seq, t = self._next(code, self._depth_seq)
        market = self.codes[code][0]
        price, digits = self._price(code, n)
        tick = 10 ** -digits
        vol = (lambda k: "0") if market == "fx" else (lambda k: f"{(k + 1) * 1.5:g}")
        bids = [{"price": f"{price - (k + 1) * tick:.{digits}f}", "volume": vol(k)} for k in range(level)]
        asks = [{"price": f"{price + (k + 1) * tick:.{digits}f}", "volume": vol(k)} for k in range(level)]
        data = {"code": code, "seq": str(seq) if self.time_style == "string" else seq,
                "tick_time": t, "bids": bids, "asks": asks}
        return json.dumps({"cmd_id": 22999, "data": data})

    # -- private -----------------------------------------------------------------------

    @staticmethod
    def _token_of(path: str) -> str | None:
        values = parse_qs(urlsplit(path).query).get("token")
        return values[0] if values else None
