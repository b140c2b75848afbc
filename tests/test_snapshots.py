"""REST depth snapshots against a hostile snapshot server on loopback.

A real HTTP server on 127.0.0.1 answers each symbol its own way: at once, dripping one byte
at a time, with a huge body (announced or not), or with garbage. The fetcher must keep one
overall deadline per request, refuse bodies over its limit while reading, back off per
symbol (counted in requests the server saw), never make one symbol wait for another's
request, and the engine's health must show a book that stays unsynced.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from feed.core import health as health_module
from feed.core.config import EngineConfig, MarketConfig
from feed.core.events import FeedStatus, SnapshotFailed
from feed.io.engine import Engine
from feed.io.snapshots import SnapshotFetcher
from feed.vendors.binance import BinanceAdapter
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

T0_MS = 1_723_161_600_000


def snapshot_body(last_update_id: int = 100) -> bytes:
    return json.dumps({"lastUpdateId": last_update_id,
                       "bids": [["60000.00", "1.5"], ["59999.00", "2"]],
                       "asks": [["60001.00", "0.5"], ["60002.00", "3"]]}).encode()


class SnapshotServer:
    """A threaded HTTP server on loopback: ``/api/v3/depth?symbol=S`` answered by S's mode.

    Modes: ``good`` (the body at once), ``drip`` (headers, then one byte every
    ``drip_s``), ``huge_announced`` (Content-Length of 400 MB, then bytes as fast as the
    socket takes them), ``huge_streamed`` (no length, endless bytes), ``garbage`` (200
    with a body that is not a snapshot). ``requests[S]`` counts the requests per symbol.
    """

    def __init__(self, modes: dict[str, str], drip_s: float = 0.5) -> None:
        self.modes = modes
        self.drip_s = drip_s
        self.requests: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                symbol = parse_qs(urlsplit(self.path).query).get("symbol", [""])[0]
                with outer.lock:
                    outer.requests.setdefault(symbol, []).append(time.monotonic())
                mode = outer.modes.get(symbol, "good")
                try:
                    getattr(outer, f"_{mode}")(self)
                except OSError:
                    pass  # the client hung up: that is the point of most modes

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v3/depth"

    def count(self, symbol: str) -> int:
        with self.lock:
            return len(self.requests.get(symbol, []))

    def times(self, symbol: str) -> list[float]:
        with self.lock:
            return list(self.requests.get(symbol, []))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- modes -------------------------------------------------------------------------

    def _headers(self, h, length: int | None) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if length is not None:
            h.send_header("Content-Length", str(length))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.flush()

    def _good(self, h) -> None:
        body = snapshot_body()
        self._headers(h, len(body))
        h.wfile.write(body)

    def _drip(self, h) -> None:
        body = snapshot_body()
        self._headers(h, len(body))
        for i in range(len(body)):
            if self.stopping.wait(self.drip_s):
                return
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()

    def _huge_announced(self, h) -> None:
        self._headers(h, 400 * 1024 * 1024)
        self._stream(h)

    def _huge_streamed(self, h) -> None:
        self._headers(h, None)
        self._stream(h)

    def _stream(self, h) -> None:
        chunk = b"[" * 65536
        for _ in range(400 * 16):  # up to 400 MB, unless the client stops reading
            if self.stopping.is_set():
                return
            h.wfile.write(chunk)

    def _garbage(self, h) -> None:
        body = b"<html>rate limited, try later</html>"
        self._headers(h, len(body))
        h.wfile.write(body)


class Sink:
    """Collects what the fetcher hands over: bodies and failures, with the time of each."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[tuple[float, bytes]]] = {}
        self.failures: dict[str, list[tuple[float, SnapshotFailed]]] = {}
        self.lock = threading.Lock()

    def submit_snapshot(self, symbol, body, recv_ns) -> None:
        with self.lock:
            self.bodies.setdefault(symbol, []).append((time.monotonic(), body))

    def submit_control(self, event) -> None:
        with self.lock:
            self.failures.setdefault(event.symbol, []).append((time.monotonic(), event))

    def got(self, symbol) -> int:
        with self.lock:
            return len(self.bodies.get(symbol, [])) + len(self.failures.get(symbol, []))


# -- the fetcher alone --------------------------------------------------------------------


