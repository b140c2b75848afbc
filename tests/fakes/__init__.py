"""Local fake vendor servers for tests: each speaks one vendor's documented protocol.

Every fake is a ``websockets`` asyncio server on 127.0.0.1 (a free port by default) in a
daemon thread, started with ``start()`` (or ``with``) and stopped with ``stop()``. What a
fake saw is logged as ``(kind, detail)`` events that tests read with :meth:`events` and
wait on with :meth:`wait_for`; pushes are deterministic (counters, not randomness).

* :class:`tests.fakes.alltick_server.FakeAllTickServer` -- AllTick (vendor-protocols.md 2)
* :class:`tests.fakes.itick_server.FakeITickServer` -- iTick (vendor-protocols.md 3)

Both work with the real ``FeedClient``/``Engine`` (point the adapter's URLs at
``server.stock_url`` / ``server.base_url``) and with plain websocket-client connections.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from feed.exchange.loopback import ServerThread

__all__ = ["LoopbackServer", "FakeVendorServer", "FakeAllTickServer", "FakeITickServer"]



class LoopbackServer(ServerThread):
    """Base of the fakes: a WebSocket server on loopback in its own thread and event loop.

    The thread, the loop, ``start()``/``stop()``/``with`` and :attr:`port` come from
    :class:`feed.exchange.loopback.ServerThread`. Subclasses implement ``handle(ws)`` (one
    connection, on the loop thread) and may override ``process_request(connection,
    request)`` (HTTP handshake hook: return a response to refuse) and ``background()`` (a
    coroutine run while serving).

    Args:
        host: Interface to bind (loopback).
        port: TCP port; 0 picks a free one.
    """

    thread_name = "fake-vendor"
    log = logging.getLogger("tests.fakes")

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        # Guards everything tests read from other threads: the event log and per-connection
        # state. Notified on every change so wait_for() wakes.
        self._cond = threading.Condition()
        self._log: list[tuple[str, dict]] = []

    @property
    def host(self) -> str:
        """Return the bound interface."""
        return self._host

    @property
    def base_url(self) -> str:
        """Return ``ws://127.0.0.1:<port>`` (no path)."""
        return f"ws://{self.host}:{self.port}"

    # -- what the server saw -----------------------------------------------------------

    def events(self, kind: str | None = None) -> list[tuple[str, dict]]:
        """Return a copy of the logged ``(kind, detail)`` events, optionally of one kind."""
        with self._cond:
            return [e for e in self._log if kind is None or e[0] == kind]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Wait until ``predicate()`` is true (re-checked on every server change); return it."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_event(self, kind: str, count: int = 1, timeout: float = 2.0) -> bool:
        """Wait until at least ``count`` events of ``kind`` were logged; return whether."""
        return self.wait_for(lambda: sum(1 for e in self._log if e[0] == kind) >= count, timeout)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run ``fn(*args)`` (a coroutine function or a plain one) on the loop; return its result."""
        loop = self._loop
        if loop is None or not self._ready.is_set():
            raise RuntimeError("server not started")

        async def run() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    # -- subclass hooks ----------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        """Return None to accept the handshake, or ``connection.respond(status, text)``."""
        return None

    async def background(self) -> None:
        """Run while the server serves (cancelled on stop); default: nothing."""
        return None

    # -- helpers for subclasses ----------------------------------------------------------

    def record(self, kind: str, **detail: Any) -> None:
        """Log an event and wake waiters (any thread)."""
        with self._cond:
            self._log.append((kind, detail))
            self._cond.notify_all()

    def changed(self) -> None:
        """Wake waiters after a state change made under ``self._cond``."""
        with self._cond:
            self._cond.notify_all()

    @staticmethod
    async def send(ws: ServerConnection, text: str) -> bool:
        """Send ``text``; return False if the connection is gone."""
        try:
            await ws.send(text)
            return True
        except ConnectionClosed:
            return False

    # -- ServerThread hooks ------------------------------------------------------------

    def _serve_options(self) -> dict[str, Any]:
        return {
            "process_request": self.process_request,
            "compression": None,
            "ping_interval": None,  # deterministic: no server pings
            "close_timeout": 1.0,
            "logger": logging.getLogger("tests.fakes.ws"),
        }

    def _background(self):
        return self.background()

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await self.handle(ws)
        except ConnectionClosed:
            pass


class FakeVendorServer(LoopbackServer):
    """A :class:`LoopbackServer` that tracks connections and pushes in rounds.

    Subclasses keep their open connections in ``self._conns`` (id -> an object with
    ``ws`` and ``closed_for``), number them with ``next(self._ids)`` and implement
    ``_push_round()`` (a coroutine: one push round, returns the frames sent). Requests are
    logged as ``("request", {"request": <parsed JSON>, ...})`` events.

    Args:
        push_interval_s: Seconds between push rounds; None: only :meth:`push_once`.
        host, port: Bind address (loopback, free port).
    """

    def __init__(self, *, push_interval_s: float | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.push_interval_s = push_interval_s
        self._conns: dict[int, Any] = {}  # open connections by id
        self._ids = itertools.count(1)

    # -- inspection and control (any thread) ----------------------------------------------

    @property
    def connection_count(self) -> int:
        """Return the number of open connections."""
        with self._cond:
            return len(self._conns)

    def closed_reasons(self) -> list[str]:
        """Return why connections ended, oldest first (``"heartbeat timeout"``, ...)."""
        return [d["reason"] for _, d in self.events("disconnect")]

    def push_once(self) -> int:
        """Push one round per subscribed symbol now; return frames sent."""
        return self.call(self._push_round)

    def send_raw(self, text: str) -> int:
        """Send ``text`` as is to every open connection (malformed-input tests)."""
        async def run() -> int:
            conns = list(self._conns.values())
            return sum([await self.send(c.ws, text) for c in conns])
        return self.call(run)

    def drop_all(self) -> None:
        """Cut every connection without a close handshake (a network drop)."""
        def run() -> None:
            for c in list(self._conns.values()):
                c.ws.transport.abort()
        self.call(run)

    # -- server hooks ---------------------------------------------------------------------

    async def background(self) -> None:
        if self.push_interval_s is None:
            return
        while True:
            await asyncio.sleep(self.push_interval_s)
            await self._push_round()

    # -- helpers for subclasses ----------------------------------------------------------

    def _requests_where(self, key: str, value: object) -> list[dict]:
        # The requests received (parsed JSON) whose ``key`` is ``value`` (None: all).
        return [d["request"] for _, d in self.events("request")
                if value is None or d["request"].get(key) == value]

    async def _close_when_silent(self, conn: Any, limit: float, last: Callable[[], float],
                                 reason: str) -> None:
        # Close ``conn`` once ``last()`` (loop time of its last keep-alive) is older than
        # ``limit`` seconds; checked every tenth of the limit (0.01..1 s).
        loop = asyncio.get_running_loop()
        step = max(0.01, min(1.0, limit / 10))
        while True:
            await asyncio.sleep(step)
            if loop.time() - last() > limit:
                conn.closed_for = reason
                await conn.ws.close(1000, reason)
                return

    async def _push_round(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


# Imported last: the servers subclass LoopbackServer above.
from tests.fakes.alltick_server import FakeAllTickServer  # noqa: E402
from tests.fakes.itick_server import FakeITickServer  # noqa: E402
