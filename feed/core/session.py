"""The feed connection state machine, sans-I/O (the websockets library's ``Protocol`` split).

:class:`Session` decides everything about one vendor connection -- when to connect, what
to send, when to give up on a silent link, how long to wait before retrying -- and the
I/O shell (``feed.io.client.FeedClient``) only carries out its :data:`Action` values.
It never touches a socket, thread or clock: every method takes ``now``, seconds on the
shell's monotonic clock, and returns the actions due.

Life of a connection::

    CONNECTING -> LIVE -> (drop) -> RECONNECTING -> LIVE -> ...
                  LIVE -> (no message for stale_after_s) -> STALE -> RECONNECTING -> ...
    any state -> stop() -> STOPPED;   a fatal error (HTTP 401/403/451, bad URL) -> FAILED
    any state -> fail(message) (a vendor reply no retry can fix) -> FAILED

A vendor that authenticates after the handshake (``adapter.requires_auth_reply``) goes
CONNECTING -> AUTHENTICATING -> LIVE: heartbeats start at open, subscriptions wait for
``adapter.auth_status(raw)`` to say True; False fails at once with the vendor's words, and
no answer within ``adapter.auth_timeout_s`` drops the connection and retries.

Retry policy: the wait before each attempt comes from :func:`feed.core.pacing.backoff`
(first within 1 s, doubling, capped at 30 s), which starts over after a connection stayed
up ``reset_after_s``. A *planned* disconnect reconnects at once: one asked for with
``reconnect(..., planned=True)``, a move to another endpoint, and a clean close by the
server of a connection that had been up ``reset_after_s``; a planned disconnect of a
connection younger than ``RetrySchedule.MIN_PLANNED_UPTIME_S`` waits as usual, so a server that closes
every connection at once is not hammered.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Union

from feed.core.events import ControlEvent, FeedClosed, FeedError, FeedOpened
from feed.core.pacing import Outbox, RetrySchedule

__all__ = [
    "FeedState", "Failure", "Send", "Close", "RetryAt", "GiveUp", "Report", "Action", "Session",
]

Verdict = Literal["retry", "fatal"]


class FeedState(enum.Enum):
    """Connection state (``FeedStatus.state`` is the lower-case name)."""

    CONNECTING = "connecting"  # first attempt, not yet open
    AUTHENTICATING = "authenticating"  # open; waiting for the vendor's auth reply to subscribe
    LIVE = "live"  # open; subscriptions sent
    RECONNECTING = "reconnecting"  # dropped; waiting for / making the next attempt
    STALE = "stale"  # watchdog saw no message for stale_after_s; dropping the connection
    STOPPED = "stopped"  # stop() was called (or never started)
    FAILED = "failed"  # a fatal error; the session gave up (see last_error)


_OPEN = (FeedState.LIVE, FeedState.AUTHENTICATING)


# -- inputs and actions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a connection ended, as the shell's error policy classified it.

    ``verdict`` is ``"retry"`` or ``"fatal"``; ``message`` is in words without secrets;
    ``retry_after_s`` is the least wait the server asked for (HTTP 429/418), or None.
    """

    verdict: Verdict
    message: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``text`` on the connection of ``generation`` (dropped if that one is gone)."""

    text: str
    generation: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close the current connection now; ``why`` is for the log.

    ``graceful``: send a close frame first; False for a link that is already silent
    (stale, no auth reply), where only cutting the socket is sure to end it at once.
    """

    why: str
    graceful: bool = True


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Connect again at monotonic ``at`` seconds (``delay_s`` after now)."""

    at: float
    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop for good with ``message``; no more attempts."""

    message: str


@dataclass(frozen=True, slots=True)
class Report:
    """Hand ``event`` to the sink; the shell stamps ``recv_ns`` (UTC ns) on it."""

    event: ControlEvent


Action = Union[Send, Close, RetryAt, GiveUp, Report]


def _as_symbols(symbols: str | Iterable[str]) -> list[str]:
    return [symbols] if isinstance(symbols, str) else [str(s) for s in symbols]


