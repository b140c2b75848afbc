"""A fake TickDB REST server on loopback: ``GET /v1/market/kline`` only.

Documented behaviour (TickDB/tickdb-api-docs ``en/rest/api_kline.md``, ``en/errors.md``):
``X-API-Key`` header (missing: code 1002, wrong: 1001), ``symbol``, ``interval`` (1m),
``limit`` (at most 1000, else 2004), codes in a ``{"code", "message", "data"}`` envelope,
3001 with ``Retry-After``. *Fake's choices*: HTTP status 401 for key errors, 404 for 2002
(unknown symbol), 429 for 3001; ``start_time``/``end_time`` (ms, inclusive) select the
candles (newest ``limit`` of them); candle values are deterministic from the minute.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MINUTE_MS = 60_000


def candle(symbol: str, t_ms: int) -> dict:
    """The fake's candle of the minute starting at ``t_ms`` (deterministic)."""
    base = 100.0 + (t_ms // MINUTE_MS) % 50 * 0.1
    return {"time": t_ms, "open": f"{base:.2f}", "high": f"{base + 0.3:.2f}", "low": f"{base - 0.2:.2f}",
            "close": f"{base + 0.1:.2f}", "volume": "1200", "quote_volume": f"{1200 * base:.2f}"}


class FakeTickdb:
    """The fake server in a thread; ``with FakeTickdb(key=...) as fake: fake.base_url``.

    Parameters
    ----------
    key : str
        The valid API key.
    symbols : iterable of str
        Symbols it knows (TickDB form).
    rate_limited : int
        The first N kline requests are answered 3001 with ``Retry-After: 0``.
    """

    def __init__(self, key: str, symbols=("AAPL.US", "700.HK", "BTCUSDT"), rate_limited: int = 0) -> None:
        self.key = key
        self.symbols = set(symbols)
        self.rate_limited = rate_limited
        self.requests: list[dict] = []  # query of each request, with "key" sent
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                sent = self.headers.get("X-API-Key")
                fake.requests.append({**q, "key": sent})
                if url.path != "/v1/market/kline":
                    return self._send(404, {"code": 2001, "message": "no such endpoint"})
                if not sent:
                    return self._send(401, {"code": 1002, "message": "Token is required"})
                if sent != fake.key:
                    return self._send(401, {"code": 1001, "message": "Invalid or expired token"})
                if fake.rate_limited > 0:
                    fake.rate_limited -= 1
                    return self._send(429, {"code": 3001, "message": "Rate limit exceeded"}, {"Retry-After": "0"})
                if q.get("symbol") not in fake.symbols:
                    return self._send(404, {"code": 2002, "message": "Symbol not found"})
                limit = int(q.get("limit", "100"))
                if limit > 1000:
                    return self._send(400, {"code": 2004, "message": "Request limit exceeded"})
                start, end = int(q["start_time"]), int(q["end_time"])
                first = start + (-start) % MINUTE_MS
                times = list(range(first, end + 1, MINUTE_MS))[-limit:]
                body = {"code": 0, "message": "success",
                        "data": {"symbol": q["symbol"], "interval": "1m", "klines": [candle(q["symbol"], t) for t in times]}}
                self._send(200, body)

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeTickdb":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
