"""Feed client: a thin websocket-client shell around the sans-I/O :class:`Session`.

Every decision about a connection -- state, generation, backoff, planned reconnects, the
stale watchdog, the auth-reply wait, subscriptions, heartbeats, the paced control queue --
is made by :class:`feed.core.session.Session`, which is tested without sockets. This
module only carries out its actions with websocket-client:

* the connect thread (:class:`FeedClient` itself) runs ``WebSocketApp.run_forever`` once
  per attempt, in its own loop rather than websocket-client's fixed-delay ``reconnect=``,
  and waits between attempts as the session says;
* a service thread calls ``Session.tick`` and sends what is due (subscriptions, heartbeats
  under the vendor's rate limit) or cuts a stale link;
* socket callbacks (:class:`feed.io.wire.Connection`, one per attempt) only timestamp
  frames and hand them to the sink: text frames go to
  ``sink.submit`` as bytes (UTF-8 validation is skipped, it costs ~4x throughput; the
  parser meets invalid UTF-8 as bad JSON); binary frames and text frames longer than
  ``max_message_bytes`` are counted and reported with a 64-byte sample to
  ``sink.submit_rejected`` as ``"binary_frame"`` / ``"too_large"``.

Life-cycle events reach the sink as typed values (``feed.core.events``):
:class:`FeedOpened` (generation n counts connections from 1, so n > 1 means a gap),
:class:`FeedClosed` after a connection that had opened, and :class:`FeedError` (words, never
tokens; ``planned``, ``stale``, ``fatal``, ``retry_in_s``). There are no vendor branches
here; everything vendor-specific comes from the adapter (``feed.vendors.base.VendorBase``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from feed.core.events import FeedError, FeedStatus
from feed.core.session import Action, Close, Failure, FeedState, GiveUp, Report, RetryAt, Send, Session
from feed.io.policy import classify_error, explain_error, retry_after_s, safe_url, url_secrets
from feed.io.wire import Connection, FrameCounts
from feed.vendors._common import SECRET_NAME, redact

__all__ = ["FeedClient", "FeedState"]

log = logging.getLogger("tickscope.feed")


class FeedClient(threading.Thread):
    """Keep one WebSocket connection to a vendor alive and hand every frame to a sink.

    Parameters
    ----------
    adapter : feed.vendors.base.VendorBase
        The vendor dialect.
    sink : feed.core.events.Sink
        The engine: ``submit``, ``submit_rejected`` and ``submit_control``.
    url : str, optional
        Connect here instead of ``adapter.url(symbols)``.
    symbols : iterable of str
        Symbols to subscribe on the first open.
    stale_after_s : float or None
        Seconds without any frame, while subscribed, after which the link is replaced;
        None: no watchdog. Protocol pings and pongs do not count, so a stream that stops
        while pings go on is caught.
    ping_interval_s : float or None
        Seconds between protocol pings (0 or None: none); a pong must come within
        ``min(10, ping_interval_s / 2)`` s. Binance counts pings toward its 5 messages/s.
    name : str
        Feed id: the thread name and the log prefix.
    backoff_initial_s, backoff_cap_s : float
        First and longest reconnect wait, seconds (tests shorten them).
    reset_after_s : float, optional
        Uptime (s) that resets the backoff and makes a clean server close planned;
        default 60 s.
    max_message_bytes : int
        Longest text frame delivered, bytes (a 10 MB frame must not reach the parser).

    Raises
    ------
    ValueError
        For an out-of-range argument (the message names it).
    """

    #: Socket timeout (s) for the TCP connect, TLS and HTTP upgrade, and later blocking
    #: send/recv; websocket-client would otherwise wait for the OS (about two minutes).
    CONNECT_TIMEOUT_S = 10.0
    #: Seconds stop() waits for the server's close reply before cutting the socket.
    CLOSE_TIMEOUT_S = 1.0

    def __init__(self, adapter: Any, sink: Any, *, url: str | None = None,
                 symbols: Iterable[str] = (), stale_after_s: float | None = 30.0,
                 ping_interval_s: float | None = 20.0, name: str = "feed",
                 backoff_initial_s: float = 0.5, backoff_cap_s: float = 30.0,
                 reset_after_s: float | None = None, max_message_bytes: int = 1 << 20) -> None:
        super().__init__(name=name, daemon=True)
        if not (isinstance(max_message_bytes, int) and max_message_bytes > 0):
            raise ValueError(f"max_message_bytes must be a positive int, not {max_message_bytes!r}")
        if ping_interval_s is not None and not ping_interval_s >= 0:
            raise ValueError(f"ping_interval_s must be >= 0 seconds or None, not {ping_interval_s!r}")
        self.session = Session(  # every decision about the connection
            adapter, symbols=symbols, url=url, stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s, backoff_cap_s=backoff_cap_s,
            reset_after_s=60.0 if reset_after_s is None else reset_after_s)
        self.adapter = adapter  # vendor dialect (header, auth_status, parse for refusals)
        self.sink = sink  # the engine
        self.max_message_bytes = max_message_bytes  # longest frame delivered, bytes
        self._ping_interval_s = ping_interval_s or 0.0  # protocol ping period, s
        self._ping_timeout_s = min(10.0, self._ping_interval_s / 2) if self._ping_interval_s else None
        # Shared with the socket thread's Connection (feed/io/wire.py):
        self.lock = threading.Condition()  # guards the session; wakes the service thread
        self.stop_event = threading.Event()  # stop() was called or run() ended
        self.counts = FrameCounts()  # frames not delivered
        self.secrets: list[str] = []  # token and header values to mask in messages
        self.display_url = ""  # what status() shows (adapter.display_url or safe_url)
        self._conn: Connection | None = None  # the current attempt

    # -- public: subscriptions ---------------------------------------------------------

    def subscribe(self, symbols: str | Iterable[str]) -> None:
        """Add symbols; when live, send their subscribe messages (rate-limited). Thread-safe.

        Raises
        ------
        ValueError
            If ``adapter.validate_subscription`` refuses the list with the new symbols
            (e.g. a plan limit); nothing changes and nothing is sent then.
        """
        with self.lock:
            actions = self.session.subscribe(symbols, time.monotonic())
            self.lock.notify_all()
        self.carry_out(actions)

    def unsubscribe(self, symbols: str | Iterable[str]) -> None:
        """Remove symbols; when live, send their unsubscribe messages. Thread-safe."""
        with self.lock:
            actions = self.session.unsubscribe(symbols, time.monotonic())
            self.lock.notify_all()
        self.carry_out(actions)

    @property
    def symbols(self) -> list[str]:
        """Return the current symbols in subscription order."""
        with self.lock:
            return list(self.session.symbols)

    # -- public: life cycle ------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection cleanly, stop both threads and wait (<= ``timeout`` s).

        Safe to call from any thread, more than once, and before :meth:`start`.
        """
        self.stop_event.set()
        with self.lock:
            self.session.stop(time.monotonic())
            conn = self._conn
            self.lock.notify_all()
        deadline = time.monotonic() + timeout
        if conn is not None:
            conn.send_close()
        if self.is_alive() and threading.current_thread() is not self:
            # Give the server a moment to answer the close frame, then cut the socket.
            self.join(min(self.CLOSE_TIMEOUT_S, timeout))
            if self.is_alive():
                with self.lock:
                    conn = self._conn
                if conn is not None:
                    conn.cut()
                self.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            self.session.stop(time.monotonic())

    def reconnect(self, reason: str = "reconnect requested", *, planned: bool = False) -> None:
        """Drop the connection now and connect again. Thread-safe, never blocks long.

        Parameters
        ----------
        reason : str
            Why, for the status line and the log (tokens are masked).
        planned : bool
            True for a vendor's shutdown notice (Binance ``serverShutdown``): reconnect
            at once rather than after the backoff wait.
        """
        with self.lock:
            actions = self.session.reconnect(redact(reason, self.secrets), time.monotonic(),
                                              planned=planned)
        self.carry_out(actions)

    def fail(self, message: str) -> None:
        """Give up for good: close the connection, stop reconnecting, state FAILED.

        For a vendor answer no retry can fix (a refused token); the engine calls it when
        ``adapter.is_fatal_reply`` says so. ``message`` (tokens masked) becomes
        ``last_error``; the first message given wins. Thread-safe, never blocks long.
        """
        with self.lock:
            actions = self.session.fail(redact(str(message), self.secrets), time.monotonic())
            self.lock.notify_all()
        self.carry_out(actions)

    def status(self) -> FeedStatus:
        """Return a :class:`~feed.core.events.FeedStatus` of the connection (no secrets)."""
        with self.lock:
            return _status(self, time.monotonic(), time.time_ns())

    @property
    def stale_after_s(self) -> float | None:
        """Return the watchdog limit, seconds (None: no watchdog)."""
        return self.session.stale_after_s

    @stale_after_s.setter
    def stale_after_s(self, seconds: float | None) -> None:
        # E.g. off once a replay has played out: a quiet exchange is then expected.
        with self.lock:
            self.session.set_stale_after(seconds, time.monotonic())
            self.lock.notify_all()

    @property
    def state(self) -> FeedState:
        """Return the current :class:`FeedState`."""
        return self.session.state

    # -- connect thread ------------------------------------------------------------------

    def run(self) -> None:  # noqa: D102 - Thread.run
        service = threading.Thread(target=self._service_loop, name=f"{self.name}-send", daemon=True)
        service.start()
        try:
            while not self.stop_event.is_set():
                actions = self._attempt()
                self.carry_out(actions)
                if any(isinstance(a, GiveUp) for a in actions):
                    break
                retry = next((a for a in actions if isinstance(a, RetryAt)), None)
                if retry is None:
                    break
                with self.lock:  # stop() and fail() cut the wait short
                    self.lock.wait_for(lambda: self.stop_event.is_set()
                                        or self.session.fatal is not None, retry.delay_s)
        except Exception as exc:  # a bug here must not leave a zombie "live" state
            log.exception("%s: feed client crashed", self.name)
            with self.lock:
                self.session.state = FeedState.FAILED
                self.session.last_error = explain_error(exc, self.secrets)
        finally:
            with self.lock:
                self.session.stop(time.monotonic())
                self.stop_event.set()
                self.lock.notify_all()
            service.join(2.0)

    def _attempt(self) -> list[Action]:
        # One attempt: connect, serve until the connection ends; the session's verdict.
        failure: Failure | None = None
        with self.lock:
            try:
                target = self.session.begin_attempt(time.monotonic())
            except Exception as exc:  # adapter.url refused the symbols
                target, failure = "", self._classify(exc)
        if isinstance(target, list):  # fail() came first
            return target
        code = reason = None
        if failure is None:
            failure, code, reason = self._serve(target)
        with self.lock:
            return self.session.on_close(time.monotonic(), failure, code=code,
                                          reason=redact(str(reason or ""), self.secrets))

    def _serve(self, url: str) -> tuple[Failure | None, Any, Any]:
        # Serve one Connection; returns (failure, close code, close reason).
        conn = Connection(url, self)
        with self.lock:
            if self.stop_event.is_set():
                return None, None, None
            self._conn = conn
            self.secrets = url_secrets(url) + _header_secrets(self.adapter)
            self.display_url = _shown_url(self.adapter, url, self.session)
        try:
            conn.serve(self._ping_interval_s, self._ping_timeout_s)
        finally:
            with self.lock:
                self._conn = None
                self.lock.notify_all()
        err, (code, reason) = conn.error, conn.close_args
        return (None if err is None else self._classify(err)), code, reason

    def _classify(self, exc: BaseException) -> Failure:
        return Failure(classify_error(exc), explain_error(exc, self.secrets, self.adapter.http_hints),
                       retry_after_s(exc))

    # -- carrying out the session's actions ------------------------------------------------

    def carry_out(self, actions: list[Action]) -> None:
        # Outside the lock: sending, closing and the sink may take a moment.
        for action in actions:
            if isinstance(action, Report):
                self._report(action)
            elif isinstance(action, Close):
                with self.lock:
                    conn = self._conn
                if conn is not None:
                    conn.close(action.graceful)
            elif isinstance(action, GiveUp):
                log.error("%s: giving up: %s", self.name, action.message)
            elif isinstance(action, Send):
                self._send(action)

    def _send(self, action: Send) -> None:
        with self.lock:
            conn = self._conn if action.generation == self.session.generation else None
        if conn is not None:
            conn.send(action.text)

    def _report(self, action: Report) -> None:
        event = dataclasses.replace(action.event, recv_ns=time.time_ns())
        if isinstance(event, FeedError) and not event.fatal:
            level = logging.INFO if event.planned else logging.WARNING
            log.log(level, "%s: %s%s; reconnecting in %.1f s", self.name,
                    "planned disconnect: " if event.planned else "", event.message, event.retry_in_s)
        try:
            self.sink.submit_control(event)
        except Exception:
            log.exception("%s: sink.submit_control(%s) raised", self.name, type(event).__name__)

    # -- service thread: control messages, heartbeat, watchdog -----------------------------

    def _service_loop(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                now = time.monotonic()
                actions, wake_at = self.session.tick(now)
                errors = list(self.session.adapter_errors)
                self.session.adapter_errors.clear()
                if not actions and not errors:
                    self.lock.wait(max(wake_at - now, 0.001))
                    continue
            for what, exc in errors:
                log.error("%s: adapter %s() failed: %s", self.name, what, exc, exc_info=exc)
            for action in actions:
                if isinstance(action, Close):
                    log.warning("%s: %s", self.name, action.why)
            self.carry_out(actions)


def _shown_url(adapter: Any, url: str, session: Session) -> str:
    # The adapter's masked URL for the symbols, else the URL without secret-looking parts.
    if session.fixed_url is None:
        try:
            shown = adapter.display_url(list(session.symbols))
        except Exception:
            shown = None
        if shown:
            return shown
    return safe_url(url)


def _header_secrets(adapter: Any) -> list[str]:
    # Handshake header values whose names look secret (API keys): masked in messages.
    try:
        header = dict(adapter.header() or {})
    except Exception:
        return []
    return [str(v) for k, v in header.items() if SECRET_NAME.search(str(k)) and v]


def _status(client: FeedClient, now: float, wall_ns: int) -> FeedStatus:
    # Caller holds client.lock; now is monotonic seconds, wall_ns UTC ns.
    s = client.session
    url = s.url or s.fixed_url or ""
    wait = None if s.retry_at is None else max(0.0, s.retry_at - now)
    live_since = s.opened_at if s.state is FeedState.LIVE else None
    return FeedStatus(
        name=client.name, state=s.state.value,
        url=client.display_url or (safe_url(url) if url else ""),
        generation=s.generation, reconnects=s.retry.reconnects,
        planned_reconnects=s.retry.planned, next_retry_in_s=wait,
        next_retry_at_ns=None if wait is None else wall_ns + int(wait * 1e9),
        last_retry_delay_s=s.retry.last_delay_s,
        last_message_age_s=now - s.last_rx if s.messages else None,
        connected_for_s=None if live_since is None else max(0.0, now - live_since),
        stale_after_s=s.stale_after_s, last_error=s.last_error,
        symbols=tuple(s.symbols), messages=s.messages,
        binary_frames=client.counts.binary, oversize_frames=client.counts.oversize)
