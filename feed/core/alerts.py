"""Alert rules over trades and bars: a price crossing a level, a large trade, a volume surge.

Pure: the caller keeps what was seen last (``AlertState``) and passes the new trades and
bar volumes in; :func:`check_alerts` returns the alerts that fire and the new state. Times
are the trades' exchange times (UTC ns), so live, replay and tests fire alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .models import Trade

__all__ = ["AlertRules", "AlertState", "Alert", "check_alerts", "volume_surge"]

#: Alerts returned by one check at most (a burst of large trades is summarised).
MAX_ALERTS_PER_CHECK = 20


@dataclass(frozen=True, slots=True)
class AlertRules:
    """What to alert on; each rule is off when its value is None.

    Parameters
    ----------
    price_level : float, optional
        Alert when the last price crosses this level (quote currency), either way; a trade
        exactly at the level counts as reaching it from the side it came from.
    trade_size : float, optional
        Alert on every trade of at least this size (base units).
    surge_std : float, optional
        Alert when the last closed bar's volume exceeds the mean of the ``surge_window``
        bars before it by more than ``surge_std`` standard deviations (population std).
    surge_window : int
        Bars in the rolling window (>= 2).
    """

    price_level: float | None = None
    trade_size: float | None = None
    surge_std: float | None = None
    surge_window: int = 20


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the previous check saw: the last trade (``ts_ns``, ``trade_id``), the last
    price, and the start (UTC ns) of the last closed bar tested for a surge."""

    last_ts_ns: int = 0
    last_trade_id: int | None = None
    last_price: float | None = None
    surge_bar_start: int | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: ``kind`` (``price``, ``trade``, ``surge``), exchange time (UTC ns) and text."""

    kind: str
    ts_ns: int
    text: str


def _new(trades: Sequence[Trade], state: AlertState) -> list[Trade]:
    # Trades after the last one seen (by id when the vendor has ids, else by time).
    if state.last_trade_id is not None:
        return [t for t in trades if t.trade_id is not None and t.trade_id > state.last_trade_id]
    return [t for t in trades if t.ts_ns > state.last_ts_ns]


def volume_surge(volumes: Sequence[float], n_std: float) -> tuple[bool, float, float]:
    """Return ``(surge, mean, std)``: whether ``volumes[-1]`` > mean + n_std x std of the
    volumes before it (population std). Fewer than 3 volumes never surge."""
    if len(volumes) < 3:
        return False, math.nan, math.nan
    window = [float(v) for v in volumes[:-1]]
    mean = sum(window) / len(window)
    std = math.sqrt(sum((v - mean) ** 2 for v in window) / len(window))
    return float(volumes[-1]) > mean + n_std * std, mean, std


def check_alerts(rules: AlertRules, state: AlertState, trades: Sequence[Trade],
                 closed_bars: Sequence[tuple[int, float]] = (), *, symbol: str = "",
                 price_fmt: str = "{:g}") -> tuple[list[Alert], AlertState]:
    """Return the alerts the new trades and bars fire, and the state after them.

    Parameters
    ----------
    rules : AlertRules
    state : AlertState
        From the previous check (``AlertState()`` first: nothing fires for trades before
        the first check, so opening the page does not replay history).
    trades : sequence of Trade
        The latest trades held, oldest first (may overlap what was seen).
    closed_bars : sequence of (start_ns, volume)
        The latest closed bars, oldest first (at least ``surge_window + 1`` for a surge).
    """
    alerts: list[Alert] = []
    if not trades:
        return alerts, state
    last = trades[-1]
    if state.last_ts_ns == 0 and state.last_trade_id is None:  # first check: a baseline only
        return alerts, AlertState(last.ts_ns, last.trade_id, last.price, _last_start(closed_bars))
    new = _new(trades, state)
    prev = state.last_price
    for t in new:
        if rules.price_level is not None and prev is not None:
            lvl = rules.price_level
            if (prev < lvl <= t.price) or (prev > lvl >= t.price):
                way = "up" if t.price > prev else "down"
                alerts.append(Alert("price", t.ts_ns, f"{symbol} crossed {price_fmt.format(lvl)} {way}: "
                                                        f"{price_fmt.format(t.price)}"))
        if rules.trade_size is not None and t.size >= rules.trade_size:
            side = {1: "buy", -1: "sell"}.get(t.side, "trade")
            alerts.append(Alert("trade", t.ts_ns, f"{symbol} large {side} {t.size:g} at {price_fmt.format(t.price)}"))
        prev = t.price
    surge_start = state.surge_bar_start
    if rules.surge_std is not None and closed_bars:
        start, vol = closed_bars[-1]
        if surge_start is None or start > surge_start:
            window = [v for _, v in closed_bars[-(rules.surge_window + 1):]]
            surge, mean, std = volume_surge(window, rules.surge_std)
            if surge and len(window) == rules.surge_window + 1:
                alerts.append(Alert("surge", start, f"{symbol} volume surge {vol:g} > mean {mean:.4g} + "
                                                    f"{rules.surge_std:g} std ({std:.4g})"))
            surge_start = start
    if len(alerts) > MAX_ALERTS_PER_CHECK:
        more = len(alerts) - MAX_ALERTS_PER_CHECK + 1
        alerts = alerts[:MAX_ALERTS_PER_CHECK - 1] + [Alert(alerts[-1].kind, alerts[-1].ts_ns, f"… and {more} more")]
    return alerts, AlertState(last.ts_ns, last.trade_id, prev if new else state.last_price, surge_start)


def _last_start(closed_bars: Sequence[tuple[int, float]]) -> int | None:
    return closed_bars[-1][0] if closed_bars else None
