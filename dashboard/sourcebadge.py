"""Where the data on screen comes from: the status line's source badge.

``SIMULATED`` for the embedded market simulator (every symbol it serves is made up, also
one a user subscribes), ``REPLAY x10`` for a replay of recorded sessions (the speed; ``x
max`` for speed 0) with the replay clock and the share of the files played, and the
vendor and market (``Binance USD-M``, ``Binance spot``, ``AllTick``, ``iTick``) for a live
feed. The words ``SIMULATED`` and ``REPLAY`` are a contract: tools look for them.

:func:`source_info` describes the source once, at start-up (``dashboard.runtime``);
:func:`source_badge` renders it with the engine's status on every refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from dash import html

__all__ = ["SIMULATED", "REPLAY", "MARKET_LABELS", "source_info", "source_badge", "replay_clock"]

SIMULATED = "SIMULATED"
REPLAY = "REPLAY"
#: People's names of the Binance markets (``--market``).
MARKET_LABELS = {"spot": "spot", "usdm": "USD-M", "coinm": "COIN-M"}
_VENDOR_LABELS = {"binance": "Binance", "alltick": "AllTick", "itick": "iTick"}


def source_info(config: Any, exchange: Any = None) -> dict:
    """Return the source of a run: ``{"kind", "label", "speed", "progress"}``.

    Parameters
    ----------
    config : dashboard.runconfig.RunConfig
        The run (``embedded``, ``replay``, ``speed``, ``vendor_name``, ``binance_market``).
    exchange : feed.exchange.server.EmbeddedExchange, optional
        The embedded exchange; its ``progress`` (0..1, replay only) is read on each
        refresh through ``progress``, a callable (None for other sources).

    ``kind`` is ``"simulated"``, ``"replay"`` or ``"live"``; ``label`` the badge text
    (the speed is part of a replay's).
    """
    if config.embedded and config.replay:
        speed = float(config.speed)
        label = f"{REPLAY} x max" if speed <= 0 else f"{REPLAY} x{speed:g}"
        progress: Callable[[], float | None] | None = (lambda: exchange.progress) if exchange is not None else None
        return {"kind": "replay", "label": label, "speed": speed, "progress": progress}
    if config.embedded:
        return {"kind": "simulated", "label": SIMULATED, "speed": None, "progress": None}
    vendor = config.vendor_name
    label = _VENDOR_LABELS.get(vendor, vendor)
    if vendor == "binance":
        label += " " + MARKET_LABELS.get(config.binance_market, config.binance_market)
    return {"kind": "live", "label": label, "speed": None, "progress": None}


def replay_clock(clock_ns: int | None) -> str:
    """Return the replay clock ``"2024-08-08 23:57:12 UTC"`` for UTC ns; "" when unknown."""
    if not clock_ns or clock_ns <= 0:
        return ""
    try:
        return datetime.fromtimestamp(clock_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return ""


_TITLES = {
    "simulated": ("embedded market simulator: prices, trades and books are made up "
                  "(a symbol you subscribe is invented too)"),
    "replay": "a replay of recorded sessions: the replay clock is the recorded exchange time",
    "live": "live market data from the vendor",
}


def source_badge(info: dict | Callable[[], dict | None] | None, *, state: str = "",
                 clock_ns: int | None = None, url: str = "") -> html.Span | None:
    """Return the badge for :func:`source_info`'s ``info`` (None without one).

    Parameters
    ----------
    info : dict, callable or None
        From :func:`source_info`, or a callable returning it now (``tickscope serve``:
        the collectors' sources, ``RedisReader.source_info``, whose ``progress`` is a
        number rather than a callable).
    state : str
        ``Engine.status().state``; ``replay-finished`` shows 100 %.
    clock_ns : int, optional
        ``Engine.status().clock_ns``: the replay clock (exchange time) during a replay.
    url : str
        The feed's endpoint, named in the tooltip.
    """
    if callable(info):
        info = info()
    if not info:
        return None
    kind = info.get("kind", "live")
    parts = [html.Span(info.get("label", ""), className="source-label")]
    title = _TITLES.get(kind, "")
    if kind == "replay":
        progress = info.get("progress")
        if state == "replay-finished":
            fraction = 1.0
        elif callable(progress):
            fraction = progress()
        else:  # a collector's published share played (a number), if any
            fraction = float(progress) if type(progress) in (int, float) and 0 <= progress <= 1 else None
        clock = replay_clock(clock_ns)
        if clock:
            parts.append(html.Span(clock, className="source-clock"))
        if fraction is not None:
            parts.append(html.Span(f"{fraction * 100:.0f}%", className="source-progress"))
            title += f"; {fraction * 100:.1f} % of the files played"
    if url:
        title += f"\nendpoint: {url}"
    return html.Span(parts, className=f"source-badge source-{kind}", title=title)
