"""Frozen configuration values for the market state and the engine (no I/O here).

One object per layer replaces long keyword lists: :class:`MarketConfig` holds the rules
of the pure market state (clock, bar options, limits), :class:`EngineConfig` the I/O
shell's limits (queue, flushes, retention) and the market config it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from feed.core.models import BarSpec

__all__ = ["MarketConfig", "EngineConfig", "ClockMode",
           "WALL_CLOSE_GRACE_S", "EXCHANGE_CLOSE_GRACE_S"]

ClockMode = Literal["wall", "exchange"]

#: Seconds a time bar stays open after its interval ended on the engine clock, so that a
#: trade still on its way lands in it instead of revising it after the fact (a revision
#: gives the same bar, but makes the chart redraw). Wall clock: transport latency, kept
#: below one 250 ms dashboard refresh so a passed interval shows closed within a refresh
#: even when no further trade arrives. Exchange clock (replay): the clock is the newest
#: exchange time on any stream, and diff events run ahead of trades -- in the hftbacktest
#: captures by up to 0.19 s (spot, 2024) and 2.0 s (USD-M, 2023) when a trade arrives.
#: Trades close their own symbol's bars as soon as a later interval starts, so the grace
#: only delays the close of a quiet symbol's last bar.
WALL_CLOSE_GRACE_S = 0.2
EXCHANGE_CLOSE_GRACE_S = 5.0


@dataclass(frozen=True)
class MarketConfig:
    """Rules of the market state (``feed.core.market.MarketState``).

    Parameters
    ----------
    clock : {"wall", "exchange"}, default "wall"
        Engine clock: the wall clock (live) or the newest exchange time seen (replay),
        which closes time bars whose interval has passed.
    default_spec : str, default "1m"
        Bar spec shown first in the UI.
    max_trades : int, default 2_000_000
        Trades per symbol held in memory (for rebuilding bar types and the tape).
    max_bars : int, default 5000
        Closed bars held per series.
    bar_options : mapping, optional
        Options passed to every aggregator (``grid``/``offset_ns``, ``empty``,
        ``late_tolerance_ns``, ``session_reset``; see ``feed.core.bars.make_aggregator``).
    close_grace_s : float, optional
        Seconds a time bar stays open after its interval ended on the engine clock;
        default ``WALL_CLOSE_GRACE_S`` with the wall clock, ``EXCHANGE_CLOSE_GRACE_S``
        with the exchange clock.
    snapshot_spacing_s : float, default 1.0
        Least seconds between two REST depth-snapshot requests for one symbol (Binance
        weighs a 1000-level snapshot at 50 of 6000 per minute).
    kline_check : str, optional
        Interval (``"1m"``) of vendor candles to compare with tickscope's own bars; None:
        no cross-check. The adapter must subscribe them.
    max_series : int, default 12
        Bar series held per symbol; the least recently read is evicted (and rebuilt from
        the trades held when read again).
    max_rebuild_bars : int, default 500_000
        A bar spec that would make more bars than this from the trades held is refused
        (a tiny threshold such as ``0.00000001v`` would otherwise build millions).
    time_window_s : float, default 86_400
        A trade stamped more than this many seconds away from its receive time (live) or
        ahead of its symbol's previous trade (replay) is refused as ``time_out_of_window``.
    backfill_s : float, default 0
        Seconds of trades before each symbol's first live trade to fetch from the vendor's
        REST history (adapters with ``serves_history``); 0: no backfill.
    repair_gaps : bool, default False
        Fetch the trades missing across a trade-id jump from the vendor's REST history
        and put them in place (adapters with ``serves_history``).

    Raises
    ------
    ValueError
        For an unknown clock, a bad default spec, or a negative grace or spacing.
    """

    clock: ClockMode = "wall"
    default_spec: str = "1m"
    max_trades: int = 2_000_000
    max_bars: int = 5000
    bar_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    close_grace_s: float | None = None
    snapshot_spacing_s: float = 1.0
    kline_check: str | None = None
    max_series: int = 12
    max_rebuild_bars: int = 500_000
    time_window_s: float = 86_400.0
    backfill_s: float = 0.0
    repair_gaps: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.backfill_s <= 30 * 86_400:
            raise ValueError(f"backfill_s must be 0..30 days in seconds, not {self.backfill_s!r}")
        if self.max_series < 1 or self.max_rebuild_bars < 1 or not self.time_window_s > 0:
            raise ValueError("max_series, max_rebuild_bars and time_window_s must be > 0")
        if self.clock not in ("wall", "exchange"):
            raise ValueError(f"clock must be 'wall' or 'exchange', not {self.clock!r}")
        object.__setattr__(self, "default_spec", str(BarSpec.from_str(self.default_spec)))
        object.__setattr__(self, "bar_options", MappingProxyType(dict(self.bar_options)))
        if self.close_grace_s is None:
            grace = WALL_CLOSE_GRACE_S if self.clock == "wall" else EXCHANGE_CLOSE_GRACE_S
            object.__setattr__(self, "close_grace_s", grace)
        if not self.close_grace_s >= 0:
            raise ValueError(f"close_grace_s must be >= 0 seconds, not {self.close_grace_s!r}")
        if not self.snapshot_spacing_s >= 0:
            raise ValueError(f"snapshot_spacing_s must be >= 0 seconds, not {self.snapshot_spacing_s!r}")
        if self.max_trades < 1 or self.max_bars < 1:
            raise ValueError("max_trades and max_bars must be >= 1")


@dataclass(frozen=True)
class EngineConfig:
    """Limits of the engine's I/O shell (``feed.io.engine.Engine``).

    Parameters
    ----------
    market : MarketConfig
        Rules of the market state the engine runs.
    queue_size : int, default 200_000
        Bound of the message queue; when full, messages are dropped and counted.
    flush_every_s : float, default 1.0
        Seconds between store (and recorder) flushes: at most about this much is lost to
        a kill -9.
    prune_every_s : float, default 60
        Seconds between retention passes (the first comes 5 s after start, or sooner if
        this is shorter).
    retention_max_age_s : float, optional
        Prune stored trades older than this many seconds; None keeps them.
    retention_max_bytes : int, optional
        Then prune the oldest stored trades until the store holds at most this many bytes
        of trades; None: no size limit.
    max_message_bytes : int, default 1 MiB
        Messages longer than this are counted as ``too_large`` without being parsed.

    Raises
    ------
    ValueError
        For a non-positive interval, queue size or retention limit.
    """

    market: MarketConfig = field(default_factory=MarketConfig)
    queue_size: int = 200_000
    flush_every_s: float = 1.0
    prune_every_s: float = 60.0
    retention_max_age_s: float | None = None
    retention_max_bytes: int | None = None
    max_message_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.retention_max_age_s is not None and not self.retention_max_age_s > 0:
            raise ValueError(f"retention_max_age_s must be > 0 seconds, not {self.retention_max_age_s!r}")
        if self.retention_max_bytes is not None and not self.retention_max_bytes >= 0:
            raise ValueError(f"retention_max_bytes must be >= 0, not {self.retention_max_bytes!r}")
        if not self.prune_every_s > 0 or not self.flush_every_s > 0:
            raise ValueError("prune_every_s and flush_every_s must be > 0 seconds")
        if self.queue_size < 1 or self.max_message_bytes < 1:
            raise ValueError("queue_size and max_message_bytes must be >= 1")
