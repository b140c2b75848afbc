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
import logging
import threading
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["LoopbackServer", "FakeAllTickServer", "FakeITickServer"]

log = logging.getLogger("tests.fakes")


class LoopbackServer:
    """Base of the fakes: a WebSocket server on loopback in its own thread and event loop.

    Subclasses implement ``handle(ws)`` (one connection, on the loop thread) and may
    override ``process_request(connection, request)`` (HTTP handshake hook: return a
    response to refuse) and ``background()`` (a coroutine run while serving).

    Args:
        host: Interface to bind (loopback).
        port: TCP port; 0 picks a free one.
    """

    thread_name = "fake-vendor"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port  # bound port once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # set once listening (or failed)
        self._start_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        # Guards everything tests read from other threads: the event log and per-connection
        # state. Notified on every change so wait_for() wakes.
        self._cond = threading.Condition()
        self._log: list[tuple[str, dict]] = []

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> "LoopbackServer":
        """Bind, start the thread and return once listening.

        Raises:
            RuntimeError: If already started or not listening within 5 s.
            OSError: If the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._thread = threading.Thread(target=self._thread_main, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0):
            raise RuntimeError(f"{type(self).__name__} did not start within 5 s")
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop(self) -> None:
        """Close every connection, stop the server and join its thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop_requested
        if thread is None or not thread.is_alive():
            return
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already closed
                pass
        thread.join(5.0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the bound TCP port (after ``start``)."""
        if not self._port:
            raise RuntimeError("the port is chosen on start(); call start() first")
        return self._port

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

    # -- private -----------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._start_error = exc
            else:
                log.exception("%s thread failed", type(self).__name__)
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self._port,
            process_request=self.process_request,
            compression=None,
            ping_interval=None,  # deterministic: no server pings
            close_timeout=1.0,
            logger=logging.getLogger("tests.fakes.ws"),
        ) as server:
            self._port = server.sockets[0].getsockname()[1]
            extra = asyncio.create_task(self.background())
            self._ready.set()
            await self._stop_requested.wait()
            extra.cancel()
            server.close(close_connections=True)
            await server.wait_closed()
        try:
            await extra
        except asyncio.CancelledError:
            pass

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await self.handle(ws)
        except ConnectionClosed:
            pass


# Imported last: the servers subclass LoopbackServer above.
from tests.fakes.alltick_server import FakeAllTickServer  # noqa: E402
from tests.fakes.itick_server import FakeITickServer  # noqa: E402
