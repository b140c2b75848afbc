"""REST depth snapshots: a small pool of daemon threads fetching them with urllib for the engine.

The engine asks for a symbol's snapshot when its book needs one; :class:`SnapshotFetcher`
fetches it off the engine's worker thread, retries what is worth retrying (the policy in
:mod:`feed.io.policy`), and hands the body or a :class:`~feed.core.events.SnapshotFailed`
to the sink. It never parses a body: the adapter does, on the engine's worker.

A snapshot server is as hostile as any input: every request has one overall deadline
(connect, headers and body together, not a per-read socket timeout a dripping server
never trips), a body larger than ``max_bytes`` is aborted while reading, each symbol
backs off exponentially after failed requests and after a
body the engine refused (:meth:`SnapshotFetcher.outcome`), and requests run on their own
threads, so no symbol waits for another's request.
"""

from __future__ import annotations

import functools
import heapq
import http.client
import itertools
import logging
import socket
import threading
import time
import urllib.request
from typing import Any

from feed.core.events import SnapshotFailed
from feed.core.pacing import backoff
from feed.io.policy import classify_error, explain_error, http_status, retry_after_s, url_secrets
from feed.vendors._common import SECRET_NAME

__all__ = ["SnapshotFetcher", "SnapshotTooLarge", "DeadlineExceeded"]

log = logging.getLogger("tickscope.feed")

#: Bytes read from the socket at a time while reading a body.
_CHUNK = 64 * 1024


class SnapshotTooLarge(OSError):
    """A snapshot body (announced or read so far) exceeds the fetcher's ``max_bytes``."""


class DeadlineExceeded(TimeoutError):
    """A snapshot request did not complete within the fetcher's overall deadline."""


