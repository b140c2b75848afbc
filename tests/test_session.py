"""Tests for the sans-I/O connection state machine (feed/core/session.py).

No sockets, threads or clocks: each test feeds the session events with made-up times
(seconds) and asserts the actions it returns, the way the websockets library tests its
protocol core.
"""

from __future__ import annotations

import json

import pytest

from feed.core.events import FeedClosed, FeedError, FeedOpened
from feed.core.session import Close, Failure, FeedState, GiveUp, Report, RetryAt, Send, Session
from feed.vendors.base import VendorBase


class Adapter(VendorBase):
    """A vendor speaking a tiny JSON dialect; traits are set per test."""

    name = "fake"
    max_messages_per_s = 1000.0

    def __init__(self, **traits):
        for key, value in traits.items():
            setattr(self, key, value)
        self.opens = 0

    def url(self, symbols=()):
        return "wss://stocks" if any(s.endswith("$US") for s in symbols) else "wss://crypto"

    def subscribe_messages(self, symbols):
        return [json.dumps({"sub": list(symbols)})]

    def unsubscribe_messages(self, symbols):
        return [json.dumps({"unsub": list(symbols)})]

    def heartbeat_message(self):
        return "ping"

    def on_open(self):
        self.opens += 1


def reports(actions, kind):
    return [a.event for a in actions if isinstance(a, Report) and isinstance(a.event, kind)]


def drain(session, now):
    """Return the texts the session sends from ``now`` on, ticking at its wake times."""
    sent = []
    t = now
    for _ in range(1000):
        actions, wake = session.tick(t)
        sent += [a.text for a in actions if isinstance(a, Send)]
        if not session.outbox:
            return sent
        t = t if actions else wake
    raise AssertionError("the outbox never drained")


def opened(adapter=None, symbols=("BTCUSDT",), now=0.0, **kwargs) -> Session:
    s = Session(adapter or Adapter(), symbols=symbols, rng=lambda: 0.0, **kwargs)
    s.begin_attempt(now)
    s.on_open(now)
    return s


# -- opening -------------------------------------------------------------------------------


def test_on_open_when_first_connection_reports_generation_one_and_subscribes_every_symbol():
    adapter = Adapter()
    s = Session(adapter, symbols=["BTCUSDT", "ETHUSDT"])
    assert s.begin_attempt(0.0) == "wss://crypto" and s.state is FeedState.CONNECTING
    actions = s.on_open(0.0)
    assert reports(actions, FeedOpened) == [FeedOpened(0, generation=1)]
    assert s.state is FeedState.LIVE and adapter.opens == 1
    assert drain(s, 0.0) == ['{"sub": ["BTCUSDT", "ETHUSDT"]}']


def test_on_open_when_reconnected_resubscribes_the_full_list_for_a_replacing_adapter():
    s = opened(Adapter(replaces_subscriptions=True), symbols=["A"])
    drain(s, 0.0)
    s.subscribe("B", 0.1)
    assert drain(s, 0.1) == ['{"sub": ["A", "B"]}']  # full list: the request replaces the last
    s.on_close(5.0, Failure("retry", "dropped"))
    s.begin_attempt(6.0)
    assert reports(s.on_open(6.0), FeedOpened)[0].generation == 2
    assert drain(s, 6.0) == ['{"sub": ["A", "B"]}']


def test_subscribe_when_not_replacing_sends_only_the_new_symbols():
    s = opened(symbols=["A"])
    drain(s, 0.0)
    s.subscribe(["A", "B"], 0.1)
    s.unsubscribe("A", 0.1)
    assert drain(s, 0.1) == ['{"sub": ["B"]}', '{"unsub": ["A"]}']


def test_subscribe_when_adapter_refuses_raises_and_changes_nothing():
    class Limited(Adapter):
        def validate_subscription(self, symbols):
            if len(symbols) > 1:
                raise ValueError("plan limit of 1")
            return list(symbols)

    s = opened(Limited(), symbols=["A"])
    drain(s, 0.0)
    with pytest.raises(ValueError, match="plan limit"):
        s.subscribe("B", 0.1)
    assert list(s.symbols) == ["A"] and drain(s, 0.1) == []


def test_subscribe_when_symbols_need_another_endpoint_closes_to_move_at_once():
    s = opened(symbols=["BTCUSDT"])
    actions = s.subscribe("AAPL$US", 1.0)
    assert [type(a) for a in actions] == [Close]
    after = s.on_close(2.0, None)
    retry = [a for a in after if isinstance(a, RetryAt)][0]
    assert retry.delay_s == 0.0 and s.begin_attempt(2.0) == "wss://stocks"
    assert "planned" in repr(reports(after, FeedError)[0]) and reports(after, FeedError)[0].planned


