"""REST depth snapshots: one daemon thread fetching them with urllib for the engine.

The engine asks for a symbol's snapshot when its book needs one; :class:`SnapshotFetcher`
fetches it off the engine's worker thread, retries what is worth retrying (the policy in
:mod:`feed.io.policy`), and hands the body or a :class:`~feed.core.events.SnapshotFailed`
to the sink. It never parses a body: the adapter does, on the engine's worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.request
from typing import Any

from feed.core.events import SnapshotFailed
from feed.core.pacing import backoff
from feed.io.policy import classify_error, explain_error, http_status, retry_after_s, url_secrets
from feed.vendors._common import SECRET_NAME

__all__ = ["SnapshotFetcher"]

log = logging.getLogger("tickscope.feed")


class SnapshotFetcher:
    """Fetch REST depth snapshots on a daemon thread and hand the bodies to a sink.

    ``request(symbol, url)`` queues a GET unless one for that symbol is already in flight.
    The worker retries failures with :func:`backoff` (at most ``max_attempts`` tries; HTTP
    429/418 wait for the server's ``Retry-After``), then calls
    ``sink.submit_snapshot(symbol, body, recv_ns)`` or
    ``sink.submit_control(SnapshotFailed(recv_ns, symbol, error, status))``.
    Fatal answers (HTTP 451 geo-block, 401/403) are reported at once without retrying, and
    so is a wait longer than ``max_wait_s`` (a 418 ban can last days). The thread starts on
    the first request (or :meth:`start`).

    Parameters
    ----------
    sink
        The engine.
    timeout_s
        Socket timeout per request, seconds.
    max_attempts
        Tries per request (>= 1).
    max_wait_s
        Longest wait between tries, seconds.
    headers
        Extra HTTP headers (e.g. an API key); their values never appear in errors.
    name
        Thread name.
    hints
        Vendor advice per HTTP status (``adapter.http_hints``) for error messages.
    """

    def __init__(
        self,
        sink: Any,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_wait_s: float = 60.0,
        headers: dict[str, str] | None = None,
        name: str = "snapshots",
        hints: dict[int, str] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {max_attempts!r}")
        self._sink = sink  # the engine
        self._timeout_s = timeout_s  # per request, s
        self._max_attempts = max_attempts  # tries per request
        self._max_wait_s = max_wait_s  # longest retry wait, s
        self._headers = {"User-Agent": "tickscope", **(headers or {})}
        self._secrets = [v for k, v in self._headers.items() if SECRET_NAME.search(k)]
        self._name = name
        self._hints = hints  # vendor advice per HTTP status
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()  # (symbol, url)
        self._in_flight: set[str] = set()  # symbols queued or being fetched
        self._lock = threading.Lock()  # guards _in_flight and _thread
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SnapshotFetcher":
        """Start the worker thread (idempotent); return self."""
        with self._lock:
            if self._thread is None and not self._stop_event.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return self

    def request(self, symbol: str, url: str) -> bool:
        """Queue a snapshot GET for ``symbol``; return False if one is already in flight."""
        with self._lock:
            if symbol in self._in_flight or self._stop_event.is_set():
                return False
            self._in_flight.add(symbol)
        self.start()
        self._queue.put((symbol, url))
        return True

    def in_flight(self) -> list[str]:
        """Return the symbols with a request queued or running."""
        with self._lock:
            return sorted(self._in_flight)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker (abandoning queued requests) and wait up to ``timeout`` s."""
        self._stop_event.set()
        self._queue.put(None)
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop_event.is_set():
            item = self._queue.get()
            if item is None:
                break
            symbol, url = item
            try:
                self._fetch(symbol, url)
            except Exception:
                log.exception("%s: snapshot of %s failed unexpectedly", self._name, symbol)
                self._done(symbol)

    def _done(self, symbol: str) -> None:
        # Released before the sink hears, so the sink may ask again straight away.
        with self._lock:
            self._in_flight.discard(symbol)

    def _fetch(self, symbol: str, url: str) -> None:
        delays = backoff()
        secrets = self._secrets + url_secrets(url)
        for attempt in range(1, self._max_attempts + 1):
            try:
                request = urllib.request.Request(url, headers=self._headers)
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    body = response.read()
            except Exception as exc:
                message = explain_error(exc, secrets, self._hints)
                wait = next(delays)
                floor = retry_after_s(exc)
                if floor is not None:
                    wait = max(wait, floor)
                give_up = (classify_error(exc) == "fatal" or attempt == self._max_attempts
                           or wait > self._max_wait_s)
                if give_up or self._stop_event.is_set():
                    if attempt > 1:
                        message = f"{message} (after {attempt} attempts)"
                    log.warning("%s: snapshot of %s failed: %s", self._name, symbol, message)
                    self._done(symbol)
                    self._report_error(symbol, message, http_status(exc))
                    return
                log.info("%s: snapshot of %s: %s; retry in %.1f s", self._name, symbol, message, wait)
                if self._stop_event.wait(wait):
                    self._done(symbol)
                    return
                continue
            recv_ns = time.time_ns()
            self._done(symbol)
            try:
                self._sink.submit_snapshot(symbol, body, recv_ns)
            except Exception:
                log.exception("%s: sink.submit_snapshot raised", self._name)
            return

    def _report_error(self, symbol: str, message: str, status: int | None) -> None:
        try:
            self._sink.submit_control(SnapshotFailed(time.time_ns(), symbol, message, status))
        except Exception:
            log.exception("%s: sink.submit_control raised", self._name)
