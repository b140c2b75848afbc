"""Helpers shared by the tests: recorded data lookup, polling, status values, runtimes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from feed.core.events import FeedStatus
from feed.core.health import Counters, Status, SymbolStatus

SHARED_DATA = Path(
    os.environ.get("TICKSCOPE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def require_shared_data(*parts: str) -> Path:
    """Return ``SHARED_DATA / parts``; skip (or fail under CI=true) when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        msg = f"recorded market data not found at {path} (set TICKSCOPE_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout`` s.

    Raises
    ------
    AssertionError
        Naming ``what`` was awaited, when the time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_status(**over) -> Status:
    """Return a :class:`Status` of a live feed with one BTCUSDT symbol, ``over`` applied.

    ``counters``, ``symbols`` (values: dicts of ``SymbolStatus`` fields) and ``feed`` (a
    dict of ``FeedStatus`` fields) may be given as plain dicts.
    """
    base = {"state": "live", "detail": "", "messages_per_s": 10.0, "queue_depth": 0,
            "counters": {}, "symbols": {"BTCUSDT": {"trades": 5, "last_trade_ts_ns": 10**9}},
            "clock_ns": 2 * 10**9, "errors": (), "vendor": "binance",
            "feed": {"name": "binance", "state": "live", "url": "wss://stream.binance.com:9443/stream"},
            "kline_check": None}
    base.update(over)
    base["counters"] = Counters(**base["counters"]) if isinstance(base["counters"], dict) else base["counters"]
    base["symbols"] = {s: SymbolStatus(**v) if isinstance(v, dict) else v for s, v in base["symbols"].items()}
    if isinstance(base["feed"], dict):
        base["feed"] = FeedStatus(**{"name": "feed", "state": base["state"], **base["feed"]})
    base["errors"] = tuple(base["errors"])
    return Status(**base)


def run(argv, **options):
    """Return a started :class:`dashboard.runtime.Runtime` for ``tickscope`` arguments.

    Parameters
    ----------
    argv : sequence of str
        Command-line arguments (without the program name).
    **options
        Keywords of :func:`dashboard.runtime.start_runtime`: ``feed_options``,
        ``engine_options``, ``interval_ms``.

    Raises
    ------
    dashboard.runconfig.UsageError
        As ``tickscope`` would report it (exit code 2).
    """
    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    return start_runtime(config_from_argv(list(argv)), **options)


def binance_trade_msg(ts_ms: int, trade_id: int, price="60000.0", qty="0.5", maker: bool = False,
                      symbol: str = "BTCUSDT") -> str:
    """Return a Binance combined-stream ``@trade`` message (exchange time ``ts_ms``, UTC ms).

    ``price``/``qty`` are put on the wire as given (strings, or anything JSON can carry),
    so hostile values can be sent as a vendor would.
    """
    import json

    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": {
        "e": "trade", "E": ts_ms, "s": symbol, "t": trade_id, "p": price, "q": qty, "T": ts_ms,
        "m": maker, "M": True}})
