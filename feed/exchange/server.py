"""The embedded local exchange: Binance's market-data dialect on loopback.

One ``websockets`` asyncio server, in its own daemon thread with its own event loop
(``feed.exchange.loopback.ServerThread``), serves on a single port:

* WebSocket ``/stream`` (combined: every event wrapped ``{"stream":name,"data":{...}}``;
  ``/stream?streams=a/b`` pre-subscribes), ``/ws`` (raw events) and ``/ws/<stream>``;
  control messages ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` /
  ``SET_PROPERTY`` / ``GET_PROPERTY`` answered as Binance does
  (shared/vendor-protocols.md section 1; the wire rules are in ``feed.exchange.dialect``).
* REST ``GET /api/v3/depth?symbol=X&limit=N`` (also ``/fapi/v1/depth``, ``/dapi/v1/depth``)
  through the server's ``process_request`` hook: the current book with its
  ``lastUpdateId``, prices and sizes as strings.
* REST history ``GET /api/v3/aggTrades``, ``/fapi/v1/aggTrades``, ``/api/v3/klines``,
  ``/fapi/v1/klines`` (``feed.exchange.rest_history``) from every trade played or
  simulated so far (before fault injection: a trade a fault skipped is still served),
  weighed with ``X-MBX-USED-WEIGHT-1M`` and refused with 429 + ``Retry-After`` past
  ``history_weight_limit``.

This module owns :class:`EmbeddedExchange`: the server thread, its connections (each
routed through ``feed.exchange.fanout``), REST dispatch and the public surface. The
market comes from one of two sources: ``feed.exchange.replay_source.ReplaySource``
(recorded files) or ``feed.exchange.sim_source.SimSource`` (the seeded simulator).

Stream matching is by symbol and channel: ``btcusdt@depth``, ``btcusdt@depth@100ms`` and
``btcusdt@depth@0ms`` all receive the symbol's diff-depth stream, whatever speed it was
recorded at. Each connection gets only what it subscribed to, with backpressure and never
a drop (``feed.exchange.fanout``). Faults (``feed.exchange.faults``) are injected where
messages are fanned out, plus the handshake refusal (HTTP 503) here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from feed.exchange import dialect
from feed.exchange.dialect import (
    MAX_STREAMS_PER_CONNECTION,
    REST_DEPTH_PATHS,
    REST_INVALID_SYMBOL,
    REST_PING_PATHS,
    REST_TIMEOUT,
    WS_COMBINED_PATH,
    WS_INVALID_REQUEST,
    WS_RAW_PATH,
    ControlError,
    ControlRequest,
    RestError,
    StreamError,
    json_response,
    rest_error,
    stream_key,
    stream_name_error,
    url_streams,
    ws_result,
)
from feed.exchange.fanout import Client, Fanout
from feed.exchange.faults import Faults, FaultState
from feed.exchange.loopback import ServerThread
from feed.exchange.replay_source import ReplaySource
from feed.exchange.rest_history import HISTORY_PATHS, History
from feed.exchange.sim_source import SimSource, check_sim_symbols

__all__ = ["EmbeddedExchange"]

log = logging.getLogger(__name__)

#: Seconds to wait for a client's close handshake when stopping.
CLOSE_TIMEOUT_S = 2.0


async def _call(fn):
    # Run a plain function on the loop (EmbeddedExchange.fault_stats).
    return fn()


class _HistoryTap:
    # Sits between a source and the fanout: every trade the source plays or makes goes
    # into the REST history (subscribed or not), then on to the fanout as before.

    def __init__(self, fanout: Fanout, history: History) -> None:
        self._fanout = fanout
        self._history = history

    def wanted(self, symbol: str, channel: str) -> bool:
        return channel == "trade" or self._fanout.wanted(symbol, channel)

    def subscribed(self, symbol: str, channel: str) -> bool:
        return self._fanout.wanted(symbol, channel)

    async def publish(self, symbol: str, channel: str, data: str, **kw) -> None:
        if channel == "trade":
            try:
                body = orjson.loads(data)  # a fast replay plays tens of thousands a second
            except ValueError:  # orjson.JSONDecodeError is one
                body = None
            if isinstance(body, dict):
                self._history.add_trade_event(symbol, body)
        await self._fanout.publish(symbol, channel, data, **kw)


class EmbeddedExchange(ServerThread):
    """A Binance-dialect market-data server on loopback, in its own thread.

    Parameters
    ----------
    host : str
        Interface to bind; loopback by default.
    port : int
        TCP port; 0 picks a free one (read it from ``ws_url`` after ``start``).
    replay_files : iterable of path
        Recorded sessions (``feed.io.readers`` format) to play; empty selects simulator mode.
        The files are scanned once here (about 0.2 s per 100,000 lines).
    speed : float
        Replay speed: recorded pacing divided by this (10 = ten times faster); 0 plays as
        fast as the clients read. Ignored by the simulator.
    symbols : iterable of str, optional
        Allow-list of served symbols (any case). None: replay serves every symbol in the
        files; the simulator serves ``sim_symbols`` plus any well-formed symbol.
    seed : int
        Simulator seed (one independent generator per symbol).
    sim_symbols : iterable of str
        Simulator markets started with the exchange. Any other symbol of 5-20 lowercase
        letters/digits ending with a known quote asset (usdt, usdc, fdusd, busd, btc, eth,
        bnb) gets a market on first subscribe or REST request.
    sim_rate : float
        Simulator trade-rate multiplier (1 = each instrument's usual rate; 20 = twenty
        times busier, for load and fault tests). Ignored in replay mode.
    faults : Faults or str, optional
        Faults to inject (a :class:`Faults` or its ``from_str`` text); None: none.
    klines : bool
        Simulator: also serve ``@kline_1s`` and ``@kline_1m`` (for the kline cross-check).
        Replay serves whatever kline streams were recorded.
    history_s : float
        Simulator: each market starts this many seconds in the past, its trades until now
        held for REST history only (so a client starting now can backfill); 0: none.
    history_weight_limit : int
        REST history weight allowed per ``history_window_s`` (Binance spot: 6000 a minute).
    history_window_s : float
        Length of the weight window, seconds.
    sim_resume : dict, optional
        Simulator: symbol -> ``(last price, last trade id)`` of a previous run, continued
        instead of re-seeded (``SimSource(resume=...)``). Ignored in replay mode.

    Attributes
    ----------
    finished : threading.Event
        Replay mode: set when every file has been played out (never set by the simulator).
    error : BaseException or None
        The exception that stopped the source early (e.g. a corrupt file), if any.

    Raises
    ------
    ValueError
        If an option is out of range, a symbol is not served, or the files mix markets
        (spot and futures) for one symbol.
    feed.io.readers.RecordingError
        If a replay file is missing or unreadable.
    """

    label = "exchange"
    thread_name = "tickscope-exchange"
    start_timeout_s = 10.0
    stop_timeout_s = CLOSE_TIMEOUT_S + 5.0
    log = logging.getLogger(__name__)  # the module's logger

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        replay_files: Iterable[str | Path] = (),
        speed: float = 1.0,
        symbols: Iterable[str] | None = None,
        seed: int = 7,
        sim_symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        sim_rate: float = 1.0,
        faults: Faults | str | None = None,
        klines: bool = False,
        history_s: float = 0.0,
        history_weight_limit: int = 6000,
        history_window_s: float = 60.0,
        sim_resume: dict[str, tuple[float, int]] | None = None,
    ) -> None:
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed >= 0):
            raise ValueError(f"speed must be a finite number >= 0, not {speed!r}")
        if not (isinstance(sim_rate, (int, float)) and math.isfinite(sim_rate) and sim_rate > 0):
            raise ValueError(f"sim_rate must be a finite number > 0, not {sim_rate!r}")
        if isinstance(faults, str):
            faults = Faults.from_str(faults)
        # Fault injection state (None: no faults, and no per-message overhead).
        self._faults = FaultState(faults) if faults is not None and faults != Faults() else None
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise ValueError(f"port must be 0..65535, not {port!r}")
        ServerThread.__init__(self, host=host, port=port)
        files = list(replay_files)
        symbols = None if symbols is None else list(symbols)
        self._source: ReplaySource | SimSource
        if files:
            self._source = ReplaySource(files, float(speed), symbols)
        else:
            sim_symbols = list(sim_symbols)
            check_sim_symbols((symbols or []) + sim_symbols)
            allowed = None if symbols is None else {s.lower() for s in symbols}
            self._source = SimSource(sim_symbols, seed, allowed, sim_rate, klines, resume=sim_resume)
            if not (isinstance(history_s, (int, float)) and 0 <= history_s <= 7 * 86400):
                raise ValueError(f"history_s must be 0..604800 seconds, not {history_s!r}")
            self._source.history_s = float(history_s)
        #: REST history (aggregate trades, klines) of every trade played or simulated.
        self.history = History(history_weight_limit, history_window_s)
        if not files:  # the simulator's past, made when the history is first asked for
            self._source.on_history_past = self.history.add_past
        self.finished = threading.Event()
        self.error: BaseException | None = None
        # Connections and the routing of market messages to them (event-loop thread only).
        self._fanout = Fanout(self._faults)

    # -- public ------------------------------------------------------------------------

    def start(self) -> "EmbeddedExchange":
        """Bind, start the server thread and return once it is listening.

        Raises
        ------
        RuntimeError
            If already started.
        OSError
            If the address cannot be bound.
        """
        ServerThread.start(self)
        log.info("exchange listening on %s (%s)", self.ws_url, type(self._source).__name__)
        return self

    @property
    def ws_url(self) -> str:
        """Return the combined-stream URL, ``ws://HOST:PORT/stream``."""
        return f"ws://{self._host_for_url()}:{self.port}{WS_COMBINED_PATH}"

    @property
    def rest_url(self) -> str:
        """Return the REST base URL, ``http://HOST:PORT``."""
        return f"http://{self._host_for_url()}:{self.port}"

    @property
    def symbols(self) -> list[str]:
        """Return the upper-case symbols currently available, sorted."""
        return self._source.symbols()

    @property
    def progress(self) -> float | None:
        """Return the fraction of the replay files played (0..1), None for the simulator."""
        return getattr(self._source, "progress", None)

    def serves(self, symbol: str, channel: str) -> bool:
        """Return True if a subscription to ``<symbol>@<channel>`` would be served data.

        A replay accepts a subscription to any stream of a recorded symbol but plays only
        the recorded ones: this says whether the stream was recorded.

        ``channel`` as in a stream name after the symbol (``"trade"``, ``"kline_1m"``);
        ``symbol`` in any case.
        """
        key = symbol.lower(), stream_key(f"{symbol.lower()}@{channel}")[1]
        recorded = getattr(self._source, "recorded", None)
        if recorded is not None:  # the replay accepts more streams than it plays
            return recorded(*key)
        try:
            self._source.check(*key)
        except StreamError:
            return False
        return True

    def fault_stats(self) -> dict:
        """Return what fault injection did so far (empty without faults).

        Keys: ``drops``, ``shutdowns``, ``stalls``, ``refused`` (handshakes answered 503),
        ``depth_gaps`` (diffs omitted), ``crossed`` (diffs made to cross), ``bad_klines``
        (symbol -> open times, ms, of final klines given a wrong volume), ``skipped``
        (symbol -> omitted trade ids), ``garbage`` (kind -> hostile messages queued),
        ``delivered`` (symbol -> trade ids written to sockets, in order; a trade written
        just before a connection was aborted may still have been lost on the wire).
        Safe to call from any thread (copies taken on the exchange's loop when running).
        """
        fs = self._faults
        if fs is None:
            return {}
        loop = self._loop
        if loop is not None and loop.is_running() and threading.current_thread() is not self._thread:
            return asyncio.run_coroutine_threadsafe(_call(fs.stats), loop).result(10)
        return fs.stats()

    # -- private: ServerThread hooks (the thread, the loop and start/stop live there) --

    def _host_for_url(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def _serve_options(self) -> dict:
        return {
            "process_request": self._process_request,
            "compression": None,  # Binance does not compress; saves CPU on both ends
            "close_timeout": CLOSE_TIMEOUT_S,
            # Named for the package, so `tickscope` can quieten websockets' own logging.
            "logger": logging.getLogger("feed.exchange.ws"),
        }

    def _on_listening(self) -> None:
        fs = self._faults
        if fs is not None and fs.faults.refuse and fs.faults.refuse_after is None:
            fs.start_refusing(asyncio.get_running_loop().time())

    def _background(self):
        return self._run_source()

    def _on_stopping(self) -> None:
        self._source.close()

    async def _close(self, server: Server) -> None:
        server.close(close_connections=True)
        for client in list(self._fanout.clients):
            self._fanout.drop(client)
        await server.wait_closed()

    async def _run_source(self) -> None:
        try:
            await self._source.run(_HistoryTap(self._fanout, self.history))
        except Exception as exc:  # noqa: BLE001 - a bad file must not kill the server
            self.error = exc
            log.error("exchange source stopped: %s", exc)
        if self._source.plays_out:
            self.finished.set()

    # -- private: REST and handshakes --------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        # REST routes answered here; WebSocket routes validated, then the handshake goes on.
        url = urlsplit(request.path)
        if url.path in REST_DEPTH_PATHS:
            return await self._rest_depth(parse_qs(url.query))
        if url.path in REST_PING_PATHS:
            return json_response(200, {})
        if url.path in HISTORY_PATHS:
            return self.history.respond(url.path, parse_qs(url.query))
        route, streams = url_streams(request.path)
        if route not in (WS_COMBINED_PATH, WS_RAW_PATH):
            return rest_error(404, -1, f"no route {url.path!r}: use /stream, /ws or /api/v3/depth")
        fs = self._faults
        if fs is not None and fs.refusing(asyncio.get_running_loop().time()):
            return rest_error(503, REST_TIMEOUT, "Service unavailable (fault injection)")
        try:
            self._check_streams(None, streams)
        except StreamError as exc:
            return rest_error(400, REST_INVALID_SYMBOL, f"Invalid request: {exc}")
        return None

    async def _rest_depth(self, query: dict[str, list[str]]) -> Response:
        try:
            symbol, limit = dialect.read_depth_query(query)
        except RestError as exc:
            return exc.response()
        key = symbol.lower()
        if not self._source.has_symbol(key):
            return rest_error(400, REST_INVALID_SYMBOL, "Invalid symbol.")
        try:  # a replayed symbol without a recorded book is refused with its own words
            body = await self._source.depth(key, limit)
        except RestError as exc:
            return exc.response()
        if body is None:
            return dialect.BACKEND_TIMEOUT.response()
        return json_response(200, body)

    # -- private: connections ----------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        route, streams = url_streams(ws.request.path if ws.request else "/stream")
        client = Client(ws, combined=route == WS_COMBINED_PATH)
        self._fanout.clients.add(client)
        writer = asyncio.create_task(self._fanout.write_loop(client))
        try:
            if streams:
                self._subscribe(client, streams)
            async for message in ws:
                reply = self._control(client, message)
                if reply is not None:
                    await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self._fanout.drop(client)
            writer.cancel()
            await asyncio.wait([writer])

    def _subscribe(self, client: Client, names: list[str]) -> None:
        self._source.on_subscribe(self._fanout.subscribe(client, names))

    def _check_streams(self, client: Client | None, names: list) -> None:
        # Raise StreamError naming the first stream that cannot be served.
        for name in names:
            error = stream_name_error(name)
            if error:
                raise StreamError(error)
            symbol, channel = stream_key(name)
            self._source.check(symbol, channel)
        total = len(set(names) | set(client.subs if client else ()))
        if total > MAX_STREAMS_PER_CONNECTION:
            raise StreamError(f"too many streams: {total} > {MAX_STREAMS_PER_CONNECTION} per connection")

    def _control(self, client: Client, message: str | bytes) -> str | None:
        # Answer one control message (Binance SUBSCRIBE etc.).
        try:
            req = dialect.read_control(message)
            if req.method == "LIST_SUBSCRIPTIONS":
                return ws_result(list(client.subs), req.request_id)
            dialect.check_params(req)
            return self._apply_control(client, req)
        except ControlError as exc:
            return exc.reply()

    def _apply_control(self, client: Client, req: ControlRequest) -> str:
        # Carry out a well-formed SUBSCRIBE / UNSUBSCRIBE / SET_PROPERTY / GET_PROPERTY.
        if req.method == "UNSUBSCRIBE":
            self._fanout.unsubscribe(client, req.params)
        elif req.method == "SUBSCRIBE":
            try:
                self._check_streams(client, req.params)
            except StreamError as exc:
                raise ControlError(WS_INVALID_REQUEST, f"Invalid request: {exc}", req.request_id) from None
            self._subscribe(client, req.params)
        elif req.method == "GET_PROPERTY":
            return ws_result(client.combined, req.request_id)
        else:
            client.combined = req.params[1]
        return ws_result(None, req.request_id)
