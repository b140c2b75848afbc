"""BinanceAdapter: parsing every wire message, malformed input, symbols, URLs, control."""

from __future__ import annotations

import json

import pytest

from feed.core.models import (
    BUY,
    SELL,
    BookDelta,
    BookSnapshot,
    BookTicker,
    MalformedMessage,
    Trade,
    VendorReply,
)
from feed.vendors.base import VendorAdapter
from feed.vendors.binance import MAX_PARAMS_PER_MESSAGE, BinanceAdapter

RECV = 1_723_161_254_087_896_568

SPOT_TRADE = {
    "e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259,
    "p": "61837.63000000", "q": "0.02000000", "T": 1723161255342, "m": True, "M": True,
}
USDM_TRADE = {
    "e": "trade", "E": 1723161256322, "T": 1723161256322, "s": "BTCUSDT", "t": 5266583935,
    "p": "61800.30", "q": "0.006", "X": "MARKET", "m": False,
}
AGG_TRADE = {
    "e": "aggTrade", "E": 1717000000200, "s": "BTCUSDT", "a": 2900000001, "p": "67000.00",
    "q": "0.420", "f": 3600000002, "l": 3600000005, "T": 1717000000199, "m": False, "M": True,
}
SPOT_DEPTH = {
    "e": "depthUpdate", "E": 1723161255208, "s": "BTCUSDT", "U": 50093239189, "u": 50093239202,
    "b": [["61737.63000000", "0.00000000"], ["61730.17000000", "1.5"]],
    "a": [["61837.64000000", "1.54698000"]],
}
USDM_DEPTH = {
    "e": "depthUpdate", "E": 1723161256299, "T": 1723161256298, "s": "BTCUSDT",
    "U": 5123107832006, "u": 5123107837557, "pu": 5123107831937,
    "b": [["58710.20", "0.014"]], "a": [["61800.30", "2.510"], ["61900.00", "0.000"]],
}
SPOT_BOOK_TICKER = {
    "u": 50093239212, "s": "BTCUSDT", "b": "61837.63000000", "B": "3.78826000",
    "a": "61837.64000000", "A": "1.54698000",
}
USDM_BOOK_TICKER = {
    "e": "bookTicker", "u": 5123107839020, "s": "BTCUSDT", "b": "61800.20", "B": "2.507",
    "a": "61800.30", "A": "2.510", "T": 1723161256313, "E": 1723161256313,
}


def wrap(stream: str, data: dict) -> str:
    return json.dumps({"stream": stream, "data": data})


@pytest.fixture
def spot() -> BinanceAdapter:
    return BinanceAdapter("spot")


@pytest.fixture
def usdm() -> BinanceAdapter:
    return BinanceAdapter("usdm")


def reason(adapter: BinanceAdapter, raw) -> str:
    with pytest.raises(MalformedMessage) as info:
        adapter.parse(raw, RECV)
    return info.value.reason


# -- protocol --------------------------------------------------------------------------


def test_binance_adapter_when_checked_against_protocol_implements_it():
    for market in ("spot", "usdm", "coinm"):
        assert isinstance(BinanceAdapter(market), VendorAdapter)


def test_init_when_market_unknown_raises_value_error():
    with pytest.raises(ValueError, match="spot, usdm, coinm"):
        BinanceAdapter("margin")


# -- trades ----------------------------------------------------------------------------


def test_parse_when_spot_trade_combined_returns_trade_with_ns_time_and_taker_side(spot):
    [t] = spot.parse(wrap("btcusdt@trade", SPOT_TRADE), RECV)
    assert t == Trade("BTCUSDT", 1723161255342 * 1_000_000, 61837.63, 0.02, SELL,
                      3735683259, RECV, True)


def test_parse_when_trade_arrives_as_bytes_parses_the_same(spot):
    raw = wrap("btcusdt@trade", SPOT_TRADE)
    assert spot.parse(raw.encode(), RECV) == spot.parse(raw, RECV)


def test_parse_when_raw_trade_without_wrapper_takes_symbol_from_payload(spot):
    [t] = spot.parse(json.dumps(dict(SPOT_TRADE, s="ETHBTC")), RECV)
    assert t.symbol == "ETHBTC" and t.trade_id == 3735683259


