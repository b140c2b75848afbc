"""TickDB REST kline answers: a pure parser (vendor candles where no trade history exists).

``GET https://api.tickdb.ai/v1/market/kline?symbol=AAPL.US&interval=1m&limit=N``
(TickDB/tickdb-api-docs ``en/rest/api_kline.md``), header ``X-API-Key``. Envelope
``{"code": 0, "message": "success", "data": {"symbol", "interval", "klines": [{"time"
(open time, ms), "open", "high", "low", "close", "volume", "quote_volume"}]}}`` with
numbers as strings. Codes (``en/errors.md``): 0 ok; 1001 invalid or expired key, 1002 no
key; 2001 bad parameter, 2002 unknown symbol, 2003 bad time range, 2004 limit too large
(max 1000); 3001 rate limit (HTTP ``Retry-After`` seconds), 3002 quota exhausted; 5xxx
server side.

Uncertain (and what tickscope does): the time-range parameter names (``start_time`` /
``end_time`` in the error page, ms; not in the kline page) — tickscope sends them and
also accepts an answer that ignores them; whether the newest candle is final — candles
whose minute has not ended by the request time are dropped; no trade count nor taker
volume is given, so vendor candles carry 0 there.
"""

from __future__ import annotations

import json
import math

from feed.core.models import Kline, MalformedMessage

__all__ = ["TickdbError", "parse_kline_answer", "FATAL_CODES", "RETRY_CODES", "MAX_CANDLES"]

#: Candles per request (TickDB 2004 "Request limit exceeded" above it).
MAX_CANDLES = 1000
#: Codes that retrying cannot fix: bad or missing key, no permission, unknown symbol.
FATAL_CODES = {1001: "the TickDB API key is invalid or expired (TICKDB_API_KEY)",
               1002: "no TickDB API key was sent: set TICKDB_API_KEY",
               1003: "this IP is not in the TickDB key's whitelist",
               1004: "the TickDB plan does not include klines",
               2002: "TickDB does not know this symbol",
               3002: "the TickDB quota is exhausted"}
#: Codes worth retrying after a wait (3001 with ``Retry-After``).
RETRY_CODES = {3001: "TickDB rate limit", 5000: "TickDB internal error", 5001: "TickDB data source unavailable",
               5002: "TickDB temporarily unavailable"}
_INTERVAL_NS = {"1m": 60_000_000_000}
_MS = 1_000_000


class TickdbError(Exception):
    """A TickDB answer with a non-zero ``code``; ``words`` says it for the page."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.fatal = code in FATAL_CODES
        self.retry = code in RETRY_CODES
        self.words = FATAL_CODES.get(code) or RETRY_CODES.get(code) or f"TickDB error {code}"
        super().__init__(f"{self.words} (code {code}: {message[:120]})")


def parse_kline_answer(symbol: str, body: bytes | str, now_ns: int, interval: str = "1m") -> list[Kline]:
    """Return the final candles of a kline answer, oldest first.

    Parameters
    ----------
    symbol : str
        The symbol asked for (the candles carry it).
    now_ns : int
        Request time, UTC ns: candles ending after it are in progress and left out.

    Raises
    ------
    TickdbError
        For a non-zero ``code``.
    MalformedMessage
        ``bad_vendor_candles`` for a body that is not the documented shape.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage("bad_vendor_candles", f"TickDB kline answer is not JSON: {exc}") from None
    if not isinstance(doc, dict) or type(doc.get("code")) is not int:
        raise MalformedMessage("bad_vendor_candles", "TickDB kline answer has no integer code")
    if doc["code"] != 0:
        raise TickdbError(doc["code"], str(doc.get("message", "")))
    data = doc.get("data")
    rows = data.get("klines") if isinstance(data, dict) else None
    if not isinstance(rows, list) or len(rows) > MAX_CANDLES:
        raise MalformedMessage("bad_vendor_candles", "TickDB kline answer has no list of at most 1000 klines")
    step = _INTERVAL_NS[interval]
    out = []
    for i, r in enumerate(rows):
        try:
            t = r["time"]
            if type(t) is not int or not 0 <= t < 1 << 53:
                raise ValueError("time")
            vals = [float(r[k]) for k in ("open", "high", "low", "close", "volume")]
            quote = float(r.get("quote_volume") or 0.0)
            if not all(math.isfinite(v) and v >= 0 for v in (*vals, quote)) or vals[2] > vals[1]:
                raise ValueError("values")
        except (KeyError, TypeError, ValueError):
            raise MalformedMessage("bad_vendor_candles", f"TickDB kline {i}: {str(r)[:120]}") from None
        start = t * _MS
        if start + step > now_ns:
            continue  # the minute in progress
        out.append(Kline(symbol, interval, start, start + step, vals[0], vals[1], vals[2], vals[3], vals[4],
                         quote, 0.0, 0, True))
    out.sort(key=lambda k: k.start_ns)
    return out
