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
* socket callbacks only timestamp frames and hand them to the sink: text frames go to
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
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import websocket

from feed.core.events import FeedError, FeedStatus
from feed.core.session import Action, Close, Failure, FeedState, GiveUp, Report, RetryAt, Send, Session
from feed.io.policy import classify_error, explain_error, retry_after_s, safe_url, url_secrets
from feed.vendors._common import SECRET_NAME, redact

__all__ = ["FeedClient", "FeedState"]

log = logging.getLogger("tickscope.feed")

_OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT


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
        self._session = Session(  # every decision about the connection
            adapter, symbols=symbols, url=url, stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s, backoff_cap_s=backoff_cap_s,
            reset_after_s=60.0 if reset_after_s is None else reset_after_s)
        self._adapter = adapter  # vendor dialect (header, auth_status, parse for refusals)
        self._sink = sink  # the engine
        self._max_message_bytes = max_message_bytes  # longest frame delivered, bytes
        self._ping_interval_s = ping_interval_s or 0.0  # protocol ping period, s
        self._ping_timeout_s = min(10.0, self._ping_interval_s / 2) if self._ping_interval_s else None
        self._lock = threading.Lock()  # guards the session and the fields below
        self._wake = threading.Condition(self._lock)  # wakes the service thread and retry waits
        self._stop_event = threading.Event()  # stop() was called or run() ended
        self._app: websocket.WebSocketApp | None = None  # the current connection attempt
        self._core: websocket.WebSocket | None = None  # its socket object, for shutdown
        self._attempt_error: BaseException | None = None  # why the current attempt ended
        self._close_args: tuple[Any, Any] = (None, None)  # (code, reason) from on_close
        self._display_url = ""  # what status() shows (adapter.display_url or safe_url)
        self._secrets: list[str] = []  # token and header values to mask in messages
        # Written only by the socket thread (GIL-atomic), read anywhere:
        self._binary_frames = 0  # binary frames received (not delivered)
        self._oversize_frames = 0  # text frames over max_message_bytes (not delivered)
        self._sink_errors = 0  # sink.submit raised

    # -- public: subscriptions ---------------------------------------------------------

    def subscribe(self, symbols: str | Iterable[str]) -> None:
        """Add symbols; when live, send their subscribe messages (rate-limited). Thread-safe.

        Raises
        ------
        ValueError
            If ``adapter.validate_subscription`` refuses the list with the new symbols
            (e.g. a plan limit); nothing changes and nothing is sent then.
        """
        with self._wake:
            actions = self._session.subscribe(symbols, time.monotonic())
            self._wake.notify_all()
        self._carry_out(actions)

    def unsubscribe(self, symbols: str | Iterable[str]) -> None:
        """Remove symbols; when live, send their unsubscribe messages. Thread-safe."""
        with self._wake:
            actions = self._session.unsubscribe(symbols, time.monotonic())
            self._wake.notify_all()
        self._carry_out(actions)

    @property
    def symbols(self) -> list[str]:
        """Return the current symbols in subscription order."""
        with self._lock:
            return list(self._session.symbols)

    # -- public: life cycle ------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection cleanly, stop both threads and wait (<= ``timeout`` s).

        Safe to call from any thread, more than once, and before :meth:`start`.
        """
        self._stop_event.set()
        with self._wake:
            self._session.stop(time.monotonic())
            app = self._app
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        if app is not None:
            _send_close(app)
        if self.is_alive() and threading.current_thread() is not self:
            # Give the server a moment to answer the close frame, then cut the socket.
            self.join(min(self.CLOSE_TIMEOUT_S, timeout))
            if self.is_alive():
                with self._lock:
                    app = self._app
                if app is not None:
                    _cut(app)
                self.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._session.stop(time.monotonic())

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
        with self._wake:
            actions = self._session.reconnect(redact(reason, self._secrets), time.monotonic(),
                                              planned=planned)
        self._carry_out(actions)

    def fail(self, message: str) -> None:
        """Give up for good: close the connection, stop reconnecting, state FAILED.

        For a vendor answer no retry can fix (a refused token); the engine calls it when
        ``adapter.is_fatal_reply`` says so. ``message`` (tokens masked) becomes
        ``last_error``; the first message given wins. Thread-safe, never blocks long.
        """
        with self._wake:
            actions = self._session.fail(redact(str(message), self._secrets), time.monotonic())
            self._wake.notify_all()
        self._carry_out(actions)

    def status(self) -> FeedStatus:
        """Return a :class:`~feed.core.events.FeedStatus` of the connection (no secrets)."""
        now, wall_ns = time.monotonic(), time.time_ns()
        with self._lock:
            s = self._session
            url = s.url or s.fixed_url or ""
            wait = None if s.retry_at is None else max(0.0, s.retry_at - now)
            live_since = s.opened_at if s.state is FeedState.LIVE else None
            return FeedStatus(
                name=self.name, state=s.state.value,
                url=self._display_url or (safe_url(url) if url else ""),
                generation=s.generation, reconnects=s.reconnects,
                planned_reconnects=s.planned_reconnects, next_retry_in_s=wait,
                next_retry_at_ns=None if wait is None else wall_ns + int(wait * 1e9),
                last_retry_delay_s=s.last_delay_s,
                last_message_age_s=now - s.last_rx if s.messages else None,
                connected_for_s=None if live_since is None else max(0.0, now - live_since),
                stale_after_s=s.stale_after_s, last_error=s.last_error,
                symbols=tuple(s.symbols), messages=s.messages,
                binary_frames=self._binary_frames, oversize_frames=self._oversize_frames)

    @property
    def stale_after_s(self) -> float | None:
        """Return the watchdog limit, seconds (None: no watchdog)."""
        return self._session.stale_after_s

    @stale_after_s.setter
    def stale_after_s(self, seconds: float | None) -> None:
        # E.g. off once a replay has played out: a quiet exchange is then expected.
        with self._wake:
            self._session.set_stale_after(seconds, time.monotonic())
            self._wake.notify_all()

    @property
    def RESET_AFTER_S(self) -> float:  # noqa: N802 - kept from when it was a class constant
        """Return the uptime (s) that resets the backoff."""
        return self._session.reset_after_s

    @RESET_AFTER_S.setter
    def RESET_AFTER_S(self, seconds: float) -> None:  # noqa: N802
        self._session.reset_after_s = float(seconds)

    @property
    def MIN_PLANNED_UPTIME_S(self) -> float:  # noqa: N802
        """Return the least uptime (s) for a planned disconnect to skip the backoff."""
        return self._session.MIN_PLANNED_UPTIME_S

    @MIN_PLANNED_UPTIME_S.setter
    def MIN_PLANNED_UPTIME_S(self, seconds: float) -> None:  # noqa: N802
        self._session.MIN_PLANNED_UPTIME_S = float(seconds)

    @property
    def state(self) -> FeedState:
        """Return the current :class:`FeedState`."""
        return self._session.state

    # -- connect thread ------------------------------------------------------------------

    def run(self) -> None:  # noqa: D102 - Thread.run
        service = threading.Thread(target=self._service_loop, name=f"{self.name}-send", daemon=True)
        service.start()
        try:
            while not self._stop_event.is_set():
                actions = self._attempt()
                self._carry_out(actions)
                if any(isinstance(a, GiveUp) for a in actions):
                    break
                retry = next((a for a in actions if isinstance(a, RetryAt)), None)
                if retry is None:
                    break
                with self._wake:  # stop() and fail() cut the wait short
                    self._wake.wait_for(lambda: self._stop_event.is_set()
                                        or self._session.fatal is not None, retry.delay_s)
        except Exception as exc:  # a bug here must not leave a zombie "live" state
            log.exception("%s: feed client crashed", self.name)
            with self._lock:
                self._session.state = FeedState.FAILED
                self._session.last_error = explain_error(exc, self._secrets)
        finally:
            with self._wake:
                self._session.stop(time.monotonic())
                self._stop_event.set()
                self._wake.notify_all()
            service.join(2.0)

    def _attempt(self) -> list[Action]:
        # One attempt: connect, serve until the connection ends; the session's verdict.
        failure: Failure | None = None
        with self._lock:
            try:
                target = self._session.begin_attempt(time.monotonic())
            except Exception as exc:  # adapter.url refused the symbols
                target, failure = "", self._classify(exc)
        if isinstance(target, list):  # fail() came first
            return target
        code = reason = None
        if failure is None:
            failure, code, reason = self._serve(target)
        with self._lock:
            return self._session.on_close(time.monotonic(), failure, code=code,
                                          reason=redact(str(reason or ""), self._secrets))

    def _serve(self, url: str) -> tuple[Failure | None, Any, Any]:
        # run_forever on one WebSocketApp; returns (failure, close code, close reason).
        app = websocket.WebSocketApp(url, header=self._handshake_header, on_open=self._on_open,
                                     on_data=self._on_data, on_error=self._on_error,
                                     on_close=self._on_close)
        with self._lock:
            if self._stop_event.is_set():
                return None, None, None
            self._app, self._attempt_error, self._close_args = app, None, (None, None)
            self._secrets = url_secrets(url) + self._header_secrets()
            self._display_url = self._shown_url(url)
        try:
            app.run_forever(skip_utf8_validation=True, ping_interval=self._ping_interval_s,
                            ping_timeout=self._ping_timeout_s)
        finally:
            # websocket-client 1.9.2 leaves the descriptor open after a close handshake
            # (send_close() clears .connected, so teardown's close() returns early) until
            # the garbage collector runs; the server then waits for our FIN. Close it here.
            core, self._core = self._core, None
            if core is not None:
                core.shutdown()
            with self._wake:
                self._app = None
                err, (code, reason) = self._attempt_error, self._close_args
                self._wake.notify_all()
        return (None if err is None else self._classify(err)), code, reason

    def _classify(self, exc: BaseException) -> Failure:
        return Failure(classify_error(exc), explain_error(exc, self._secrets, self._adapter.http_hints),
                       retry_after_s(exc))

    def _shown_url(self, url: str) -> str:
        if self._session.fixed_url is None:
            try:
                shown = self._adapter.display_url(list(self._session.symbols))
            except Exception:
                shown = None
            if shown:
                return shown
        return safe_url(url)

    def _handshake_header(self) -> dict:
        # websocket-client calls a callable header after creating its socket object and
        # before connecting (1.9.x initialize_socket), so this is where a per-connection
        # timeout can be set without touching its module-wide default.
        ws = getattr(self._app, "sock", None)
        if ws is not None:
            ws.settimeout(self.CONNECT_TIMEOUT_S)
            self._core = ws
        return dict(self._adapter.header() or {})

    def _header_secrets(self) -> list[str]:
        try:
            header = dict(self._adapter.header() or {})
        except Exception:
            return []
        return [str(v) for k, v in header.items() if SECRET_NAME.search(str(k)) and v]

    # -- carrying out the session's actions ------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        # Outside the lock: sending, closing and the sink may take a moment.
        for action in actions:
            if isinstance(action, Report):
                self._report(action)
            elif isinstance(action, Close):
                with self._lock:
                    app = self._app
                if app is not None:
                    if action.graceful:
                        _send_close(app)
                    _cut(app)
            elif isinstance(action, GiveUp):
                log.error("%s: giving up: %s", self.name, action.message)
            elif isinstance(action, Send):
                self._send(action)

    def _send(self, action: Send) -> None:
        with self._lock:
            app = self._app if action.generation == self._session.generation else None
        if app is None:
            return
        try:
            app.send(action.text)
        except Exception as exc:  # the connection is going down; resubscribe covers it
            log.debug("%s: send failed: %s", self.name, explain_error(exc, self._secrets))

    def _report(self, action: Report) -> None:
        event = dataclasses.replace(action.event, recv_ns=time.time_ns())
        if isinstance(event, FeedError) and not event.fatal:
            level = logging.INFO if event.planned else logging.WARNING
            log.log(level, "%s: %s%s; reconnecting in %.1f s", self.name,
                    "planned disconnect: " if event.planned else "", event.message, event.retry_in_s)
        try:
            self._sink.submit_control(event)
        except Exception:
            log.exception("%s: sink.submit_control(%s) raised", self.name, type(event).__name__)

    # -- service thread: control messages, heartbeat, watchdog -----------------------------

    def _service_loop(self) -> None:
        while not self._stop_event.is_set():
            with self._wake:
                now = time.monotonic()
                actions, wake_at = self._session.tick(now)
                errors = list(self._session.adapter_errors)
                self._session.adapter_errors.clear()
                if not actions and not errors:
                    self._wake.wait(max(wake_at - now, 0.001))
                    continue
            for what, exc in errors:
                log.error("%s: adapter %s() failed: %s", self.name, what, exc, exc_info=exc)
            for action in actions:
                if isinstance(action, Close):
                    log.warning("%s: %s", self.name, action.why)
            self._carry_out(actions)

    # -- socket-thread callbacks -----------------------------------------------------------

    def _on_open(self, ws: websocket.WebSocketApp) -> None:
        with self._wake:
            if ws is not self._app:
                return
            if self._stop_event.is_set():
                # stop() may have cleared keep_running before run_forever set it again.
                ws.keep_running = False
                return
            actions = self._session.on_open(time.monotonic())
            gen = self._session.generation
            self._wake.notify_all()  # the service thread starts heartbeat and watchdog
        if any(isinstance(a, Close) for a in actions):
            ws.keep_running = False
            return
        log.info("%s: connected to %s (generation %d)", self.name, self._display_url, gen)
        self._carry_out(actions)

    def _on_data(self, ws: websocket.WebSocketApp, data: bytes | str, opcode: int, fin: bool) -> None:
        # Hot path: O(1), no parsing, no locks, no logging. websocket-client calls this for
        # every complete message (fragments joined), with the opcode on_message would hide.
        recv_ns = time.time_ns()
        self._session.on_frame(time.monotonic())
        if opcode != _OPCODE_TEXT:
            self._binary_frames += 1
            self._reject("binary_frame", data, recv_ns)
            return
        if len(data) > self._max_message_bytes:
            self._oversize_frames += 1
            self._reject("too_large", data, recv_ns)
            return
        try:
            self._sink.submit(data, recv_ns)
        except Exception:
            self._sink_errors += 1
            if self._sink_errors == 1:
                log.exception("%s: sink.submit raised (logged once)", self.name)
        if self._session.awaiting_auth:
            self._check_auth(ws, data, recv_ns)

    def _check_auth(self, ws: websocket.WebSocketApp, data: bytes | str, recv_ns: int) -> None:
        # While AUTHENTICATING: is this frame the vendor's auth reply?
        try:
            ok = self._adapter.auth_status(data)
        except Exception:
            log.exception("%s: adapter auth_status() failed", self.name)
            return
        if ok is None:
            return
        refusal = "" if ok else redact(self._refusal_words(data, recv_ns), self._secrets)
        with self._wake:
            if ws is not self._app:
                return
            actions = self._session.on_auth_reply(time.monotonic(), ok, refusal)
            self._wake.notify_all()
        if ok:
            log.info("%s: authenticated", self.name)
        self._carry_out(actions)

    def _refusal_words(self, data: bytes | str, recv_ns: int) -> str:
        # The vendor's reason, as the adapter words it (its VendorReply for this frame).
        try:
            events = self._adapter.parse(data, recv_ns)
        except Exception:
            events = []
        for ev in events:
            if getattr(ev, "ok", True) is False and getattr(ev, "message", ""):
                return str(ev.message)
        return ""

    def _reject(self, reason: str, data: bytes | str, recv_ns: int) -> None:
        # An undelivered frame: tell the sink (which counts it as malformed), sample only.
        try:
            self._sink.submit_rejected(reason, bytes(data[:64]) if isinstance(data, (bytes, bytearray))
                                       else str(data[:64]), recv_ns)
        except Exception:
            self._sink_errors += 1

    def _on_error(self, ws: websocket.WebSocketApp, exc: BaseException) -> None:
        # Called when a connection ends (every end: websocket-client's reconnect is unused)
        # and when one of our callbacks raised; the last one is what ended the connection.
        with self._lock:
            if ws is self._app:
                self._attempt_error = exc

    def _on_close(self, ws: websocket.WebSocketApp, code: Any, reason: Any) -> None:
        with self._lock:
            if ws is self._app:
                self._close_args = (code, reason)


def _send_close(app: websocket.WebSocketApp) -> None:
    # Ask for a clean close: a close frame to the server, and keep_running=False so the
    # socket thread tears down when the reply (or anything) arrives.
    app.keep_running = False
    ws = app.sock
    if ws is not None and ws.connected:
        try:
            ws.send_close()
        except Exception:  # already gone
            pass


def _cut(app: websocket.WebSocketApp) -> None:
    # Hard stop: shut the raw socket down, which wakes the socket thread's select/recv with
    # EOF (also during the handshake), so run_forever returns at once. Never closes the
    # descriptor under the reader's feet.
    ws = app.sock
    raw = getattr(ws, "sock", None) if ws is not None else None
    if raw is not None:
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
