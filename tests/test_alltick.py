"""AllTick adapter: pure parser/control tests, then loopback tests against the fake server."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from feed.core.events import RawMessage
from feed.core.models import BUY, SELL, UNKNOWN, BookSnapshot, MalformedMessage, Trade, VendorReply
from feed.vendors.alltick import FOREX_CRYPTO_URL, STOCK_URL, AllTickAdapter, ts_to_ns
from feed.vendors.base import VendorAdapter
from tests.fakes import FakeAllTickServer

pytestmark = pytest.mark.timeout(20)

TOKEN = "tok-9f8e7d6c5b4a"


@pytest.fixture
def adapter() -> AllTickAdapter:
    return AllTickAdapter(token=TOKEN)


def _push(cmd: int, **data) -> str:
    return json.dumps({"cmd_id": cmd, "data": data})


def _trade(**over) -> str:
    data = {"code": "AAPL.US", "seq": "30841440", "tick_time": "1717000000123", "price": "191.52",
            "volume": "100", "turnover": "19152.00", "trade_direction": 1}
    data.update(over)
    return _push(22998, **{k: v for k, v in data.items() if v is not ...})


# ======================================================================================
# Construction, token hygiene, URLs
# ======================================================================================


def test_init_when_no_token_anywhere_raises_naming_the_env_var(monkeypatch):
    monkeypatch.delenv("ALLTICK_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ALLTICK_TOKEN"):
        AllTickAdapter()


def test_init_when_token_in_env_uses_it(monkeypatch):
    monkeypatch.setenv("ALLTICK_TOKEN", "from-env-1234")
    a = AllTickAdapter()
    assert a.url(["BTCUSDT"]) == FOREX_CRYPTO_URL + "?token=from-env-1234"


def test_init_when_token_has_spaces_raises_without_echoing_it():
    with pytest.raises(ValueError) as info:
        AllTickAdapter(token="abc def-secret")
    assert "def-secret" not in str(info.value)


def test_init_when_url_carries_a_token_refuses_without_echoing_it():
    with pytest.raises(ValueError) as info:
        AllTickAdapter(token=TOKEN, stock_url="wss://h/quote-stock-b-ws-api?token=leaked-123")
    assert "leaked-123" not in str(info.value)


def test_adapter_when_checked_satisfies_the_vendor_protocol(adapter):
    assert isinstance(adapter, VendorAdapter)
    assert adapter.replaces_subscriptions is True
    assert adapter.heartbeat_interval_s == 10
    assert 1 / adapter.max_messages_per_s > 1.0  # >= 1 s between requests, with a margin
    assert adapter.max_symbols_per_connection == 5
    assert adapter.snapshot_url("AAPL.US") is None


def test_url_when_stock_symbols_picks_stock_endpoint_with_token(adapter):
    assert adapter.url(["AAPL.US", "700.HK"]) == f"{STOCK_URL}?token={TOKEN}"


def test_url_when_crypto_or_fx_symbols_picks_forex_crypto_endpoint(adapter):
    assert adapter.url(["BTCUSDT", "EURUSD", "GOLD"]).startswith(FOREX_CRYPTO_URL + "?")


def test_url_when_symbols_mix_asset_classes_raises(adapter):
    with pytest.raises(ValueError, match="separate"):
        adapter.url(["AAPL.US", "BTCUSDT"])


def test_url_when_no_symbols_and_pinned_uses_pinned_endpoint():
    a = AllTickAdapter(token=TOKEN, asset_class="forex_crypto")
    assert a.url().startswith(FOREX_CRYPTO_URL)
    with pytest.raises(ValueError, match="separate AllTick feeds"):
        a.normalize_symbol("AAPL.US")


def test_display_url_when_token_set_masks_it(adapter):
    shown = adapter.display_url(["AAPL.US"])
    assert TOKEN not in shown and shown.endswith("token=***")


def test_repr_and_str_when_token_set_hide_it(adapter):
    assert TOKEN not in repr(adapter) and TOKEN not in str(adapter)
    assert TOKEN not in repr(vars(adapter)) and TOKEN not in f"{adapter._token}"


def test_errors_when_raised_never_contain_the_token(adapter):
    texts = []
    for bad in ("", "AAPL.XX", ["AAPL.US", "BTCUSDT"], ["A.US", "B.US", "C.US", "D.US", "E.US", "F.US"]):
        with pytest.raises(ValueError) as info:
            adapter.subscribe_messages([bad] if isinstance(bad, str) else bad)
        texts.append(str(info.value))
    with pytest.raises(MalformedMessage) as info:
        adapter.parse(_trade(price="x"), 0)
    texts.append(str(info.value))
    assert all(TOKEN not in t for t in texts)


def test_reply_when_vendor_echoes_the_token_masks_it(adapter):
    raw = json.dumps({"ret": 401, "msg": f"token {TOKEN} expired", "cmd_id": 22005, "seq_id": 1,
                      "trace": "t", "data": {}})
    (reply,) = adapter.parse(raw, 0)
    assert TOKEN not in reply.message and "***" in reply.message


# ======================================================================================
# Symbols
# ======================================================================================


@pytest.mark.parametrize(
    "text, expected",
    [
        ("AAPL.US", "AAPL.US"), (" aapl.us ", "AAPL.US"), ("BRK.B.US", "BRK.B.US"),
        ("700.HK", "700.HK"), ("00700.HK", "700.HK"), ("HK-1288", "1288.HK"),
        ("600519.SH", "600519.SH"), ("000001.sz", "000001.SZ"),
        ("BTCUSDT", "BTCUSDT"), ("btc/usdt", "BTCUSDT"), ("EURUSD", "EURUSD"), ("gold", "GOLD"),
    ],
)
def test_normalize_symbol_when_valid_returns_alltick_code(adapter, text, expected):
    assert adapter.normalize_symbol(text) == expected
    assert adapter.symbol_pattern.match(expected)


@pytest.mark.parametrize(
    "text", ["", "  ", "AAPL.XX", "123456.HK", "60051.SH", "AA PL.US", "$$$", "X", "1234", "A" * 21]
)
def test_normalize_symbol_when_invalid_raises_with_the_accepted_forms(adapter, text):
    with pytest.raises(ValueError, match="AAPL.US"):
        adapter.normalize_symbol(text)


def test_normalize_symbol_when_not_text_raises(adapter):
    with pytest.raises(ValueError, match="text"):
        adapter.normalize_symbol(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "symbol, level",
    [("AAPL.US", 5), ("700.HK", 10), ("600519.SH", 5), ("000001.SZ", 5),
     ("BTCUSDT", 5), ("ETHBTC", 5), ("EURUSD", 1), ("GOLD", 1)],
)
def test_depth_level_when_market_known_follows_documented_limits(adapter, symbol, level):
    assert adapter.depth_level_of(symbol) == level


# ======================================================================================
# Control messages
# ======================================================================================


def test_subscribe_messages_when_called_returns_trades_then_depth_for_full_list(adapter):
    trades, depth = map(json.loads, adapter.subscribe_messages(["aapl.us", "700.HK", "AAPL.US"]))
    assert trades["cmd_id"] == 22004 and depth["cmd_id"] == 22002
    assert trades["data"] == {"symbol_list": [{"code": "AAPL.US"}, {"code": "700.HK"}]}
    assert depth["data"]["symbol_list"] == [
        {"code": "AAPL.US", "depth_level": 5}, {"code": "700.HK", "depth_level": 10}]
    assert depth["seq_id"] == trades["seq_id"] + 1
    assert trades["trace"] == f"tickscope-trades-{trades['seq_id']}" and len(trades["trace"]) <= 64


def test_subscribe_messages_when_over_plan_limit_raises_naming_the_limit(adapter):
    with pytest.raises(ValueError, match="plan limit of 5"):
        adapter.subscribe_messages([f"{c}.US" for c in "ABCDEF"])


def test_subscribe_messages_when_limit_configured_accepts_more():
    a = AllTickAdapter(token=TOKEN, max_symbols_per_connection=100)
    assert len(json.loads(a.subscribe_messages([f"{c}.US" for c in "ABCDEF"])[0])["data"]["symbol_list"]) == 6


def test_unsubscribe_messages_when_symbols_remain_resends_reduced_list(adapter):
    adapter.subscribe_messages(["AAPL.US", "TSLA.US"])
    frames = [json.loads(f) for f in adapter.unsubscribe_messages(["AAPL.US"])]
    assert [f["cmd_id"] for f in frames] == [22004, 22002]
    assert frames[0]["data"]["symbol_list"] == [{"code": "TSLA.US"}]


def test_unsubscribe_messages_when_none_remain_cancels_all(adapter):
    adapter.subscribe_messages(["AAPL.US"])
    (frame,) = map(json.loads, adapter.unsubscribe_messages(["AAPL.US"]))
    assert frame["cmd_id"] == 22006 and frame["data"] == {"cancel_type": 0}


def test_heartbeat_message_when_repeated_increments_seq_id(adapter):
    first, second = json.loads(adapter.heartbeat_message()), json.loads(adapter.heartbeat_message())
    assert first["cmd_id"] == 22000 and first["data"] == {}
    assert second["seq_id"] == first["seq_id"] + 1


# ======================================================================================
# Trade pushes (22998)
# ======================================================================================


def test_parse_when_trade_with_string_fields_returns_trade(adapter):
    (t,) = adapter.parse(_trade(), 42)
    assert t == Trade("AAPL.US", 1_717_000_000_123_000_000, 191.52, 100.0, BUY, 30841440, 42)


def test_parse_when_trade_with_int_fields_returns_same_trade(adapter):
    (t,) = adapter.parse(_trade(seq=30841440, tick_time=1717000000123, price=191.52, volume=100), 42)
    assert t == Trade("AAPL.US", 1_717_000_000_123_000_000, 191.52, 100.0, BUY, 30841440, 42)


@pytest.mark.parametrize(
    "tick_time, ns",
    [("1605509068", 1_605_509_068_000_000_000), (1605509068, 1_605_509_068_000_000_000),
     ("1605509068123", 1_605_509_068_123_000_000), ("1605509068.5", 1_605_509_068_500_000_000),
     (1605509068123456, 1_605_509_068_123_456_000)],
)
def test_parse_when_tick_time_in_seconds_or_ms_detects_unit_by_magnitude(adapter, tick_time, ns):
    (t,) = adapter.parse(_trade(tick_time=tick_time), 0)
    assert t.ts_ns == ns


@pytest.mark.parametrize("direction, side", [(1, BUY), (2, SELL), (0, UNKNOWN), ("2", SELL), (..., UNKNOWN)])
def test_parse_when_trade_direction_given_maps_taker_side(adapter, direction, side):
    (t,) = adapter.parse(_trade(trade_direction=direction), 0)
    assert t.side == side


def test_parse_when_fx_trade_has_zero_volume_and_no_turnover_keeps_it(adapter):
    (t,) = adapter.parse(_trade(code="EURUSD", volume="0", turnover=..., trade_direction=0), 0)
    assert (t.symbol, t.size, t.side) == ("EURUSD", 0.0, UNKNOWN)


def test_parse_when_seq_missing_returns_trade_without_id(adapter):
    (t,) = adapter.parse(_trade(seq=...), 0)
    assert t.trade_id is None


def test_parse_when_raw_is_bytes_parses_it(adapter):
    (t,) = adapter.parse(_trade().encode(), 0)
    assert t.price == 191.52


# ======================================================================================
# Depth pushes (22999)
# ======================================================================================


def test_parse_when_depth_push_returns_partial_snapshot_best_first(adapter):
    raw = _push(22999, code="BTCUSDT", seq="1717000000000001", tick_time="1717000000456",
                bids=[{"price": "66999.5", "volume": "2"}, {"price": "67000.0", "volume": "0.8"}],
                asks=[{"price": "67000.5", "volume": "1.1"}])
    (snap,) = adapter.parse(raw, 0)
    assert snap == BookSnapshot("BTCUSDT", 1_717_000_000_456_000_000, 1717000000000001,
                                ((67000.0, 0.8), (66999.5, 2.0)), ((67000.5, 1.1),), is_partial=True)


def test_parse_when_depth_side_empty_or_volume_missing_keeps_it(adapter):
    raw = _push(22999, code="EURUSD", seq=7, tick_time=1717000000456,
                bids=[{"price": "1.085"}], asks=[])
    (snap,) = adapter.parse(raw, 0)
    assert snap.bids == ((1.085, 0.0),) and snap.asks == () and snap.is_partial


# ======================================================================================
# Replies
# ======================================================================================


def _reply(ret: int, cmd: int, seq: int, msg: str = "ok") -> str:
    return json.dumps({"ret": ret, "msg": msg, "cmd_id": cmd, "seq_id": seq, "trace": f"tr-{seq}", "data": {}})


def test_parse_when_subscribe_acknowledged_returns_ok_reply_with_symbols(adapter):
    trades = json.loads(adapter.subscribe_messages(["AAPL.US", "TSLA.US"])[0])
    (r,) = adapter.parse(_reply(200, 22005, trades["seq_id"]), 0)
    assert r == VendorReply(True, "AllTick: subscribed trades for AAPL.US, TSLA.US",
                            f"tr-{trades['seq_id']}", ("AAPL.US", "TSLA.US"))


def test_parse_when_heartbeat_acknowledged_returns_no_event(adapter):
    assert adapter.parse(_reply(200, 22001, 9), 0) == []


@pytest.mark.parametrize(
    "ret, words",
    [(401, "token invalid or expired"), (429, "rate limit"), (605, "too many requests"),
     (606, "close the connection"), (600, "symbol code invalid"), (604, "not authorized"),
     (603, "plan level"), (999, "unknown error")],
)
def test_parse_when_reply_has_error_ret_returns_refusal_in_plain_words(adapter, ret, words):
    (r,) = adapter.parse(_reply(ret, 22003, 5, msg="x"), 0)
    assert not r.ok and words in r.message and f"error {ret}" in r.message


def test_parse_when_heartbeat_refused_returns_refusal(adapter):
    (r,) = adapter.parse(_reply(401, 22001, 3, msg="token invalid"), 0)
    assert not r.ok and "401" in r.message


def test_is_fatal_reply_when_token_invalid_or_plan_too_low_returns_true(adapter):
    (r401,) = adapter.parse(_reply(401, 22005, 1), 0)
    (r429,) = adapter.parse(_reply(429, 22005, 2), 0)
    (r603,) = adapter.parse(_reply(603, 22003, 3), 0)
    assert adapter.is_fatal_reply(r401) and adapter.is_fatal_reply(r603)
    assert not adapter.is_fatal_reply(r429) and not adapter.is_fatal_reply(VendorReply(True))


# ======================================================================================
# Malformed input
# ======================================================================================


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        ("[1, 2]", "bad_shape"),
        ('{"cmd_id": 12345, "data": {}}', "unknown_event"),
        ('{"data": {}}', "unknown_event"),
        ('{"cmd_id": 22998, "data": []}', "bad_shape"),
        (_trade(code=...), "missing_field"),
        (_trade(tick_time=...), "missing_field"),
        (_trade(price="abc"), "bad_price"),
        (_trade(price="0"), "bad_price"),
        (_trade(price="-1"), "bad_price"),
        (_trade(price="NaN"), "bad_price"),
        (_trade(volume="-5"), "bad_size"),
        (_trade(tick_time="soon"), "bad_time"),
        (_trade(tick_time=True), "bad_time"),
        (_trade(tick_time=0), "bad_time"),
        (_trade(tick_time="9" * 30), "bad_time"),
        (_trade(trade_direction=7), "bad_field"),
        (_trade(trade_direction=True), "bad_field"),
        (_trade(seq="12a"), "bad_trade_id"),
        (_trade(code=5), "bad_symbol"),
        (_push(22999, code="X", tick_time=1), "missing_field"),
        (_push(22999, code="X", tick_time=1, bids="no"), "bad_level"),
        (_push(22999, code="X", tick_time=1, bids=[{"volume": "1"}]), "bad_level"),
        (_push(22999, code="X", tick_time=1, bids=[{"price": "-1", "volume": "1"}]), "bad_level"),
        (_push(22999, code="X", tick_time=1, bids=[["1", "2"]]), "bad_level"),
        ('{"ret": "oops", "cmd_id": 22005}', "bad_reply"),
    ],
)
def test_parse_when_input_is_malformed_raises_with_reason(adapter, raw, reason):
    with pytest.raises(MalformedMessage) as info:
        adapter.parse(raw, 0)
    assert info.value.reason == reason


def test_parse_snapshot_when_called_refuses(adapter):
    with pytest.raises(MalformedMessage, match="no_snapshot"):
        adapter.parse_snapshot("AAPL.US", b"{}", 0)


def test_ts_to_ns_when_microseconds_or_nanoseconds_keeps_precision():
    assert ts_to_ns(1_717_000_000_123_456) == 1_717_000_000_123_456_000
    assert ts_to_ns("1717000000123456789") == 1_717_000_000_123_456_789


# ======================================================================================
# Loopback: the fake server with websocket-client
# ======================================================================================


def _connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=2)


def _recv(ws: websocket.WebSocket, adapter: AllTickAdapter) -> list:
    return adapter.parse(ws.recv(), time.time_ns())


def _send_spaced(ws, frames, gap: float = 0.06) -> None:
    for f in frames:
        ws.send(f)
        time.sleep(gap)


@pytest.fixture
def server():
    srv = FakeAllTickServer(token=TOKEN, min_request_interval_s=0.05, heartbeat_timeout_s=2.0)
    with srv:
        yield srv


@pytest.fixture
def live(server):
    a = AllTickAdapter(token=TOKEN, stock_url=server.stock_url, forex_crypto_url=server.forex_crypto_url)
    ws = _connect(a.url(["AAPL.US"]))
    yield a, ws
    ws.close()


def test_loopback_when_token_valid_heartbeat_is_answered_without_event(server, live):
    a, ws = live
    ws.send(a.heartbeat_message())
    assert _recv(ws, a) == []
    assert server.wait_for(lambda: server.subscriptions()[0]["heartbeats"] == 1)


def test_loopback_when_token_invalid_requests_answered_401_and_link_closed(server):
    a = AllTickAdapter(token="wrong-token", stock_url=server.stock_url)
    ws = _connect(a.url(["AAPL.US"]))
    ws.send(a.subscribe_messages(["AAPL.US"])[0])
    (reply,) = _recv(ws, a)
    assert not reply.ok and "token invalid or expired" in reply.message and a.is_fatal_reply(reply)
    assert server.wait_for(lambda: "token invalid" in server.closed_reasons())
    ws.close()


def test_loopback_when_token_invalid_in_http_mode_handshake_refused():
    with FakeAllTickServer(token=TOKEN, bad_token="http") as srv:
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            _connect(srv.url("stock", token="nope"))
        assert info.value.status_code == 401


def test_loopback_when_no_heartbeat_link_is_dropped():
    with FakeAllTickServer(token=TOKEN, heartbeat_timeout_s=0.3) as srv:
        ws = _connect(srv.url("stock"))
        assert srv.wait_for(lambda: "heartbeat timeout" in srv.closed_reasons(), timeout=3)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            for _ in range(3):  # websocket-client returns "" for the close frame, then raises
                ws.recv()
        ws.close()


def test_loopback_when_heartbeats_keep_coming_link_stays_up():
    a = AllTickAdapter(token=TOKEN)
    with FakeAllTickServer(token=TOKEN, heartbeat_timeout_s=0.4, min_request_interval_s=0.05) as srv:
        ws = _connect(srv.url("stock"))
        for _ in range(8):  # 1.2 s, three times the timeout
            ws.send(a.heartbeat_message())
            assert a.parse(ws.recv(), 0) == []
            time.sleep(0.15)
        assert srv.connection_count == 1 and srv.closed_reasons() == []
        ws.close()


def test_loopback_when_next_request_sent_replaces_previous_subscription(server, live):
    a, ws = live
    _send_spaced(ws, a.subscribe_messages(["AAPL.US", "TSLA.US"]))
    assert all(r.ok for _ in range(2) for r in _recv(ws, a))
    _send_spaced(ws, a.unsubscribe_messages(["AAPL.US"]))
    assert all(r.ok for _ in range(2) for r in _recv(ws, a))
    (sub,) = server.subscriptions()
    assert sub["trades"] == ["TSLA.US"] and sub["depth"] == {"TSLA.US": 5}
    assert server.push_once() == 2
    events = _recv(ws, a) + _recv(ws, a)
    assert {type(e) for e in events} == {Trade, BookSnapshot} and {e.symbol for e in events} == {"TSLA.US"}


def test_loopback_when_last_symbol_removed_cancel_clears_everything(server, live):
    a, ws = live
    _send_spaced(ws, a.subscribe_messages(["AAPL.US"]))
    _recv(ws, a), _recv(ws, a)
    ws.send(a.unsubscribe_messages(["AAPL.US"])[0])
    (r,) = _recv(ws, a)
    assert r.ok and "cancelled" in r.message
    assert server.subscriptions()[0]["trades"] == [] and server.push_once() == 0


def test_loopback_when_code_unknown_answered_600(server, live):
    a, ws = live
    ws.send(a.subscribe_messages(["ZZZZ.US"])[0])
    (r,) = _recv(ws, a)
    assert not r.ok and "600" in r.message and r.symbols == ("ZZZZ.US",)


def test_loopback_when_code_on_wrong_endpoint_answered_600(server, live):
    a, ws = live  # connected to the stock endpoint
    ws.send(json.dumps({"cmd_id": 22004, "seq_id": 1, "trace": "x", "data": {"symbol_list": [{"code": "BTCUSDT"}]}}))
    (r,) = _recv(ws, a)
    assert not r.ok and "wrong endpoint" in r.message


def test_loopback_when_code_not_in_plan_answered_604():
    with FakeAllTickServer(token=TOKEN, unauthorized={"700.HK"}) as srv:
        a = AllTickAdapter(token=TOKEN, stock_url=srv.stock_url)
        ws = _connect(a.url(["700.HK"]))
        ws.send(a.subscribe_messages(["700.HK"])[0])
        (r,) = _recv(ws, a)
        assert not r.ok and "604" in r.message and "not authorized" in r.message
        ws.close()


def test_loopback_when_over_plan_limit_extra_symbols_silently_ignored():
    a = AllTickAdapter(token=TOKEN, max_symbols_per_connection=100)
    codes = ["AAPL.US", "TSLA.US", "MSFT.US", "NVDA.US", "AMZN.US", "GOOGL.US"]
    with FakeAllTickServer(token=TOKEN) as srv:
        ws = _connect(srv.url("stock"))
        ws.send(a.subscribe_messages(codes)[0])
        (r,) = a.parse(ws.recv(), 0)
        assert r.ok and srv.subscriptions()[0]["trades"] == codes[:5]
        ws.close()


def test_loopback_when_over_plan_limit_in_error_mode_answered_603():
    a = AllTickAdapter(token=TOKEN, max_symbols_per_connection=100)
    codes = ["AAPL.US", "TSLA.US", "MSFT.US", "NVDA.US", "AMZN.US", "GOOGL.US"]
    with FakeAllTickServer(token=TOKEN, over_limit="error") as srv:
        ws = _connect(srv.url("stock"))
        ws.send(a.subscribe_messages(codes)[0])
        (r,) = a.parse(ws.recv(), 0)
        assert not r.ok and "603" in r.message and a.is_fatal_reply(r)
        ws.close()


def test_loopback_when_requests_faster_than_limit_answered_429_then_606_and_closed():
    a = AllTickAdapter(token=TOKEN)
    with FakeAllTickServer(token=TOKEN, min_request_interval_s=1.0, close_after_violations=2) as srv:
        ws = _connect(srv.url("stock"))
        for _ in range(3):
            ws.send(a.heartbeat_message())
        first, second, third = (a.parse(ws.recv(), 0) for _ in range(3))
        assert first == []
        assert "429" in second[0].message and "606" in third[0].message
        assert srv.wait_for(lambda: "too many requests" in srv.closed_reasons())
        ws.close()


def test_loopback_when_second_connection_over_plan_it_is_dropped():
    with FakeAllTickServer(token=TOKEN, max_connections=1) as srv:
        first = _connect(srv.url("stock"))
        second = _connect(srv.url("stock"))
        assert srv.wait_for(lambda: "too many connections" in srv.closed_reasons())
        third = _connect(srv.url("forex_crypto"))  # counted separately per endpoint
        assert srv.wait_for(lambda: srv.connection_count == 2)
        for ws in (first, second, third):
            ws.close()


@pytest.mark.parametrize("style, unit", [("string", "ms"), ("int", "ms"), ("string", "s"), ("int", "s")])
def test_loopback_when_pushes_use_any_time_style_adapter_parses_them(style, unit):
    with FakeAllTickServer(token=TOKEN, time_style=style, time_unit=unit, min_request_interval_s=0) as srv:
        a = AllTickAdapter(token=TOKEN, forex_crypto_url=srv.forex_crypto_url)
        ws = _connect(a.url(["BTCUSDT", "EURUSD"]))
        for f in a.subscribe_messages(["BTCUSDT", "EURUSD"]):
            ws.send(f)
            assert a.parse(ws.recv(), 0)[0].ok
        assert srv.push_once() == 4
        events = [e for _ in range(4) for e in a.parse(ws.recv(), 0)]
        trades = [e for e in events if type(e) is Trade]
        books = {e.symbol: e for e in events if type(e) is BookSnapshot}
        assert {t.symbol for t in trades} == {"BTCUSDT", "EURUSD"}
        assert all(1_717_000_000 * 10**9 <= t.ts_ns < 1_717_000_001 * 10**9 for t in trades)
        assert len(books["BTCUSDT"].bids) == 5 and len(books["EURUSD"].bids) == 1
        assert all(b.is_partial for b in books.values())
        ws.close()


def test_loopback_when_pushing_on_a_timer_delivers_trades_continuously():
    with FakeAllTickServer(token=TOKEN, push_interval_s=0.05, min_request_interval_s=0) as srv:
        a = AllTickAdapter(token=TOKEN, stock_url=srv.stock_url)
        ws = _connect(a.url(["AAPL.US"]))
        ws.send(a.subscribe_messages(["AAPL.US"])[0])
        events = [e for _ in range(4) for e in a.parse(ws.recv(), 0)]
        trades = [e for e in events if type(e) is Trade]
        assert len(trades) == 3 and [t.trade_id for t in trades] == sorted(t.trade_id for t in trades)
        ws.close()


def test_loopback_when_trade_seq_skipped_adapter_shows_the_gap_in_trade_ids():
    with FakeAllTickServer(token=TOKEN, min_request_interval_s=0) as srv:
        a = AllTickAdapter(token=TOKEN, stock_url=srv.stock_url)
        ws = _connect(a.url(["AAPL.US"]))
        ws.send(a.subscribe_messages(["AAPL.US"])[0])
        a.parse(ws.recv(), 0)
        srv.push_once()
        srv.skip_trade_seq("AAPL.US", 2)
        srv.push_once()
        ids = [e.trade_id for _ in range(2) for e in a.parse(ws.recv(), 0)]
        assert ids == [1, 4]
        ws.close()


# ======================================================================================
# In the engine: seq is not a consecutive trade id; secrets stay out of the log
# ======================================================================================


def test_engine_when_seq_jumps_or_repeats_counts_no_gap_and_drops_no_trade(adapter):
    from feed.io.engine import Engine

    engine = Engine(adapter)
    engine.subscribe("AAPL.US")
    pushes = [_trade(seq=s, tick_time=str(1717000000123 + i)) for i, s in enumerate(("10", "11", "15", "15", "3"))]
    engine.process([RawMessage(0, p) for p in pushes])
    counters = engine.counters()
    assert counters.trades == 5 and counters.gaps == 0 and counters.duplicates == 0
    assert engine.gap_marks("AAPL.US") == []


def test_engine_when_malformed_message_holds_the_token_logs_it_masked(adapter, caplog):
    from feed.io.engine import Engine

    engine = Engine(adapter)
    with caplog.at_level("WARNING", logger="tickscope.engine"):
        engine.process([RawMessage(0, f'{{"cmd_id":22998,"data":"{TOKEN}"}}'.encode())])
    assert engine.counters().malformed == 1
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)
    assert any("***" in r.getMessage() for r in caplog.records)


def test_rejected_symbols_when_600_names_the_newly_added_code_only(adapter):
    first = adapter.subscribe_messages(["AAPL.US"])
    trades_seq = json.loads(first[0])["seq_id"]
    ok = adapter.parse(json.dumps({"ret": 200, "msg": "ok", "cmd_id": 22005, "seq_id": trades_seq}), 0)
    assert ok[0].ok
    second = adapter.subscribe_messages(["AAPL.US", "ZZZZ.US"])
    seq = json.loads(second[0])["seq_id"]
    refused = adapter.parse(json.dumps({"ret": 600, "msg": "code invalid", "cmd_id": 22005, "seq_id": seq}), 0)[0]
    assert not refused.ok and adapter.rejected_symbols(refused) == ("ZZZZ.US",)
    # Rate limits and token errors are not about a symbol.
    limited = adapter.parse(json.dumps({"ret": 429, "msg": "too many", "cmd_id": 22005, "seq_id": seq}), 0)[0]
    assert adapter.rejected_symbols(limited) == ()
