"""Feed client: a thin websocket-client shell around a vendor adapter.

Policy is pure and tested without sockets (the websockets library's split): :func:`backoff`
yields reconnect delays, :func:`classify_error` decides retry or give up,
:func:`explain_error` and :func:`retry_after_s` say why and how long to wait, and
:class:`TokenBucket` spaces control messages. The I/O shells are small:

* :class:`FeedClient` -- one thread running ``websocket.WebSocketApp.run_forever`` in its
  own reconnect loop (not websocket-client's fixed-delay ``reconnect=``), plus a service
  thread that sends control messages under the vendor's rate limit, sends application
  heartbeats and runs the stale-feed watchdog.
* :class:`SnapshotFetcher` -- one daemon thread fetching REST depth snapshots with urllib.

Neither parses vendor data: raw frames go to ``sink.submit`` (the engine) untouched, and
there are no vendor branches here; everything vendor-specific comes from the adapter
(``feed/vendors/base.py``).

Life of a connection::

    CONNECTING -> LIVE -> (drop) -> RECONNECTING -> LIVE -> ...
                  LIVE -> (no message for stale_after_s) -> STALE -> RECONNECTING -> ...
    any state -> stop() -> STOPPED;   a fatal error (HTTP 401/403/451, bad URL) -> FAILED
    any state -> fail(message) (a vendor reply no retry can fix, e.g. a refused token) -> FAILED

A vendor that authenticates after the handshake (``adapter.requires_auth_reply``, iTick)
goes CONNECTING -> AUTHENTICATING -> LIVE: heartbeats start at open, but subscriptions
wait for ``adapter.auth_status(raw)`` to say True; False fails at once with the vendor's
words (no reconnect loop), and no answer within ``adapter.auth_timeout_s`` drops the
connection and retries with backoff.

Subscriptions (vendor-neutral; each rule is an adapter attribute): a symbol is added only
if ``adapter.validate_subscription(current + new)`` accepts the list (plan limits, endpoint
mixing: the ValueError goes to the caller, nothing is sent); ``replaces_subscriptions``
adapters get the FULL list on every subscribe (their next request replaces the last); and
when ``adapter.url(symbols)`` changes with the symbols (AllTick: stock vs forex/crypto
endpoint), the client reconnects to the new URL instead of subscribing on the old one.

Reconnects never stop (only a fatal error or stop() ends the loop). The wait before each
attempt comes from :func:`backoff` (first within 1 s, doubling, capped at 30 s, with
jitter), which starts over after a connection stayed up ``reset_after_s`` (60 s). A
*planned* disconnect reconnects at once, without waiting: one the sink asks for with
``reconnect(..., planned=True)`` (the engine does on Binance's ``serverShutdown`` notice),
and a clean close by the server (a close frame, e.g. Binance's 24 h cut) of a connection
that had been up ``reset_after_s``. A planned disconnect of a connection younger than
``MIN_PLANNED_UPTIME_S`` waits as usual, so a server that closes every connection at once
is not hammered.

Frames: text frames go to ``sink.submit`` as bytes (UTF-8 validation is skipped; the
parser meets invalid UTF-8 as bad JSON). Binary frames (no vendor here sends any) and text
frames longer than ``max_message_bytes`` are not delivered: they are counted
(``binary_frames``, ``oversize_frames``) and reported, with a 64-byte sample, to
``sink.submit_rejected(reason, sample, recv_ns)`` when the sink has it, as ``"binary_frame"``
or ``"too_large"``.

Sink events (``sink.submit_control(name, recv_ns, detail)``):

=========  ===========================================================================
``open``   ``{"generation": n}``; n counts connections from 1, so n > 1 means a gap
``error``  ``{"generation", "message", "verdict": "retry"|"fatal", "retry_in_s"}``;
           ``"stale": True`` when the watchdog forced the reconnect, ``"planned": True``
           for a planned disconnect (reconnecting at once). Never has tokens.
``close``  ``{"generation", "code", "reason"}`` after a connection that had opened
=========  ===========================================================================
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import queue
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import websocket

__all__ = [
    "backoff",
    "classify_error",
    "explain_error",
    "retry_after_s",
    "safe_url",
    "redact",
    "TokenBucket",
    "FeedState",
    "FeedClient",
    "SnapshotFetcher",
]

log = logging.getLogger("tickscope.feed")

_OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT

Verdict = Literal["retry", "fatal"]

# ---------------------------------------------------------------------------------------
# Pure policy
# ---------------------------------------------------------------------------------------


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


# Handshake / REST statuses that retrying cannot fix, with what to tell the user.
_FATAL_HINTS: dict[int, str] = {
    400: "the server rejected the request (check the URL and symbols)",
    401: "the server rejected the credentials (check the token / API key)",
    403: "access is forbidden (check the token / API key; Binance answers 403 when its WAF blocks a client)",
    404: "the endpoint does not exist (check the URL)",
    451: "the vendor refuses connections from this location (geo-blocked); use another endpoint or vendor",
}
# Statuses that mean "slow down": minimum wait when the server gives no Retry-After.
_SLOW_DOWN_S: dict[int, float] = {
    429: 30.0,   # rate limit (Binance: back off or the IP gets banned, 418)
    418: 120.0,  # IP auto-ban for ignoring 429 (Binance: 2 min to 3 days)
}
_SLOW_HINTS: dict[int, str] = {
    429: "rate limited by the vendor",
    418: "IP temporarily banned by the vendor for exceeding rate limits",
}


def _http_status(exc: BaseException) -> int | None:
    # websocket-client: WebSocketBadStatusException.status_code; urllib: HTTPError.code.
    # (websocket-client also puts the close code in .status_code of a closed-connection
    # error; that is not an HTTP status.)
    if isinstance(exc, websocket.WebSocketBadStatusException):
        status = exc.status_code
    elif isinstance(exc, urllib.error.HTTPError):
        status = exc.code
    else:
        return None
    return status if isinstance(status, int) else None


def classify_error(exc: BaseException) -> Verdict:
    """Return ``"retry"`` or ``"fatal"`` for an error that ended a connection or request.

    Fatal: an HTTP 4xx handshake/response other than 408, 418 and 429 (401/403 bad or
    missing credentials, 451 geo-block, 404 wrong path), a TLS certificate failure, and a
    malformed URL or argument (``ValueError``/``TypeError``). Everything else -- socket
    errors, timeouts, closed connections, DNS failures, 5xx, 429/418 (with a longer wait, see
    :func:`retry_after_s`) -- is worth retrying.
    """
    status = _http_status(exc)
    if status is not None:
        if status in _SLOW_DOWN_S or status == 408:
            return "retry"
        return "fatal" if 400 <= status < 500 else "retry"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "fatal"
    if isinstance(exc, (ValueError, TypeError)) and not isinstance(exc, OSError):
        return "fatal"
    return "retry"


def retry_after_s(exc: BaseException) -> float | None:
    """Return the least wait in seconds before retrying after ``exc``, or None for no floor.

    HTTP 429 and 418 use the server's ``Retry-After`` seconds when given, else 30 s and
    120 s (Binance's documented minimum ban).
    """
    status = _http_status(exc)
    if status not in _SLOW_DOWN_S:
        return None
    header = None
    headers = getattr(exc, "resp_headers", None) or getattr(exc, "headers", None)
    if headers is not None:
        try:
            header = headers.get("retry-after") or headers.get("Retry-After")
        except Exception:  # not a mapping
            header = None
    try:
        seconds = float(header) if header is not None else None
    except ValueError:  # an HTTP-date; not worth parsing
        seconds = None
    if seconds is not None and math.isfinite(seconds) and seconds >= 0:
        return seconds
    return _SLOW_DOWN_S[status]


def explain_error(exc: BaseException, secrets: Iterable[str] = (),
                  hints: dict[int, str] | None = None) -> str:
    """Return a one-line message for ``exc`` fit for the UI and logs (tokens removed).

    Args:
        exc: The error.
        secrets: Strings to mask wherever they occur (token values, header values).
        hints: Vendor advice per HTTP status (``adapter.http_hints``), used instead of the
            generic words; ``{wait}`` in it becomes the Retry-After wait, seconds.
    """
    status = _http_status(exc)
    if status is not None:
        hint = (hints or {}).get(status)
        if hint:
            try:
                words = hint.format(wait=retry_after_s(exc) or 0.0)
            except (KeyError, IndexError, ValueError):
                words = hint
            text = f"HTTP {status}: {words}"
        elif status in _FATAL_HINTS:
            text = f"HTTP {status}: {_FATAL_HINTS[status]}"
        elif status in _SLOW_HINTS:
            text = f"HTTP {status}: {_SLOW_HINTS[status]}; waiting {retry_after_s(exc):g} s"
        else:
            # Not str(exc): websocket-client puts response headers and body in it.
            reason = getattr(exc, "status_message", None) or getattr(exc, "reason", None) or ""
            text = f"HTTP {status} {reason}".rstrip()
    elif isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS certificate verification failed: {getattr(exc, 'verify_message', exc)}"
    elif isinstance(exc, websocket.WebSocketAddressException):
        text = f"cannot resolve the host name: {exc}"
    elif isinstance(exc, (ConnectionRefusedError,)):
        text = "connection refused"
    elif isinstance(exc, (socket.timeout, TimeoutError, websocket.WebSocketTimeoutException)):
        text = f"timed out{': ' + str(exc) if str(exc) else ''}"
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    text = redact(" ".join(text.split()), secrets)
    return text if len(text) <= 240 else text[:237] + "..."


# Query parameter / header names that carry secrets.
_SECRET_NAME = re.compile(
    r"token|key|secret|sign|pass|auth|cookie|session|credential", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"(?i)\b([\w.-]*(?:token|key|secret|signature|sign|password|passwd|auth)[\w.-]*=)[^&\s\"']+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with each secret and every ``token=...``-like value masked as ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SECRET_PARAM.sub(r"\1***", text)


def safe_url(url: str) -> str:
    """Return ``url`` without user info and without query parameters that look secret.

    ``wss://u:p@host/ws?token=abc&streams=x`` becomes ``wss://host/ws?streams=x``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return redact(url)
    kept = [p for p in parts.query.split("&") if p and not _SECRET_NAME.search(p.split("=", 1)[0])]
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), ""))


