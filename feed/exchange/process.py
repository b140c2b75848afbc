"""The embedded exchange in a process of its own, for replays as fast as possible.

In one process, the exchange's event loop (reading the recording, framing, sending) and
the feed client and engine (reading, parsing, applying) take turns on one GIL: at
``--speed 0`` the exchange alone used about half of the process's time, and the engine
waited for it. :class:`ExchangeProcess` runs the same
:class:`feed.exchange.server.EmbeddedExchange` in a child process (``spawn``: no
threads or locks are inherited), so it runs on the other core, and offers the parent the
part of its interface the runtime uses: ``ws_url``, ``rest_url``, ``symbols``,
``serves()``, ``fault_stats()``, ``progress``, ``finished`` and ``stop()``. Calls go over a pipe
(one at a time, under a lock); ``finished`` is a process-shared event. Nothing about the
wire changes: the client connects to it on loopback exactly as before.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

__all__ = ["ExchangeProcess"]


def _child(conn: Any, finished: Any, kwargs: dict) -> None:
    # The child: build and start the exchange, report its address, then answer calls.
    from feed.exchange.server import EmbeddedExchange

    try:
        ex = EmbeddedExchange(**kwargs).start()
    except BaseException as exc:  # ValueError (bad file, speed), OSError (bind)
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ok", ex.ws_url, ex.rest_url, list(ex.symbols)))
    from feed.io.gctune import settle

    # The same collector settings as the ingest process: a fast replay allocates a few
    # short-lived objects per line (a parsed diff is hundreds), and default thresholds
    # made the collector walk the heap every few hundred lines (several times the cost
    # of the replay itself, measured).
    settle()

    def mirror() -> None:
        ex.finished.wait()
        finished.set()

    threading.Thread(target=mirror, daemon=True).start()
    try:
        while True:
            try:
                name, args = conn.recv()
            except EOFError:  # the parent went away
                break
            if name == "stop":
                ex.stop()
                conn.send(("ok", None))
                break
            try:
                attr = getattr(ex, name)
                conn.send(("ok", attr(*args) if callable(attr) else attr))
            except Exception as exc:
                conn.send(("error", type(exc).__name__, str(exc)))
    finally:
        ex.stop()


class ExchangeProcess:
    """An :class:`~feed.exchange.server.EmbeddedExchange` run in a child process.

    Parameters
    ----------
    **kwargs
        ``EmbeddedExchange`` arguments (picklable: paths, numbers, strings, a Faults).

    Attributes
    ----------
    finished : multiprocessing.Event
        Set when the replay has played out (``wait()`` / ``is_set()`` as a
        ``threading.Event``).
    """

    #: Seconds start() waits for the child to listen (imports and the file scan included).
    START_TIMEOUT_S = 60.0

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._ctx = mp.get_context("spawn")
        self.finished = self._ctx.Event()
        self._conn: Any = None
        self._proc: Any = None
        self._lock = threading.Lock()
        self.ws_url = self.rest_url = ""
        self.symbols: list[str] = []

    def start(self) -> "ExchangeProcess":
        """Start the child and return once its exchange listens.

        Raises
        ------
        ValueError, OSError
            As ``EmbeddedExchange`` and its ``start()`` raise them in the child.
        RuntimeError
            If the child does not answer within :attr:`START_TIMEOUT_S`.
        """
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child, args=(child, self.finished, self._kwargs),
                                       name="tickscope-exchange", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(self.START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("the exchange process did not start")
        reply = parent.recv()
        if reply[0] == "error":
            self.stop()
            raise (OSError if reply[1] in ("OSError", "PermissionError") else ValueError)(reply[2])
        _, self.ws_url, self.rest_url, self.symbols = reply
        return self

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            self._conn.send((name, args))
            reply = self._conn.recv()
        if reply[0] == "error":
            raise RuntimeError(f"exchange process: {name}: {reply[1]}: {reply[2]}")
        return reply[1]

    def serves(self, symbol: str, channel: str) -> bool:
        """Return ``EmbeddedExchange.serves(symbol, channel)`` of the child's exchange."""
        return bool(self._call("serves", symbol, channel))

    @property
    def progress(self) -> float | None:
        """Return ``EmbeddedExchange.progress`` of the child's exchange (None once stopped)."""
        if self._conn is None:
            return None
        try:
            return self._call("progress")
        except (OSError, EOFError, RuntimeError):
            return None

    def fault_stats(self) -> dict:
        """Return ``EmbeddedExchange.fault_stats()`` of the child's exchange."""
        return self._call("fault_stats")

    def stop(self) -> None:
        """Stop the exchange and its process (idempotent; at most a few seconds)."""
        proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        if proc is None:
            return
        try:
            if conn is not None and proc.is_alive():
                with self._lock:
                    conn.send(("stop", ()))
                    if conn.poll(10):
                        conn.recv()
        except (OSError, EOFError):
            pass
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(2)
        if conn is not None:
            conn.close()
