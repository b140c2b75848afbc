"""TickDB's own 1m candles for symbols without trade history (AllTick, iTick), fetched on
a daemon thread and handed to the engine as :class:`~feed.core.events.VendorCandles`,
drawn apart from tickscope's own bars (``feed.vendors.tickdb`` has the wire rules).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from feed.core.events import VendorCandles
from feed.core.models import MalformedMessage
from feed.core.pacing import backoff
from feed.io.backfill import HistoryError
from feed.io.policy import explain_error, retry_after_s

__all__ = ["VendorCandleSeeder"]

log = logging.getLogger("tickscope.feed")
_MS = 1_000_000


class VendorCandleSeeder:
    """Fetch the vendor's own 1m candles (TickDB REST klines) for symbols without trade
    history, on a daemon thread, and hand them to the sink as
    :class:`~feed.core.events.VendorCandles` (newest window first, at most 1000 a call).

    TickDB codes (``feed.vendors.tickdb_wire``): 3001 and 5xxx wait (``Retry-After`` when
    sent) and retry ``max_attempts`` times; 1001/1002 (key), 2002 (symbol) and the other
    refusals end that symbol's seed with the reason in words. The key goes in the
    ``X-API-Key`` header only and never into an error or log.

    Parameters
    ----------
    sink
        The engine (``submit_control``).
    base_url : str
        TickDB's base (``https://api.tickdb.ai``; a loopback fake in tests).
    api_key : str
    duration_s : float
        How far back to seed, seconds.
    """

    def __init__(self, sink: Any, base_url: str, api_key: str, duration_s: float, *,
                 timeout_s: float = 10.0, max_attempts: int = 4, max_wait_s: float = 120.0) -> None:
        from feed.vendors.tickdb import kline_url

        kline_url(base_url, "X", 0, 1)  # checks the base URL now
        self._sink = sink
        self._base = base_url
        self._key = api_key
        self._duration_s = duration_s
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.calls = 0

    def seed(self, symbol: str) -> None:
        """Queue ``symbol``'s seed (the thread starts on the first)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vendor-candles", daemon=True)
            self._thread.start()
        self._queue.put(symbol)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and wait up to ``timeout`` s."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        from feed.vendors.tickdb_wire import TickdbError

        while not self._stop.is_set():
            symbol = self._queue.get()
            if symbol is None:
                break
            try:
                self._seed(symbol)
            except (HistoryError, TickdbError, MalformedMessage) as exc:
                words = exc.detail if isinstance(exc, MalformedMessage) else str(exc)
                log.warning("vendor candles of %s: %s", symbol, words)
                self._sink.submit_control(VendorCandles(time.time_ns(), symbol, (), words))
            except Exception as exc:  # a bug must not kill the thread
                log.exception("vendor candles of %s failed unexpectedly", symbol)
                self._sink.submit_control(VendorCandles(time.time_ns(), symbol, (), f"internal error: {exc!r}"))

    def _seed(self, symbol: str) -> None:
        from feed.vendors.tickdb import kline_url
        from feed.vendors.tickdb_wire import MAX_CANDLES, parse_kline_answer

        now_ms = int(time.time() * 1000)
        end_ms = now_ms - now_ms % 60_000
        first_ms = end_ms - int(self._duration_s * 1000)
        while end_ms > first_ms and not self._stop.is_set():
            start_ms = max(first_ms, end_ms - MAX_CANDLES * 60_000)
            body = self._get(kline_url(self._base, symbol, start_ms, end_ms - 1, MAX_CANDLES))
            klines = [k for k in parse_kline_answer(symbol, body, time.time_ns())
                      if start_ms * _MS <= k.start_ns < end_ms * _MS]
            self._sink.submit_control(VendorCandles(time.time_ns(), symbol, tuple(klines)))
            if not klines:
                return  # nothing older is served
            end_ms = start_ms

    def _get(self, url: str) -> bytes:
        from feed.vendors.tickdb_wire import TickdbError, parse_kline_answer

        delays = backoff()
        for attempt in range(1, self._max_attempts + 1):
            request = urllib.request.Request(url, headers={"User-Agent": "tickscope", "X-API-Key": self._key})
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    body = response.read()
                    retry_after = response.headers.get("Retry-After")
                self.calls += 1
            except urllib.error.HTTPError as exc:  # TickDB's code is in the body
                body = exc.read(4096)
                self.calls += 1
                retry_after = retry_after_s(exc) or exc.headers.get("Retry-After")
            except Exception as exc:  # noqa: BLE001 - network errors: retried below
                body, retry_after = None, None
                message = explain_error(exc, [self._key])
            if body is not None:
                try:
                    parse_kline_answer("", body, 0)  # the code only; the caller parses the candles
                    return body
                except TickdbError as err:
                    if err.fatal or not err.retry:
                        raise
                    message = str(err)
                    floor = _seconds(retry_after)
                except MalformedMessage:
                    raise
            else:
                floor = None
            wait = max(next(delays), floor or 0.0)
            if attempt == self._max_attempts or wait > self._max_wait_s:
                raise HistoryError(f"{message} (after {attempt} attempts)")
            log.info("vendor candles: %s; retry in %.1f s", message, wait)
            if self._stop.wait(wait):
                raise HistoryError("stopping")
        raise HistoryError("no attempt made")  # pragma: no cover


def _seconds(value: object) -> float | None:
    try:
        s = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return s if s is not None and s >= 0 else None