def _url_secrets(url: str) -> list[str]:
    # Values that must never be shown: secret-looking query values and the password.
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password or "", parts.username or ""]
    for p in parts.query.split("&"):
        name, _, value = p.partition("=")
        if value and _SECRET_NAME.search(name):
            found.append(value)
    return [s for s in found if s]


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
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> bool:
        """Consume a token and return True, or return False if none is available."""
        if self.rate == math.inf:
            return True
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        if now > self._t:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now


# ---------------------------------------------------------------------------------------
# FeedClient
# ---------------------------------------------------------------------------------------


class FeedState(enum.Enum):
    """Connection state of a :class:`FeedClient` (``status()["state"]`` is the lower name)."""

    CONNECTING = "connecting"  # first attempt, not yet open
    AUTHENTICATING = "authenticating"  # open; waiting for the vendor's auth reply to subscribe
    LIVE = "live"  # open; subscriptions sent
    RECONNECTING = "reconnecting"  # dropped; waiting for / making the next attempt
    STALE = "stale"  # watchdog saw no message for stale_after_s; dropping the connection
    STOPPED = "stopped"  # stop() was called (or never started)
    FAILED = "failed"  # a fatal error; the client gave up (see last_error)


def _as_symbols(symbols: str | Iterable[str]) -> list[str]:
    if isinstance(symbols, str):
        return [symbols]
    return [str(s) for s in symbols]


