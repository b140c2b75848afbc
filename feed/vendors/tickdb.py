"""TickDB as a source of vendor 1m candles (REST kline seed) for vendors without trade
history (AllTick, iTick): endpoint, key and symbol facts; the wire parser is in
``feed.vendors.tickdb_wire`` and the fetching thread in ``feed.io.backfill``.

Vendor candles are the vendor's, not tickscope's: they are drawn apart (hollow, grey) and
never enter tickscope's own bars or their verification.

Uncertain: the time-range parameter names (``start_time``/``end_time``, ms, named only in
TickDB's error page); whether TickDB's 1m candles are aligned to UTC minutes (assumed, as
in its examples); the symbol forms beyond ``AAPL.US``, ``700.HK``, ``BTCUSDT``, ``EURUSD``,
``XAUUSD`` of its docs (iTick's ``AAPL$US`` is rewritten to ``AAPL.US``).
"""

from __future__ import annotations

import os
from urllib.parse import urlencode, urlsplit

from feed.vendors.tickdb_wire import MAX_CANDLES

__all__ = ["TICKDB_BASE", "KLINE_PATH", "ENV_KEY", "tickdb_symbol", "kline_url", "api_key"]

TICKDB_BASE = "https://api.tickdb.ai"
KLINE_PATH = "/v1/market/kline"
#: Environment variable holding the key (sent as ``X-API-Key``; never logged or shown).
ENV_KEY = "TICKDB_API_KEY"


def api_key() -> str | None:
    """Return the TickDB key from ``TICKDB_API_KEY``, or None when unset or empty."""
    return os.environ.get(ENV_KEY) or None


def tickdb_symbol(symbol: str) -> str:
    """Return TickDB's form of a tickscope symbol (``AAPL$US`` -> ``AAPL.US``; upper case)."""
    return symbol.replace("$", ".").upper()


def kline_url(base: str, symbol: str, start_ms: int, end_ms: int, limit: int = MAX_CANDLES) -> str:
    """Return the kline URL for 1m candles of ``symbol`` in ``[start_ms, end_ms]``.

    Raises
    ------
    ValueError
        For a base URL that is not http(s) or a limit outside 1..1000.
    """
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"TickDB base URL must start with http:// or https://, not {base!r}")
    if not 1 <= limit <= MAX_CANDLES:
        raise ValueError(f"limit must be 1..{MAX_CANDLES}, not {limit}")
    query = urlencode({"symbol": tickdb_symbol(symbol), "interval": "1m", "limit": limit,
                       "start_time": start_ms, "end_time": end_ms})
    return f"{base.rstrip('/')}{KLINE_PATH}?{query}"
