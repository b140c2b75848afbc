"""Pure pacing policy for a feed connection: reconnect delays and control-message rate.

:func:`backoff` yields the waits between reconnect attempts (exponential, capped, with
jitter) and :class:`RetrySchedule` applies it (reset after a stable connection, planned
reconnects at once); :class:`TokenBucket` spaces outgoing control messages under a
vendor's rate limit and :class:`Outbox` queues them (heartbeats first). Neither reads a clock or sleeps: time comes in as an argument (seconds on any
monotonic scale), so both are tested without sockets (the websockets library's split).
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Iterable, Iterator

__all__ = ["backoff", "TokenBucket", "Outbox", "RetrySchedule"]

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

    Parameters
    ----------
    initial
        First undisturbed delay, seconds (> 0).
    factor
        Growth per attempt (>= 1).
    cap
        Largest delay, seconds (>= initial).
    jitter
        Fraction of each delay that is random, 0 (none) to 1.
    rng
        Source of uniform floats in [0, 1); injected for tests.

    Raises
    ------
    ValueError
        If an argument is out of range (the message names it).
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

    Parameters
    ----------
    rate_per_s
        Tokens added per second; None, 0 or infinity means no limit.
    burst
        Most tokens held, i.e. messages that may go back to back (>= 1). The
        default 1 spaces every message ``1 / rate_per_s`` apart.
    now
        The clock reading the bucket starts at, full.
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


class Outbox:
    """The control messages waiting to go out on one connection, paced by a TokenBucket.

    Heartbeats jump the queue (a vendor that hears none drops the link, while a subscribe
    can wait a moment), one at a time: while the last one still waits for the rate limit
    no other is queued, or they would crowd out everything else near the rate.

    Parameters
    ----------
    rate_per_s : float or None
        Most messages per second (the vendor's limit); None or 0: no limit.
    """

    def __init__(self, rate_per_s: float | None) -> None:
        self._texts: collections.deque[str] = collections.deque()  # in sending order
        self._bucket = TokenBucket(rate_per_s)  # spaces the sends
        self._heartbeat: str | None = None  # the heartbeat text last queued

    def reset(self, now: float) -> None:
        """Forget what waits (it was for another connection); a full rate budget."""
        self._texts.clear()
        self._bucket.reset(now)

    def clear(self) -> None:
        """Forget what waits."""
        self._texts.clear()

    def extend(self, texts: Iterable[str]) -> None:
        """Queue ``texts`` behind what waits."""
        self._texts.extend(texts)

    def push_heartbeat(self, text: str) -> None:
        """Queue ``text`` first, unless the last heartbeat still waits there."""
        if self._texts and self._texts[0] is self._heartbeat:
            return
        self._heartbeat = text
        self._texts.appendleft(text)

    def pop_due(self, now: float) -> tuple[str | None, float]:
        """Return (the text to send now or None, seconds until the next may go)."""
        if not self._texts:
            return None, math.inf
        delay = self._bucket.delay(now)
        if delay > 0:
            return None, delay
        self._bucket.take(now)
        return self._texts.popleft(), 0.0

    @property
    def texts(self) -> list[str]:
        """Return the texts waiting, in sending order."""
        return list(self._texts)


class RetrySchedule:
    """How long to wait before the next connection attempt, and the counts of them.

    Parameters
    ----------
    initial_s, cap_s : float
        First and longest backoff wait, seconds (before jitter).
    reset_after_s : float
        A connection up this long (s) starts the backoff over, and a clean server close
        after it is a planned disconnect.
    rng : callable, optional
        Uniform floats in [0, 1) for the jitter.

    Raises
    ------
    ValueError
        For an out-of-range duration (the message names it).
    """

    #: A planned disconnect of a connection younger than this (s) waits the usual backoff,
    #: so a server that closes every connection at once is not hammered.
    MIN_PLANNED_UPTIME_S = 1.0

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0, reset_after_s: float = 60.0,
                 rng: Callable[[], float] = random.random) -> None:
        if not reset_after_s >= 0:
            raise ValueError(f"reset_after_s must be >= 0 seconds, not {reset_after_s!r}")
        self._args: dict = {"initial": initial_s, "cap": cap_s, "rng": rng}  # for backoff()
        self._delays = backoff(**self._args)  # validates initial and cap
        self.reset_after_s = float(reset_after_s)  # stable uptime that resets the backoff, s
        self.reconnects = 0  # retries scheduled so far
        self.planned = 0  # of which planned disconnects (no wait)
        self.last_delay_s: float | None = None  # the wait before the latest retry, s

    def next_delay(self, uptime_s: float | None, *, planned: bool, server_closed: bool,
                   floor_s: float | None = None) -> tuple[float, bool]:
        """Return (seconds to wait, whether the retry counts as planned) and count it.

        Parameters
        ----------
        uptime_s : float or None
            How long the connection was open, seconds; None if it never opened.
        planned : bool
            We were asked to reconnect at once (a vendor's shutdown notice, a move).
        server_closed : bool
            The server sent a close frame; planned when the connection was long-lived.
        floor_s : float, optional
            Least wait the server asked for (HTTP 429/418 Retry-After), seconds.
        """
        long_lived = uptime_s is not None and uptime_s >= self.reset_after_s
        planned = planned or (server_closed and long_lived)
        if uptime_s is None or uptime_s < self.MIN_PLANNED_UPTIME_S:
            planned = False  # a server closing every connection at once is not a plan
        if long_lived:
            self._delays = backoff(**self._args)
        delay = 0.0 if planned else next(self._delays)
        if floor_s is not None:
            delay = max(delay, floor_s)
        self.reconnects += 1
        self.planned += planned
        self.last_delay_s = delay
        return delay, planned

    def at_once(self) -> tuple[float, bool]:
        """Count a planned retry with no wait (our own move to another endpoint)."""
        self.reconnects += 1
        self.planned += 1
        self.last_delay_s = 0.0
        return 0.0, True
