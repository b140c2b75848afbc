"""Paged REST fetching on a daemon thread: the shape shared by the REST history fetcher
(``feed.io.backfill``) and the vendor-candle seeder (``feed.io.vendor_candles``).

A :class:`RestWorker` serves queued jobs in order, one at a time, on one daemon thread;
each job pages through an endpoint with :meth:`RestWorker.get`, one GET retried with the
back-off of ``feed.core.pacing.backoff`` under the policy of ``feed.io.policy``
(:class:`~feed.io.policy.Retry`, :func:`~feed.io.policy.retry_wait`). What an answer means
(return it, retry, or give up with words) is the subclass's judgement, per vendor.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from feed.core.pacing import backoff
from feed.io.policy import Retry, retry_wait

__all__ = ["RestWorker", "HistoryError", "Judge"]

log = logging.getLogger("tickscope.feed")

#: Judges one attempt: ``(body, headers, error)`` -> the body to return, or a
#: :class:`~feed.io.policy.Retry`; raises :class:`HistoryError` (or a vendor error) to give
#: up at once. ``body`` and ``headers`` are None when ``error`` is set.
Judge = Callable[[bytes | None, Mapping[str, str] | None, BaseException | None], "bytes | Retry"]


class HistoryError(Exception):
    """A REST request cannot go on; the message says why, in words."""


class RestWorker:
    """Jobs served in order on one daemon thread, paging through a REST endpoint.

    Subclasses implement ``_serve(job)`` (the paging, calling :meth:`get`) and
    ``_give_up(job, exc)`` (tell the sink the job failed; ``exc`` may be a bug, which must
    not kill the thread).

    Parameters
    ----------
    thread_name : str
    timeout_s : float
        Socket timeout per call, seconds.
    max_attempts : int
        Tries per call on answers worth retrying.
    max_wait_s : float
        Longest wait accepted before a retry, seconds.
    """

    def __init__(self, thread_name: str, *, timeout_s: float, max_attempts: int, max_wait_s: float) -> None:
        self._thread_name = thread_name
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "RestWorker":
        """Start the worker thread (idempotent; not after :meth:`stop`); return self."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
                self._thread.start()
        return self

    def _put(self, job: Any) -> None:
        # Queue a job, starting the thread on the first.
        self.start()
        self._queue.put(job)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker (abandoning queued jobs) and wait up to ``timeout`` s."""
        self._stop.set()
        self._queue.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None:
                break
            try:
                self._serve(job)
            except Exception as exc:  # noqa: BLE001 - the subclass tells a refusal from a bug
                self._give_up(job, exc)

    def _serve(self, job: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _give_up(self, job: Any, exc: Exception) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self, url: str, headers: Mapping[str, str], judge: Judge, what: str,
            before: Callable[[], None] | None = None) -> bytes:
        """GET ``url`` until ``judge`` accepts an answer; return the body it returns.

        Parameters
        ----------
        url : str
        headers : mapping
            Request headers (an API key goes here, never into ``url``).
        judge : Judge
            Decides each attempt (see :data:`Judge`).
        what : str
            Names the call in the retry log line (no secret).
        before : callable, optional
            Run before each attempt (e.g. wait for the vendor's weight budget).

        Raises
        ------
        HistoryError
            ``"stopping"`` once :meth:`stop` was called; ``"<prefix><message> (after N
            attempts)"`` when the attempts or the accepted wait run out; and whatever
            ``judge`` raises.
        """
        delays = backoff()
        for attempt in range(1, self._max_attempts + 1):
            if before is not None:
                before()
            if self._stop.is_set():
                raise HistoryError("stopping")
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "tickscope", **headers})
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    body, got_headers, error = response.read(), response.headers, None
            except Exception as exc:  # noqa: BLE001 - judged below
                body, got_headers, error = None, None, exc
            verdict = judge(body, got_headers, error)
            if not isinstance(verdict, Retry):
                return verdict
            wait = retry_wait(next(delays), verdict.floor_s, attempt, self._max_attempts, self._max_wait_s)
            if wait is None:
                raise HistoryError(f"{verdict.prefix}{verdict.message} (after {attempt} attempts)")
            log.info("%s: %s; retry in %.1f s", what, verdict.message, wait)
            if self._stop.wait(wait):
                raise HistoryError("stopping")
        raise HistoryError("no attempt made")  # pragma: no cover - the loop returns or raises
