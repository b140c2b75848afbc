"""I/O-facing error policy: which connection and REST errors are worth retrying, and words.

Pure functions over the exceptions websocket-client and urllib raise (the websockets
library's ``process_exception`` split), tested without sockets:
:func:`classify_error` decides retry or give up, :func:`retry_after_s` how long the server
asked us to wait, :func:`explain_error` says why in one line without secrets, and
:func:`safe_url` / :func:`url_secrets` keep tokens out of what is shown. For REST calls
retried in a loop (``feed.io.rest``), :class:`Retry` is a judged answer worth another try
and :func:`retry_wait` the wait before it, or giving up.
"""

from __future__ import annotations

import math
import socket
import ssl
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import websocket

from feed.vendors._common import SECRET_NAME, redact

__all__ = ["Verdict", "classify_error", "retry_after_s", "explain_error", "http_status",
           "safe_url", "url_secrets", "Retry", "retry_wait"]

Verdict = Literal["retry", "fatal"]

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


def http_status(exc: BaseException) -> int | None:
    """Return the HTTP status of a refused handshake or REST request, or None."""
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
    status = http_status(exc)
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
    status = http_status(exc)
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

    Parameters
    ----------
    exc
        The error.
    secrets
        Strings to mask wherever they occur (token values, header values).
    hints
        Vendor advice per HTTP status (``adapter.http_hints``), used instead of the
        generic words; ``{wait}`` in it becomes the Retry-After wait, seconds.
    """
    status = http_status(exc)
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
    kept = [p for p in parts.query.split("&") if p and not SECRET_NAME.search(p.split("=", 1)[0])]
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), ""))


def url_secrets(url: str) -> list[str]:
    """Return the values in ``url`` that must never be shown (password, secret queries)."""
    # Values that must never be shown: secret-looking query values and the password.
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password or "", parts.username or ""]
    for p in parts.query.split("&"):
        name, _, value = p.partition("=")
        if value and SECRET_NAME.search(name):
            found.append(value)
    return [s for s in found if s]


@dataclass(frozen=True)
class Retry:
    """A REST answer (or error) worth another attempt.

    Attributes
    ----------
    message : str
        Why, in one line without secrets (logged with each retry, and in the error when
        the attempts run out).
    floor_s : float or None
        Least wait the server asked for (``Retry-After``), seconds; None: no floor.
    prefix : str
        Words put before ``message`` when giving up (e.g. ``"endpoint unavailable: "``).
    """

    message: str
    floor_s: float | None = None
    prefix: str = ""


def retry_wait(delay_s: float, floor_s: float | None, attempt: int, max_attempts: int,
               max_wait_s: float) -> float | None:
    """Return the wait before the next attempt, seconds, or None to give up.

    Parameters
    ----------
    delay_s : float
        The back-off's next delay (``feed.core.pacing.backoff``).
    floor_s : float or None
        Least wait the server asked for (:attr:`Retry.floor_s`).
    attempt : int
        The attempt that just failed, from 1.
    max_attempts : int
        Attempts allowed in all.
    max_wait_s : float
        Longest wait accepted (a 418 ban can last days): a longer one gives up at once.
    """
    wait = max(delay_s, floor_s or 0.0)
    if attempt >= max_attempts or wait > max_wait_s:
        return None
    return wait
