"""iTick adapter: pure parser/control tests, then loopback tests against the fake server."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from feed.core.models import UNKNOWN, BookSnapshot, MalformedMessage, Trade, VendorReply
from feed.vendors.base import VendorAdapter
from feed.vendors.itick import BASE_URL, ITickAdapter
from tests.fakes import FakeITickServer

pytestmark = pytest.mark.timeout(20)

KEY = "key-0a1b2c3d4e5f"


@pytest.fixture
def adapter() -> ITickAdapter:
    return ITickAdapter(token=KEY)


def _push(**data) -> str:
    return json.dumps({"code": 1, "data": data})


def _tick(**over) -> str:
    data = {"s": "AAPL", "ld": 191.52, "v": 100, "t": 1717000000123, "type": "tick"}
    data.update(over)
    return _push(**{k: v for k, v in data.items() if v is not ...})


# ======================================================================================
# Construction, token hygiene, URLs
# ======================================================================================


def test_init_when_no_key_anywhere_raises_naming_the_env_var(monkeypatch):
    monkeypatch.delenv("ITICK_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ITICK_TOKEN"):
        ITickAdapter()


def test_init_when_key_in_env_sends_it_in_the_header(monkeypatch):
    monkeypatch.setenv("ITICK_TOKEN", "env-key-5678")
    assert ITickAdapter().header() == {"token": "env-key-5678"}


def test_url_when_built_holds_no_key_and_names_the_market(adapter):
    assert adapter.url(["AAPL$US"]) == f"{BASE_URL}/stock" == adapter.display_url()
    assert KEY not in adapter.url()


def test_url_when_base_and_market_configured_uses_them():
    a = ITickAdapter(token=KEY, market="crypto", base_url="ws://127.0.0.1:9/")
    assert a.url() == "ws://127.0.0.1:9/crypto"


@pytest.mark.parametrize("market", ["Stock", "nope", "", "../x"])
def test_init_when_market_unknown_raises(market):
    with pytest.raises(ValueError, match="market"):
        ITickAdapter(token=KEY, market=market)


def test_init_when_legacy_market_allowed_uses_it():
    assert ITickAdapter(token=KEY, market="sws", allow_unknown_market=True).url().endswith("/sws")


def test_init_when_base_url_has_a_token_query_refuses_without_echoing_it():
    with pytest.raises(ValueError) as info:
        ITickAdapter(token=KEY, base_url="wss://api.itick.org?token=leaked-999")
    assert "leaked-999" not in str(info.value)


def test_repr_and_str_when_key_set_hide_it(adapter):
    assert KEY not in repr(adapter) and KEY not in str(adapter) and KEY not in repr(vars(adapter))


def test_adapter_when_checked_satisfies_the_vendor_protocol(adapter):
    assert isinstance(adapter, VendorAdapter)
    assert adapter.requires_auth_reply is True and adapter.replaces_subscriptions is True
    assert 15 <= adapter.heartbeat_interval_s <= 30
    assert adapter.snapshot_url("AAPL$US") is None


# ======================================================================================
# Symbols
# ======================================================================================


@pytest.mark.parametrize(
    "market, text, expected",
    [
        ("stock", "AAPL$US", "AAPL$US"), ("stock", " aapl$us ", "AAPL$US"), ("stock", "AAPL.US", "AAPL$US"),
        ("stock", "BRK.B.US", "BRK.B$US"), ("stock", "700$HK", "700$HK"), ("stock", "700.hk", "700$HK"),
        ("forex", "EURUSD", "EURUSD$GB"), ("forex", "eur/usd", "EURUSD$GB"), ("indices", "SPX", "SPX$GB"),
        ("crypto", "BTCUSDT", "BTCUSDT$BA"), ("crypto", "btc/usdt", "BTCUSDT$BA"),
    ],
)
def test_normalize_symbol_when_valid_returns_code_dollar_region(market, text, expected):
    a = ITickAdapter(token=KEY, market=market)
    assert a.normalize_symbol(text) == expected and a.symbol_pattern.match(expected)


def test_normalize_symbol_when_stock_without_region_asks_for_one(adapter):
    with pytest.raises(ValueError, match=r"needs a region.*AAPL\$US"):
        adapter.normalize_symbol("AAPL")


@pytest.mark.parametrize("text", ["", "$US", "AAPL$USA", "AAPL$1", "A B$US", "AAPL.U", "AAPL$$US"])
def test_normalize_symbol_when_invalid_raises(adapter, text):
    with pytest.raises(ValueError):
        adapter.normalize_symbol(text)


def test_validate_subscription_when_over_configured_limit_raises():
    a = ITickAdapter(token=KEY, max_symbols_per_connection=1)
    with pytest.raises(ValueError, match="limit of 1"):
        a.subscribe_messages(["AAPL$US", "TSLA$US"])


# ======================================================================================
# Control messages
# ======================================================================================


def test_subscribe_messages_when_called_returns_one_frame_for_full_list(adapter):
    (frame,) = adapter.subscribe_messages(["AAPL.US", "TSLA$US", "aapl$us"])
    assert json.loads(frame) == {"ac": "subscribe", "params": "AAPL$US,TSLA$US", "types": "tick,depth"}


def test_subscribe_messages_when_empty_returns_no_frame(adapter):
    assert adapter.subscribe_messages([]) == []


def test_unsubscribe_messages_when_symbols_remain_sends_unsubscribe_then_reduced_list(adapter):
    adapter.subscribe_messages(["AAPL$US", "TSLA$US"])
    frames = [json.loads(f) for f in adapter.unsubscribe_messages(["AAPL.US"])]
    assert frames == [
        {"ac": "unsubscribe", "params": "AAPL$US", "types": "tick,depth"},
        {"ac": "subscribe", "params": "TSLA$US", "types": "tick,depth"},
    ]


def test_unsubscribe_messages_when_none_remain_sends_only_unsubscribe(adapter):
    adapter.subscribe_messages(["AAPL$US"])
    assert [json.loads(f)["ac"] for f in adapter.unsubscribe_messages(["AAPL$US"])] == ["unsubscribe"]


def test_heartbeat_message_when_time_given_sends_it_as_string(adapter):
    assert json.loads(adapter.heartbeat_message(1717000000123)) == {"ac": "ping", "params": "1717000000123"}


def test_heartbeat_message_when_no_time_given_uses_wall_clock_ms(adapter):
    ms = int(json.loads(adapter.heartbeat_message())["params"])
    assert abs(ms - time.time() * 1000) < 5000


# ======================================================================================
# Replies and auth
# ======================================================================================


def test_parse_when_connected_returns_ok_reply(adapter):
    assert adapter.parse('{"code":1,"msg":"Connected Successfully"}', 0) == [
        VendorReply(True, "iTick: connected", "connect")]


def test_parse_when_auth_succeeds_returns_auth_reply_without_the_key(adapter):
    raw = json.dumps({"code": 1, "resAc": "auth", "msg": "authenticated", "data": {"params": KEY}})
    (r,) = adapter.parse(raw, 0)
    assert r == VendorReply(True, "iTick: authenticated", "auth")
    assert adapter.is_auth_ok(r) is True and adapter.auth_status(raw) is True
    assert adapter.auth_status(raw.encode()) is True


def test_parse_when_auth_fails_returns_fatal_refusal_in_words(adapter):
    raw = '{"code":0,"resAc":"auth","msg":"auth failed"}'
    (r,) = adapter.parse(raw, 0)
    assert not r.ok and r.request_id == "auth" and "ITICK_TOKEN" in r.message
    assert adapter.is_auth_ok(r) is False and adapter.auth_status(raw) is False
    assert adapter.is_fatal_reply(r)


def test_parse_when_vendor_echoes_the_key_in_a_refusal_masks_it(adapter):
    (r,) = adapter.parse(json.dumps({"code": 0, "resAc": "auth", "msg": f"bad key {KEY}"}), 0)
    assert KEY not in r.message


def test_auth_status_when_frame_is_not_auth_returns_none(adapter):
    assert adapter.auth_status(_tick()) is None
    assert adapter.auth_status('{"code":1,"msg":"Connected Successfully"}') is None
    assert adapter.auth_status(b'{"auth" broken') is None
    assert adapter.is_auth_ok(VendorReply(True, "x", "subscribe")) is None


def test_parse_when_subscribe_acknowledged_returns_reply_with_symbols(adapter):
    adapter.subscribe_messages(["AAPL$US", "TSLA$US"])
    (r,) = adapter.parse('{"code":1,"resAc":"subscribe","msg":"subscribe Successfully"}', 0)
    assert r == VendorReply(True, "iTick: subscribed AAPL$US, TSLA$US", "subscribe", ("AAPL$US", "TSLA$US"))


@pytest.mark.parametrize(
    "msg, words",
    [("exceeding the maximum subscription limit", "too many symbols"),
     ("cannot be resolved action", "request not understood"),
     ("E001 product not found: X$US", "product not found")],
)
def test_parse_when_subscribe_refused_returns_refusal_in_words(adapter, msg, words):
    adapter.subscribe_messages(["AAPL$US"])
    (r,) = adapter.parse(json.dumps({"code": 0, "resAc": "subscribe", "msg": msg}), 0)
    assert not r.ok and words in r.message and r.symbols == ("AAPL$US",)
    assert not adapter.is_fatal_reply(r)


def test_parse_when_error_without_action_answers_oldest_request(adapter):
    adapter.subscribe_messages(["AAPL$US"])
    (r,) = adapter.parse('{"code":0,"msg":"cannot be resolved action"}', 0)
    assert not r.ok and r.request_id == "subscribe" and r.symbols == ("AAPL$US",)


def test_parse_when_pong_returns_no_event(adapter):
    assert adapter.parse('{"resAc":"pong","data":{"params":"1717000000123"}}', 0) == []


def test_parse_when_quote_or_kline_push_returns_no_event(adapter):
    assert adapter.parse(_push(s="AAPL", ld=1.0, type="quote"), 0) == []
    assert adapter.parse(_push(s="AAPL", t=1, k={"o": 1}), 0) == []
    assert adapter.parse(_push(s="AAPL", type="kline@1"), 0) == []


# ======================================================================================
# Pushes
# ======================================================================================


@pytest.mark.parametrize("s", ["AAPL", "aapl", "AAPL.US", "AAPL$US"])
def test_parse_when_tick_names_symbol_any_way_returns_subscribed_symbol(adapter, s):
    adapter.subscribe_messages(["AAPL$US"])
    (t,) = adapter.parse(_tick(s=s), 9)
    assert t == Trade("AAPL$US", 1_717_000_000_123_000_000, 191.52, 100.0, UNKNOWN, None, 9)


def test_parse_when_tick_uses_seconds_and_strings_still_parses(adapter):
    adapter.subscribe_messages(["AAPL$US"])
    (t,) = adapter.parse(_tick(ld="191.52", v="100", t="1717000000"), 0)
    assert (t.price, t.size, t.ts_ns) == (191.52, 100.0, 1_717_000_000 * 10**9)


def test_parse_when_bare_code_subscribed_in_two_regions_refuses_as_ambiguous(adapter):
    adapter.subscribe_messages(["ABC$US", "ABC$HK"])
    with pytest.raises(MalformedMessage) as info:
        adapter.parse(_tick(s="ABC"), 0)
    assert info.value.reason == "ambiguous_symbol"
    assert adapter.parse(_tick(s="ABC$HK"), 0)[0].symbol == "ABC$HK"


def test_parse_when_bare_code_unknown_on_market_with_default_region_uses_it():
    a = ITickAdapter(token=KEY, market="forex")
    assert a.parse(_tick(s="EURUSD", ld=1.085), 0)[0].symbol == "EURUSD$GB"


def test_parse_when_depth_push_returns_partial_snapshot_ordered_by_level(adapter):
    adapter.subscribe_messages(["AAPL$US"])
    raw = _push(s="AAPL$US", type="depth",
                a=[{"po": 2, "p": 191.54, "v": 10, "o": 1}, {"po": 1, "p": 191.53, "v": 300, "o": 3}],
                b=[{"po": 1, "p": 191.51, "v": 200, "o": 2}])
    (snap,) = adapter.parse(raw, 0)
    assert snap == BookSnapshot("AAPL$US", 0, None, ((191.51, 200.0),),
                                ((191.53, 300.0), (191.54, 10.0)), is_partial=True)


def test_parse_when_depth_has_time_and_no_po_sorts_by_price(adapter):
    adapter.subscribe_messages(["AAPL$US"])
    raw = _push(s="AAPL", type="depth", t=1717000000123,
                b=[{"p": 1.0, "v": 1}, {"p": 2.0, "v": 1}], a=[])
    (snap,) = adapter.parse(raw, 0)
    assert snap.bids == ((2.0, 1.0), (1.0, 1.0)) and snap.ts_ns == 1_717_000_000_123_000_000


# ======================================================================================
# Malformed input
# ======================================================================================


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("{oops", "bad_json"),
        ("[]", "bad_shape"),
        ('{"hello": 1}', "unknown_event"),
        (_push(s="AAPL$US", type="trade2"), "unknown_event"),
        (_tick(ld=...), "missing_field"),
        (_tick(t=...), "missing_field"),
        (_tick(s=...), "missing_field"),
        (_tick(ld="x"), "bad_price"),
        (_tick(ld=True), "bad_price"),
        (_tick(ld=0), "bad_price"),
        (_tick(v=-1), "bad_size"),
        (_tick(t="later"), "bad_time"),
        (_tick(s=7), "bad_symbol"),
        (_tick(s="NOPE"), "unknown_symbol"),
        (_push(s="AAPL$US", type="depth"), "missing_field"),
        (_push(s="AAPL$US", type="depth", a=[{"p": -1, "v": 1}]), "bad_level"),
        (_push(s="AAPL$US", type="depth", a=[[1, 2]]), "bad_level"),
        (_push(s="AAPL$US", type="depth", b={"p": 1}), "bad_level"),
    ],
)
def test_parse_when_input_is_malformed_raises_with_reason(adapter, raw, reason):
    adapter.subscribe_messages(["AAPL$US"])
    with pytest.raises(MalformedMessage) as info:
        adapter.parse(raw, 0)
    assert info.value.reason == reason


def test_parse_snapshot_when_called_refuses(adapter):
    with pytest.raises(MalformedMessage, match="no_snapshot"):
        adapter.parse_snapshot("AAPL$US", b"{}", 0)


# ======================================================================================
# Loopback: the fake server with websocket-client
# ======================================================================================


def _connect(adapter: ITickAdapter, **kw) -> websocket.WebSocket:
    return websocket.create_connection(adapter.url(), header=adapter.header(), timeout=2, **kw)


def _recv(ws: websocket.WebSocket, adapter: ITickAdapter) -> list:
    return adapter.parse(ws.recv(), time.time_ns())


def _authenticated(adapter: ITickAdapter) -> websocket.WebSocket:
    ws = _connect(adapter)
    assert _recv(ws, adapter) == [VendorReply(True, "iTick: connected", "connect")]
    (auth,) = _recv(ws, adapter)
    assert adapter.is_auth_ok(auth) is True
    return ws


@pytest.fixture
def server():
    with FakeITickServer(token=KEY) as srv:
        yield srv


@pytest.fixture
def live(server):
    a = ITickAdapter(token=KEY, base_url=server.base_url)
    ws = _authenticated(a)
    yield a, ws
    ws.close()


def test_loopback_when_key_accepted_connected_then_authenticated(server, live):
    a, ws = live
    assert server.events("auth")[0][1]["ok"] is True and server.subscriptions()[0]["authenticated"]


def test_loopback_when_key_refused_auth_failed_and_link_closed(server):
    a = ITickAdapter(token="wrong-key-000", base_url=server.base_url)
    ws = _connect(a)
    assert _recv(ws, a)[0].ok
    raw = ws.recv()
    (r,) = a.parse(raw, 0)
    assert a.auth_status(raw) is False and not r.ok and a.is_fatal_reply(r)
    assert server.wait_for(lambda: "auth failed" in server.closed_reasons())
    ws.close()


def test_loopback_when_subscribing_before_auth_answered_cannot_be_resolved():
    with FakeITickServer(token=KEY, auth_delay_s=0.3) as srv:
        a = ITickAdapter(token=KEY, base_url=srv.base_url)
        ws = _connect(a)
        _recv(ws, a)  # connected
        ws.send(a.subscribe_messages(["AAPL$US"])[0])
        (early,) = _recv(ws, a)
        assert not early.ok and "before authentication" in early.message
        (auth,) = _recv(ws, a)
        assert a.is_auth_ok(auth) is True and srv.subscriptions()[0]["symbols"] == []
        ws.send(a.subscribe_messages(["AAPL$US"])[0])
        (ok,) = _recv(ws, a)
        assert ok.ok and srv.subscriptions()[0]["symbols"] == ["AAPL$US"]
        ws.close()


def test_loopback_when_no_header_but_auth_message_sent_authenticates(server):
    a = ITickAdapter(token=KEY, base_url=server.base_url)
    ws = websocket.create_connection(a.url(), timeout=2)
    _recv(ws, a)
    ws.send(json.dumps({"ac": "auth", "params": KEY}))
    (auth,) = _recv(ws, a)
    assert a.is_auth_ok(auth) is True
    ws.close()


def test_loopback_when_ping_sent_pong_yields_no_event(server, live):
    a, ws = live
    ws.send(a.heartbeat_message())
    assert _recv(ws, a) == []
    assert server.wait_for(lambda: server.subscriptions()[0]["pings"] == 1)


def test_loopback_when_pings_stop_link_dropped_by_fake_timeout():
    with FakeITickServer(token=KEY, ping_timeout_s=0.3) as srv:
        a = ITickAdapter(token=KEY, base_url=srv.base_url)
        ws = _authenticated(a)
        assert srv.wait_for(lambda: "ping timeout" in srv.closed_reasons(), timeout=3)
        ws.close()


@pytest.mark.parametrize("echo", ["code", "dot", "dollar"])
def test_loopback_when_subscribed_pushes_parse_into_trade_and_snapshot(echo):
    with FakeITickServer(token=KEY, symbol_echo=echo) as srv:
        a = ITickAdapter(token=KEY, base_url=srv.base_url)
        ws = _authenticated(a)
        ws.send(a.subscribe_messages(["AAPL.US", "TSLA$US"])[0])
        (r,) = _recv(ws, a)
        assert r.ok and r.symbols == ("AAPL$US", "TSLA$US")
        assert srv.push_once() == 4
        events = [e for _ in range(4) for e in _recv(ws, a)]
        trades = [e for e in events if type(e) is Trade]
        books = [e for e in events if type(e) is BookSnapshot]
        assert {t.symbol for t in trades} == {b.symbol for b in books} == {"AAPL$US", "TSLA$US"}
        assert all(t.side == UNKNOWN and t.ts_ns > 1_717_000_000 * 10**9 for t in trades)
        assert all(b.is_partial and len(b.bids) == 5 and b.bids[0][0] < b.asks[0][0] for b in books)
        ws.close()


def test_loopback_when_unsubscribed_pushes_stop_for_that_symbol(server, live):
    a, ws = live
    ws.send(a.subscribe_messages(["AAPL$US", "TSLA$US"])[0])
    _recv(ws, a)
    for frame in a.unsubscribe_messages(["AAPL$US"]):
        ws.send(frame)
        assert _recv(ws, a)[0].ok
    assert server.subscriptions()[0]["symbols"] == ["TSLA$US"]
    assert server.push_once() == 2
    assert {e.symbol for _ in range(2) for e in _recv(ws, a)} == {"TSLA$US"}


def test_loopback_when_over_subscription_limit_refused_in_words():
    with FakeITickServer(token=KEY, max_symbols=1) as srv:
        a = ITickAdapter(token=KEY, base_url=srv.base_url)
        ws = _authenticated(a)
        ws.send(a.subscribe_messages(["AAPL$US", "TSLA$US"])[0])
        (r,) = _recv(ws, a)
        assert not r.ok and "too many symbols" in r.message and r.symbols == ("AAPL$US", "TSLA$US")
        ws.close()


def test_loopback_when_unknown_product_refused_in_words():
    with FakeITickServer(token=KEY, known_symbols={"AAPL$US": 191.5}) as srv:
        a = ITickAdapter(token=KEY, base_url=srv.base_url)
        ws = _authenticated(a)
        ws.send(a.subscribe_messages(["ZZZZ$US"])[0])
        (r,) = _recv(ws, a)
        assert not r.ok and "product not found" in r.message
        ws.close()


def test_loopback_when_second_connection_authenticates_first_is_kicked(server):
    a = ITickAdapter(token=KEY, base_url=server.base_url)
    first = _authenticated(a)
    second = _authenticated(a)
    assert server.wait_for(lambda: "kicked by a new connection" in server.closed_reasons())
    assert server.connection_count == 1
    first.close()
    second.close()


def test_loopback_when_market_path_unknown_handshake_refused_404(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.url("nowhere"), header={"token": KEY}, timeout=2)
    assert info.value.status_code == 404
