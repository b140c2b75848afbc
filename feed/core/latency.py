"""Exchange-to-applied latency over the last minute: a bounded ring of samples.

One sample per trade applied to the bars: ``applied_ns - trade.ts_ns``, where
``trade.ts_ns`` is the exchange's trade time (Binance ``T``, whole ms on the wire, so a
sample carries up to 1 ms of truncation) and ``applied_ns`` the wall clock just after
the engine applied the batch holding it. It therefore spans the vendor's send, the
network, the feed thread, the queue and the engine -- what a user waits for. Pure: the
caller passes every time in.

Only meaningful on the wall clock: a replay's trade times are history, and the engine
records nothing then.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LatencyWindow"]

_NS_PER_MS = 1_000_000


class LatencyWindow:
    """The latest latency samples, newest overwriting oldest, summarised as p50/p99.

    Parameters
    ----------
    window_s : float
        Seconds of samples a summary covers (default 60).
    capacity : int
        Samples held at most (default 2**19: the last minute up to ~8,700 trades/s, the
        newest 524,288 trades above that); 12 bytes each, allocated on the first sample.

    Raises
    ------
    ValueError
        For a window or capacity that is not positive.
    """

    def __init__(self, window_s: float = 60.0, capacity: int = 1 << 19) -> None:
        if not window_s > 0 or capacity < 1:
            raise ValueError(f"window_s and capacity must be > 0, not {window_s!r}, {capacity!r}")
        self.window_ns = int(window_s * 1e9)
        self.capacity = int(capacity)
        self._at: np.ndarray | None = None  # applied time of each sample, UTC ns
        self._ms: np.ndarray | None = None  # latency of each sample, ms (float32)
        self._n = 0  # samples ever recorded; the next goes to _n % capacity

    def record(self, applied_ns: int, ts_ns: Sequence[int]) -> None:
        """Add one sample per exchange time in ``ts_ns`` (UTC ns), applied at
        ``applied_ns`` (UTC ns). O(len(ts_ns))."""
        k = len(ts_ns)
        if not k:
            return
        if self._at is None:
            self._at = np.zeros(self.capacity, dtype=np.int64)
            self._ms = np.zeros(self.capacity, dtype=np.float32)
        lat = (applied_ns - np.fromiter(ts_ns, dtype=np.int64, count=k)) / _NS_PER_MS
        if k > self.capacity:
            lat = lat[-self.capacity:]
            self._n += k - self.capacity
            k = self.capacity
        start = self._n % self.capacity
        first = min(k, self.capacity - start)
        self._at[start:start + first] = applied_ns
        self._ms[start:start + first] = lat[:first]
        if first < k:
            self._at[:k - first] = applied_ns
            self._ms[:k - first] = lat[first:]
        self._n += k

    def summary(self, now_ns: int) -> dict | None:
        """Return ``{"p50": ms, "p99": ms, "max": ms, "samples": n}`` over the samples
        applied within the window before ``now_ns`` (UTC ns); None without any."""
        if self._at is None:
            return None
        held = min(self._n, self.capacity)
        at, ms = self._at[:held], self._ms[:held]
        recent = ms[at >= now_ns - self.window_ns]
        if not recent.size:
            return None
        p50, p99 = np.percentile(recent, [50, 99])
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
                "max": round(float(recent.max()), 3), "samples": int(recent.size)}
