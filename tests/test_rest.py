"""The shared paged-REST worker (feed.io.rest) through the history fetcher, against a real
HTTP server on loopback that answers a script: retry after 429 with the weight noted, give
up after the attempts with words, refuse a 400 at once with the vendor's words, stop."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from feed.core.events import HistoryFailed, HistoryPage, HistoryRequest
from feed.io.backfill import HistoryFetcher
from tests.helpers import wait_for

ROW = {"a": 1, "p": "1.5", "q": "2", "f": 5, "l": 9, "T": 1000, "m": True}
REPAIR = HistoryRequest("repair", "BTCUSDT", 5, 9, 10**18, 10**18 + 10**9)


class Scripted:
    """A loopback HTTP server answering each GET with the next ``(status, headers, body)``."""

    def __init__(self, answers: list[tuple[int, dict, object]]) -> None:
        self.answers, self.paths = list(answers), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.paths.append(self.path)
                status, headers, body = outer.answers.pop(0) if outer.answers else (500, {}, "script ran out")
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v3/aggTrades"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fetch():
    servers, fetchers = [], []

    def run(answers, request=REPAIR, **options):
        server = Scripted(answers)
        servers.append(server)
        sink: list = []
        fetcher = HistoryFetcher(type("Sink", (), {"submit_control": staticmethod(sink.append)})(), server.url,
                                 **options)
        fetchers.append(fetcher)
        fetcher.request(request)
        wait_for(lambda: any(getattr(x, "done", True) for x in sink), 20, "the fetcher to finish or give up")
        return fetcher, server, sink

    yield run
    for f in fetchers:
        f.stop()
    for s in servers:
        s.close()


def test_rest_get_when_429_then_200_retries_after_the_wait_and_notes_the_weight(fetch):
    fetcher, server, sink = fetch([(429, {"Retry-After": "0", "X-MBX-USED-WEIGHT-1M": "7"}, {"code": -1003}),
                                   (200, {"X-MBX-USED-WEIGHT-1M": "12"}, [ROW])])
    (page,) = sink
    assert isinstance(page, HistoryPage) and page.done and [r.agg_id for r in page.rows] == [1]
    assert len(server.paths) == 2 and "symbol=BTCUSDT" in server.paths[1]
    assert fetcher.calls == 1 and fetcher.weight_max == 12


def test_rest_get_when_attempts_run_out_gives_up_with_words(fetch):
    fetcher, server, sink = fetch([(503, {}, "down"), (503, {}, "down")], max_attempts=2)
    (failed,) = sink
    assert isinstance(failed, HistoryFailed)
    assert failed.error.startswith("endpoint unavailable: HTTP 503") and failed.error.endswith("(after 2 attempts)")
    assert len(server.paths) == 2 and fetcher.calls == 0


def test_rest_get_when_400_gives_up_at_once_with_the_vendors_words(fetch):
    fetcher, server, sink = fetch([(400, {}, {"code": -1121, "msg": "Invalid symbol."})])
    (failed,) = sink
    assert isinstance(failed, HistoryFailed) and failed.error.startswith("the vendor refused the request: HTTP 400")
    assert "Invalid symbol." in failed.error
    assert len(server.paths) == 1


def test_rest_get_when_the_wait_asked_is_longer_than_accepted_gives_up_at_once(fetch):
    fetcher, server, sink = fetch([(418, {"Retry-After": "600"}, {"code": -1003})], max_wait_s=60.0)
    (failed,) = sink
    assert isinstance(failed, HistoryFailed) and "HTTP 418" in failed.error and "(after 1 attempts)" in failed.error
    assert len(server.paths) == 1


def test_rest_worker_when_stopped_while_waiting_to_retry_stops_without_another_call():
    server = Scripted([(429, {"Retry-After": "30"}, {"code": -1003})])
    sink: list = []
    fetcher = HistoryFetcher(type("Sink", (), {"submit_control": staticmethod(sink.append)})(), server.url)
    try:
        fetcher.request(REPAIR)
        wait_for(lambda: server.paths, 10, "the first call")
        fetcher.stop(timeout=5.0)
        assert not fetcher._thread.is_alive()
        assert len(server.paths) == 1
        assert [x.error for x in sink] == ["stopping"]
    finally:
        server.close()
