"""Pure pacing policy for a feed connection: reconnect delays and control-message rate.

:func:`backoff` yields the waits between reconnect attempts (exponential, capped, with
jitter); :class:`TokenBucket` spaces outgoing control messages under a vendor's rate
limit. Neither reads a clock or sleeps: time comes in as an argument (seconds on any
monotonic scale), so both are tested without sockets (the websockets library's split).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

__all__ = ["backoff", "TokenBucket"]

# Tokens short of a whole one by less than this count as whole: waking at the computed
# time must find the token there, not a rounding error's worth short of it.
_EPS = 1e-9


def backoff(
    *,
    initial: float = 0.5,
    factor: float = 2.0,
    cap: float = 30.0,
    jitter: float = 0.5,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield reconnect delays in seconds: exponential, capped, with jitter.

    The k-th delay (k from 0) is ``base * (1 - jitter * rng())`` with
    ``base = min(cap, initial * factor**k)``, so it lies in ``[(1 - jitter) * base, base]``:
    never above ``cap``, and with the defaults the first is within 0.25-0.5 s. Jitter keeps
    many clients that lost the same server from reconnecting in lock step. The generator
    never ends; to reset, make a new one.

    Args:
        initial: First undisturbed delay, seconds (> 0).
        factor: Growth per attempt (>= 1).
        cap: Largest delay, seconds (>= initial).
        jitter: Fraction of each delay that is random, 0 (none) to 1.
        rng: Source of uniform floats in [0, 1); injected for tests.

    Raises:
        ValueError: If an argument is out of range (the message names it).
    """
    if not (isinstance(initial, (int, float)) and math.isfinite(initial) and initial > 0):
        raise ValueError(f"initial must be a positive number of seconds, not {initial!r}")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor must be >= 1, not {factor!r}")
    if not (math.isfinite(cap) and cap >= initial):
        raise ValueError(f"cap must be >= initial ({initial}), not {cap!r}")
    if not (0 <= jitter <= 1):
        raise ValueError(f"jitter must be between 0 and 1, not {jitter!r}")
    return _backoff(initial, factor, cap, jitter, rng)


def _backoff(initial: float, factor: float, cap: float, jitter: float,
             rng: Callable[[], float]) -> Iterator[float]:
    # Separate so that backoff() validates its arguments when called, not on first next().
    base = initial
    while True:
        yield base * (1.0 - jitter * rng())
        base = min(cap, base * factor)


class TokenBucket:
    """Rate limiter for outgoing control messages; time is passed in (seconds).

    Args:
        rate_per_s: Tokens added per second; None, 0 or infinity means no limit.
        burst: Most tokens held, i.e. messages that may go back to back (>= 1). The
            default 1 spaces every message ``1 / rate_per_s`` apart.
        now: The clock reading the bucket starts at, full.
    """

    def __init__(self, rate_per_s: float | None, *, burst: float = 1.0, now: float = 0.0) -> None:
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst!r}")
        unlimited = rate_per_s is None or rate_per_s <= 0 or not math.isfinite(rate_per_s)
        self.rate = math.inf if unlimited else float(rate_per_s)  # tokens per second
        self.burst = float(burst)  # bucket size
        self._tokens = self.burst  # tokens available at self._t
        self._t = now  # clock reading of the last refill

    def reset(self, now: float) -> None:
        """Fill the bucket (a new connection has a fresh budget)."""
        self._tokens, self._t = self.burst, now

    def delay(self, now: float) -> float:
        """Return seconds until a token is available (0.0 if one is now)."""
        if self.rate == math.inf:
            return 0.0
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 - _EPS else (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> bool:
        """Consume a token and return True, or return False if none is available."""
        if self.rate == math.inf:
            return True
        self._refill(now)
        if self._tokens >= 1.0 - _EPS:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def _refill(self, now: float) -> None:
        if now > self._t:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now
