"""TickDB's own 1m candles for symbols without trade history (AllTick, iTick), fetched on
a daemon thread and handed to the engine as :class:`~feed.core.events.VendorCandles`,
drawn apart from tickscope's own bars (``feed.vendors.tickdb`` has the wire rules).
"""

from __future__ import annotations

import logging
import time
import urllib.error
from collections.abc import Mapping
from typing import Any

from feed.core.events import VendorCandles
from feed.core.models import MalformedMessage
from feed.io.policy import Retry, explain_error, retry_after_s
from feed.io.rest import HistoryError, RestWorker

__all__ = ["VendorCandleSeeder"]

log = logging.getLogger("tickscope.feed")
_MS = 1_000_000


class VendorCandleSeeder(RestWorker):
    """Fetch the vendor's own 1m candles (TickDB REST klines) for symbols without trade
    history, on a daemon thread (``feed.io.rest.RestWorker``), and hand them to the sink as
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
        super().__init__("vendor-candles", timeout_s=timeout_s, max_attempts=max_attempts, max_wait_s=max_wait_s)
        self._sink = sink
        self._base = base_url
        self._key = api_key
        self._duration_s = duration_s
        self.calls = 0

    def seed(self, symbol: str) -> None:
        """Queue ``symbol``'s seed (the thread starts on the first)."""
        self._put(symbol)

    def _give_up(self, symbol: str, exc: Exception) -> None:
        from feed.vendors.tickdb_wire import TickdbError

        if isinstance(exc, (HistoryError, TickdbError, MalformedMessage)):
            words = exc.detail if isinstance(exc, MalformedMessage) else str(exc)
            log.warning("vendor candles of %s: %s", symbol, words)
            self._sink.submit_control(VendorCandles(time.time_ns(), symbol, (), words))
        else:  # a bug must not kill the thread
            log.error("vendor candles of %s failed unexpectedly", symbol, exc_info=exc)
            self._sink.submit_control(VendorCandles(time.time_ns(), symbol, (), f"internal error: {exc!r}"))

    def _serve(self, symbol: str) -> None:
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
        return self.get(url, {"X-API-Key": self._key}, self._judge, "vendor candles")

    def _judge(self, body: bytes | None, headers: Mapping[str, str] | None,
               exc: BaseException | None) -> bytes | Retry:
        # TickDB's code is in the body, an HTTP error's too: 3001 and 5xxx are retried
        # (after Retry-After when sent), other refusals raise TickdbError at once.
        from feed.vendors.tickdb_wire import TickdbError, parse_kline_answer

        if isinstance(exc, urllib.error.HTTPError):
            body = exc.read(4096)
            retry_after = retry_after_s(exc) or exc.headers.get("Retry-After")
        elif exc is not None:  # network errors
            return Retry(explain_error(exc, [self._key]))
        else:
            retry_after = headers.get("Retry-After")
        self.calls += 1
        try:
            parse_kline_answer("", body, 0)  # the code only; the caller parses the candles
        except TickdbError as err:
            if err.fatal or not err.retry:
                raise
            return Retry(str(err), _seconds(retry_after))
        return body


def _seconds(value: object) -> float | None:
    try:
        s = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return s if s is not None and s >= 0 else None
