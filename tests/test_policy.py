"""Tests for the pure feed policy: backoff, error classification and words, redaction,
URL masking (feed/io/policy.py, feed/vendors/_common.py) and the token bucket
(feed/core/pacing.py). No sockets: exceptions are built by hand.
"""

from __future__ import annotations

import itertools
import random
import socket
import urllib.error
from email.message import Message
from http import HTTPStatus

import pytest
import websocket

from feed.core.pacing import TokenBucket, backoff
from feed.io.policy import classify_error, explain_error, retry_after_s, retry_wait, safe_url
from feed.vendors._common import Secret, redact


# ---------------------------------------------------------------------------------------
# backoff
# ---------------------------------------------------------------------------------------


def test_backoff_when_default_first_delay_is_under_one_second():
    for _ in range(200):
        assert 0 < next(backoff()) < 1.0


def test_backoff_when_many_attempts_never_exceeds_cap():
    delays = list(itertools.islice(backoff(), 50))
    assert max(delays) <= 30.0
    # Undisturbed (no jitter) it reaches the cap exactly and stays there.
    plain = list(itertools.islice(backoff(jitter=0.0), 12))
    assert plain[:4] == [0.5, 1.0, 2.0, 4.0]
    assert plain[-1] == 30.0 and plain[-2] == 30.0


def test_backoff_when_jitter_extreme_stays_within_bounds():
    low = list(itertools.islice(backoff(rng=lambda: 0.999999), 8))
    high = list(itertools.islice(backoff(rng=lambda: 0.0), 8))
    bases = [min(30.0, 0.5 * 2**k) for k in range(8)]
    for lo, hi, base in zip(low, high, bases):
        assert hi == base
        assert base * 0.5 <= lo < base


def test_backoff_when_random_jitter_spreads_delays():
    rng = random.Random(7).random
    firsts = [next(backoff(rng=rng)) for _ in range(100)]
    assert min(firsts) >= 0.25 and max(firsts) <= 0.5
    assert len(set(firsts)) > 90


def test_backoff_when_reset_starts_again_from_first_delay():
    gen = backoff(jitter=0.0)
    grown = list(itertools.islice(gen, 6))
    assert grown[-1] == 16.0
    assert next(backoff(jitter=0.0)) == 0.5  # reset = a new generator


@pytest.mark.parametrize("kwargs", [
    {"initial": 0}, {"initial": -1}, {"factor": 0.5}, {"cap": 0.1}, {"jitter": 1.5},
])
def test_backoff_when_argument_out_of_range_raises(kwargs):
    with pytest.raises(ValueError):
        backoff(**kwargs)


# ---------------------------------------------------------------------------------------
# classify_error / explain_error / retry_after_s / redaction
# ---------------------------------------------------------------------------------------


def _bad_status(status: int, headers: dict | None = None) -> websocket.WebSocketBadStatusException:
    return websocket.WebSocketBadStatusException(
        f"Handshake status {status} X -+-+- {headers} -+-+- body", status, "X", headers or {}, b"body")


def _http_error(status: int, retry_after: str | None = None) -> urllib.error.HTTPError:
    headers = Message()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return urllib.error.HTTPError("http://h/x", status, "Reason", headers, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 451])
def test_classify_error_when_handshake_refused_is_fatal(status):
    assert classify_error(_bad_status(status)) == "fatal"
    assert classify_error(_http_error(status)) == "fatal"
    assert f"HTTP {status}" in explain_error(_bad_status(status))


def test_explain_error_when_451_says_geo_blocked():
    assert "geo-blocked" in explain_error(_bad_status(451))
    assert "credentials" in explain_error(_bad_status(401))


@pytest.mark.parametrize("status,floor", [(429, 30.0), (418, 120.0)])
def test_classify_error_when_rate_limited_retries_with_longer_wait(status, floor):
    exc = _bad_status(status)
    assert classify_error(exc) == "retry"
    assert retry_after_s(exc) == floor
    assert f"HTTP {status}" in explain_error(exc)


def test_retry_after_s_when_header_given_uses_it():
    assert retry_after_s(_bad_status(429, {"retry-after": "7"})) == 7.0
    assert retry_after_s(_http_error(418, "300")) == 300.0
    assert retry_after_s(_http_error(429, "Wed, 21 Oct 2015 07:28:00 GMT")) == 30.0
    assert retry_after_s(ConnectionResetError()) is None
    assert retry_after_s(_bad_status(503)) is None