class Session:
    """One vendor connection's state, driven by events and the shell's clock readings.

    Parameters
    ----------
    adapter : feed.vendors.base.VendorBase
        The vendor dialect: URL, control messages, limits, auth and heartbeat traits.
    symbols : iterable of str
        Symbols to subscribe on the first open.
    url : str, optional
        Connect here instead of ``adapter.url(symbols)`` (a fixed URL never moves).
    stale_after_s : float or None
        Seconds without any frame, while subscribed, after which the link is dropped;
        None: no watchdog. Any frame counts, so a quiet symbol on a busy link is fine.
    backoff_initial_s, backoff_cap_s : float
        First and longest reconnect wait, seconds (before jitter).
    reset_after_s : float
        A connection up this long (s) resets the backoff, and a clean server close after
        it is a planned disconnect.
    rng : callable, optional
        Uniform floats in [0, 1) for the backoff jitter (tests inject one).

    Raises
    ------
    ValueError
        For an out-of-range duration (the message names it).
    """

    def __init__(self, adapter: Any, *, symbols: Iterable[str] = (), url: str | None = None,
                 stale_after_s: float | None = 30.0, backoff_initial_s: float = 0.5,
                 backoff_cap_s: float = 30.0, reset_after_s: float = 60.0,
                 rng: Callable[[], float] | None = None) -> None:
        # When to try again, and the counts of retries (validates the durations).
        self.retry = RetrySchedule(backoff_initial_s, backoff_cap_s, reset_after_s,
                                   **({} if rng is None else {"rng": rng}))
        _check_stale(stale_after_s)
        self.adapter = adapter  # vendor dialect: URL, control messages, limits
        self.fixed_url = url  # overrides adapter.url(symbols)
        self.stale_after_s = stale_after_s  # watchdog limit, s (None: off)
        self.symbols: dict[str, None] = dict.fromkeys(_as_symbols(symbols))  # ordered set
        self.state = FeedState.CONNECTING
        self.generation = 0  # connections opened so far
        self.retry_at: float | None = None  # when the next attempt is due, s
        self.opened_at: float | None = None  # when the current connection opened, s
        self.last_error: str | None = None  # words for the status line, no secrets
        self.url = ""  # URL of the current / last attempt (may hold secrets; never shown)
        self.last_rx: float = -math.inf  # when the last frame arrived, s
        self.messages = 0  # frames received
        self.fatal: str | None = None  # set by fail(): give up with this message
        # True from open until the auth reply; read by the shell's hot path without a lock.
        self.awaiting_auth = False
        self._attempting = False  # an attempt is under way (started, not yet ended)
        self._watch_from = -math.inf  # silence before this is not a stale link, s
        self._intent: str | None = None  # why *we* are closing: stop/stale/auth_timeout/...
        self._auth_deadline = math.inf  # the auth reply must come by then, s
        self._next_heartbeat = math.inf  # when the next heartbeat is due, s
        self._outbox = Outbox(adapter.max_messages_per_s)  # paced control messages
        # Adapter calls that raised, (what, exception), for the shell to log: a bug in an
        # adapter must not end the connection or reach the socket library's callbacks.
        self.adapter_errors: collections.deque[tuple[str, Exception]] = collections.deque(maxlen=16)

    # -- attempts ------------------------------------------------------------------------

    def begin_attempt(self, now: float) -> str | list[Action]:
        """Return the URL to connect to now, or the give-up actions after :meth:`fail`.

        Raises
        ------
        Exception
            Whatever ``adapter.url`` raises for the current symbols (the shell classifies
            it and passes the :class:`Failure` to :meth:`on_close`).
        """
        self.retry_at = None
        if self.fatal is not None:
            return self._give_up(self.fatal)
        self._attempting = True
        self._intent = None
        self.opened_at = None
        self.url = self.fixed_url or self.adapter.url(list(self.symbols))
        return self.url

    def on_open(self, now: float) -> list[Action]:
        """The handshake succeeded: start heartbeats and the watchdog, subscribe (or wait
        for the auth reply), and report :class:`FeedOpened`."""
        if self.state in (FeedState.STOPPED, FeedState.FAILED) or self.fatal is not None:
            return [Close("stopped")]
        self.generation += 1
        self.opened_at = now
        self._watch_from = now
        interval = self.adapter.heartbeat_interval_s
        self._next_heartbeat = now + interval if interval else math.inf
        self._outbox.reset(now)  # leftovers were for the previous connection
        self._call("on_open", self.adapter.on_open)  # per-connection adapter state starts over
        if self.adapter.requires_auth_reply:
            self.state = FeedState.AUTHENTICATING
            self.awaiting_auth = True
            self._auth_deadline = now + float(self.adapter.auth_timeout_s)
        else:
            self.state = FeedState.LIVE
            self._queue_subscribe(list(self.symbols))
        return [Report(FeedOpened(0, generation=self.generation))]

    def on_frame(self, now: float) -> None:
        """Note a received frame (hot path: two attribute writes)."""
        self.last_rx = now
        self.messages += 1

    def on_auth_reply(self, now: float, ok: bool | None, refusal: str = "") -> list[Action]:
        """Act on ``adapter.auth_status`` of a frame while AUTHENTICATING.

        True: LIVE, subscribe every symbol. False: fail with ``refusal`` (the vendor's
        words; the same key would be refused again). None: not the reply, keep waiting.
        """
        if ok is None or self.state is not FeedState.AUTHENTICATING:
            return []
        self.awaiting_auth = False
        self._auth_deadline = math.inf
        if not ok:
            return self.fail(refusal or "the vendor refused authentication (check the API key)", now)
        self.state = FeedState.LIVE
        self._queue_subscribe(list(self.symbols))
        return []

    def on_close(self, now: float, failure: Failure | None = None, *,
                 code: int | None = None, reason: str = "") -> list[Action]:
        """The attempt ended: report it and return :class:`RetryAt` or :class:`GiveUp`.

        Parameters
        ----------
        now : float
            Monotonic seconds.
        failure : Failure, optional
            The classified error that ended it (None: closed without an error).
        code, reason :
            The close frame's status code and reason, if one came (no secrets).
        """
        self._attempting = False
        self._outbox.clear()
        self.awaiting_auth = False
        opened_at, intent = self.opened_at, self._intent
        self.opened_at = None
        actions: list[Action] = []
        if opened_at is not None:
            actions.append(Report(FeedClosed(0, generation=self.generation, code=code,
                                             reason=reason)))
        if intent == "stop" or self.state is FeedState.STOPPED:
            self.state = FeedState.STOPPED
            return actions
        verdict, message = _verdict(intent, failure, self.fatal, self.last_error)
        if verdict == "fatal":
            return actions + self._give_up(message)
        if intent == "move":  # our own move to another endpoint: at once, not an error
            delay, planned = self.retry.at_once()
        else:
            delay, planned = self.retry.next_delay(
                None if opened_at is None else now - opened_at, planned=intent == "planned",
                server_closed=intent is None and code is not None,
                floor_s=None if failure is None else failure.retry_after_s)
        self.last_error = message
        self.retry_at = now + delay
        self.state = FeedState.RECONNECTING
        actions.append(Report(FeedError(0, message, generation=self.generation, planned=planned,
                                        retry_in_s=round(delay, 3), stale=intent == "stale")))
        actions.append(RetryAt(self.retry_at, delay))
        return actions

    def _give_up(self, message: str) -> list[Action]:
        self.state = FeedState.FAILED
        self.last_error = message
        self.retry_at = None
        return [GiveUp(message), Report(FeedError(0, message, generation=self.generation, fatal=True))]

    # -- requests --------------------------------------------------------------------------

    def subscribe(self, symbols: str | Iterable[str], now: float) -> list[Action]:
        """Add symbols; queue their subscribe messages when live (or move endpoint).

        Raises
        ------
        ValueError
            If ``adapter.validate_subscription`` refuses the list with the new symbols;
            nothing changes then.
        """
        new = [s for s in dict.fromkeys(_as_symbols(symbols)) if s not in self.symbols]
        if not new:
            return []
        self.adapter.validate_subscription([*self.symbols, *new])
        if not self.symbols:
            self._watch_from = now  # silence before the first symbol is not a stale link
        self.symbols.update(dict.fromkeys(new))
        if self.state in _OPEN and self._attempting and _moves_endpoint(self):
            return self._cut("move", "moving to the endpoint that serves the new symbols")
        if self.state is FeedState.LIVE:
            full = self.adapter.replaces_subscriptions
            self._queue_subscribe(list(self.symbols) if full else new)
        return []

    def unsubscribe(self, symbols: str | Iterable[str], now: float) -> list[Action]:
        """Remove symbols; queue their unsubscribe messages when live."""
        gone = [s for s in dict.fromkeys(_as_symbols(symbols)) if s in self.symbols]
        for s in gone:
            del self.symbols[s]
        if gone and self.state is FeedState.LIVE:
            self._queue(self.adapter.unsubscribe_messages, gone)
        return []

    def reconnect(self, reason: str, now: float, *, planned: bool = False) -> list[Action]:
        """Drop the open connection to connect again (at once when ``planned``)."""
        if self.state not in _OPEN or not self._attempting:
            return []
        return self._cut("planned" if planned else "requested", reason)

    def fail(self, message: str, now: float) -> list[Action]:
        """Give up for good with ``message`` (the first one given wins); close if open."""
        if self.fatal is not None:
            return []
        self.fatal = " ".join(str(message).split()) or "vendor refused"
        self.last_error = self.fatal
        self.retry_at = None
        if self._attempting:
            self._intent = "fatal"
            return [Close(self.fatal)]
        return []

    def stop(self, now: float) -> list[Action]:
        """Stop: close the connection if any; no more attempts."""
        self._intent = "stop"
        self.retry_at = None
        if self.state is not FeedState.FAILED:
            self.state = FeedState.STOPPED
        return [Close("stop")] if self._attempting else []

    def set_stale_after(self, seconds: float | None, now: float) -> None:
        """Change the watchdog limit (None: off); silence counts from ``now``."""
        _check_stale(seconds)
        self.stale_after_s = seconds
        self._watch_from = now

    # -- timers ------------------------------------------------------------------------------

    def tick(self, now: float) -> tuple[list[Action], float]:
        """Run heartbeat, auth timeout, stale watchdog and the paced outbox.

        Returns
        -------
        actions : list of Action
            At most one :class:`Send` or one :class:`Close` (plus nothing else).
        wake_at : float
            When to call again at the latest, monotonic seconds (at most 1 s ahead).
        """
        wake = now + 1.0
        if self.state not in _OPEN or not self._attempting:
            return [], wake
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        if self.state is FeedState.AUTHENTICATING:
            if now >= self._auth_deadline:
                timeout = float(self.adapter.auth_timeout_s)
                return self._cut("auth_timeout", f"no authentication reply within {timeout:g} s"), wake
            wake = min(wake, self._auth_deadline)
        if self.symbols and self.stale_after_s is not None:
            silent = now - max(self.last_rx, self._watch_from)
            if silent >= self.stale_after_s:
                self.state = FeedState.STALE
                return self._cut("stale", f"no message for {silent:.1f} s "
                                          f"(stale after {self.stale_after_s:g} s)"), wake
            wake = min(wake, now + self.stale_after_s - silent)
        text, delay = self._outbox.pop_due(now)
        if text is not None:
            return [Send(text, self.generation)], now
        return [], min(wake, self._next_heartbeat, now + delay)

    def _heartbeat(self, now: float) -> None:
        interval = self.adapter.heartbeat_interval_s
        self._next_heartbeat = now + interval if interval else math.inf
        text = self._call("heartbeat_message", self.adapter.heartbeat_message)
        if text is not None:
            self._outbox.push_heartbeat(text)

    # -- private ---------------------------------------------------------------------------

    def _queue_subscribe(self, symbols: list[str]) -> None:
        if symbols:
            self._queue(self.adapter.subscribe_messages, symbols)

    def _queue(self, build: Callable[[list[str]], list[str]], symbols: list[str]) -> None:
        texts = self._call(build.__name__, build, symbols)
        self._outbox.extend(texts or ())

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            self.adapter_errors.append((what, exc))
            return None

    def _cut(self, intent: str, message: str) -> list[Action]:
        self._intent = intent
        self.last_error = message
        return [Close(message, graceful=intent not in ("stale", "auth_timeout"))]

    @property
    def outbox(self) -> list[str]:
        """Return the texts waiting to be sent, in order (for tests and the status line)."""
        return self._outbox.texts


def _check_stale(seconds: float | None) -> None:
    if seconds is not None and not seconds > 0:
        raise ValueError(f"stale_after_s must be > 0 seconds or None, not {seconds!r}")


def _verdict(intent: str | None, failure: Failure | None, fatal: str | None,
             cut_reason: str | None) -> tuple[Verdict, str]:
    # Retry or give up, in words: fail() wins, then our own cut, then the error.
    if intent == "fatal" or fatal is not None:
        return "fatal", fatal or "vendor refused"
    if intent is not None:  # we cut it (stale / auth timeout / requested / planned / move)
        return "retry", cut_reason or intent
    if failure is not None:
        return failure.verdict, failure.message
    return "retry", "connection closed"


def _moves_endpoint(session: Session) -> bool:
    # True when the symbols need another URL than the open connection's (AllTick: stock vs
    # forex/crypto); a fixed URL never moves.
    if session.fixed_url is not None:
        return False
    try:
        return session.adapter.url(list(session.symbols)) != session.url
    except ValueError:  # the adapter refuses the list; subscribing will say why
        return False