class SnapshotFetcher:
    """Fetch REST depth snapshots on a bounded pool of daemon threads for a sink.

    ``request(symbol, url)`` schedules a GET unless one for that symbol is already in
    flight; a symbol in back-off is scheduled for when its back-off ends (the request is
    taken, not refused). Up to ``max_workers`` requests run at once, each on its own
    thread, so a slow server for one symbol never holds another's. Within a request,
    failures are retried with :func:`backoff` (at most ``max_attempts`` tries; HTTP 429/418
    wait for the server's ``Retry-After``); then ``sink.submit_snapshot(symbol, body,
    recv_ns)`` or ``sink.submit_control(SnapshotFailed(recv_ns, symbol, error, status))``.
    Fatal answers (HTTP 451 geo-block, 401/403), a body over ``max_bytes`` and a missed
    deadline end the request at once, as does a wait longer than ``max_wait_s`` (a 418
    ban can last days).

    Back-off per symbol: a request that failed, or a body the sink reports unusable
    (``outcome(symbol, False)``: garbage, or too old to sync the book), makes the next
    fetch of that symbol wait ``backoff_initial_s`` doubling to ``backoff_cap_s``, counted
    from the end of the previous fetch; ``outcome(symbol, True)`` (the book synced) starts
    afresh.

    Parameters
    ----------
    sink
        The engine.
    timeout_s
        Overall deadline per request, seconds: connecting, the headers and the whole body.
    max_bytes
        Largest body accepted, bytes (Binance's 1000-level snapshot is about 60 KB).
    max_attempts
        Tries per request (>= 1).
    max_wait_s
        Longest wait between tries, seconds.
    max_workers
        Requests running at once (threads; started on demand).
    backoff_initial_s, backoff_cap_s
        First and longest back-off of a symbol, seconds.
    headers
        Extra HTTP headers (e.g. an API key); their values never appear in errors.
    name
        Thread name prefix.
    hints
        Vendor advice per HTTP status (``adapter.http_hints``) for error messages.

    Raises
    ------
    ValueError
        For a limit that is not a positive number.
    """

    def __init__(
        self,
        sink: Any,
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 16 * 1024 * 1024,
        max_attempts: int = 4,
        max_wait_s: float = 60.0,
        max_workers: int = 8,
        backoff_initial_s: float = 2.0,
        backoff_cap_s: float = 120.0,
        headers: dict[str, str] | None = None,
        name: str = "snapshots",
        hints: dict[int, str] | None = None,
    ) -> None:
        if max_attempts < 1 or max_workers < 1 or max_bytes < 1:
            raise ValueError("max_attempts, max_workers and max_bytes must be >= 1")
        if not (timeout_s > 0 and backoff_initial_s > 0 and backoff_cap_s >= backoff_initial_s):
            raise ValueError("timeout_s and the back-off times must be > 0 seconds")
        self._sink = sink  # the engine
        self._timeout_s = timeout_s  # overall deadline per request, s
        self._max_bytes = max_bytes
        self._max_attempts = max_attempts  # tries per request
        self._max_wait_s = max_wait_s  # longest retry wait, s
        self._max_workers = max_workers
        self._backoff = (backoff_initial_s, backoff_cap_s)
        self._headers = {"User-Agent": "tickscope", **(headers or {})}
        self._secrets = [v for k, v in self._headers.items() if SECRET_NAME.search(k)]
        self._name = name
        self._hints = hints  # vendor advice per HTTP status
        # Everything below is guarded by _cond (workers wait on it for due jobs).
        self._cond = threading.Condition()
        self._jobs: list[tuple[float, int, str, str]] = []  # heap of (due monotonic s, seq, symbol, url)
        self._seq = itertools.count()
        self._in_flight: set[str] = set()  # symbols scheduled or being fetched
        self._failures: dict[str, int] = {}  # symbol -> back-offs in a row
        self._last_done: dict[str, float] = {}  # symbol -> monotonic s its last fetch ended
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting for a job
        self._requests: dict[str, int] = {}  # symbol -> fetches started (for health and tests)
        self._stopped = False

    def start(self) -> "SnapshotFetcher":
        """Return self; workers start on demand (kept for the engine's life cycle)."""
        return self

    def request(self, symbol: str, url: str) -> bool:
        """Schedule a snapshot GET for ``symbol``; return False if one is already in flight.

        The fetch starts now, or when the symbol's back-off ends.
        """
        now = time.monotonic()
        with self._cond:
            if symbol in self._in_flight or self._stopped:
                return False
            self._in_flight.add(symbol)
            last = self._last_done.get(symbol)
            due = now if last is None else max(now, last + self._wait_of(symbol))
            heapq.heappush(self._jobs, (due, next(self._seq), symbol, url))
            # A worker per scheduled job, up to the bound: none waits behind another's request.
            if len(self._jobs) > self._idle and len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"{self._name}-{len(self._threads) + 1}")
                self._threads.append(thread)
                thread.start()
            # notify_all: a request retrying after an error waits on the same condition.
            self._cond.notify_all()
        return True

    def outcome(self, symbol: str, ok: bool) -> None:
        """Hear how ``symbol``'s last body went: True synced the book (back-off ends),
        False was refused or too old (the next fetch backs off further)."""
        with self._cond:
            if ok:
                self._failures.pop(symbol, None)
            else:
                self._failures[symbol] = self._failures.get(symbol, 0) + 1

    def in_flight(self) -> list[str]:
        """Return the symbols with a request scheduled or running."""
        with self._cond:
            return sorted(self._in_flight)

    def backoff_s(self, symbol: str) -> float:
        """Return the seconds ``symbol``'s next fetch waits after its last one ended (0: none)."""
        with self._cond:
            return self._wait_of(symbol)

    def fetches(self) -> dict[str, int]:
        """Return the fetches started per symbol since start."""
        with self._cond:
            return dict(self._requests)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers (abandoning scheduled requests) and wait up to ``timeout`` s."""
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        end = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))

    # -- private -----------------------------------------------------------------------

    def _wait_of(self, symbol: str) -> float:
        # The back-off after `failures` in a row: 0, then initial doubling to the cap.
        n = self._failures.get(symbol, 0)
        if n == 0:
            return 0.0
        initial, cap = self._backoff
        return min(cap, initial * 2.0 ** min(n - 1, 30))

    def _run(self) -> None:
        while True:
            with self._cond:
                job = None
                while not self._stopped:
                    now = time.monotonic()
                    if self._jobs and self._jobs[0][0] <= now:
                        job = heapq.heappop(self._jobs)
                        break
                    self._idle += 1
                    self._cond.wait(self._jobs[0][0] - now if self._jobs else None)
                    self._idle -= 1
                if job is None:
                    return
                _, _, symbol, url = job
                self._requests[symbol] = self._requests.get(symbol, 0) + 1
            try:
                self._fetch(symbol, url)
            except Exception:
                log.exception("%s: snapshot of %s failed unexpectedly", self._name, symbol)
                self._done(symbol, failed=True)

    def _done(self, symbol: str, *, failed: bool) -> None:
        # Released before the sink hears, so the sink may ask again straight away.
        with self._cond:
            self._in_flight.discard(symbol)
            self._last_done[symbol] = time.monotonic()
            if failed:
                self._failures[symbol] = self._failures.get(symbol, 0) + 1

    def _fetch(self, symbol: str, url: str) -> None:
        delays = backoff()
        secrets = self._secrets + url_secrets(url)
        for attempt in range(1, self._max_attempts + 1):
            try:
                body = self._get(url)
            except Exception as exc:
                message = explain_error(exc, secrets, self._hints)
                wait = next(delays)
                floor = retry_after_s(exc)
                if floor is not None:
                    wait = max(wait, floor)
                ours = isinstance(exc, (SnapshotTooLarge, DeadlineExceeded))
                give_up = (ours or classify_error(exc) == "fatal" or attempt == self._max_attempts
                           or wait > self._max_wait_s)
                if give_up or self._stopped:
                    if attempt > 1:
                        message = f"{message} (after {attempt} attempts)"
                    log.warning("%s: snapshot of %s failed: %s", self._name, symbol, message)
                    self._done(symbol, failed=True)
                    self._report_error(symbol, message, http_status(exc))
                    return
                log.info("%s: snapshot of %s: %s; retry in %.1f s", self._name, symbol, message, wait)
                with self._cond:
                    if self._cond.wait_for(lambda: self._stopped, wait):
                        self._in_flight.discard(symbol)
                        return
                continue
            recv_ns = time.time_ns()
            self._done(symbol, failed=False)
            try:
                self._sink.submit_snapshot(symbol, body, recv_ns)
            except Exception:
                log.exception("%s: sink.submit_snapshot raised", self._name)
            return

    def _get(self, url: str) -> bytes:
        # One GET within the overall deadline, reading at most max_bytes of body.
        deadline = _Deadline(self._timeout_s)
        try:
            opener = urllib.request.build_opener(
                _WatchedHTTPHandler(deadline), _WatchedHTTPSHandler(deadline))
            request = urllib.request.Request(url, headers=self._headers)
            try:
                with opener.open(request, timeout=self._timeout_s) as response:
                    announced = response.headers.get("Content-Length")
                    if announced is not None and announced.strip().isdigit() \
                            and int(announced) > self._max_bytes:
                        raise SnapshotTooLarge(
                            f"snapshot body of {int(announced):,} bytes refused "
                            f"(more than {self._max_bytes:,})")
                    chunks, size = [], 0
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > self._max_bytes:
                            raise SnapshotTooLarge(
                                f"snapshot body over {self._max_bytes:,} bytes: reading stopped")
                        chunks.append(chunk)
            except (OSError, http.client.HTTPException):
                if deadline.expired:
                    raise DeadlineExceeded(self._deadline_words()) from None
                raise
            if deadline.expired:  # a shut-down socket reads as the end of the body
                raise DeadlineExceeded(self._deadline_words())
            return b"".join(chunks)
        finally:
            deadline.cancel()

    def _deadline_words(self) -> str:
        return f"no complete snapshot within {self._timeout_s:g} s (the server is too slow)"

    def _report_error(self, symbol: str, message: str, status: int | None) -> None:
        try:
            self._sink.submit_control(SnapshotFailed(time.time_ns(), symbol, message, status))
        except Exception:
            log.exception("%s: sink.submit_control raised", self._name)


class _Deadline:
    # Shuts down the sockets of one request when its time is up, so whatever read is
    # blocked (headers or body, however slowly the server drips) returns at once.

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if not self.expired:
                return
        _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedHTTPConnection(http.client.HTTPConnection):
    # Hands its TCP socket to the deadline as soon as it exists (before TLS and headers).

    def __init__(self, *args, deadline: _Deadline, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_watched_connection, deadline)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, deadline: _Deadline, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_watched_connection, deadline)


def _watched_connection(deadline: _Deadline, *args, **kwargs) -> socket.socket:
    sock = socket.create_connection(*args, **kwargs)
    deadline.watch(sock)
    return sock


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPConnection, deadline=self._deadline), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPSConnection, deadline=self._deadline), req,
                            context=self._context)