# -- backoff and planned reconnects ------------------------------------------------------------


def test_on_close_when_attempts_keep_failing_backs_off_doubling_to_the_cap():
    s = Session(Adapter(), symbols=["A"], rng=lambda: 0.0, backoff_initial_s=0.5, backoff_cap_s=4.0)
    delays = []
    now = 0.0
    for _ in range(6):
        s.begin_attempt(now)
        retry = [a for a in s.on_close(now, Failure("retry", "refused")) if isinstance(a, RetryAt)][0]
        delays.append(retry.delay_s)
        now = retry.at
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert s.state is FeedState.RECONNECTING and s.retry.reconnects == 6 and s.last_error == "refused"


def test_on_close_when_connection_stayed_up_a_minute_resets_the_backoff():
    s = Session(Adapter(), symbols=["A"], rng=lambda: 0.0)
    for now in (0.0, 1.0, 3.0):
        s.begin_attempt(now)
        s.on_close(now, Failure("retry", "refused"))
    s.begin_attempt(10.0)
    s.on_open(10.0)
    actions = s.on_close(75.0, Failure("retry", "reset by peer"))
    assert [a.delay_s for a in actions if isinstance(a, RetryAt)] == [0.5]
    assert reports(actions, FeedClosed)[0].generation == 1


def test_on_close_when_server_closes_a_long_lived_connection_reconnects_at_once():
    s = opened()
    actions = s.on_close(61.0, None, code=1001, reason="going away")
    err = reports(actions, FeedError)[0]
    assert err.planned and err.retry_in_s == 0.0 and s.retry.planned == 1
    assert reports(actions, FeedClosed) == [FeedClosed(0, generation=1, code=1001, reason="going away")]


def test_reconnect_when_planned_is_immediate_unless_the_connection_is_too_young():
    s = opened()
    assert [type(a) for a in s.reconnect("serverShutdown", 5.0, planned=True)] == [Close]
    assert reports(s.on_close(5.0, None), FeedError)[0].retry_in_s == 0.0
    s.begin_attempt(5.0)
    s.on_open(5.0)
    s.reconnect("serverShutdown again", 5.2, planned=True)
    err = reports(s.on_close(5.2, None), FeedError)[0]
    assert not err.planned and err.retry_in_s > 0 and err.message == "serverShutdown again"


def test_on_close_when_server_asks_to_slow_down_waits_at_least_that_long():
    s = opened()
    actions = s.on_close(1.0, Failure("retry", "HTTP 429", retry_after_s=30.0))
    assert [a.delay_s for a in actions if isinstance(a, RetryAt)] == [30.0]


def test_on_close_when_fatal_gives_up_without_a_retry():
    s = Session(Adapter(), symbols=["A"])
    s.begin_attempt(0.0)
    actions = s.on_close(0.1, Failure("fatal", "HTTP 451: geo-blocked"))
    assert [a for a in actions if isinstance(a, GiveUp)] == [GiveUp("HTTP 451: geo-blocked")]
    assert reports(actions, FeedError)[0].fatal and not [a for a in actions if isinstance(a, RetryAt)]
    assert s.state is FeedState.FAILED and s.retry_at is None


def test_fail_when_waiting_to_retry_stops_further_attempts_with_the_message():
    s = opened()
    s.on_close(1.0, Failure("retry", "dropped"))
    assert s.fail("token refused", 1.1) == []  # nothing open to close
    actions = s.begin_attempt(2.0)
    assert isinstance(actions, list) and GiveUp("token refused") in actions
    assert s.state is FeedState.FAILED and s.last_error == "token refused"
    assert s.fail("another reason", 3.0) == [] and s.last_error == "token refused"  # first wins


def test_fail_when_live_closes_and_the_close_gives_up():
    s = opened()
    assert [type(a) for a in s.fail("bad key", 1.0)] == [Close]
    assert any(isinstance(a, GiveUp) for a in s.on_close(1.1, Failure("retry", "closed")))


def test_stop_when_live_closes_and_reports_no_error():
    s = opened()
    assert [type(a) for a in s.stop(1.0)] == [Close]
    actions = s.on_close(1.1, None, code=1000)
    assert not reports(actions, FeedError) and reports(actions, FeedClosed)
    assert s.state is FeedState.STOPPED


# -- stale watchdog -------------------------------------------------------------------------------


