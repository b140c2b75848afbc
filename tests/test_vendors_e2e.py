"""Vendors end to end over real loopback sockets: ``start_runtime`` with ``--vendor alltick``,
``--vendor itick`` and ``--vendor binance`` against local fakes (tests/fakes) or the
embedded exchange, through FeedClient, Engine and the Dash app's status.

What each scenario pins down:

* bars and the order book fill from the vendor's pushes;
* a refused token/key ends in ``failed`` with the vendor's words in the status, and no
  reconnect storm (AllTick ``ret`` 401, iTick ``auth failed``, a handshake 401);
* heartbeats keep the link up past the fake's timeout;
* a second symbol subscribed while running is on the vendor's side next to the first (the
  request replaces the previous one, so it carries the full list);
* vendor error codes (unknown symbol) reach ``status().errors`` in words; a plan limit
  or an endpoint mix is refused before anything is sent;
* Binance HTTP 451 on the handshake stops with the clear message, 429 waits Retry-After.

Vendor-specific timings are shortened by monkeypatching the adapters' class attributes
(heartbeat interval, rate, auth timeout); everything else is the production path.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response

from dashboard.cli import config_from_argv
from dashboard.runtime import start_runtime
from feed.exchange.server import EmbeddedExchange
from feed.vendors.alltick import AllTickAdapter
from feed.vendors.itick import ITickAdapter
from tests.helpers import wait_for
from tests.fakes import FakeAllTickServer, FakeITickServer, LoopbackServer

pytestmark = pytest.mark.timeout(30)

TOKEN = "tok-e2e-5a4b3c2d1e"
#: Fast reconnects and no protocol pings (the fakes do not ping).
FAST = {"backoff_initial_s": 0.05, "backoff_cap_s": 1.0, "ping_interval_s": 0}




def run(argv: list[str], tmp_path, **feed):
    return start_runtime(config_from_argv([*argv, "--data-dir", str(tmp_path)]),
                         feed_options={**FAST, **feed})


def api_health(rt) -> dict:
    resp = rt.app.server.test_client().get("/api/health")
    assert resp.status_code == 200
    return json.loads(resp.get_data())


def filled(rt, symbol: str, levels: int = 1) -> bool:
    st = rt.engine.status().symbols.get(symbol)
    depth = rt.engine.depth(symbol, 50)
    return bool(st and st.trades >= 3 and depth and depth.synced and len(depth.bids) >= levels
                and len(depth.asks) >= levels)


def assert_bars_and_book(rt, symbol: str, levels: int) -> None:
    bars = rt.engine.bars_frame(symbol, "1m")
    assert len(bars) >= 1 and bars["trade_count"].sum() >= 3
    assert (bars["high"] >= bars["low"]).all() and (bars["volume"] >= 0).all()
    depth = rt.engine.depth(symbol, 50)
    assert depth.synced and depth.best_bid < depth.best_ask
    assert len(depth.bids) == len(depth.asks) == levels


@pytest.fixture
def fast_alltick(monkeypatch):
    # Heartbeat every 0.5 s, 4 requests/s (the fake enforces 0.2 s spacing instead of 1 s).
    monkeypatch.setenv("ALLTICK_TOKEN", TOKEN)
    monkeypatch.setattr(AllTickAdapter, "heartbeat_interval_s", 0.5)
    monkeypatch.setattr(AllTickAdapter, "max_messages_per_s", 4.0)


@pytest.fixture
def fast_itick(monkeypatch):
    # Ping every 0.5 s; 10 control messages/s so pings leave room for subscriptions.
    monkeypatch.setenv("ITICK_TOKEN", TOKEN)
    monkeypatch.setattr(ITickAdapter, "heartbeat_interval_s", 0.5)
    monkeypatch.setattr(ITickAdapter, "max_messages_per_s", 10.0)


# ======================================================================================
# AllTick
# ======================================================================================


def test_alltick_when_run_against_fake_bars_book_heartbeat_and_second_symbol_all_work(tmp_path, fast_alltick):
    with FakeAllTickServer(token=TOKEN, push_interval_s=0.1, ts_start_ms=None, heartbeat_timeout_s=1.5,
                           min_request_interval_s=0.2) as fake:
        rt = run(["--vendor", "alltick", "--symbols", "AAPL.US,700.HK", "--url", fake.base_url], tmp_path)
        try:
            t0 = time.monotonic()
            wait_for(lambda: filled(rt, "AAPL.US", 5) and filled(rt, "700.HK", 10), 10, "bars and books")
            assert_bars_and_book(rt, "AAPL.US", 5)   # US: 5 levels asked (adapter's assumption)
            assert_bars_and_book(rt, "700.HK", 10)   # HK: 10 levels documented
            # A second symbol while running: the request carries the full list.
            rt.engine.subscribe("tsla.us")
            assert fake.wait_for(lambda: fake.subscriptions()[0]["trades"] == ["AAPL.US", "700.HK", "TSLA.US"]
                                 and list(fake.subscriptions()[0]["depth"]) == ["AAPL.US", "700.HK", "TSLA.US"], 5)
            wait_for(lambda: filled(rt, "TSLA.US", 5), 5, "TSLA.US bars and book")
            # Heartbeats keep the link up well past the fake's 1.5 s timeout.
            time.sleep(max(0.0, 3.5 - (time.monotonic() - t0)))
            assert fake.closed_reasons() == [] and fake.connection_count == 1
            assert fake.subscriptions()[0]["heartbeats"] >= 4
            health = api_health(rt)
            assert health["status"] == "ok" and health["vendor"] == "alltick"
            assert health["feed"]["generation"] == 1 and health["counters"]["reconnects"] == 0
            assert health["feed"]["url"].endswith("/quote-stock-b-ws-api?token=***")
            assert health["errors"] == [] and health["counters"]["malformed"] == 0
            assert TOKEN not in json.dumps(health) and TOKEN not in json.dumps(rt.engine.status(), default=str)
        finally:
            rt.stop()


def test_alltick_when_token_refused_in_replies_fails_with_words_and_stops_reconnecting(tmp_path, fast_alltick, monkeypatch):
    monkeypatch.setenv("ALLTICK_TOKEN", "wrong-token-123")
    with FakeAllTickServer(token=TOKEN, min_request_interval_s=0.2) as fake:
        rt = run(["--vendor", "alltick", "--symbols", "AAPL.US", "--url", fake.base_url], tmp_path)
        try:
            wait_for(lambda: rt.engine.status().state == "failed", 5, "failed state")
            st = rt.engine.status()
            assert "AllTick error 401" in st.detail and "token invalid or expired" in st.detail
            assert any("ALLTICK_TOKEN" in e for e in st.errors)
            connects = len(fake.events("connect"))
            time.sleep(1.0)  # no reconnect storm: nothing more after the failure
            assert len(fake.events("connect")) == connects <= 3
            assert api_health(rt)["status"] == "down"
            assert "wrong-token-123" not in json.dumps(st, default=str)
        finally:
            rt.stop()


def test_alltick_when_handshake_refused_401_fails_at_once_with_advice(tmp_path, fast_alltick):
    with FakeAllTickServer(token="other", bad_token="http") as fake:
        rt = run(["--vendor", "alltick", "--symbols", "BTCUSDT", "--url", fake.base_url], tmp_path)
        try:
            wait_for(lambda: rt.engine.status().state == "failed", 5, "failed state")
            detail = rt.engine.status().detail
            assert "HTTP 401" in detail and "ALLTICK_TOKEN" in detail
            time.sleep(0.5)
            assert len(fake.events("refused")) == 1
        finally:
            rt.stop()


def test_alltick_when_symbol_unknown_plan_full_or_classes_mixed_says_so_and_sends_nothing(tmp_path, fast_alltick):
    with FakeAllTickServer(token=TOKEN, push_interval_s=0.1, ts_start_ms=None, min_request_interval_s=0.2) as fake:
        rt = run(["--vendor", "alltick", "--symbols", "AAPL.US,TSLA.US,MSFT.US,NVDA.US", "--url", fake.base_url],
                 tmp_path)
        try:
            assert fake.wait_for(lambda: fake.subscriptions() and len(fake.subscriptions()[0]["trades"]) == 4, 5)
            # A code the vendor does not know: its error code reaches the status in words.
            rt.engine.subscribe("ZZZZ.US")
            # (both requests, trades and depth, are refused)
            wait_for(lambda: sum("600" in e for e in rt.engine.status().errors) == 2, 5, "the 600 refusals")
            error = next(e for e in rt.engine.status().errors if "600" in e)
            assert "symbol code invalid" in error and "added in this request: ZZZZ.US" in error
            assert rt.engine.status().state == "live"  # not fatal: the other symbols go on
            # The refused code is dropped again, so later full-list requests succeed.
            wait_for(lambda: "ZZZZ.US" not in rt.engine.symbols(), 5, "the refused symbol dropped")
            assert fake.wait_for(lambda: fake.subscriptions()[0]["trades"] == ["AAPL.US", "TSLA.US", "MSFT.US", "NVDA.US"], 5)
            assert rt.engine.subscribe("GOOGL.US") == "GOOGL.US"
            assert fake.wait_for(lambda: len(fake.subscriptions()[0]["trades"]) == 5
                                 and len(fake.subscriptions()[0]["depth"]) == 5, 5)
            sent = len(fake.requests())
            # The plan limit (free: 5 per connection) is refused before anything is sent.
            with pytest.raises(ValueError, match="plan limit of 5"):
                rt.engine.subscribe("AMZN.US")
            # So is a crypto code on this stock connection.
            with pytest.raises(ValueError, match="separate endpoints"):
                rt.engine.subscribe("BTCUSDT")
            time.sleep(0.5)
            assert [r for r in fake.requests()[sent:] if r.get("cmd_id") != 22000] == []
            assert "AMZN.US" not in rt.engine.symbols() and "BTCUSDT" not in rt.engine.symbols()
            assert fake.subscriptions()[0]["trades"] == ["AAPL.US", "TSLA.US", "MSFT.US", "NVDA.US", "GOOGL.US"]
        finally:
            rt.stop()


def test_alltick_when_last_stock_replaced_by_crypto_reconnects_to_the_other_endpoint(tmp_path, fast_alltick):
    with FakeAllTickServer(token=TOKEN, push_interval_s=0.1, ts_start_ms=None, min_request_interval_s=0.2,
                           max_connections=1) as fake:
        rt = run(["--vendor", "alltick", "--symbols", "AAPL.US", "--url", fake.base_url], tmp_path)
        try:
            assert fake.wait_for(lambda: [s["trades"] for s in fake.subscriptions()] == [["AAPL.US"]], 5)
            rt.engine.unsubscribe("AAPL.US")
            rt.engine.subscribe("BTCUSDT")
            assert fake.wait_for(lambda: [(s["endpoint"], s["trades"]) for s in fake.subscriptions()]
                                 == [("forex_crypto", ["BTCUSDT"])], 8)
            wait_for(lambda: filled(rt, "BTCUSDT", 5), 5, "BTCUSDT bars and book")
            assert rt.engine.status().errors == ()
            assert rt.feed.status().url.endswith("/quote-b-ws-api?token=***")
        finally:
            rt.stop()


# ======================================================================================
# iTick
# ======================================================================================


def test_itick_when_run_against_fake_subscribes_after_auth_and_keeps_the_link(tmp_path, fast_itick):
    with FakeITickServer(token=TOKEN, push_interval_s=0.1, ts_start_ms=None, auth_delay_s=0.3,
                         ping_timeout_s=1.5, known_symbols=frozenset({"AAPL$US", "TSLA$US"})) as fake:
        rt = run(["--vendor", "itick", "--symbols", "AAPL$US", "--url", fake.base_url], tmp_path)
        try:
            t0 = time.monotonic()
            wait_for(lambda: filled(rt, "AAPL$US", 5), 10, "bars and book")
            assert_bars_and_book(rt, "AAPL$US", 5)
            # Nothing but pings before the auth reply (iTick refuses anything else then).
            log = fake.events()
            auth_at = next(i for i, (k, d) in enumerate(log) if k == "auth" and d["ok"])
            first_sub = next(i for i, (k, d) in enumerate(log) if k == "request" and d["request"].get("ac") == "subscribe")
            assert auth_at < first_sub
            # A second symbol while running: the fake then holds both.
            rt.engine.subscribe("TSLA.US")
            assert fake.wait_for(lambda: fake.subscriptions()[0]["symbols"] == ["AAPL$US", "TSLA$US"], 5)
            wait_for(lambda: filled(rt, "TSLA$US", 5), 5, "TSLA$US bars and book")
            # An unknown product: the vendor's refusal in words.
            rt.engine.subscribe("ZZZ$US")
            wait_for(lambda: any("product not found" in e for e in rt.engine.status().errors), 5, "E001")
            # Pings keep the link up past the fake's 1.5 s ping timeout.
            time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
            assert fake.closed_reasons() == [] and fake.connection_count == 1
            assert fake.subscriptions()[0]["pings"] >= 3
            health = api_health(rt)
            assert health["status"] == "ok" and health["feed"]["generation"] == 1
            assert not any("cannot be resolved" in e for e in health["errors"])
            assert TOKEN not in json.dumps(health)
        finally:
            rt.stop()


def test_itick_when_key_refused_fails_with_words_and_connects_once(tmp_path, fast_itick, monkeypatch):
    monkeypatch.setenv("ITICK_TOKEN", "not-the-key-42")
    with FakeITickServer(token=TOKEN) as fake:
        rt = run(["--vendor", "itick", "--symbols", "AAPL$US", "--url", fake.base_url], tmp_path)
        try:
            wait_for(lambda: rt.engine.status().state == "failed", 5, "failed state")
            st = rt.engine.status()
            assert "authentication failed" in st.detail and "ITICK_TOKEN" in st.detail
            time.sleep(1.0)
            assert len(fake.events("connect")) == 1 and fake.requests("subscribe") == []
            assert "not-the-key-42" not in json.dumps(api_health(rt))
        finally:
            rt.stop()


def test_itick_when_auth_reply_never_comes_drops_and_retries_with_backoff(tmp_path, fast_itick, monkeypatch):
    monkeypatch.setattr(ITickAdapter, "auth_timeout_s", 0.4)
    with FakeITickServer(token=TOKEN, auth_delay_s=30.0) as fake:
        rt = run(["--vendor", "itick", "--symbols", "AAPL$US", "--url", fake.base_url], tmp_path)
        try:
            wait_for(lambda: rt.feed.status().reconnects >= 2, 5, "two auth timeouts")
            st = rt.feed.status()
            assert st.state in ("authenticating", "reconnecting", "connecting")
            assert "no authentication reply within 0.4 s" in st.last_error
            assert fake.requests("subscribe") == []
            connects = len(fake.events("connect"))
            assert 2 <= connects <= 5  # backoff, not a tight loop
        finally:
            rt.stop()


# ======================================================================================
# Binance
# ======================================================================================


def test_binance_usdm_when_pointed_at_embedded_exchange_fills_bars_and_book(tmp_path):
    with EmbeddedExchange(sim_rate=3) as ex:
        rt = run(["--vendor", "binance", "--market", "usdm", "--symbols", "BTCUSDT", "--url", ex.ws_url], tmp_path)
        try:
            wait_for(lambda: filled(rt, "BTCUSDT", 20), 10, "bars and book")
            assert rt.engine.bars_frame("BTCUSDT", "1m")["trade_count"].sum() >= 3
            health = api_health(rt)
            assert health["vendor"] == "binance-usdm" and health["status"] == "ok"
            assert health["feed"]["url"] == ex.ws_url and health["counters"]["gaps"] == 0
        finally:
            rt.stop()


class RefusingServer(LoopbackServer):
    """Answers every WebSocket handshake with one HTTP status (and optional headers)."""

    def __init__(self, status: int, headers: dict | None = None) -> None:
        super().__init__()
        self.status = status
        self.headers = dict(headers or {})

    def process_request(self, connection, request):
        self.record("handshake", path=request.path)
        body = f"{HTTPStatus(self.status).phrase}\n".encode()
        headers = Headers([("Content-Length", str(len(body))), ("Connection", "close"),
                           *self.headers.items()])
        return Response(self.status, HTTPStatus(self.status).phrase, headers, body)

    async def handle(self, ws) -> None:  # never reached
        await ws.close()


def ws_handshakes(server) -> list:
    # WebSocket handshakes only (the engine also asks the same host for REST snapshots).
    return [d for _, d in server.events("handshake") if d["path"].startswith("/stream")]


def test_binance_when_handshake_answered_451_fails_with_advice_and_no_retry(tmp_path):
    with RefusingServer(451) as server:
        rt = run(["--vendor", "binance", "--url", server.base_url + "/stream"], tmp_path)
        try:
            wait_for(lambda: rt.engine.status().state == "failed", 5, "failed state")
            health = api_health(rt)
            detail = health["feed"]["detail"]
            assert "HTTP 451" in detail and "Binance refuses connections from your location" in detail
            assert "--binance-host data" in detail and "VPN" in detail
            assert health["status"] == "down" and any("451" in e for e in health["errors"])
            time.sleep(0.7)
            assert len(ws_handshakes(server)) == 1 and rt.feed.status().reconnects == 0
        finally:
            rt.stop()


def test_binance_when_handshake_answered_429_waits_retry_after(tmp_path):
    with RefusingServer(429, {"Retry-After": "3"}) as server:
        rt = run(["--vendor", "binance", "--url", server.base_url + "/stream"], tmp_path)
        try:
            wait_for(lambda: rt.feed.status().reconnects >= 1, 5, "a scheduled retry")
            st = rt.engine.status()
            assert st.state == "reconnecting" and "Binance rate limit" in st.detail
            assert "waiting 3 s as its Retry-After says" in st.detail
            assert rt.feed.status().last_retry_delay_s >= 3.0
            time.sleep(1.0)
            assert len(ws_handshakes(server)) == 1  # no retry before Retry-After
        finally:
            rt.stop()


# ======================================================================================
# Command line: tokens from the environment or --config only
# ======================================================================================


def test_cli_when_token_missing_exits_2_with_one_message(monkeypatch, capsys, tmp_path):
    from dashboard.cli import main

    monkeypatch.delenv("ALLTICK_TOKEN", raising=False)
    assert main(["--vendor", "alltick", "--symbols", "AAPL.US", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ALLTICK_TOKEN" in err[0] and "--config" in err[0]
    assert main(["--vendor", "itick", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_when_key_in_config_file_connects_with_it(tmp_path, fast_itick, monkeypatch):
    monkeypatch.delenv("ITICK_TOKEN", raising=False)
    config = tmp_path / "tickscope.toml"
    config.write_text(f'[itick]\ntoken = "{TOKEN}"\n')
    config.chmod(0o600)
    with FakeITickServer(token=TOKEN, push_interval_s=0.1, ts_start_ms=None) as fake:
        rt = run(["--vendor", "itick", "--itick-market", "crypto", "--symbols", "btc/usdt", "--config", str(config),
                  "--url", fake.base_url], tmp_path)
        try:
            assert rt.engine.symbols() == ["BTCUSDT$BA"]
            assert fake.wait_for(lambda: fake.subscriptions() and fake.subscriptions()[0]["symbols"] == ["BTCUSDT$BA"], 5)
            assert fake.subscriptions()[0]["market"] == "crypto"
        finally:
            rt.stop()


def test_binance_when_exchange_refuses_a_subscribed_symbol_it_is_unsubscribed_with_the_reason(tmp_path):
    rt = run(["--symbols", "BTCUSDT"], tmp_path)  # the embedded simulator, Binance dialect
    try:
        wait_for(lambda: filled(rt, "BTCUSDT"), 10, "BTCUSDT live")
        # A well-formed symbol the exchange does not list: its SUBSCRIBE is refused.
        assert rt.engine.subscribe("abctry") == "ABCTRY"
        wait_for(lambda: "ABCTRY" not in rt.engine.symbols(), 10, "the refused symbol dropped")
        errors = rt.engine.status().errors
        assert any("ABCTRY" in e for e in errors), errors
        assert rt.engine.symbols() == ["BTCUSDT"] and rt.engine.status().state == "live"
    finally:
        rt.stop()
