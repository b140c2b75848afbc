"""A ``websockets`` asyncio server on its own event loop in a daemon thread.

The life cycle the embedded exchange (``feed.exchange.EmbeddedExchange``) and the test
fakes of vendor servers share: ``start()`` binds (port 0 picks a free one) and returns once
listening, re-raising a bind error in the caller's thread; ``stop()`` closes every
connection and joins the thread (idempotent); both work as a context manager.

A subclass implements ``_handle(ws)`` (one connection, on the loop thread) and
``_serve_options()``, and may override the hooks ``_on_listening()``, ``_background()``,
``_on_stopping()`` and ``_close(server)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve

__all__ = ["ServerThread"]


class ServerThread:
    """Base of a WebSocket server run in its own thread and event loop.

    Parameters
    ----------
    host : str
        Interface to bind.
    port : int
        TCP port; 0 picks a free one (:attr:`port` tells which, once started).

    Attributes
    ----------
    label : str
        What the server is called in errors and logs; default: the class name.
    thread_name : str
        Name of the server thread.
    start_timeout_s, stop_timeout_s : float
        How long ``start()`` waits for the server to listen, and ``stop()`` for the thread.
    log : logging.Logger
        Where a failure of the running server thread is logged.
    """

    label: str = ""
    thread_name = "loopback-server"
    start_timeout_s = 5.0
    stop_timeout_s = 5.0
    log = logging.getLogger(__name__)

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port  # requested port; the bound one once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Set by the loop thread once listening (or failed to); start() waits on it.
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Bind, start the server thread and return once it is listening.

        Raises
        ------
        RuntimeError
            If already started, or not listening within ``start_timeout_s``.
        OSError
            If the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self._label()} already started")
        self._thread = threading.Thread(target=self._thread_main, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise RuntimeError(f"{self._label()} did not start within {self.start_timeout_s:g} s")
        if self._start_error is not None:
            self._thread.join(5.0)
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
        thread.join(self.stop_timeout_s)
        if thread.is_alive():
            self.log.warning("%s thread did not stop in time", self._label())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the bound TCP port (after ``start``)."""
        if not self._port:
            raise RuntimeError("the port is chosen on start(); call start() first")
        return self._port

    # -- subclass hooks ----------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _serve_options(self) -> dict[str, Any]:
        """Return the keyword arguments of ``websockets.asyncio.server.serve`` to use."""
        return {}

    def _on_listening(self) -> None:
        """Run on the loop once bound, before ``_background`` starts and ``start`` returns."""

    def _background(self) -> Coroutine[Any, Any, None] | None:
        """Return a coroutine to run while serving (cancelled on stop), or None."""
        return None

    def _on_stopping(self) -> None:
        """Run on the loop when a stop was requested, before the background is cancelled."""

    async def _close(self, server: Server) -> None:
        """Close the server and every connection."""
        server.close(close_connections=True)
        await server.wait_closed()

    # -- private -----------------------------------------------------------------------

    def _label(self) -> str:
        return self.label or type(self).__name__

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._start_error = exc
            else:
                self.log.exception("%s thread failed", self._label())
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        async with serve(self._handle, self._host, self._port, **self._serve_options()) as server:
            self._port = server.sockets[0].getsockname()[1]
            self._on_listening()
            work = self._background()
            task = None if work is None else asyncio.create_task(work, name=f"{self.thread_name}-background")
            self._ready.set()
            await self._stop_requested.wait()
            self._on_stopping()
            if task is not None:
                task.cancel()
            await self._close(server)
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                pass