def test_parse_when_buyer_is_not_maker_returns_buy(usdm):
    [t] = usdm.parse(wrap("btcusdt@trade", USDM_TRADE), RECV)
    assert t.side == BUY and t.in_bars and t.price == 61800.30 and t.size == 0.006


def test_parse_when_futures_trade_is_insurance_fund_excludes_it_from_bars(usdm):
    [t] = usdm.parse(wrap("btcusdt@trade", dict(USDM_TRADE, X="INSURANCE_FUND")), RECV)
    assert t.in_bars is False


def test_parse_when_agg_trade_uses_aggregate_id_as_trade_id(spot):
    [t] = spot.parse(wrap("btcusdt@aggTrade", AGG_TRADE), RECV)
    assert t.trade_id == 2900000001 and t.side == BUY and t.ts_ns == 1717000000199 * 10**6
    assert spot.parse(json.dumps(AGG_TRADE), RECV) == [t]


# -- depth -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["depth", "depth@100ms", "depth@0ms"])
def test_parse_when_spot_diff_depth_returns_delta_without_pu(spot, suffix):
    [d] = spot.parse(wrap(f"btcusdt@{suffix}", SPOT_DEPTH), RECV)
    assert d == BookDelta(
        "BTCUSDT", 1723161255208 * 10**6, 50093239189, 50093239202, None,
        ((61737.63, 0.0), (61730.17, 1.5)), ((61837.64, 1.54698),),
    )


def test_parse_when_futures_diff_depth_keeps_pu(usdm):
    [d] = usdm.parse(wrap("btcusdt@depth@0ms", USDM_DEPTH), RECV)
    assert d.prev_final_update_id == 5123107831937
    assert d.asks == ((61800.30, 2.51), (61900.0, 0.0))
    assert usdm.parse(json.dumps(USDM_DEPTH), RECV) == [d]


@pytest.mark.parametrize("stream", ["ethbtc@depth5", "ethbtc@depth10@100ms", "ethbtc@depth20"])
def test_parse_when_spot_partial_depth_takes_symbol_from_stream(spot, stream):
    data = {"lastUpdateId": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]]}
    [s] = spot.parse(wrap(stream, data), RECV)
    assert s == BookSnapshot("ETHBTC", 0, 160, ((0.0024, 10.0),), ((0.0026, 100.0),), True)


def test_parse_when_futures_partial_depth_stream_returns_partial_snapshot(usdm):
    [s] = usdm.parse(wrap("btcusdt@depth5@100ms", USDM_DEPTH), RECV)
    assert isinstance(s, BookSnapshot) and s.is_partial
    assert s.last_update_id == 5123107837557 and s.ts_ns == 1723161256299 * 10**6


def test_parse_when_partial_depth_arrives_raw_without_symbol_is_malformed(spot):
    raw = json.dumps({"lastUpdateId": 160, "bids": [], "asks": []})
    assert reason(spot, raw) == "no_symbol"


# -- book ticker -----------------------------------------------------------------------


def test_parse_when_spot_book_ticker_returns_best_levels_without_time(spot):
    [b] = spot.parse(wrap("btcusdt@bookTicker", SPOT_BOOK_TICKER), RECV)
    assert b == BookTicker("BTCUSDT", 50093239212, 61837.63, 3.78826, 61837.64, 1.54698, 0)
    assert spot.parse(json.dumps(SPOT_BOOK_TICKER), RECV) == [b]


def test_parse_when_futures_book_ticker_stamps_event_time(usdm):
    [b] = usdm.parse(wrap("btcusdt@bookTicker", USDM_BOOK_TICKER), RECV)
    assert b.ts_ns == 1723161256313 * 10**6 and b.update_id == 5123107839020
    assert usdm.parse(json.dumps(USDM_BOOK_TICKER), RECV) == [b]


# -- control replies -------------------------------------------------------------------


def test_parse_when_subscribe_succeeds_returns_ok_reply_naming_symbols(spot):
    [msg] = spot.subscribe_messages(["btcusdt", "ETHUSDT"])
    rid = json.loads(msg)["id"]
    [r] = spot.parse(json.dumps({"result": None, "id": rid}), RECV)
    assert r == VendorReply(True, "subscribed BTCUSDT, ETHUSDT", str(rid), ("BTCUSDT", "ETHUSDT"))