def test_tick_when_no_frame_for_stale_after_s_cuts_the_link_and_retries():
    s = opened(stale_after_s=5.0)
    drain(s, 0.0)
    s.on_frame(1.0)
    assert s.tick(5.9)[0] == []
    actions, _ = s.tick(6.0)
    assert actions == [Close("no message for 5.0 s (stale after 5 s)", graceful=False)]
    assert s.state is FeedState.STALE
    err = reports(s.on_close(6.1, None), FeedError)[0]
    assert err.stale and "no message" in err.message and s.state is FeedState.RECONNECTING


def test_tick_when_one_symbol_quiet_on_a_busy_link_does_not_go_stale():
    s = opened(symbols=["BUSY", "QUIET"], stale_after_s=2.0)
    drain(s, 0.0)
    for i in range(1, 100):  # frames for BUSY only, every 0.1 s
        s.on_frame(i / 10)
        assert s.tick(i / 10 + 0.05)[0] == []
    assert s.state is FeedState.LIVE


def test_tick_when_nothing_subscribed_or_watchdog_off_never_goes_stale():
    s = opened(symbols=(), stale_after_s=1.0)
    assert s.tick(100.0)[0] == []
    s.subscribe("A", 100.0)  # silence before the first symbol does not count
    assert s.tick(100.5)[0] == [Send('{"sub": ["A"]}', 1)]
    s.set_stale_after(None, 100.5)
    assert s.tick(1000.0)[0] == []


# -- auth reply ---------------------------------------------------------------------------------


def test_on_auth_reply_when_accepted_goes_live_and_subscribes():
    s = opened(Adapter(requires_auth_reply=True, auth_timeout_s=3.0))
    assert s.state is FeedState.AUTHENTICATING and s.awaiting_auth
    assert drain(s, 0.0) == []
    assert s.on_auth_reply(0.5, None) == [] and s.state is FeedState.AUTHENTICATING
    s.on_auth_reply(1.0, True)
    assert s.state is FeedState.LIVE and not s.awaiting_auth
    assert drain(s, 1.0) == ['{"sub": ["BTCUSDT"]}']


def test_on_auth_reply_when_refused_fails_with_the_vendors_words():
    s = opened(Adapter(requires_auth_reply=True))
    assert [type(a) for a in s.on_auth_reply(0.5, False, "key refused")] == [Close]
    assert any(a == GiveUp("key refused") for a in s.on_close(0.6, None))


def test_tick_when_no_auth_reply_within_timeout_drops_and_retries():
    s = opened(Adapter(requires_auth_reply=True, auth_timeout_s=3.0), stale_after_s=None)
    assert s.tick(2.9)[0] == []
    actions, _ = s.tick(3.0)
    assert actions == [Close("no authentication reply within 3 s", graceful=False)]
    after = s.on_close(3.1, None)
    assert [type(a) for a in after if isinstance(a, RetryAt)] == [RetryAt]
    assert reports(after, FeedError)[0].message == "no authentication reply within 3 s"


# -- control-message pacing and heartbeats --------------------------------------------------------


def test_tick_when_a_burst_of_subscribes_sends_at_most_the_vendors_rate():
    s = opened(Adapter(max_messages_per_s=5.0), symbols=["S0"], stale_after_s=None)
    for i in range(1, 10):
        s.subscribe(f"S{i}", 0.0)
    times = []
    t = 0.0
    while s.outbox:
        actions, wake = s.tick(t)
        times += [t for a in actions if isinstance(a, Send)]
        t = t if actions else wake
    assert len(times) == 10
    assert all(b - a >= 0.2 - 1e-9 for a, b in zip(times, times[1:]))  # 5 per second


def test_tick_when_heartbeat_due_sends_it_ahead_of_queued_subscribes():
    s = opened(Adapter(heartbeat_interval_s=10.0, max_messages_per_s=1.0), symbols=["A"])
    assert s.tick(0.0)[0] == [Send('{"sub": ["A"]}', 1)]
    s.subscribe("B", 9.0)
    actions, _ = s.tick(10.0)
    assert actions == [Send("ping", 1)]


def test_tick_when_connection_replaced_drops_messages_of_the_old_one():
    s = opened(Adapter(max_messages_per_s=1.0), symbols=["A", "B"])
    s.subscribe("C", 0.0)
    s.on_close(0.1, Failure("retry", "dropped"))
    assert s.outbox == [] and s.tick(0.2)[0] == []


def test_session_when_arguments_out_of_range_raises():
    with pytest.raises(ValueError, match="stale_after_s"):
        Session(Adapter(), stale_after_s=0)
    with pytest.raises(ValueError, match="cap"):
        Session(Adapter(), backoff_initial_s=5.0, backoff_cap_s=1.0)
    with pytest.raises(ValueError, match="reset_after_s"):
        Session(Adapter(), reset_after_s=-1)
