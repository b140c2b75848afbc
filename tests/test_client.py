"""Tests for the I/O shells feed/io/client.py (FeedClient) and feed/io/snapshots.py.

Pure policy is in test_policy.py and the connection state machine in test_session.py.
The FeedClient and SnapshotFetcher shells are tested against real loopback servers
defined here: a minimal Binance-like ``websockets`` server (replies to SUBSCRIBE,
pushes a few trades, can drop the connection or go silent) and a tiny ``http.server``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import itertools
import json
import socket
import threading
import time
from http import HTTPStatus

import pytest
import websocket
from websockets.asyncio.server import serve

from feed.core.events import FeedClosed, FeedError, FeedOpened, SnapshotFailed
from feed.io.client import FeedClient, FeedState
from feed.io.snapshots import SnapshotFetcher
from feed.vendors.base import VendorBase

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------------------------------
# Loopback fixtures: a Binance-like server, a fake adapter, a recording sink
# ---------------------------------------------------------------------------------------


class FakeExchange:
    """A minimal Binance-dialect WebSocket server on 127.0.0.1, in its own thread.

    ``modes`` sets each connection's behaviour in order (then ``default_mode``):
    ``"normal"`` replies to SUBSCRIBE and pushes ``pushes`` trades per stream;
    ``"drop"`` does the same, then aborts the TCP connection; ``"close"`` then closes
    cleanly (code 1001, like Binance's 24 h cut); ``"silent"`` never answers;
    ``"stream"`` pushes a trade of the *first* stream every 50 ms (the others stay quiet);
    ``"close_later"`` / ``"drop_later"`` close cleanly / abort ``later_s`` after the
    subscription; ``"hostile"`` sends a binary frame and a 2 MB text frame, then trades.
    ``reject`` makes the HTTP upgrade fail with that status.
    """

    def __init__(self, modes=(), *, default_mode="normal", pushes=3, reject=None, later_s=0.8,
                 ping_s=None):
        self.later_s = later_s
        self.ping_s = ping_s  # server pings every ping_s s; no pong within ping_s: closed
        self.modes = list(modes)
        self.default_mode = default_mode
        self.pushes = pushes
        self.reject = reject
        self.received: list[tuple[int, float, object]] = []  # (connection, monotonic s, msg)
        self.handshakes = 0
        self.connections = 0
        self.paths: list[str] = []
        self._trade_id = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def messages(self, conn=None, method=None):
        return [m for c, _, m in list(self.received)
                if (conn is None or c == conn) and (method is None or m.get("method") == method)]

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self):
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, process_request=self._process_request,
                         ping_interval=self.ping_s, ping_timeout=self.ping_s) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _process_request(self, connection, request):
        self.handshakes += 1
        self.paths.append(request.path)
        if self.reject is not None:
            return connection.respond(HTTPStatus(self.reject), "refused\n")
        return None

    async def _handler(self, ws):
        conn = self.connections
        self.connections += 1
        mode = self.modes[conn] if conn < len(self.modes) else self.default_mode
        async for text in ws:
            msg = json.loads(text)
            self.received.append((conn, time.monotonic(), msg))
            if mode == "silent":
                continue
            if msg.get("method") in ("SUBSCRIBE", "UNSUBSCRIBE"):
                await ws.send(json.dumps({"result": None, "id": msg.get("id")}))
            if msg.get("method") == "SUBSCRIBE" and mode == "stream":
                first = msg["params"][0]
                asyncio.ensure_future(self._stream(ws, first))
                continue
            if msg.get("method") == "SUBSCRIBE" and mode == "hostile":
                await ws.send(b"\x00\x01binary")
                await ws.send('{"pad":"' + "x" * (2 << 20) + '"}')
            if msg.get("method") == "SUBSCRIBE":
                for stream in msg["params"]:
                    for _ in range(self.pushes):
                        await ws.send(json.dumps({
                            "e": "trade", "E": 1, "s": stream.split("@")[0].upper(),
                            "t": next(self._trade_id), "p": "1.5", "q": "2", "T": 1, "m": False,
                        }))
                if mode == "drop":
                    ws.transport.abort()
                    return
                if mode == "close":
                    await ws.close(1001, "going away")
                    return
                if mode in ("close_later", "drop_later"):
                    await asyncio.sleep(self.later_s)
                    if mode == "drop_later":
                        ws.transport.abort()
                    else:
                        await ws.close(1001, "going away")
                    return

    async def _stream(self, ws, stream):
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                await ws.send(json.dumps({
                    "e": "trade", "E": 1, "s": stream.split("@")[0].upper(),
                    "t": next(self._trade_id), "p": "1.5", "q": "2", "T": 1, "m": False,
                }))
                await asyncio.sleep(0.05)
        except ConnectionClosed:
            pass


class FakeAdapter(VendorBase):
    """Vendor adapter speaking the Binance control dialect."""

    name = "fake"

    def __init__(self, url, *, rate=50.0, heartbeat_s=None, per_symbol=False, header=None):
        self._url = url
        self.max_messages_per_s = rate
        self.heartbeat_interval_s = heartbeat_s
        self._per_symbol = per_symbol
        self._ids = itertools.count(1)
        self._header = dict(header or {})

    def header(self):
        return dict(self._header)

    def url(self, symbols=()):
        return self._url

    def _request(self, method, params):
        return json.dumps({"method": method, "params": params, "id": next(self._ids)})

    def _messages(self, method, symbols):
        params = [f"{s.lower()}@trade" for s in symbols]
        if self._per_symbol:
            return [self._request(method, [p]) for p in params]
        return [self._request(method, params)]

    def subscribe_messages(self, symbols):
        return self._messages("SUBSCRIBE", symbols)

    def unsubscribe_messages(self, symbols):
        return self._messages("UNSUBSCRIBE", symbols)

    def heartbeat_message(self):
        return json.dumps({"method": "PING"}) if self.heartbeat_interval_s else None


def _control_detail(event):
    # The typed event as (name, detail dict) in the words these tests were written in.
    if isinstance(event, FeedOpened):
        return "open", {"generation": event.generation}
    if isinstance(event, FeedClosed):
        return "close", {"generation": event.generation, "code": event.code, "reason": event.reason}
    if isinstance(event, FeedError):
        detail = {"generation": event.generation, "message": event.message,
                  "verdict": "fatal" if event.fatal else "retry", "retry_in_s": event.retry_in_s}
        detail.update({k: True for k in ("stale", "planned") if getattr(event, k)})
        return "error", detail
    if isinstance(event, SnapshotFailed):
        return "snapshot_error", {"symbol": event.symbol, "error": event.error, "status": event.status}
    raise AssertionError(f"unexpected control event {event!r}")


class RecordingSink:
    """Records what the client hands over; ``wait`` polls a condition with a timeout."""

    def __init__(self):
        self.messages: list[tuple[object, int]] = []
        self.controls: list[tuple[str, int, dict]] = []
        self.snapshots: list[tuple[str, bytes, int]] = []
        self._cond = threading.Condition()

    def submit(self, raw, recv_ns):
        with self._cond:
            self.messages.append((raw, recv_ns))
            self._cond.notify_all()
        return True

    def submit_control(self, event):
        name, detail = _control_detail(event)
        with self._cond:
            self.controls.append((name, event.recv_ns, detail))
            self._cond.notify_all()

    def submit_rejected(self, reason, sample, recv_ns):
        return True

    def submit_snapshot(self, symbol, body, recv_ns):
        with self._cond:
            self.snapshots.append((symbol, body, recv_ns))
            self._cond.notify_all()

    def events(self, name):
        return [d for n, _, d in list(self.controls) if n == name]

    def trades(self):
        return [json.loads(m) for m, _ in list(self.messages) if b'"trade"' in m]

    def wait(self, predicate, timeout=5.0):
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), "timed out waiting"


def wait_until(predicate, timeout=5.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting")


@pytest.fixture
def clients():
    made: list[FeedClient] = []
    yield made
    for c in made:
        c.stop(timeout=3)


def start_client(clients, adapter, sink, **kwargs) -> FeedClient:
    kwargs.setdefault("ping_interval_s", 0)
    client = FeedClient(adapter, sink, **kwargs)
    clients.append(client)
    client.start()
    return client


# ---------------------------------------------------------------------------------------
# FeedClient against the loopback server
# ---------------------------------------------------------------------------------------


def test_client_when_connected_subscribes_and_delivers_bytes(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT", "ETHUSDT"])
        sink.wait(lambda: len(sink.trades()) == 6)
        assert sink.events("open") == [{"generation": 1}]
        assert all(isinstance(raw, bytes) for raw, _ in sink.messages)
        assert all(abs(ns - time.time_ns()) < 10 * 10**9 for _, ns in sink.messages)
        subs = ex.messages(method="SUBSCRIBE")
        assert subs[0]["params"] == ["btcusdt@trade", "ethusdt@trade"]
        st = client.status()
        assert st.state == "live" and client.state is FeedState.LIVE
        assert st.generation == 1 and st.reconnects == 0
        assert st.next_retry_in_s is None
        assert st.last_message_age_s is not None and st.last_message_age_s < 5
        assert st.url == ex.url and st.messages == 7


def test_client_when_server_drops_reconnects_and_resubscribes_every_symbol(clients):
    with FakeExchange(modes=["drop"]) as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"])
        sink.wait(lambda: sink.events("open")[:1] == [{"generation": 1}])
        client.subscribe(["ETHUSDT"])  # may land on the first or the second connection
        sink.wait(lambda: len(sink.events("open")) >= 2, timeout=5)
        assert sink.events("open")[1] == {"generation": 2}
        wait_until(lambda: ex.messages(conn=1, method="SUBSCRIBE"))
        params = [p for m in ex.messages(conn=1, method="SUBSCRIBE") for p in m["params"]]
        assert sorted(params) == ["btcusdt@trade", "ethusdt@trade"]
        errors = sink.events("error")
        assert errors and errors[0]["verdict"] == "retry" and errors[0]["retry_in_s"] < 1.0
        assert sink.events("close")[0]["generation"] == 1
        st = client.status()
        assert st.generation == 2 and st.reconnects == 1 and st.state == "live"


def test_client_when_server_closes_cleanly_reconnects(clients):
    with FakeExchange(modes=["close"]) as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"])
        sink.wait(lambda: len(sink.events("open")) == 2 and len(sink.trades()) == 6)
        assert sink.events("close")[0] == {"generation": 1, "code": 1001, "reason": "going away"}
        assert "1001" in sink.events("error")[0]["message"]
        assert client.status().state == "live"


def test_client_when_server_silent_goes_stale_and_reconnects(clients):
    with FakeExchange(modes=["silent"]) as ex:
        sink = RecordingSink()
        states = []
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"],
                              stale_after_s=0.5)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and len(sink.events("open")) < 2:
            states.append(client.status().state)
            time.sleep(0.005)
        assert [d["generation"] for d in sink.events("open")] == [1, 2]
        stale = [d for d in sink.events("error") if d.get("stale")]
        assert stale and "no message" in stale[0]["message"]
        assert "stale" in states or "reconnecting" in states
        sink.wait(lambda: len(sink.trades()) == 3)  # the second connection is normal
        assert "no message" in client.status().last_error


def test_client_when_not_subscribed_does_not_go_stale(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, stale_after_s=0.3)
        sink.wait(lambda: sink.events("open"))
        time.sleep(0.8)
        assert client.status().state == "live" and len(sink.events("open")) == 1
        client.subscribe("BTCUSDT")  # the watch starts now, not at open
        sink.wait(lambda: len(sink.trades()) == 3)
        assert len(sink.events("open")) == 1


def test_client_when_one_symbol_quiet_on_a_busy_connection_does_not_go_stale(clients):
    with FakeExchange(default_mode="stream") as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT", "QUIETUSDT"],
                              stale_after_s=0.4)
        sink.wait(lambda: len(sink.trades()) >= 3)
        time.sleep(1.5)  # QUIETUSDT never trades; BTCUSDT does every 50 ms
        assert [d["generation"] for d in sink.events("open")] == [1]
        assert not sink.events("error") and client.status().state == "live"
        assert {t["s"] for t in sink.trades()} == {"BTCUSDT"}


def test_client_when_stale_watchdog_switched_off_stays_on_a_silent_connection(clients):
    with FakeExchange(modes=["silent"]) as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"], stale_after_s=0.3)
        client.stale_after_s = None
        sink.wait(lambda: sink.events("open"))
        time.sleep(0.8)
        assert len(sink.events("open")) == 1 and client.status().stale_after_s is None
        with pytest.raises(ValueError):
            client.stale_after_s = 0


def test_client_when_server_closes_a_long_lived_connection_reconnects_at_once(clients):
    # Binance cuts connections at 24 h with a close frame: a planned disconnect. Here
    # "long-lived" is reset_after_s = 0.5 s and the server closes after 0.8 s; the usual
    # wait would be >= 1.5 s (backoff_initial_s = 3).
    with FakeExchange(modes=["close_later"]) as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"],
                              reset_after_s=0.5, backoff_initial_s=3.0)
        client.session.retry.MIN_PLANNED_UPTIME_S = 0.2
        sink.wait(lambda: len(sink.events("open")) == 2, timeout=3)
        error = sink.events("error")[0]
        assert error["planned"] is True and error["retry_in_s"] == 0.0
        st = client.status()
        assert st.planned_reconnects == 1 and st.last_retry_delay_s == 0.0


def test_client_when_long_lived_connection_aborted_waits_the_backoff(clients):
    with FakeExchange(modes=["drop_later"]) as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"],
                              reset_after_s=0.5, backoff_initial_s=3.0)
        client.session.retry.MIN_PLANNED_UPTIME_S = 0.2
        sink.wait(lambda: sink.events("error"), timeout=3)
        error = sink.events("error")[0]
        assert "planned" not in error and 1.5 <= error["retry_in_s"] <= 3.0
        st = client.status()
        assert st.state == "reconnecting" and st.planned_reconnects == 0
        assert st.next_retry_at_ns > time.time_ns()


def test_reconnect_when_planned_reconnects_at_once_unless_connection_too_young(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"], backoff_initial_s=3.0)
        client.session.retry.MIN_PLANNED_UPTIME_S = 0.3
        sink.wait(lambda: sink.events("open"))
        time.sleep(0.4)
        client.reconnect("server shutdown notice", planned=True)
        sink.wait(lambda: len(sink.events("open")) == 2, timeout=2)
        assert sink.events("error")[0]["retry_in_s"] == 0.0
        wait_until(lambda: ex.messages(conn=1, method="SUBSCRIBE"))
        assert ex.messages(conn=1, method="SUBSCRIBE")[0]["params"] == ["btcusdt@trade"]
        client.reconnect("again, at once", planned=True)  # connection just opened: usual wait
        sink.wait(lambda: len(sink.events("error")) == 2, timeout=2)
        assert sink.events("error")[1]["retry_in_s"] >= 1.5


def test_client_when_binary_or_oversized_frame_arrives_counts_and_reports_it_without_delivering(clients):
    class Sink(RecordingSink):
        def __init__(self):
            super().__init__()
            self.rejected = []

        def submit_rejected(self, reason, sample, recv_ns):
            self.rejected.append((reason, sample))

    with FakeExchange(modes=["hostile"]) as ex:
        sink = Sink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"],
                              max_message_bytes=1 << 20)
        sink.wait(lambda: len(sink.trades()) == 3)
        assert [r for r, _ in sink.rejected] == ["binary_frame", "too_large"]
        assert sink.rejected[0][1] == b"\x00\x01binary" and len(sink.rejected[1][1]) == 64
        assert all(len(m) < 1000 for m, _ in sink.messages)  # the 2 MB frame was not delivered
        st = client.status()
        assert st.binary_frames == 1 and st.oversize_frames == 1 and st.state == "live"


def test_client_when_backoff_shortened_first_retry_follows_it(clients):
    with FakeExchange(modes=["drop"]) as ex:
        sink = RecordingSink()
        start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"], backoff_initial_s=0.02)
        sink.wait(lambda: len(sink.events("open")) == 2)
        assert sink.events("error")[0]["retry_in_s"] <= 0.02


def test_client_when_server_pings_answers_them_and_stays_connected(clients):
    # Binance pings every 20 s and drops a client that does not pong within a minute;
    # websocket-client answers pings itself. Here: a ping every 0.2 s, pong due in 0.2 s.
    with FakeExchange(default_mode="stream", ping_s=0.2) as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"])
        sink.wait(lambda: sink.events("open"))
        time.sleep(1.5)
        assert len(sink.events("open")) == 1 and not sink.events("error")
        assert client.status().state == "live"


def test_health_when_url_and_header_carry_tokens_never_shows_them(clients):
    from feed.io.engine import Engine

    with FakeExchange(reject=503) as ex:
        adapter = FakeAdapter(ex.url + "?token=SECRET123&streams=x", header={"X-Api-Key": "HDRSECRET9"})
        adapter.normalize_symbol = str.upper
        engine = Engine(adapter)
        client = FeedClient(adapter, engine, symbols=["BTCUSDT"], ping_interval_s=0)
        engine.attach(client)
        clients.append(client)
        client.start()
        engine.start()
        try:
            wait_until(lambda: client.status().reconnects >= 2, timeout=5)
            assert engine.wait_idle(5)
            text = json.dumps([engine.health(), dataclasses.asdict(engine.status())], default=str)
            assert "503" in text and "SECRET123" not in text and "HDRSECRET9" not in text
        finally:
            engine.stop()


def test_subscribe_when_connected_sends_at_once(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"])
        sink.wait(lambda: len(sink.trades()) == 3)
        t0 = time.monotonic()
        client.subscribe(["ETHUSDT", "BTCUSDT"])  # BTCUSDT already there: not resent
        sink.wait(lambda: len(sink.trades()) == 6, timeout=2)
        assert time.monotonic() - t0 < 1.0
        subs = ex.messages(method="SUBSCRIBE")
        assert [m["params"] for m in subs] == [["btcusdt@trade"], ["ethusdt@trade"]]
        assert {t["s"] for t in sink.trades()[3:]} == {"ETHUSDT"}
        client.unsubscribe("BTCUSDT")
        wait_until(lambda: ex.messages(method="UNSUBSCRIBE"), timeout=2)
        assert ex.messages(method="UNSUBSCRIBE")[0]["params"] == ["btcusdt@trade"]
        assert client.symbols == ["ETHUSDT"]


def test_client_when_rate_limited_spaces_control_messages(clients):
    with FakeExchange(pushes=0) as ex:
        sink = RecordingSink()
        adapter = FakeAdapter(ex.url, rate=5.0, per_symbol=True)
        start_client(clients, adapter, sink, symbols=["A1", "B2", "C3", "D4"])
        wait_until(lambda: len(ex.messages(method="SUBSCRIBE")) == 4, timeout=4)
        times = [t for _, t, m in ex.received if m.get("method") == "SUBSCRIBE"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) > 0.15, gaps  # 1 / 5 per second, less scheduling noise


def test_client_when_adapter_has_heartbeat_sends_it_every_interval(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        start_client(clients, FakeAdapter(ex.url, heartbeat_s=0.2), sink)
        sink.wait(lambda: sink.events("open"))
        time.sleep(1.0)
        pings = [t for _, t, m in ex.received if m.get("method") == "PING"]
        assert 3 <= len(pings) <= 6, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert min(gaps) > 0.15


def test_client_when_protocol_pings_enabled_stays_live(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"],
                              ping_interval_s=0.3)
        sink.wait(lambda: len(sink.trades()) == 3)
        time.sleep(1.0)  # several ping/pong rounds (the server answers pings itself)
        assert client.status().state == "live" and len(sink.events("open")) == 1


def test_stop_when_connected_returns_within_seconds(clients):
    with FakeExchange() as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"])
        sink.wait(lambda: len(sink.trades()) == 3)
        t0 = time.monotonic()
        client.stop()
        assert time.monotonic() - t0 < 3.0
        assert not client.is_alive()
        assert client.status().state == "stopped"
        assert sink.events("close")[-1]["generation"] == 1
        assert not sink.events("error")  # a stop is not an error
        client.stop()  # idempotent


def test_stop_when_server_ignores_close_frame_cuts_the_socket(clients):
    # A raw TCP server that completes the upgrade and then never reads or answers.
    import base64
    import hashlib

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    conns = []

    def accept():
        conn, _ = listener.accept()
        conns.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = [ln.split(b":", 1)[1].strip() for ln in request.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key")][0]
        accept_key = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key + b"\r\n\r\n")

    server = threading.Thread(target=accept, daemon=True)
    server.start()
    try:
        sink = RecordingSink()
        port = listener.getsockname()[1]
        client = start_client(clients, FakeAdapter(f"ws://127.0.0.1:{port}/ws"), sink)
        sink.wait(lambda: sink.events("open"))
        time.sleep(0.2)  # let the socket thread settle in its read loop
        t0 = time.monotonic()
        client.stop()
        assert FeedClient.CLOSE_TIMEOUT_S - 0.1 < time.monotonic() - t0 < FeedClient.CLOSE_TIMEOUT_S + 2.0
        assert not client.is_alive() and client.status().state == "stopped"
    finally:
        listener.close()
        for c in conns:
            c.close()


def test_stop_when_waiting_to_retry_returns_within_seconds(clients):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = RecordingSink()
    client = start_client(clients, FakeAdapter(f"ws://127.0.0.1:{port}/ws"), sink)
    wait_until(lambda: client.status().state == "reconnecting", timeout=5)
    st = client.status()
    assert st.next_retry_in_s is not None and st.next_retry_in_s < 1.0
    assert "refused" in st.last_error
    t0 = time.monotonic()
    client.stop()
    assert time.monotonic() - t0 < 3.0 and not client.is_alive()


def test_client_when_handshake_451_fails_without_leaking_token(clients):
    with FakeExchange(reject=451) as ex:
        sink = RecordingSink()
        adapter = FakeAdapter(ex.url + "?token=SECRET123&streams=x", header={"X-Api-Key": "HDRSECRET9"})
        client = start_client(clients, adapter, sink, symbols=["BTCUSDT"])
        wait_until(lambda: client.status().state == "failed", timeout=5)
        client.join(3)
        assert not client.is_alive()
        st = client.status()
        assert "451" in st.last_error and "geo-blocked" in st.last_error
        assert st.url == ex.url + "?streams=x"
        assert st.reconnects == 0 and ex.handshakes == 1
        errors = sink.events("error")
        assert errors[-1]["verdict"] == "fatal"
        everything = json.dumps([dataclasses.asdict(st), sink.controls])
        assert "SECRET123" not in everything and "HDRSECRET9" not in everything
        assert not sink.events("open") and not sink.events("close")


def test_client_when_connection_stays_up_resets_backoff(clients):
    # Every connection drops at once; with the reset threshold at 0 s every one of them
    # "stayed up long enough", so every wait is a first delay (< 0.5 s). With the default
    # 60 s the second wait grows (>= 0.5 s).
    with FakeExchange(default_mode="drop") as ex:
        sink = RecordingSink()
        client = FeedClient(FakeAdapter(ex.url), sink, symbols=["BTCUSDT"], ping_interval_s=0)
        client.session.retry.reset_after_s = 0.0
        clients.append(client)
        client.start()
        sink.wait(lambda: len(sink.events("error")) >= 3, timeout=5)
        assert all(e["retry_in_s"] <= 0.5 for e in sink.events("error")[:3])
    with FakeExchange(default_mode="drop") as ex:
        sink = RecordingSink()
        start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"])
        sink.wait(lambda: len(sink.events("error")) >= 2, timeout=5)
        first, second = (e["retry_in_s"] for e in sink.events("error")[:2])
        assert first <= 0.5 <= second <= 1.0


def test_client_when_bad_arguments_raises():
    with pytest.raises(ValueError, match="stale_after_s"):
        FeedClient(FakeAdapter("ws://x"), RecordingSink(), stale_after_s=0)
    with pytest.raises(ValueError, match="ping_interval_s"):
        FeedClient(FakeAdapter("ws://x"), RecordingSink(), ping_interval_s=-1)
    with pytest.raises(ValueError, match="initial"):
        FeedClient(FakeAdapter("ws://x"), RecordingSink(), backoff_initial_s=0)
    with pytest.raises(ValueError, match="cap"):
        FeedClient(FakeAdapter("ws://x"), RecordingSink(), backoff_initial_s=5, backoff_cap_s=1)
    with pytest.raises(ValueError, match="max_message_bytes"):
        FeedClient(FakeAdapter("ws://x"), RecordingSink(), max_message_bytes=0)


def test_status_when_never_started_is_connecting_and_stop_is_safe():
    client = FeedClient(FakeAdapter("ws://127.0.0.1:1/ws"), RecordingSink(), symbols=["X"])
    assert client.status().state == "connecting"
    client.stop()
    assert client.status().state == "stopped"


# ---------------------------------------------------------------------------------------
# SnapshotFetcher against a loopback HTTP server
# ---------------------------------------------------------------------------------------


class DepthServer:
    """Serves ``/depth?symbol=X``; ``script[symbol]`` lists (status, headers) to answer in
    turn (then 200). ``delay_s`` slows every answer down."""

    def __init__(self, script=None, delay_s=0.0):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.hits: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                symbol = self.path.split("symbol=")[-1].split("&")[0]
                owner.hits.append(symbol)
                time.sleep(delay_s)
                steps = owner.script.get(symbol)
                status, headers = steps.pop(0) if steps else (200, {})
                body = (json.dumps({"lastUpdateId": 7, "bids": [["1.0", "2.0"]], "asks": []})
                        if status == 200 else '{"code":-1003,"msg":"no"}').encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, symbol, token=None):
        extra = f"&apiKey={token}" if token else ""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/depth?symbol={symbol}{extra}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fetcher_sink():
    sink = RecordingSink()
    fetcher = SnapshotFetcher(sink)
    yield fetcher, sink
    fetcher.stop(timeout=3)


def test_snapshot_when_ok_submits_body_and_dedupes_in_flight(fetcher_sink):
    fetcher, sink = fetcher_sink
    with DepthServer(delay_s=0.3) as srv:
        assert fetcher.request("BTCUSDT", srv.url("BTCUSDT"))
        assert not fetcher.request("BTCUSDT", srv.url("BTCUSDT"))  # in flight
        assert fetcher.in_flight() == ["BTCUSDT"]
        sink.wait(lambda: sink.snapshots)
        symbol, body, recv_ns = sink.snapshots[0]
        assert symbol == "BTCUSDT" and json.loads(body)["lastUpdateId"] == 7
        assert isinstance(body, bytes) and recv_ns > 0
        assert srv.hits == ["BTCUSDT"]
        wait_until(lambda: not fetcher.in_flight())
        assert fetcher.request("BTCUSDT", srv.url("BTCUSDT"))  # free again
        sink.wait(lambda: len(sink.snapshots) == 2)


def test_snapshot_when_server_error_retries_then_succeeds(fetcher_sink):
    fetcher, sink = fetcher_sink
    with DepthServer({"ETHUSDT": [(500, {}), (503, {})]}) as srv:
        fetcher.request("ETHUSDT", srv.url("ETHUSDT"))
        sink.wait(lambda: sink.snapshots, timeout=5)
        assert srv.hits == ["ETHUSDT"] * 3
        assert not sink.events("snapshot_error")


def test_snapshot_when_451_reports_error_without_retry(fetcher_sink):
    fetcher, sink = fetcher_sink
    with DepthServer({"BTCUSDT": [(451, {})]}) as srv:
        fetcher.request("BTCUSDT", srv.url("BTCUSDT", token="TOPSECRET1"))
        sink.wait(lambda: sink.events("snapshot_error"))
        err = sink.events("snapshot_error")[0]
        assert err["symbol"] == "BTCUSDT" and err["status"] == 451
        assert "HTTP 451" in err["error"] and "geo-blocked" in err["error"]
        assert "TOPSECRET1" not in err["error"]
        assert srv.hits == ["BTCUSDT"] and not sink.snapshots


def test_snapshot_when_429_with_long_retry_after_gives_up_with_message(fetcher_sink):
    fetcher, sink = fetcher_sink
    with DepthServer({"BTCUSDT": [(429, {"Retry-After": "3600"})]}) as srv:
        fetcher.request("BTCUSDT", srv.url("BTCUSDT"))
        sink.wait(lambda: sink.events("snapshot_error"))
        err = sink.events("snapshot_error")[0]
        assert "HTTP 429" in err["error"] and "rate limited" in err["error"]
        assert srv.hits == ["BTCUSDT"]


def test_snapshot_when_429_with_short_retry_after_retries(fetcher_sink):
    fetcher, sink = fetcher_sink
    with DepthServer({"BTCUSDT": [(429, {"Retry-After": "0"})]}) as srv:
        fetcher.request("BTCUSDT", srv.url("BTCUSDT"))
        sink.wait(lambda: sink.snapshots, timeout=5)
        assert srv.hits == ["BTCUSDT"] * 2


def test_snapshot_when_stopped_returns_quickly():
    sink = RecordingSink()
    fetcher = SnapshotFetcher(sink)
    with DepthServer({"X": [(500, {})] * 10}) as srv:
        fetcher.request("X", srv.url("X"))
        wait_until(lambda: srv.hits)
        t0 = time.monotonic()
        fetcher.stop(timeout=3)
        assert time.monotonic() - t0 < 3.0
        assert not fetcher.request("Y", srv.url("Y"))  # stopped: refused


# ---------------------------------------------------------------------------------------
# Vendor capabilities: hints, fail(), validation, full-list subscribes,
# auth replies, Binance's message rate
# ---------------------------------------------------------------------------------------


def test_snapshot_when_451_and_vendor_hints_given_says_what_to_do():
    sink = RecordingSink()
    fetcher = SnapshotFetcher(sink, hints={451: "Binance refuses connections from your location"})
    try:
        with DepthServer({"BTCUSDT": [(451, {})]}) as srv:
            fetcher.request("BTCUSDT", srv.url("BTCUSDT"))
            sink.wait(lambda: sink.events("snapshot_error"))
            assert "Binance refuses connections from your location" in sink.events("snapshot_error")[0]["error"]
    finally:
        fetcher.stop(timeout=3)


def test_fail_when_reconnecting_stops_at_once_with_the_message(clients):
    with FakeExchange(default_mode="drop") as ex:
        sink = RecordingSink()
        client = start_client(clients, FakeAdapter(ex.url), sink, symbols=["BTCUSDT"], backoff_initial_s=0.3)
        sink.wait(lambda: sink.events("error"))
        client.fail("token refused by the vendor (token=abc123)")
        client.join(3)
        assert not client.is_alive()
        st = client.status()
        assert st.state == "failed" and st.last_error.startswith("token refused by the vendor")
        assert "abc123" not in st.last_error
        assert sink.events("error")[-1]["verdict"] == "fatal"
        handshakes = ex.handshakes
        time.sleep(0.5)
        assert ex.handshakes == handshakes


class ValidatingAdapter(FakeAdapter):
    """FakeAdapter with a two-symbol plan limit and replace-on-subscribe semantics."""

    replaces_subscriptions = True

    def validate_subscription(self, symbols):
        if len(symbols) > 2:
            raise ValueError(f"{len(symbols)} symbols exceed the plan limit of 2")
        return list(symbols)


def test_subscribe_when_adapter_replaces_sends_full_list_and_refuses_over_the_limit(clients):
    with FakeExchange(pushes=0) as ex:
        sink = RecordingSink()
        client = start_client(clients, ValidatingAdapter(ex.url), sink, symbols=["BTCUSDT"])
        wait_until(lambda: len(ex.messages(method="SUBSCRIBE")) == 1)
        client.subscribe("ETHUSDT")
        wait_until(lambda: len(ex.messages(method="SUBSCRIBE")) == 2)
        assert ex.messages(method="SUBSCRIBE")[1]["params"] == ["btcusdt@trade", "ethusdt@trade"]
        with pytest.raises(ValueError, match="plan limit of 2"):
            client.subscribe("SOLUSDT")
        time.sleep(0.3)
        assert client.symbols == ["BTCUSDT", "ETHUSDT"] and len(ex.messages(method="SUBSCRIBE")) == 2


class AuthAdapter(FakeAdapter):
    """FakeAdapter that subscribes only after the server's auth reply (iTick's rule)."""

    requires_auth_reply = True
    auth_timeout_s = 5.0

    def auth_status(self, raw):
        msg = json.loads(raw)
        return msg.get("auth") if isinstance(msg, dict) else None

    def parse(self, raw, recv_ns):
        from feed.core.models import VendorReply

        msg = json.loads(raw)
        return [VendorReply(bool(msg.get("auth")), f"auth says {msg.get('why')}", "auth")] if "auth" in msg else []


class AuthExchange(FakeExchange):
    """Sends ``{"auth": ok}`` ``delay_s`` after the first message the client sends."""

    def __init__(self, ok: bool, delay_s: float = 0.2):
        super().__init__(pushes=0)
        self.ok, self.delay_s = ok, delay_s

    async def _handler(self, ws):
        self.connections += 1
        await asyncio.sleep(self.delay_s)
        await ws.send(json.dumps({"auth": self.ok, "why": "key accepted" if self.ok else "key refused"}))
        async for text in ws:
            self.received.append((self.connections - 1, time.monotonic(), json.loads(text)))


def test_client_when_auth_reply_required_subscribes_only_after_it(clients):
    with AuthExchange(ok=True) as ex:
        sink = RecordingSink()
        client = start_client(clients, AuthAdapter(ex.url), sink, symbols=["BTCUSDT"])
        wait_until(lambda: client.status().state == "authenticating", timeout=3)
        assert ex.messages(method="SUBSCRIBE") == []
        wait_until(lambda: ex.messages(method="SUBSCRIBE"), timeout=3)
        assert client.status().state == "live"


def test_client_when_auth_refused_fails_with_the_vendors_words_and_no_retry(clients):
    with AuthExchange(ok=False) as ex:
        sink = RecordingSink()
        client = start_client(clients, AuthAdapter(ex.url), sink, symbols=["BTCUSDT"], backoff_initial_s=0.05)
        wait_until(lambda: client.status().state == "failed", timeout=3)
        assert client.status().last_error == "auth says key refused"
        time.sleep(0.4)
        assert ex.handshakes == 1 and ex.messages(method="SUBSCRIBE") == []


def test_client_when_binance_adapter_subscribes_one_by_one_sends_at_most_five_per_second(clients):
    from feed.vendors.binance import BinanceAdapter

    with FakeExchange(pushes=0) as ex:
        sink = RecordingSink()
        client = start_client(clients, BinanceAdapter("spot", ws_url=ex.url), sink, symbols=["BTCUSDT"])
        wait_until(lambda: ex.messages(method="SUBSCRIBE"), timeout=3)
        for sym in ("ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT"):
            client.subscribe(sym)
        wait_until(lambda: len(ex.messages(method="SUBSCRIBE")) == 8, timeout=5)
        times = [t for _, t, m in ex.received if m.get("method") == "SUBSCRIBE"]
        assert max(sum(1 for t in times if t0 <= t < t0 + 1.0) for t0 in times) <= 5