def test_parse_when_error_reply_returns_not_ok_with_code_and_message(spot):
    [msg] = spot.subscribe_messages(["BTCUSDT"])
    rid = json.loads(msg)["id"]
    raw = json.dumps({"error": {"code": 2, "msg": "Invalid request: too many params"}, "id": rid})
    [r] = spot.parse(raw.encode(), RECV)
    assert not r.ok and r.request_id == str(rid) and r.symbols == ("BTCUSDT",)
    assert "Binance error 2: Invalid request: too many params" in r.message


def test_parse_when_flat_error_reply_returns_not_ok(spot):
    [r] = spot.parse('{"code":3,"msg":"Invalid JSON","id":null}', RECV)
    assert not r.ok and r.request_id is None and "3" in r.message


def test_parse_when_list_subscriptions_result_returns_symbols(spot):
    [r] = spot.parse('{"result":["btcusdt@trade","btcusdt@depth@100ms"],"id":3}', RECV)
    assert r.ok and r.symbols == ("BTCUSDT",) and r.request_id == "3"


def test_parse_when_documented_but_unused_event_returns_nothing(usdm):
    mark = {"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1", "r": "0", "T": 1}
    assert usdm.parse(wrap("btcusdt@markPrice@1s", mark), RECV) == []


# -- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, why",
    [
        ('{"stream":"btcusdt@trade","data":{"e":"trade"', "bad_json"),
        (b'\xff\xfe{"a":1}', "bad_json"),
        ("", "bad_json"),
        ("[" * 100_000, "bad_json"),
        ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1}} trailing', "bad_json"),
        ("[1, 2]", "bad_shape"),
        ('{"stream":"btcusdt@trade","data":[1]}', "bad_shape"),
        ('{"stream":5,"data":{}}', "bad_shape"),
        (wrap("btcusdt@trade", {k: v for k, v in SPOT_TRADE.items() if k != "p"}), "missing_field"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, p="abc")), "bad_price"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, p=["1"])), "bad_price"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, p="NaN")), "bad_price"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, p="inf")), "bad_price"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, p="-1.5")), "bad_price"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, q="0.00000000")), "bad_size"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, q="-0.1")), "bad_size"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, T="1723161255342")), "bad_time"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, T=1723161255342.0)), "bad_time"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, m="true")), "bad_field"),
        (wrap("btcusdt@trade", dict(SPOT_TRADE, t=None)), "bad_trade_id"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, b="61000")), "bad_level"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, b=["61000"])), "bad_level"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, b=[["61000"]])), "bad_level"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, b=[["61000", "-1"]])), "bad_level"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, a=[["NaN", "1"]])), "bad_level"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, a=[["0", "1"]])), "bad_level"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, U=SPOT_DEPTH["u"] + 1)), "bad_update_id"),
        (wrap("btcusdt@depth@100ms", dict(SPOT_DEPTH, u="50093239202")), "bad_update_id"),
        (wrap("btcusdt@depth@0ms", dict(USDM_DEPTH, pu=1.5)), "bad_update_id"),
        (wrap("btcusdt@bookTicker", dict(SPOT_BOOK_TICKER, b="-1")), "bad_price"),
        (wrap("btcusdt@bookTicker", dict(SPOT_BOOK_TICKER, A="Infinity")), "bad_size"),
        (wrap("btcusdt@bookTicker", dict(SPOT_BOOK_TICKER, u=None)), "bad_update_id"),
        (wrap("btcusdt@kline_1m", {"e": "somethingNew", "E": 1}), "unknown_event"),
        ('{"e":"somethingNew","E":1}', "unknown_event"),
        ('{"hello":"world"}', "unknown_event"),
        ('{"e":"serverShutdown","E":1}', "server_shutdown"),
        ('{"error":"nope","id":1}', "bad_reply"),
    ],
)
def test_parse_when_input_malformed_raises_malformed_message_with_reason(spot, raw, why):
    assert reason(spot, raw) == why