def test_fetcher_when_one_symbol_drips_the_other_is_served_at_once_and_the_drip_ends_at_the_deadline():
    with SnapshotServer({"DRIPUSDT": "drip"}, drip_s=0.3) as server:
        sink = Sink()
        fetcher = SnapshotFetcher(sink, timeout_s=1.5, max_attempts=1)
        try:
            t0 = time.monotonic()
            assert fetcher.request("DRIPUSDT", server.url + "?symbol=DRIPUSDT")
            wait_for(lambda: server.count("DRIPUSDT") == 1, 5, "the drip request to start")
            assert fetcher.request("GOODUSDT", server.url + "?symbol=GOODUSDT")
            wait_for(lambda: sink.got("GOODUSDT") == 1, 5, "the good snapshot")
            assert sink.bodies["GOODUSDT"][0][1] == snapshot_body()
            assert sink.bodies["GOODUSDT"][0][0] - t0 < 1.0  # did not wait for the drip
            wait_for(lambda: sink.got("DRIPUSDT") == 1, 5, "the drip to be given up")
            at, failed = sink.failures["DRIPUSDT"][0]
            # One overall deadline (1.5 s), although every byte came within the socket timeout.
            assert 1.4 <= at - t0 < 2.5
            assert "within 1.5 s" in failed.error and "DRIPUSDT" not in sink.bodies
        finally:
            fetcher.stop()


@pytest.mark.parametrize("mode", ["huge_announced", "huge_streamed"])
def test_fetcher_when_body_is_huge_refuses_it_within_the_limit(mode):
    with SnapshotServer({"HUGEUSDT": mode}) as server:
        sink = Sink()
        fetcher = SnapshotFetcher(sink, timeout_s=10.0, max_bytes=1_000_000, max_attempts=3)
        try:
            t0 = time.monotonic()
            fetcher.request("HUGEUSDT", server.url + "?symbol=HUGEUSDT")
            wait_for(lambda: sink.got("HUGEUSDT") == 1, 10, "the huge body to be refused")
            _, failed = sink.failures["HUGEUSDT"][0]
            assert "1,000,000" in failed.error and time.monotonic() - t0 < 5.0
            assert server.count("HUGEUSDT") == 1  # not retried at once: the body will not shrink
        finally:
            fetcher.stop()


class RefusingSink(Sink):
    """An engine that refuses every body (as the adapter refuses garbage) and tells the
    fetcher so, as the engine does with ``outcome``."""

    fetcher: SnapshotFetcher

    def submit_snapshot(self, symbol, body, recv_ns) -> None:
        super().submit_snapshot(symbol, body, recv_ns)
        self.fetcher.outcome(symbol, False)


def test_fetcher_when_bodies_refused_or_too_large_backs_off_exponentially_with_cap():
    # An impatient engine asks every 20 ms; the fetcher spaces the fetches 0.2, 0.4, 0.8,
    # 0.8 s apart (initial 0.2 s, cap 0.8 s) after each refused or oversized body.
    with SnapshotServer({"JUNKUSDT": "garbage", "HUGEUSDT": "huge_announced"}) as server:
        sink = RefusingSink()
        fetcher = sink.fetcher = SnapshotFetcher(sink, timeout_s=2.0, max_bytes=1000, max_attempts=1,
                                                 backoff_initial_s=0.2, backoff_cap_s=0.8)
        stop = threading.Event()

        def engine_asking(symbol):
            while not stop.is_set():
                fetcher.request(symbol, f"{server.url}?symbol={symbol}")
                stop.wait(0.02)

        askers = [threading.Thread(target=engine_asking, args=(s,), daemon=True)
                  for s in ("JUNKUSDT", "HUGEUSDT")]
        try:
            for t in askers:
                t.start()
            time.sleep(3.0)
        finally:
            stop.set()
            fetcher.stop()
        for symbol in ("JUNKUSDT", "HUGEUSDT"):
            times = server.times(symbol)
            gaps = [b - a for a, b in zip(times, times[1:])]
            # 3 s at one ask per 20 ms would be 150 fetches; back-off allows about 6.
            assert 4 <= len(times) <= 7, (symbol, gaps)
            assert gaps[0] >= 0.18 and gaps[1] >= 0.36 and gaps[2] >= 0.75, (symbol, gaps)
            assert all(g < 0.8 + 0.5 for g in gaps), (symbol, gaps)  # capped
            assert fetcher.backoff_s(symbol) == 0.8