class FeedClient(threading.Thread):
    """Keep one WebSocket connection to a vendor alive and hand every frame to a sink.

    The thread runs ``WebSocketApp.run_forever`` once per connection attempt in its own
    loop, so that reconnects follow :func:`backoff` (reset after a connection stayed up
    ``RESET_AFTER_S``) and fatal errors stop the loop. On each open the connection
    generation goes up, the sink is told, and every current symbol is resubscribed.
    Control messages (subscribe, unsubscribe, heartbeat) are sent by a service thread,
    spaced by a :class:`TokenBucket` at ``adapter.max_messages_per_s``, so neither the
    socket thread nor callers of :meth:`subscribe` ever wait for the rate limit.

    Args:
        adapter: Vendor adapter (``feed.vendors.base.VendorAdapter``; duck-typed).
        sink: Receives ``submit(raw, recv_ns) -> bool`` for every frame (bytes for text
            frames: UTF-8 validation is skipped, it costs ~4x throughput) and
            ``submit_control(name, recv_ns, detail)`` for life-cycle events.
        url: Connect here instead of ``adapter.url(symbols)``.
        symbols: Symbols to subscribe on the first open.
        stale_after_s: Seconds without any message, while subscribed, after which the
            connection is considered dead and replaced; None disables the watchdog. Any
            data frame counts (a quiet symbol on a busy connection is fine); protocol
            pings and pongs do not, so a stream that stops while pings go on is caught.
        ping_interval_s: Seconds between protocol pings (0 or None: none). A pong must
            arrive within ``min(10, ping_interval_s / 2)`` s. Binance counts pings toward
            its 5 messages/s, so keep this large.
        name: Feed id used as the thread name and in log lines.
        backoff_initial_s: First reconnect wait, seconds, before jitter (tests shorten it).
        backoff_cap_s: Longest reconnect wait, seconds.
        reset_after_s: A connection up this long (s) resets the backoff, and a clean
            server close after it is a planned disconnect; default ``RESET_AFTER_S``.
        max_message_bytes: Longest text frame delivered, bytes; longer ones are counted
            and dropped (a 10 MB frame must not reach the parser).
    """

    #: A connection that stayed up this long (s) resets the backoff to its first delay.
    RESET_AFTER_S = 60.0
    #: A planned disconnect of a connection younger than this (s) waits the usual backoff.
    MIN_PLANNED_UPTIME_S = 1.0
    #: Socket timeout (s) for the TCP connect, TLS and HTTP upgrade, and any later blocking
    #: send/recv; websocket-client would otherwise wait for the OS (about two minutes).
    CONNECT_TIMEOUT_S = 10.0
    #: Seconds stop() waits for the server's close reply before cutting the socket.
    CLOSE_TIMEOUT_S = 1.0

    def __init__(
        self,
        adapter: Any,
        sink: Any,
        *,
        url: str | None = None,
        symbols: Iterable[str] = (),
        stale_after_s: float | None = 30.0,
        ping_interval_s: float | None = 20.0,
        name: str = "feed",
        backoff_initial_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        reset_after_s: float | None = None,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        super().__init__(name=name, daemon=True)
        backoff(initial=backoff_initial_s, cap=backoff_cap_s)  # validates both
        if not (isinstance(max_message_bytes, int) and max_message_bytes > 0):
            raise ValueError(f"max_message_bytes must be a positive int, not {max_message_bytes!r}")
        if reset_after_s is not None:
            if not reset_after_s >= 0:
                raise ValueError(f"reset_after_s must be >= 0 seconds, not {reset_after_s!r}")
            self.RESET_AFTER_S = float(reset_after_s)
        self._backoff_initial_s = backoff_initial_s  # first reconnect wait, s
        self._backoff_cap_s = backoff_cap_s  # longest reconnect wait, s
        self._max_message_bytes = max_message_bytes  # longest frame delivered, bytes
        if stale_after_s is not None and not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0 seconds or None, not {stale_after_s!r}")
        if ping_interval_s is not None and not ping_interval_s >= 0:
            raise ValueError(f"ping_interval_s must be >= 0 seconds or None, not {ping_interval_s!r}")
        self._adapter = adapter  # vendor dialect: URL, control messages, limits
        self._sink = sink  # the engine
        self._fixed_url = url  # overrides adapter.url(symbols)
        self._stale_after_s = stale_after_s  # watchdog limit, s
        self._ping_interval_s = ping_interval_s or 0.0  # protocol ping period, s
        self._ping_timeout_s = min(10.0, self._ping_interval_s / 2) if self._ping_interval_s else None

        self._lock = threading.Lock()  # guards every field below that is not marked
        self._wake = threading.Condition(self._lock)  # wakes the service thread
        self._stop_event = threading.Event()  # stop() was called or run() ended
        self._symbols: dict[str, None] = dict.fromkeys(_as_symbols(symbols))  # ordered set
        self._outbox: collections.deque[tuple[int, str]] = collections.deque()  # (generation, text)
        self._bucket = TokenBucket(getattr(adapter, "max_messages_per_s", None))
        self._state = FeedState.CONNECTING
        self._app: websocket.WebSocketApp | None = None  # the current connection attempt
        self._generation = 0  # connections opened so far
        self._reconnects = 0  # retries scheduled so far
        self._planned = 0  # of which planned disconnects (no wait)
        self._last_delay_s: float | None = None  # the wait before the latest retry, s
        self._retry_at: float | None = None  # monotonic s of the next attempt
        self._opened_at: float | None = None  # monotonic s when the current connection opened
        self._watch_from_ns = 0  # monotonic ns the watchdog counts silence from (besides messages)
        self._next_heartbeat = math.inf  # monotonic s
        self._queued_heartbeat: str | None = None  # the heartbeat text last queued
        self._close_intent: str | None = None  # "stop" / "stale" / "requested": we cut it
        self._attempt_error: BaseException | None = None  # why the current attempt ended
        self._close_args: tuple[Any, Any] = (None, None)  # (code, reason) from on_close
        self._core: websocket.WebSocket | None = None  # socket thread only: see _run_connection
        self._last_error: str | None = None  # safe text for status()
        self._url = ""  # URL of the current / last attempt (secret; never shown)
        self._display_url = ""  # what status() shows for it (adapter.display_url or safe_url)
        self._secrets: list[str] = []  # token values to mask in messages
        self._fatal: str | None = None  # set by fail(): give up with this message
        self._auth_deadline = math.inf  # monotonic s by which the auth reply must come
        self._hints = getattr(adapter, "http_hints", None)  # vendor advice per HTTP status
        # True from open until the auth reply (requires_auth_reply adapters); read on the
        # socket thread's hot path without the lock (a GIL-atomic attribute read).
        self._awaiting_auth = False
        # Written only by the socket thread in on_message (GIL-atomic), read anywhere:
        self._last_rx_ns = 0  # monotonic ns of the last message, 0 = none yet
        self._messages = 0  # frames received
        self._binary_frames = 0  # binary frames received (not delivered)
        self._oversize_frames = 0  # text frames over max_message_bytes (not delivered)
        self._sink_errors = 0  # sink.submit raised
        self._reject_sink = getattr(sink, "submit_rejected", None)  # told about undelivered frames

    # -- public: subscriptions -----------------------------------------------------------

    def subscribe(self, symbols: str | Iterable[str]) -> None:
        """Add symbols; when connected, send their subscribe messages at once (rate-limited).

        Thread-safe. Symbols already subscribed are ignored. They are resubscribed on every
        reconnect. With ``adapter.replaces_subscriptions`` the message carries every current
        symbol; when ``adapter.url`` names another endpoint for the new list, the client
        reconnects there instead.

        Raises:
            ValueError: If ``adapter.validate_subscription`` refuses the list with the new
                symbols (e.g. a plan limit); nothing changes and nothing is sent then.
        """
        move = False
        with self._wake:
            new = [s for s in dict.fromkeys(_as_symbols(symbols)) if s not in self._symbols]
            if not new:
                return
            validate = getattr(self._adapter, "validate_subscription", None)
            if validate is not None:
                validate([*self._symbols, *new])
            if not self._symbols:
                # Silence before the first symbol is not a stale feed.
                self._watch_from_ns = time.monotonic_ns()
            self._symbols.update(dict.fromkeys(new))
            if self._state in (FeedState.LIVE, FeedState.AUTHENTICATING) and self._moves_endpoint():
                move = True
            elif self._state is FeedState.LIVE:
                full = getattr(self._adapter, "replaces_subscriptions", False)
                self._enqueue(self._adapter.subscribe_messages, list(self._symbols) if full else new)
        if move:
            self._move()

    def unsubscribe(self, symbols: str | Iterable[str]) -> None:
        """Remove symbols; when connected, send their unsubscribe messages. Thread-safe.

        ``adapter.unsubscribe_messages(gone)`` decides the frames; an adapter whose requests
        replace the subscription resends the reduced list itself (AllTick, iTick).
        """
        with self._wake:
            gone = [s for s in dict.fromkeys(_as_symbols(symbols)) if s in self._symbols]
            for s in gone:
                del self._symbols[s]
            if gone and self._state is FeedState.LIVE:
                self._enqueue(self._adapter.unsubscribe_messages, gone)

    @property
    def symbols(self) -> list[str]:
        """Return the current symbols in subscription order."""
        with self._lock:
            return list(self._symbols)

    # -- public: life cycle --------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection cleanly, stop both threads and wait for them (<= timeout s).

        Safe to call from any thread, more than once, and before :meth:`start`.
        """
        self._stop_event.set()
        with self._wake:
            self._close_intent = "stop"
            app = self._app
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        if app is not None:
            self._send_close(app)
        if self.is_alive() and threading.current_thread() is not self:
            # Give the server a moment to answer the close frame, then cut the socket.
            self.join(min(self.CLOSE_TIMEOUT_S, timeout))
            if self.is_alive():
                with self._lock:
                    app = self._app
                if app is not None:
                    self._cut(app)
                self.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._state is not FeedState.FAILED:
                self._state = FeedState.STOPPED
            self._retry_at = None

    def reconnect(self, reason: str = "reconnect requested", *, planned: bool = False) -> None:
        """Drop the current connection now and connect again. Thread-safe, never blocks long.

        Args:
            reason: Why, for the status line and the log (tokens are masked).
            planned: True for a vendor's shutdown notice (Binance ``serverShutdown``):
                reconnect at once rather than after the backoff wait (see the module
                docstring for the guard against a server that does this constantly).
        """
        with self._lock:
            app = self._app
            if app is None or self._state not in (FeedState.LIVE, FeedState.AUTHENTICATING):
                return
            self._close_intent = "planned" if planned else "requested"
            self._last_error = redact(reason, self._secrets)
        self._send_close(app)
        self._cut(app)

    def _move(self) -> None:
        # Reconnect to the URL the current symbols need (adapter.url changed with them).
        with self._lock:
            app = self._app
            if app is None or self._state not in (FeedState.LIVE, FeedState.AUTHENTICATING):
                return
            self._close_intent = "move"
            self._last_error = "moving to the endpoint that serves the new symbols"
        log.info("%s: the symbols are served on another endpoint; reconnecting there", self.name)
        self._send_close(app)
        self._cut(app)

    def fail(self, message: str) -> None:
        """Give up for good: close the connection, stop reconnecting, state FAILED.

        For a vendor answer no retry can fix (a refused token: AllTick 401, iTick auth
        failed); the engine calls it when ``adapter.is_fatal_reply`` says so. ``message``
        (tokens masked) becomes ``last_error``. Thread-safe, never blocks long; the first
        message given wins.
        """
        with self._wake:
            if self._fatal is not None:
                return
            self._fatal = redact(" ".join(str(message).split()), self._secrets) or "vendor refused"
            self._last_error = self._fatal
            app = self._app
            if app is not None:
                self._close_intent = "fatal"
            self._wake.notify_all()
        if app is not None:
            self._send_close(app)
            self._cut(app)

    def status(self) -> dict:
        """Return a snapshot of the connection for the status line and ``/api/health``.

        Keys: ``state`` (lower-case :class:`FeedState` name), ``url`` (without user info or
        tokens), ``generation``, ``reconnects``, ``next_retry_in_s`` (None unless a retry is
        scheduled), ``last_message_age_s`` (None before the first message), ``last_error``
        (None or a message without tokens), ``name``, ``symbols``, ``messages``; also
        ``next_retry_at_ns`` (UTC ns of the scheduled retry, or None),
        ``planned_reconnects``, ``last_retry_delay_s``, ``connected_for_s`` (None unless
        live), ``stale_after_s``, ``binary_frames`` and ``oversize_frames``.
        """
        now_ns = time.monotonic_ns()
        wall_ns = time.time_ns()
        with self._lock:
            opened_at = self._opened_at if self._state is FeedState.LIVE else None
            url = self._url or self._fixed_url or ""
            retry_at = self._retry_at
            out = {
                "name": self.name,
                "state": self._state.name.lower(),
                "url": self._display_url or (safe_url(url) if url else ""),
                "generation": self._generation,
                "reconnects": self._reconnects,
                "next_retry_in_s": None if retry_at is None else max(0.0, retry_at - now_ns / 1e9),
                "last_message_age_s": (now_ns - self._last_rx_ns) / 1e9 if self._last_rx_ns else None,
                "last_error": self._last_error,
                "symbols": list(self._symbols),
                "messages": self._messages,
                "next_retry_at_ns": None if retry_at is None else wall_ns + max(0, int(retry_at * 1e9) - now_ns),
                "planned_reconnects": self._planned,
                "last_retry_delay_s": self._last_delay_s,
                "connected_for_s": None if opened_at is None else max(0.0, now_ns / 1e9 - opened_at),
                "stale_after_s": self._stale_after_s,
                "binary_frames": self._binary_frames,
                "oversize_frames": self._oversize_frames,
            }
        return out

    @property
    def stale_after_s(self) -> float | None:
        """Return the watchdog limit, seconds (None: no watchdog)."""
        return self._stale_after_s

    @stale_after_s.setter
    def stale_after_s(self, seconds: float | None) -> None:
        # E.g. off once a replay has played out: a quiet exchange is then expected.
        if seconds is not None and not seconds > 0:
            raise ValueError(f"stale_after_s must be > 0 seconds or None, not {seconds!r}")
        with self._wake:
            self._stale_after_s = seconds
            self._watch_from_ns = time.monotonic_ns()
            self._wake.notify_all()

    @property
    def state(self) -> FeedState:
        """Return the current :class:`FeedState`."""
        return self._state

    # -- thread: the connect loop ----------------------------------------------------------

    def run(self) -> None:  # noqa: D102 - Thread.run
        service = threading.Thread(target=self._service_loop, name=f"{self.name}-send", daemon=True)
        service.start()
        delays = self._new_backoff()
        try:
            while not self._stop_event.is_set():
                if self._fatal is not None:
                    self._give_up(self._fatal)
                    break
                uptime, err, intent = self._run_connection()
                if self._stop_event.is_set():
                    break
                code = self._close_args[0]
                long_lived = uptime is not None and uptime >= self.RESET_AFTER_S
                # A planned disconnect: the vendor's shutdown notice, or the server closing
                # (close frame) a connection that had been up a long time (Binance's 24 h cut).
                planned = intent == "planned" or (intent is None and code is not None and long_lived)
                if uptime is None or uptime < self.MIN_PLANNED_UPTIME_S:
                    planned = False  # a server closing every connection at once is not a plan
                if intent == "move":  # our own move to another endpoint: at once, not an error
                    planned = True
                verdict: Verdict
                if intent == "fatal" or self._fatal is not None:  # fail(): the vendor refused us
                    verdict, message = "fatal", self._fatal or "vendor refused"
                elif intent is not None:  # we cut it (stale / auth timeout / requested / planned)
                    verdict = "retry"
                    message = self._last_error or intent
                elif err is not None:
                    verdict = classify_error(err)
                    message = explain_error(err, self._secrets, self._hints)
                else:
                    verdict, message = "retry", "connection closed"
                if verdict == "fatal":
                    self._give_up(message)
                    break
                with self._lock:
                    self._last_error = message
                if long_lived:
                    delays = self._new_backoff()
                delay = 0.0 if planned else next(delays)
                floor = retry_after_s(err) if err is not None else None
                if floor is not None:
                    delay = max(delay, floor)
                with self._lock:
                    gen = self._generation
                    self._reconnects += 1
                    self._planned += planned
                    self._last_delay_s = delay
                    self._retry_at = time.monotonic() + delay
                    self._state = FeedState.RECONNECTING
                if planned:
                    log.info("%s: planned disconnect (%s); reconnecting in %.1f s", self.name, message, delay)
                else:
                    log.warning("%s: %s; reconnecting in %.1f s", self.name, message, delay)
                detail = {"generation": gen, "message": message, "verdict": "retry",
                          "retry_in_s": round(delay, 3)}
                if intent == "stale":
                    detail["stale"] = True
                if planned:
                    detail["planned"] = True
                self._report("error", detail)
                with self._wake:  # stop() and fail() cut the wait short
                    self._wake.wait_for(lambda: self._stop_event.is_set() or self._fatal is not None, delay)
                    self._retry_at = None
        except Exception as exc:  # a bug here must not leave a zombie "live" state
            log.exception("%s: feed client crashed", self.name)
            with self._lock:
                self._state = FeedState.FAILED
                self._last_error = explain_error(exc, self._secrets)
        finally:
            with self._wake:
                if self._state is not FeedState.FAILED:
                    self._state = FeedState.STOPPED
                self._retry_at = None
                self._stop_event.set()
                self._wake.notify_all()
            service.join(2.0)

    def _new_backoff(self) -> Iterator[float]:
        return backoff(initial=self._backoff_initial_s, cap=self._backoff_cap_s)

    def _give_up(self, message: str) -> None:
        # FAILED with ``message``: no more attempts; the sink hears a fatal error.
        with self._lock:
            self._state = FeedState.FAILED
            self._last_error = message
            self._retry_at = None
            gen = self._generation
        log.error("%s: giving up: %s", self.name, message)
        self._report("error", {"generation": gen, "message": message, "verdict": "fatal",
                               "retry_in_s": None})

    def _run_connection(self) -> tuple[float | None, BaseException | None, str | None]:
        # One attempt: connect, serve until the connection ends. Returns (seconds it was
        # open or None, the error that ended it, our close intent).
        with self._lock:
            symbols = list(self._symbols)
        try:
            url = self._fixed_url or self._adapter.url(symbols)
        except Exception as exc:
            return None, exc, None
        shown = safe_url(url)
        display = getattr(self._adapter, "display_url", None)
        if self._fixed_url is None and callable(display):
            try:
                shown = display(symbols)
            except Exception:
                pass
        app = websocket.WebSocketApp(
            url,
            header=self._handshake_header,
            on_open=self._on_open,
            on_data=self._on_data,
            on_error=self._on_error,
            on_close=self._on_close,
        )
        with self._lock:
            if self._stop_event.is_set():
                return None, None, "stop"
            if self._fatal is not None:
                return None, None, "fatal"
            self._app = app
            self._url = url
            self._display_url = shown
            self._secrets = _url_secrets(url) + self._header_secrets()
            self._opened_at = None
            self._attempt_error = None
            self._close_intent = None
            self._close_args = (None, None)
        try:
            app.run_forever(
                skip_utf8_validation=True,
                ping_interval=self._ping_interval_s,
                ping_timeout=self._ping_timeout_s,
            )
        finally:
            # websocket-client 1.9.2 leaves the descriptor open after a close handshake
            # (send_close() clears .connected, so teardown's close() returns early) until
            # the garbage collector runs; the server then waits for our FIN. Close it here.
            core, self._core = self._core, None
            if core is not None:
                core.shutdown()
            with self._wake:
                self._app = None
                opened_at, err, intent = self._opened_at, self._attempt_error, self._close_intent
                gen = self._generation
                self._outbox.clear()
                self._awaiting_auth = False
                if self._state in (FeedState.LIVE, FeedState.AUTHENTICATING):
                    self._state = FeedState.RECONNECTING
                self._wake.notify_all()
        uptime = None if opened_at is None else time.monotonic() - opened_at
        if opened_at is not None:
            code, reason = self._close_args
            self._report("close", {"generation": gen, "code": code,
                                   "reason": redact(str(reason or ""), self._secrets)})
        return uptime, err, intent

    def _handshake_header(self) -> dict:
        # websocket-client calls a callable header after creating its socket object and
        # before connecting (1.9.x initialize_socket), so this is where a per-connection
        # timeout can be set without touching its module-wide default.
        app = self._app
        ws = getattr(app, "sock", None)
        if ws is not None:
            ws.settimeout(self.CONNECT_TIMEOUT_S)
            self._core = ws
        return self._adapter_header()

    def _adapter_header(self) -> dict:
        header = getattr(self._adapter, "header", None)
        if header is None:
            return {}
        value = header() if callable(header) else header
        return dict(value or {})

    def _header_secrets(self) -> list[str]:
        try:
            header = self._adapter_header()
        except Exception:
            return []
        return [str(v) for k, v in header.items() if _SECRET_NAME.search(str(k)) and v]

    @staticmethod
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

    @staticmethod
    def _cut(app: websocket.WebSocketApp) -> None:
        # Hard stop: shut the raw socket down, which wakes the socket thread's select/recv
        # with EOF (also during the handshake), so run_forever returns at once. Never
        # closes the descriptor under the reader's feet.
        ws = app.sock
        raw = getattr(ws, "sock", None) if ws is not None else None
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- socket-thread callbacks -----------------------------------------------------------

    def _on_open(self, ws: websocket.WebSocketApp) -> None:
        now = time.monotonic()
        with self._wake:
            if ws is not self._app:
                return
            if self._stop_event.is_set():
                # stop() may have cleared keep_running before run_forever set it again.
                ws.keep_running = False
                return
            if self._fatal is not None:
                ws.keep_running = False
                return
            self._generation += 1
            gen = self._generation
            self._opened_at = now
            self._watch_from_ns = time.monotonic_ns()
            interval = getattr(self._adapter, "heartbeat_interval_s", None)
            self._next_heartbeat = now + interval if interval else math.inf
            self._outbox.clear()  # leftovers were for the previous connection
            self._bucket.reset(now)
            on_open = getattr(self._adapter, "on_open", None)
            if on_open is not None:  # per-connection adapter state starts over
                try:
                    on_open()
                except Exception:
                    log.exception("%s: adapter on_open() failed", self.name)
            if getattr(self._adapter, "requires_auth_reply", False):
                # Heartbeats start now; subscriptions wait for the auth reply (_on_data).
                self._state = FeedState.AUTHENTICATING
                self._awaiting_auth = True
                self._auth_deadline = now + float(getattr(self._adapter, "auth_timeout_s", 10.0))
            else:
                self._state = FeedState.LIVE
                if self._symbols:
                    self._enqueue(self._adapter.subscribe_messages, list(self._symbols))
            self._wake.notify_all()  # the service thread starts heartbeat and watchdog
        log.info("%s: connected to %s (generation %d)", self.name, self._display_url, gen)
        self._report("open", {"generation": gen})

    def _on_data(self, ws: websocket.WebSocketApp, data: bytes | str, opcode: int, fin: bool) -> None:
        # Hot path: O(1), no parsing, no locks, no logging. websocket-client calls this for
        # every complete text or binary message (fragments already joined), with the
        # opcode that on_message would not tell.
        recv_ns = time.time_ns()
        self._last_rx_ns = time.monotonic_ns()
        self._messages += 1
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
        if self._awaiting_auth:
            self._check_auth(ws, data, recv_ns)

    def _check_auth(self, ws: websocket.WebSocketApp, data: bytes | str, recv_ns: int) -> None:
        # While AUTHENTICATING: is this frame the vendor's auth reply? Yes -> LIVE and
        # subscribe every symbol; refused -> FAILED with the vendor's words (no retry: the
        # same key would be refused again); anything else -> keep waiting.
        try:
            ok = self._adapter.auth_status(data)
        except Exception:
            log.exception("%s: adapter auth_status() failed", self.name)
            return
        if ok is None:
            return
        if ok:
            with self._wake:
                if ws is not self._app or self._state is not FeedState.AUTHENTICATING:
                    return
                self._awaiting_auth = False
                self._auth_deadline = math.inf
                self._state = FeedState.LIVE
                if self._symbols:
                    self._enqueue(self._adapter.subscribe_messages, list(self._symbols))
                self._wake.notify_all()
            log.info("%s: authenticated", self.name)
            return
        self._awaiting_auth = False
        self.fail(self._refusal_words(data, recv_ns))

    def _refusal_words(self, data: bytes | str, recv_ns: int) -> str:
        # The vendor's reason, as the adapter words it (its VendorReply for this frame).
        try:
            events = self._adapter.parse(data, recv_ns)
        except Exception:
            events = []
        for ev in events:
            if getattr(ev, "ok", True) is False and getattr(ev, "message", ""):
                return str(ev.message)
        return "the vendor refused authentication (check the API key)"

    def _reject(self, reason: str, data: bytes | str, recv_ns: int) -> None:
        # An undelivered frame: tell the sink (which counts it as malformed), sample only.
        if self._reject_sink is not None:
            try:
                self._reject_sink(reason, bytes(data[:64]) if isinstance(data, (bytes, bytearray))
                                  else str(data[:64]), recv_ns)
            except Exception:
                self._sink_errors += 1

    def _on_error(self, ws: websocket.WebSocketApp, exc: BaseException) -> None:
        # websocket-client calls this when a connection ends (every end, since we do not
        # use its reconnect) and when one of our callbacks raised.
        with self._lock:
            if ws is not self._app:
                return
            self._attempt_error = exc  # the last one is what ended the connection
            intent = self._close_intent
        if intent is None:
            log.debug("%s: %s", self.name, explain_error(exc, self._secrets))

    def _on_close(self, ws: websocket.WebSocketApp, code: Any, reason: Any) -> None:
        with self._lock:
            if ws is self._app:
                self._close_args = (code, reason)

    # -- service thread: control messages, heartbeat, watchdog -----------------------------

    def _moves_endpoint(self) -> bool:
        # Caller holds the lock. True when the current symbols need another URL than the
        # open connection's (AllTick: stock vs forex/crypto); a fixed URL never moves.
        if self._fixed_url is not None or self._app is None:
            return False
        try:
            return self._adapter.url(list(self._symbols)) != self._url
        except Exception:  # the adapter refuses the list; subscribing will say why
            return False

    def _enqueue(self, build: Callable[[list[str]], list[str]], symbols: list[str]) -> None:
        # Caller holds the lock. An adapter error must not reach websocket-client's callback
        # wrapper (it would be mistaken for the end of the connection).
        try:
            texts = build(symbols)
        except Exception as exc:
            self._last_error = explain_error(exc, self._secrets)
            log.exception("%s: adapter could not build control messages for %s", self.name, symbols)
            return
        self._outbox.extend((self._generation, t) for t in texts)
        self._wake.notify_all()

    def _service_loop(self) -> None:
        while not self._stop_event.is_set():
            send: tuple[websocket.WebSocketApp, str] | None = None
            stale: websocket.WebSocketApp | None = None
            with self._wake:
                now = time.monotonic()
                wait = 1.0
                if self._state in (FeedState.LIVE, FeedState.AUTHENTICATING) and self._app is not None:
                    if now >= self._next_heartbeat:
                        self._heartbeat(now)
                    silent_s = self._silent_s()
                    if self._state is FeedState.AUTHENTICATING:
                        if now >= self._auth_deadline:
                            stale = self._app
                            self._close_intent = "auth_timeout"
                            timeout = float(getattr(self._adapter, "auth_timeout_s", 10.0))
                            self._last_error = f"no authentication reply within {timeout:g} s"
                        else:
                            wait = min(wait, self._auth_deadline - now)
                    if stale is None and self._symbols and self._stale_after_s is not None:
                        if silent_s >= self._stale_after_s:
                            stale = self._app
                            self._state = FeedState.STALE
                            self._close_intent = "stale"
                            self._last_error = (f"no message for {silent_s:.1f} s "
                                                f"(stale after {self._stale_after_s:g} s)")
                        else:
                            wait = min(wait, self._stale_after_s - silent_s)
                    if stale is None and self._outbox:
                        gen, text = self._outbox[0]
                        if gen != self._generation:
                            self._outbox.popleft()
                            continue
                        delay = self._bucket.delay(now)
                        if delay <= 0:
                            self._bucket.take(now)
                            self._outbox.popleft()
                            send = (self._app, text)
                        else:
                            wait = min(wait, delay)
                    wait = min(wait, self._next_heartbeat - now)
                if send is None and stale is None:
                    self._wake.wait(max(wait, 0.001))
                    continue
            if stale is not None:
                log.warning("%s: %s", self.name, self._last_error)
                self._cut(stale)
            if send is not None:
                app, text = send
                try:
                    app.send(text)
                except Exception as exc:  # the connection is going down; resubscribe covers it
                    log.debug("%s: send failed: %s", self.name, explain_error(exc, self._secrets))

    def _heartbeat(self, now: float) -> None:
        # Caller holds the lock. Heartbeats jump the queue: a vendor that hears none drops
        # the connection, while a subscribe can wait a moment. One at a time: while the
        # last one still waits for the rate limit, no other is queued (they would crowd out
        # everything else when the interval is close to the rate).
        interval = getattr(self._adapter, "heartbeat_interval_s", None)
        self._next_heartbeat = now + interval if interval else math.inf
        if self._outbox and self._outbox[0][1] is self._queued_heartbeat:
            return
        try:
            text = self._adapter.heartbeat_message()
        except Exception:
            log.exception("%s: adapter heartbeat_message() failed", self.name)
            return
        if text is not None:
            self._queued_heartbeat = text
            self._outbox.appendleft((self._generation, text))

    def _silent_s(self) -> float:
        # Seconds since the last message, or since the watch started (open / first symbol).
        return (time.monotonic_ns() - max(self._last_rx_ns, self._watch_from_ns)) / 1e9

    def _report(self, name: str, detail: dict) -> None:
        try:
            self._sink.submit_control(name, time.time_ns(), detail)
        except Exception:
            log.exception("%s: sink.submit_control(%r) raised", self.name, name)


# ---------------------------------------------------------------------------------------
# SnapshotFetcher
# ---------------------------------------------------------------------------------------


class SnapshotFetcher:
    """Fetch REST depth snapshots on a daemon thread and hand the bodies to a sink.

    ``request(symbol, url)`` queues a GET unless one for that symbol is already in flight.
    The worker retries failures with :func:`backoff` (at most ``max_attempts`` tries; HTTP
    429/418 wait for the server's ``Retry-After``), then calls
    ``sink.submit_snapshot(symbol, body, recv_ns)`` or
    ``sink.submit_control("snapshot_error", recv_ns, {"symbol", "error", "status"})``.
    Fatal answers (HTTP 451 geo-block, 401/403) are reported at once without retrying, and
    so is a wait longer than ``max_wait_s`` (a 418 ban can last days). The thread starts on
    the first request (or :meth:`start`).

    Args:
        sink: The engine.
        timeout_s: Socket timeout per request, seconds.
        max_attempts: Tries per request (>= 1).
        max_wait_s: Longest wait between tries, seconds.
        headers: Extra HTTP headers (e.g. an API key); their values never appear in errors.
        name: Thread name.
        hints: Vendor advice per HTTP status (``adapter.http_hints``) for error messages.
    """

    def __init__(
        self,
        sink: Any,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_wait_s: float = 60.0,
        headers: dict[str, str] | None = None,
        name: str = "snapshots",
        hints: dict[int, str] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {max_attempts!r}")
        self._sink = sink  # the engine
        self._timeout_s = timeout_s  # per request, s
        self._max_attempts = max_attempts  # tries per request
        self._max_wait_s = max_wait_s  # longest retry wait, s
        self._headers = {"User-Agent": "tickscope", **(headers or {})}
        self._secrets = [v for k, v in self._headers.items() if _SECRET_NAME.search(k)]
        self._name = name
        self._hints = hints  # vendor advice per HTTP status
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()  # (symbol, url)
        self._in_flight: set[str] = set()  # symbols queued or being fetched
        self._lock = threading.Lock()  # guards _in_flight and _thread
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SnapshotFetcher":
        """Start the worker thread (idempotent); return self."""
        with self._lock:
            if self._thread is None and not self._stop_event.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return self

    def request(self, symbol: str, url: str) -> bool:
        """Queue a snapshot GET for ``symbol``; return False if one is already in flight."""
        with self._lock:
            if symbol in self._in_flight or self._stop_event.is_set():
                return False
            self._in_flight.add(symbol)
        self.start()
        self._queue.put((symbol, url))
        return True

    def in_flight(self) -> list[str]:
        """Return the symbols with a request queued or running."""
        with self._lock:
            return sorted(self._in_flight)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker (abandoning queued requests) and wait up to ``timeout`` s."""
        self._stop_event.set()
        self._queue.put(None)
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop_event.is_set():
            item = self._queue.get()
            if item is None:
                break
            symbol, url = item
            try:
                self._fetch(symbol, url)
            except Exception:
                log.exception("%s: snapshot of %s failed unexpectedly", self._name, symbol)
                self._done(symbol)

    def _done(self, symbol: str) -> None:
        # Released before the sink hears, so the sink may ask again straight away.
        with self._lock:
            self._in_flight.discard(symbol)

    def _fetch(self, symbol: str, url: str) -> None:
        delays = backoff()
        secrets = self._secrets + _url_secrets(url)
        for attempt in range(1, self._max_attempts + 1):
            try:
                request = urllib.request.Request(url, headers=self._headers)
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    body = response.read()
            except Exception as exc:
                message = explain_error(exc, secrets, self._hints)
                wait = next(delays)
                floor = retry_after_s(exc)
                if floor is not None:
                    wait = max(wait, floor)
                give_up = (classify_error(exc) == "fatal" or attempt == self._max_attempts
                           or wait > self._max_wait_s)
                if give_up or self._stop_event.is_set():
                    if attempt > 1:
                        message = f"{message} (after {attempt} attempts)"
                    log.warning("%s: snapshot of %s failed: %s", self._name, symbol, message)
                    self._done(symbol)
                    self._report_error(symbol, message, _http_status(exc))
                    return
                log.info("%s: snapshot of %s: %s; retry in %.1f s", self._name, symbol, message, wait)
                if self._stop_event.wait(wait):
                    self._done(symbol)
                    return
                continue
            recv_ns = time.time_ns()
            self._done(symbol)
            try:
                self._sink.submit_snapshot(symbol, body, recv_ns)
            except Exception:
                log.exception("%s: sink.submit_snapshot raised", self._name)
            return

    def _report_error(self, symbol: str, message: str, status: int | None) -> None:
        try:
            self._sink.submit_control("snapshot_error", time.time_ns(),
                                      {"symbol": symbol, "error": message, "status": status})
        except Exception:
            log.exception("%s: sink.submit_control raised", self._name)