def test_parse_when_message_truncated_anywhere_raises_only_malformed_message(usdm):
    # Whatever prefix of a real message arrives, the adapter answers with events or
    # MalformedMessage, never another exception.
    for data, stream in [(USDM_DEPTH, "btcusdt@depth@0ms"), (USDM_TRADE, "btcusdt@trade"),
                         (USDM_BOOK_TICKER, "btcusdt@bookTicker")]:
        raw = wrap(stream, data).encode()
        for cut in range(len(raw)):
            with pytest.raises(MalformedMessage):
                usdm.parse(raw[:cut], RECV)


def test_parse_when_fields_have_every_wrong_type_raises_only_malformed_message(spot):
    oddities = [None, True, 1.5, -3, "", "x", [], {}, [[]], [["1", "2", "3"]], 10**30]
    for data, stream in [(SPOT_TRADE, "btcusdt@trade"), (SPOT_DEPTH, "btcusdt@depth@100ms"),
                         (SPOT_BOOK_TICKER, "btcusdt@bookTicker"), (AGG_TRADE, "btcusdt@aggTrade")]:
        for key in data:
            for odd in oddities:
                try:
                    spot.parse(wrap(stream, dict(data, **{key: odd})), RECV)
                except MalformedMessage:
                    pass


# -- symbols ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, want", [("btcusdt", "BTCUSDT"), (" BTC/USDT ", "BTCUSDT"),
                                        ("1000satsusdt", "1000SATSUSDT")])
def test_normalize_symbol_when_valid_returns_upper_case(spot, text, want):
    assert spot.normalize_symbol(text) == want


@pytest.mark.parametrize("text", ["BTC", "btcusdt@trade", "BTCUSD_PERP", "", "x" * 21, "BTC USDT"])
def test_normalize_symbol_when_invalid_for_spot_raises_value_error_for_user(spot, text):
    with pytest.raises(ValueError, match="not a Binance spot symbol.*BTCUSDT"):
        spot.normalize_symbol(text)


def test_normalize_symbol_when_not_text_raises_value_error(spot):
    with pytest.raises(ValueError, match="text"):
        spot.normalize_symbol(None)


def test_normalize_symbol_when_futures_contract_suffix_accepts_it():
    assert BinanceAdapter("coinm").normalize_symbol("btcusd_perp") == "BTCUSD_PERP"
    assert BinanceAdapter("usdm").normalize_symbol("BTCUSDT_240927") == "BTCUSDT_240927"


# -- URLs ------------------------------------------------------------------------------


def test_urls_when_defaults_point_at_binance(spot, usdm):
    assert spot.url(["BTCUSDT"]) == "wss://stream.binance.com:9443/stream"
    assert usdm.url() == "wss://fstream.binance.com/stream"
    assert spot.snapshot_url("btcusdt") == "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert usdm.snapshot_url("BTCUSDT") == "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    assert BinanceAdapter("coinm").snapshot_url("btcusd_perp").startswith(
        "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP")


def test_urls_when_only_ws_url_given_derive_rest_on_same_host_and_port():
    a = BinanceAdapter(ws_url="ws://127.0.0.1:9000/stream")
    assert a.url() == "ws://127.0.0.1:9000/stream"
    assert a.snapshot_url("BTCUSDT") == "http://127.0.0.1:9000/api/v3/depth?symbol=BTCUSDT&limit=1000"
    b = BinanceAdapter("usdm", ws_url="wss://example.test:8443/stream")
    assert b.snapshot_url("BTCUSDT").startswith("https://example.test:8443/fapi/v1/depth?")


def test_urls_when_rest_url_given_use_it_as_base_or_full_depth_url():
    a = BinanceAdapter(ws_url="ws://127.0.0.1:9000/stream", rest_url="http://127.0.0.1:9001/")
    assert a.snapshot_url("BTCUSDT") == "http://127.0.0.1:9001/api/v3/depth?symbol=BTCUSDT&limit=1000"
    b = BinanceAdapter(rest_url="https://data-api.binance.vision/api/v3/depth")
    assert b.snapshot_url("BTCUSDT") == "https://data-api.binance.vision/api/v3/depth?symbol=BTCUSDT&limit=1000"


@pytest.mark.parametrize("kwargs", [{"ws_url": "http://127.0.0.1:9000"}, {"ws_url": "127.0.0.1:9000"},
                                    {"rest_url": "ws://127.0.0.1:9000"}])