def test_fetcher_when_a_body_syncs_the_book_back_off_ends():
    with SnapshotServer({}) as server:
        sink = Sink()
        fetcher = SnapshotFetcher(sink, backoff_initial_s=0.2, backoff_cap_s=5.0)
        try:
            url = server.url + "?symbol=GOODUSDT"
            for n in range(1, 4):
                fetcher.request("GOODUSDT", url)
                wait_for(lambda: sink.got("GOODUSDT") == n, 5, f"snapshot {n}")
                fetcher.outcome("GOODUSDT", False)  # too old to bridge the buffered diffs
            assert fetcher.backoff_s("GOODUSDT") == 0.8
            fetcher.outcome("GOODUSDT", True)  # the book synced after all
            t0 = time.monotonic()
            fetcher.request("GOODUSDT", url)
            wait_for(lambda: sink.got("GOODUSDT") == 4, 5, "snapshot 4")
            assert time.monotonic() - t0 < 0.3 and fetcher.backoff_s("GOODUSDT") == 0.0
        finally:
            fetcher.stop()


def test_fetcher_when_options_bad_refuses_them():
    for bad in ({"timeout_s": 0}, {"max_bytes": 0}, {"max_workers": 0}, {"backoff_initial_s": -1},
                {"backoff_initial_s": 5, "backoff_cap_s": 1}):
        with pytest.raises(ValueError):
            SnapshotFetcher(Sink(), **bad)


# -- the engine: books and health ---------------------------------------------------------


class LiveFeed:
    """Stands for a connected feed client (the engine reads its state and sends nothing)."""

    def status(self) -> FeedStatus:
        return FeedStatus(name="loopback", state="live")

    def subscribe(self, symbols):
        pass

    def unsubscribe(self, symbols):
        pass


def diff(symbol: str, first: int, last: int) -> str:
    return json.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": {
        "e": "depthUpdate", "E": T0_MS, "s": symbol, "U": first, "u": last,
        "b": [["60000.00", "1.0"]], "a": []}})


def test_engine_when_one_snapshot_server_drips_good_symbol_syncs_and_health_names_the_unsynced_book(monkeypatch):
    monkeypatch.setattr(health_module, "UNSYNCED_DEGRADED_S", 2.0)
    with SnapshotServer({"DRIPUSDT": "drip", "JUNKUSDT": "garbage"}, drip_s=0.5) as server:
        adapter = BinanceAdapter("spot", rest_url=server.url)
        eng = Engine(adapter, EngineConfig(MarketConfig(clock="wall")))
        fetcher = SnapshotFetcher(eng, timeout_s=1.5, max_attempts=1,
                                  backoff_initial_s=1.0, backoff_cap_s=4.0)
        eng.attach(LiveFeed(), fetcher)
        eng.start()
        try:
            for s in ("DRIPUSDT", "GOODUSDT", "JUNKUSDT"):
                eng.subscribe(s)
            t0 = time.monotonic()
            stop = time.monotonic() + 5.0
            n = 0
            while time.monotonic() < stop:  # depth keeps arriving for every symbol
                for s in ("DRIPUSDT", "GOODUSDT", "JUNKUSDT"):
                    eng.submit(diff(s, 101 + n, 101 + n), time.time_ns())
                n += 1
                if n == 1:
                    wait_for(lambda: eng.health()["symbols"]["GOODUSDT"]["book_synced"], 3,
                             "the good book to sync")
                    assert time.monotonic() - t0 < 3.0
                time.sleep(0.05)
            assert eng.wait_idle(5)
            health = eng.health()
            good, drip, junk = (health["symbols"][s] for s in ("GOODUSDT", "DRIPUSDT", "JUNKUSDT"))
            assert good["book_synced"] and good["book_unsynced_s"] is None
            assert not drip["book_synced"] and drip["book_unsynced_s"] >= 2.0
            assert not junk["book_synced"] and junk["book_unsynced_s"] >= 2.0
            assert health["status"] == "degraded"
            assert any(r.startswith("DRIPUSDT: book unsynced for ") for r in health["reasons"])
            assert any(r.startswith("JUNKUSDT: book unsynced for ") for r in health["reasons"])
            assert health["malformed_by_reason"].get("bad_snapshot", 0) == server.count("JUNKUSDT")
            # The engine asks once per second; the engine tells the fetcher each garbage
            # body was refused, and back-off (1, 2, 4 s) keeps it from asking that often.
            assert server.count("JUNKUSDT") <= 3
            assert server.count("GOODUSDT") == 1
        finally:
            fetcher.stop()
            eng.stop()
