"""What the order-flow views and endpoints read from the engine, with every bound checked.

Readers only: trades come through ``engine.trades(symbol, limit)`` (a copy, oldest first;
however the engine stores them), the book through ``engine.depth(symbol, levels)``, bars
through ``engine.bar_series``/``engine.bars_frame``; the computation is
``feed.core.orderflow``. Every function raises ``FlowError`` (a ``ValueError``) with a
message fit for a 400 answer or an inline note when a parameter is out of bounds.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from feed.core.batch import estimate_bars
from feed.core.models import BarSpec, Trade, decimals_of
from feed.core.orderflow import footprint, tape

__all__ = [
    "FlowError", "MAX_TAPE_LIMIT", "MAX_LEVELS", "MAX_FOOTPRINT_BARS", "MAX_FOOTPRINT_TRADES",
    "parse_limit", "parse_step", "parse_spec", "read_tape", "read_footprint", "decimals",
    "bar_options",
]

#: Most trades ``/api/trades`` answers with (and the tape view shows).
MAX_TAPE_LIMIT = 100_000
#: Most price levels a footprint may span (over all trades read): a step so small that the
#: prices held would make more levels is refused.
MAX_LEVELS = 20_000
#: Most bars a footprint is computed for (the same bound as a bar rebuild).
MAX_FOOTPRINT_BARS = 500_000
#: Most trades a footprint read takes (the latest held). The engine's tape read costs more
#: than linear time in the count today (a deque indexed from its end), about 3 s for
#: 100,000 on the development machine; raise it when the trade storage reads in linear time.
MAX_FOOTPRINT_TRADES = 100_000
#: Trades whose prices and sizes set the decimals printed (as the symbol state restores them).
_DECIMALS_SAMPLE = 2000


class FlowError(ValueError):
    """A parameter of an order-flow read is malformed or out of bounds (the message says which)."""


def parse_limit(text: str | None, default: int = 100) -> int:
    """Return ``text`` as a trade count in 1..MAX_TAPE_LIMIT (``default`` when empty).

    Raises
    ------
    FlowError
        For a non-integer or a value outside the bounds.
    """
    if text is None or not str(text).strip():
        return default
    s = str(text).strip()
    if len(s) > 12 or not s.isdigit():
        raise FlowError(f"limit must be a whole number from 1 to {MAX_TAPE_LIMIT}, not {s[:20]!r}")
    n = int(s)
    if not 1 <= n <= MAX_TAPE_LIMIT:
        raise FlowError(f"limit must be from 1 to {MAX_TAPE_LIMIT}, not {n}")
    return n


def parse_step(text: str | None) -> float | None:
    """Return a price step (> 0, finite) or None when ``text`` is empty.

    Raises
    ------
    FlowError
        For text that is not a positive finite number.
    """
    if text is None or not str(text).strip():
        return None
    s = str(text).strip()
    try:
        step = float(s) if len(s) <= 32 else math.nan
    except ValueError:
        step = math.nan
    if not (math.isfinite(step) and step > 0):
        raise FlowError(f"step must be a positive number (quote currency), not {s[:20]!r}")
    return step


def parse_spec(text: str | None) -> BarSpec:
    """Return a bar spec for a footprint (time or tick), by the rules of ``/api/bars``.

    Raises
    ------
    FlowError
        Missing, malformed, or a volume/value spec.
    """
    s = (text or "").strip()
    if not s:
        raise FlowError("missing query parameter 'bar', e.g. ?symbol=BTCUSDT&bar=1m")
    try:
        spec = BarSpec.from_str(s[:40])
    except ValueError as exc:
        raise FlowError(str(exc)) from None
    if spec.kind not in ("time", "tick"):
        raise FlowError(f"footprint needs a time or tick bar spec, not {spec}: volume and value "
                        "bars split trades across bars")
    return spec


def bar_options(engine: Any) -> dict:
    """Return the engine's bar options (alignment, late tolerance) or {} for a bare reader."""
    try:
        return dict(engine.config.market.bar_options)
    except AttributeError:
        return {}


def _max_trades(engine: Any) -> int:
    try:
        return int(engine.config.market.max_trades)
    except AttributeError:
        return 2_000_000


def decimals(trades: list[Trade], step: float | None = None) -> tuple[int, int]:
    """Return ``(price_decimals, size_decimals)`` seen in the latest trades (at most 12),
    widened to ``step``'s decimals."""
    sample = trades[-_DECIMALS_SAMPLE:]
    p = max((min(12, decimals_of(t.price)) for t in sample), default=0)
    s = max((min(12, decimals_of(t.size)) for t in sample), default=0)
    if step is not None:
        p = max(p, min(12, decimals_of(step)))
    return p, s


def read_tape(engine: Any, symbol: str, limit: int, min_size: float = 0.0) -> tuple[pd.DataFrame, list[Trade]]:
    """Return the tape frame of the latest ``limit`` trades of at least ``min_size`` and
    the trades read (oldest first; at least the latest 2000, whose decimals set the
    precision printed). With a size filter the latest ``MAX_TAPE_LIMIT`` trades are
    searched.

    Raises
    ------
    KeyError
        If ``symbol`` is not subscribed (as the engine's readers do).
    """
    limit = max(1, min(int(limit), MAX_TAPE_LIMIT))
    want = max(limit, _DECIMALS_SAMPLE) if min_size <= 0 else MAX_TAPE_LIMIT
    trades = engine.trades(symbol, want)
    return tape(trades, limit, min_size), trades


def read_footprint(engine: Any, symbol: str, spec: BarSpec, step: float | None,
                   trades: list[Trade] | None = None) -> tuple[pd.DataFrame, list[Trade]]:
    """Return the footprint of every bar of the trades held (at most the latest
    ``MAX_FOOTPRINT_TRADES``; or of ``trades``) and the trades read.

    Raises
    ------
    FlowError
        When ``spec`` would make more than ``MAX_FOOTPRINT_BARS`` bars or ``step`` more
        than ``MAX_LEVELS`` price levels from the trades read.
    """
    if trades is None:
        trades = engine.trades(symbol, min(_max_trades(engine), MAX_FOOTPRINT_TRADES))
    if trades:
        est = estimate_bars(spec, trades)
        if est > MAX_FOOTPRINT_BARS:
            raise FlowError(f"bar spec {spec} would make about {est:,.0f} bars from the {len(trades):,} "
                            f"trades held (at most {MAX_FOOTPRINT_BARS:,}): choose a larger step")
        if step is not None:
            lo = min(t.price for t in trades)
            hi = max(t.price for t in trades)
            levels = (hi - lo) / step + 1
            if levels > MAX_LEVELS:
                raise FlowError(f"step {step:g} would make about {levels:,.0f} price levels between "
                                f"{lo:g} and {hi:g} (at most {MAX_LEVELS:,}): choose a larger step")
    return footprint(trades, spec, step, **bar_options(engine)), trades