def test_init_when_url_scheme_wrong_raises_value_error(kwargs):
    with pytest.raises(ValueError, match="must start with"):
        BinanceAdapter(**kwargs)


# -- control messages ------------------------------------------------------------------


def test_subscribe_messages_when_called_twice_lists_lower_case_streams_with_rising_ids(spot):
    [first] = spot.subscribe_messages(["BTCUSDT"])
    [second] = spot.unsubscribe_messages(["ethusdt"])
    a, b = json.loads(first), json.loads(second)
    assert a == {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@depth@100ms"], "id": a["id"]}
    assert b["method"] == "UNSUBSCRIBE" and b["params"] == ["ethusdt@trade", "ethusdt@depth@100ms"]
    assert b["id"] > a["id"]


def test_subscribe_messages_when_many_symbols_batches_params(spot):
    symbols = [f"SYM{i:04d}USDT" for i in range(120)]
    msgs = [json.loads(m) for m in spot.subscribe_messages(symbols)]
    assert [len(m["params"]) for m in msgs] == [100, 100, 40]
    assert len({m["id"] for m in msgs}) == 3
    assert sum((m["params"] for m in msgs), []) == spot.stream_names(symbols)
    assert all(len(m["params"]) <= MAX_PARAMS_PER_MESSAGE for m in msgs)


def test_subscribe_messages_when_a_symbol_is_invalid_raises_before_building_anything(spot):
    with pytest.raises(ValueError, match="BTC/"):
        spot.subscribe_messages(["BTCUSDT", "BTC/"])


def test_heartbeat_when_binance_returns_none(spot):
    assert spot.heartbeat_message() is None and spot.heartbeat_interval_s is None
    assert spot.max_messages_per_s == 4 and BinanceAdapter("usdm").max_messages_per_s == 8  # headroom for pongs


# -- REST snapshot ---------------------------------------------------------------------


def test_parse_snapshot_when_spot_body_returns_full_snapshot(spot):
    body = b'{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[["61837.64000000","1.5"]]}'
    s = spot.parse_snapshot("btcusdt", body, RECV)
    assert s == BookSnapshot("BTCUSDT", 0, 50093239218, ((61837.63, 3.78826),), ((61837.64, 1.5),), False)


def test_parse_snapshot_when_futures_body_stamps_event_time(usdm):
    body = b'{"lastUpdateId": 5123107852948, "E": 1723161256501, "T": 1723161256493, "bids": [], "asks": []}'
    s = usdm.parse_snapshot("BTCUSDT", body, RECV)
    assert s.ts_ns == 1723161256501 * 10**6 and s.last_update_id == 5123107852948


@pytest.mark.parametrize(
    "body, why",
    [
        (b'{"code":-1121,"msg":"Invalid symbol."}', "vendor_error"),
        (b'{"lastUpdateId":1,"bids":[["1","1"]]', "bad_json"),
        (b'<html>451</html>', "bad_json"),
        (b'[]', "bad_shape"),
        (b'{"bids":[],"asks":[]}', "missing_field"),
        (b'{"lastUpdateId":"1","bids":[],"asks":[]}', "bad_update_id"),
        (b'{"lastUpdateId":1,"bids":[]}', "missing_field"),
        (b'{"lastUpdateId":1,"bids":[["x","1"]],"asks":[]}', "bad_level"),
        (b'{"lastUpdateId":1,"bids":[["1","-1"]],"asks":[]}', "bad_level"),
        (b'{"lastUpdateId":1,"symbol":"ETHUSDT","bids":[],"asks":[]}', "wrong_symbol"),
    ],
)
def test_parse_snapshot_when_body_unusable_raises_malformed_message(spot, body, why):
    with pytest.raises(MalformedMessage) as info:
        spot.parse_snapshot("BTCUSDT", body, RECV)
    assert info.value.reason == why


def test_parse_snapshot_when_price_is_a_huge_integer_raises_malformed_only(spot):
    body = b'{"lastUpdateId": 5, "bids": [[' + b"9" * 400 + b', "1"]], "asks": []}'
    with pytest.raises(MalformedMessage):
        spot.parse_snapshot("BTCUSDT", body, 0)