@pytest.mark.parametrize("exc", [
    ConnectionResetError("reset"),
    ConnectionRefusedError(111, "refused"),
    socket.timeout("timed out"),
    TimeoutError(),
    OSError(101, "Network is unreachable"),
    websocket.WebSocketConnectionClosedException("Connection to remote host was lost."),
    websocket.WebSocketTimeoutException("ping/pong timed out"),
    websocket.WebSocketAddressException("[Errno -2] Name or service not known"),
    _bad_status(500),
    _bad_status(503),
    _bad_status(408),
    _http_error(502),
])
def test_classify_error_when_transient_is_retry(exc):
    assert classify_error(exc) == "retry"


def test_classify_error_when_bad_url_is_fatal():
    assert classify_error(ValueError("scheme http is invalid")) == "fatal"


def test_explain_error_when_secret_given_masks_it():
    exc = ConnectionResetError("peer reset for wss://h/ws?token=SECRETXYZ&a=1 key SECRETXYZ")
    text = explain_error(exc, ["SECRETXYZ"])
    assert "SECRETXYZ" not in text
    assert "token=***" in text


def test_explain_error_when_bad_status_leaves_out_response_headers_and_body():
    text = explain_error(_bad_status(502, {"set-cookie": "abc"}))
    assert "set-cookie" not in text and "body" not in text


def test_safe_url_when_token_in_query_strips_it():
    url = "wss://user:pw@quote.example.com:8443/ws?token=abc123&streams=btcusdt@trade&apiKey=k"
    assert safe_url(url) == "wss://quote.example.com:8443/ws?streams=btcusdt@trade"
    assert safe_url("ws://127.0.0.1:9000/ws") == "ws://127.0.0.1:9000/ws"


def test_redact_when_token_like_parameter_masks_value():
    assert redact("GET /x?token=abc&b=2") == "GET /x?token=***&b=2"
    assert redact("uses SECRET here", ["SECRET"]) == "uses *** here"


# ---------------------------------------------------------------------------------------
# TokenBucket
# ---------------------------------------------------------------------------------------


def test_token_bucket_when_rate_five_spaces_messages_200ms():
    b = TokenBucket(5.0, now=0.0)
    assert b.take(0.0)
    assert not b.take(0.1)
    assert b.delay(0.1) == pytest.approx(0.1)
    assert b.take(0.2)
    # Over any stretch of time the bucket lets through at most rate * t + burst.
    sent = sum(b.take(t / 100) for t in range(20, 220))
    assert sent <= 5 * 2.0 + 1


def test_token_bucket_when_unlimited_never_waits():
    b = TokenBucket(None)
    assert all(b.take(0.0) for _ in range(1000))
    assert b.delay(0.0) == 0.0


def test_explain_error_when_vendor_hint_given_uses_it_with_the_wait():
    hints = {451: "refused here; try --binance-host data", 429: "slow down; waiting {wait:g} s"}
    assert explain_error(_bad_status(451), hints=hints) == "HTTP 451: refused here; try --binance-host data"
    assert explain_error(_bad_status(429, {"retry-after": "7"}), hints=hints) == "HTTP 429: slow down; waiting 7 s"
    assert "geo-blocked" in explain_error(_bad_status(451), hints={403: "x"})  # no hint: generic words


def test_redact_when_adapter_secret_url_quoted_masks_both_forms():
    assert redact("a%2Fbcd and a/bcd", Secret("a/bcd"), url_quoted=True) == "*** and ***"
    assert redact("abc", Secret("abc")) == "abc"  # too short to search for


# retry_wait: the wait before a REST retry, or giving up


def test_retry_wait_when_server_asks_longer_than_the_backoff_waits_that_long():
    assert retry_wait(0.5, 7.0, 1, 4, 120.0) == 7.0
    assert retry_wait(0.5, None, 1, 4, 120.0) == 0.5
    assert retry_wait(2.0, 0.0, 3, 4, 120.0) == 2.0


def test_retry_wait_when_attempts_or_accepted_wait_run_out_gives_up():
    assert retry_wait(0.5, None, 4, 4, 120.0) is None  # the last attempt failed
    assert retry_wait(0.5, 300.0, 1, 4, 120.0) is None  # a 418 ban longer than accepted
    assert retry_wait(0.5, 120.0, 1, 4, 120.0) == 120.0
