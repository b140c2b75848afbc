"""Embedded local exchange over real loopback sockets, plus the pure market simulator.

Clients are websocket-client ``create_connection`` (as the app's feed uses websocket-client)
and urllib for REST. Every socket read has a timeout and every test a pytest-timeout bound.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websocket import WebSocketBadStatusException, WebSocketTimeoutException, create_connection

from feed.exchange.faults import Faults
from feed.exchange.server import EmbeddedExchange
from feed.io.readers import read_recording
from feed.exchange.simulator import MarketSimulator

pytestmark = pytest.mark.timeout(30)

RECV_TIMEOUT_S = 5.0
T0_NS = 1_723_161_600_000_000_000  # 2024-08-09 00:00 UTC, a fixed simulator start
SPOT = ("raw", "spot")


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def sim_exchange():
    ex = EmbeddedExchange(seed=7).start()
    yield ex
    ex.stop()


def connect(url: str, timeout: float = RECV_TIMEOUT_S):
    return create_connection(url, timeout=timeout, skip_utf8_validation=True)


def control(ws, method: str, params=None, req_id=1) -> tuple[dict, list[str]]:
    """Send a control message; return its reply and the data messages that came first."""
    msg = {"method": method, "id": req_id}
    if params is not None:
        msg["params"] = params
    ws.send(json.dumps(msg))
    before = []
    while True:
        text = ws.recv()
        obj = json.loads(text)
        if obj.get("id") == req_id and ("result" in obj or "error" in obj):
            return obj, before
        before.append(text)


def collect(ws, seconds: float) -> list[str]:
    """Return every message received for ``seconds``."""
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ws.settimeout(max(left, 0.01))
        try:
            out.append(ws.recv())
        except WebSocketTimeoutException:
            break
    ws.settimeout(RECV_TIMEOUT_S)
    return out


def rest_depth(base: str, symbol: str, limit: int = 100, path: str = "/api/v3/depth"):
    """GET a depth snapshot; return (HTTP status, parsed JSON body)."""
    url = f"{base}{path}?symbol={symbol}&limit={limit}"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stream_of(text: str) -> str:
    return json.loads(text)["stream"]


def recorded(path: Path, stream: str) -> list[str]:
    """Return the raw recorded lines of one stream, in file order."""
    prefix = f'{{"stream":"{stream}",'
    return [raw for _, raw in read_recording(path) if raw.startswith(prefix)]


def apply_levels(side: dict, levels) -> None:
    for p, q in levels:
        if float(q) == 0:
            side.pop(float(p), None)
        else:
            side[float(p)] = (p, q)


def expected_book(path: Path, last_update_id: int) -> dict:
    """Rebuild the recorded book (snapshot + diffs with u > lastUpdateId) up to ``u``."""
    bids, asks, lid, pending = {}, {}, None, []
    for _, raw in read_recording(path):
        if raw.startswith('{"lastUpdateId"'):
            snap = json.loads(raw)
            bids, asks = {}, {}
            apply_levels(bids, snap["bids"])
            apply_levels(asks, snap["asks"])
            lid = snap["lastUpdateId"]
            diffs, pending = pending, []
        elif "@depth" in raw[:40]:
            diffs = [json.loads(raw)["data"]]
            if lid is None:
                pending += diffs
                continue
        else:
            continue
        for d in diffs:
            if d["u"] > lid:
                apply_levels(bids, d["b"])
                apply_levels(asks, d["a"])
                lid = d["u"]
        if lid == last_update_id:
            return {
                "lastUpdateId": lid,
                "bids": [list(bids[k]) for k in sorted(bids, reverse=True)],
                "asks": [list(asks[k]) for k in sorted(asks)],
            }
    raise AssertionError(f"the recording never reaches update id {last_update_id}")


@pytest.fixture
def btc_slice(hft_data, tmp_path) -> Path:
    """The first 4 s of the spot BTCUSDT capture (snapshot included), as a plain file."""
    out = tmp_path / "btcusdt_slice.txt"
    lines = []
    first = None
    for recv_ns, raw in read_recording(hft_data.joinpath(*SPOT, "btcusdt_20240808.gz")):
        first = first or recv_ns
        if recv_ns - first > 4_000_000_000:
            break
        lines.append(f"{recv_ns} {raw}\n")
    out.write_text("".join(lines))
    return out


# -- control messages -------------------------------------------------------------------


def test_control_when_subscribe_unsubscribe_list_replies_binance_shapes(sim_exchange):
    ws = connect(sim_exchange.ws_url)
    try:
        reply, _ = control(ws, "SUBSCRIBE", ["btcusdt@trade", "ethusdt@depth@100ms"], 1)
        assert reply == {"result": None, "id": 1}
        reply, _ = control(ws, "LIST_SUBSCRIPTIONS", req_id=2)
        assert reply == {"result": ["btcusdt@trade", "ethusdt@depth@100ms"], "id": 2}
        reply, _ = control(ws, "UNSUBSCRIBE", ["btcusdt@trade"], "abc3")
        assert reply == {"result": None, "id": "abc3"}
        reply, _ = control(ws, "LIST_SUBSCRIPTIONS", req_id=4)
        assert reply == {"result": ["ethusdt@depth@100ms"], "id": 4}
        reply, _ = control(ws, "GET_PROPERTY", ["combined"], 5)
        assert reply == {"result": True, "id": 5}
    finally:
        ws.close()


def test_subscribe_when_stream_invalid_replies_error_and_subscribes_nothing(sim_exchange):
    ws = connect(sim_exchange.ws_url)
    try:
        for i, params in enumerate(
            (["foo@trade"], ["btcusdt@trade", "BTCUSDT@trade"], ["btcusdt@kline_1m"],
             ["btcusdt@depth@7ms"], ["btcusdt"]), start=1
        ):
            reply, _ = control(ws, "SUBSCRIBE", params, i)
            assert reply["id"] == i and reply["error"]["code"] == 2, reply
            assert reply["error"]["msg"].startswith("Invalid request: ")
        reply, _ = control(ws, "FROB", [], 10)
        assert reply["error"]["code"] == 2 and "FROB" in reply["error"]["msg"]
        ws.send("{not json")
        assert json.loads(ws.recv())["error"]["code"] == 3
        reply, _ = control(ws, "LIST_SUBSCRIPTIONS", req_id=11)
        assert reply == {"result": [], "id": 11}
        assert collect(ws, 0.3) == []
    finally:
        ws.close()
    with pytest.raises(WebSocketBadStatusException) as bad:
        connect(f"{sim_exchange.ws_url}?streams=btcusdt@trade/foo@trade")
    assert bad.value.status_code == 400


def test_subscribe_when_symbol_not_in_recording_replies_error(btc_slice):
    with EmbeddedExchange(replay_files=[btc_slice], speed=0) as ex:
        assert ex.symbols == ["BTCUSDT"]
        ws = connect(ex.ws_url)
        try:
            reply, _ = control(ws, "SUBSCRIBE", ["ethusdt@trade"], 1)
            assert reply["error"]["code"] == 2 and "ethusdt" in reply["error"]["msg"]
            assert not ex.finished.is_set()  # nothing subscribed: playback has not started
            # A stream the recording lacks, of a recorded symbol, is accepted (as Binance
            # accepts any stream of a listed symbol) and plays nothing.
            reply, _ = control(ws, "SUBSCRIBE", ["btcusdt@aggTrade"], 2)
            assert reply == {"result": None, "id": 2}
            assert not ex.serves("BTCUSDT", "aggTrade")
            assert ex.finished.wait(30) and not collect(ws, 0.5)
        finally:
            ws.close()


def test_receive_when_subscribed_only_subscribed_streams_arrive(sim_exchange):
    ws = connect(sim_exchange.ws_url)
    try:
        control(ws, "SUBSCRIBE", ["btcusdt@trade"], 1)
        first = collect(ws, 1.0)
        assert first and {stream_of(m) for m in first} == {"btcusdt@trade"}
        control(ws, "SUBSCRIBE", ["ethusdt@depth"], 2)
        control(ws, "UNSUBSCRIBE", ["btcusdt@trade"], 3)
        after = collect(ws, 0.5)
        assert {stream_of(m) for m in after} == {"ethusdt@depth"}
    finally:
        ws.close()


def test_rest_depth_when_symbol_unknown_returns_binance_invalid_symbol(sim_exchange):
    assert rest_depth(sim_exchange.rest_url, "FOO") == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, body = rest_depth(sim_exchange.rest_url, "btcusdt")
    assert status == 400 and body["code"] == -1100
    status, body = rest_depth(sim_exchange.rest_url, "BTCUSDT", 5, path="/fapi/v1/depth")
    assert status == 200 and len(body["bids"]) == 5


# -- simulator over sockets -------------------------------------------------------------


def test_simulator_streams_when_subscribed_have_binance_shape_and_contiguous_ids(sim_exchange):
    ws = connect(f"{sim_exchange.ws_url}?streams=btcusdt@trade/btcusdt@depth@100ms")
    try:
        msgs = [json.loads(m) for m in collect(ws, 1.5)]
    finally:
        ws.close()
    trades = [m["data"] for m in msgs if m["stream"] == "btcusdt@trade"]
    diffs = [m["data"] for m in msgs if m["stream"] == "btcusdt@depth@100ms"]
    assert len(trades) >= 3 and len(diffs) >= 8
    for t in trades:
        assert set(t) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
        assert t["e"] == "trade" and t["s"] == "BTCUSDT" and t["M"] is True
        assert isinstance(t["m"], bool) and t["T"] <= t["E"]
        assert len(t["p"].split(".")[1]) == 2 and len(t["q"].split(".")[1]) == 5  # tick, lot
        assert float(t["p"]) > 0 and float(t["q"]) > 0
    assert [t["t"] for t in trades] == list(range(trades[0]["t"], trades[0]["t"] + len(trades)))
    for prev, d in zip(diffs, diffs[1:]):
        assert set(d) == {"e", "E", "s", "U", "u", "b", "a"} and d["e"] == "depthUpdate"
        assert d["U"] == prev["u"] + 1 and d["u"] >= d["U"]
        assert all(isinstance(p, str) and isinstance(q, str) for p, q in d["b"] + d["a"])


def test_rest_depth_when_simulating_is_consistent_with_following_diffs(sim_exchange):
    ws = connect(sim_exchange.ws_url)
    try:
        control(ws, "SUBSCRIBE", ["ethusdt@depth@100ms"], 1)
        ws.recv()  # the stream is flowing before the snapshot is taken (Binance step 1)
        status, snap = rest_depth(sim_exchange.rest_url, "ETHUSDT", 1000)
        diffs = [json.loads(m)["data"] for m in collect(ws, 1.0)]
    finally:
        ws.close()
    assert status == 200 and snap["bids"] and snap["asks"]
    lid = snap["lastUpdateId"]
    live = [d for d in diffs if d["u"] > lid]
    assert live, "no diff after the snapshot"
    assert live[0]["U"] <= lid + 1 <= live[0]["u"]
    bids, asks = {}, {}
    apply_levels(bids, snap["bids"])
    apply_levels(asks, snap["asks"])
    for prev, d in zip(live, live[1:]):
        assert d["U"] == prev["u"] + 1
    for d in live:
        apply_levels(bids, d["b"])
        apply_levels(asks, d["a"])
        assert max(bids) < min(asks), "book crossed after applying a diff"


# -- simulator, pure --------------------------------------------------------------------


def run_simulator(seed: int, steps: int = 300):
    sim = MarketSimulator("BTCUSDT", start_ns=T0_NS, seed=seed)
    out = []
    for k in range(1, steps + 1):
        now = T0_NS + k * 100_000_000
        out.append((tuple(sim.advance(now)), sim.flush_depth(now)))
    return out, sim.snapshot()


def test_simulator_when_same_seed_and_times_repeats_exactly():
    a, snap_a = run_simulator(7)
    b, snap_b = run_simulator(7)
    c, _ = run_simulator(8)
    assert a == b and snap_a == snap_b
    assert a != c
    fills = [f for step, _ in a for f in step]
    assert 5 * 30 <= len(fills) <= 40 * 30  # a few to tens of trades/s over 30 s


def test_simulator_when_diffs_applied_to_snapshot_rebuilds_book_and_trades_hit_the_top():
    sim = MarketSimulator("SOLUSDT", start_ns=T0_NS, seed=3)
    snap = sim.snapshot()
    bids, asks, lid = dict(snap.bids), dict(snap.asks), snap.last_update_id
    flush_at = T0_NS + 100_000_000
    for _ in range(3000):
        bid, _, ask, _ = sim.top()
        t = sim.next_event_ns
        fills = sim.advance(t)  # exactly one event
        if fills:
            buy = not fills[0].buyer_is_maker
            assert fills[0].price_ticks == (ask if buy else bid)
            prices = [f.price_ticks for f in fills]
            assert prices == sorted(prices, reverse=not buy)
            assert len({f.order_id for f in fills}) == 1 and all(f.ts_ns == t for f in fills)
        top_bid, _, top_ask, _ = sim.top()
        assert top_bid < top_ask
        if t >= flush_at:
            diff = sim.flush_depth(t)
            flush_at += 100_000_000
            if diff is not None:
                assert diff.first_update_id == lid + 1
                for side, levels in ((bids, diff.bids), (asks, diff.asks)):
                    for p, q in levels:
                        side.pop(p, None) if q == 0 else side.__setitem__(p, q)
                lid = diff.final_update_id
    diff = sim.flush_depth(sim.next_event_ns)
    if diff is not None:
        for side, levels in ((bids, diff.bids), (asks, diff.asks)):
            for p, q in levels:
                side.pop(p, None) if q == 0 else side.__setitem__(p, q)
    final = sim.snapshot()
    assert (tuple(sorted(bids.items(), reverse=True)), tuple(sorted(asks.items()))) == (final.bids, final.asks)
    assert len(final.bids) >= 20 and len(final.asks) >= 20


def test_simulator_when_symbol_unknown_infers_tick_and_formats_exactly():
    sim = MarketSimulator("ZZTOPUSDT", start_ns=T0_NS)
    inst = sim.instrument
    bid, bid_qty, ask, _ = sim.top()
    price = inst.format_price(bid)
    assert float(price) == pytest.approx(bid * inst.tick) and ask > bid
    assert len(price.split(".")[1]) == inst.price_decimals if "." in price else inst.price_decimals == 0
    assert float(inst.format_qty(bid_qty)) > 0
    with pytest.raises(ValueError, match="quote asset"):
        MarketSimulator("ZZTOPXYZ", start_ns=T0_NS)


# -- replay -----------------------------------------------------------------------------


def test_replay_when_speed_zero_delivers_every_trade_once_in_order_byte_identical(hft_data):
    btc = hft_data.joinpath(*SPOT, "btcusdt_20240808.gz")
    eth = hft_data.joinpath(*SPOT, "ethusdt_20240808.gz")
    expected = recorded(btc, "btcusdt@trade")
    with EmbeddedExchange(replay_files=[btc, eth], speed=0) as ex:
        assert ex.symbols == ["BTCUSDT", "ETHUSDT"]
        ws = connect(ex.ws_url)
        try:
            reply, got = control(ws, "SUBSCRIBE", ["btcusdt@trade"], 1)
            assert reply == {"result": None, "id": 1}
            while len(got) < len(expected):
                got.append(ws.recv())
            assert ex.finished.wait(10)
            assert collect(ws, 0.3) == []  # nothing after the last trade: exactly once
        finally:
            ws.close()
    assert len(got) == len(expected) == 9757
    assert got == expected  # whole wrapper, byte for byte (the stream name matches)


def test_replay_when_client_stops_reading_waits_then_delivers_everything(hft_data):
    eth = hft_data.joinpath(*SPOT, "ethusdt_20240808.gz")
    streams = ("ethusdt@trade", "ethusdt@depth@100ms", "ethusdt@bookTicker")
    expected = sum(1 for _, raw in read_recording(eth) if raw.startswith('{"stream":'))
    with EmbeddedExchange(replay_files=[eth], speed=0) as ex:
        ws = connect(f"{ex.ws_url}?streams={'/'.join(streams)}")
        try:
            time.sleep(1.0)  # not reading: the source must wait, not buffer ~10 MB
            assert not ex.finished.is_set()
            got = [ws.recv() for _ in range(expected)]
            assert ex.finished.wait(5)
            assert collect(ws, 0.2) == []
        finally:
            ws.close()
    assert len(got) == expected == 33_617
    assert {stream_of(m) for m in got} == set(streams)


def test_replay_when_subscribed_name_differs_rewraps_recorded_data(btc_slice):
    expected = [raw[len('{"stream":"btcusdt@depth@100ms","data":'):-1]
                for raw in recorded(btc_slice, "btcusdt@depth@100ms")]
    with EmbeddedExchange(replay_files=[btc_slice], speed=0) as ex:
        ws = connect(f"{ex.ws_url}?streams=btcusdt@depth")
        try:
            got = [ws.recv() for _ in expected]
        finally:
            ws.close()
    assert got == [f'{{"stream":"btcusdt@depth","data":{d}}}' for d in expected]
    with EmbeddedExchange(replay_files=[btc_slice], speed=0) as ex:
        ws = connect(ex.ws_url.replace("/stream", "/ws"))
        try:
            control(ws, "SUBSCRIBE", ["btcusdt@depth@0ms"], 1)
            got = [ws.recv() for _ in expected]
        finally:
            ws.close()
    assert got == expected  # raw endpoint: the recorded data object alone


def test_rest_depth_when_snapshot_not_yet_played_waits_then_equals_recorded_book(hft_data):
    btc = hft_data.joinpath(*SPOT, "btcusdt_20240808.gz")
    eth = hft_data.joinpath(*SPOT, "ethusdt_20240808.gz")
    with EmbeddedExchange(replay_files=[btc, eth], speed=1.0) as ex:
        result = {}
        waiter = threading.Thread(
            target=lambda: result.update(answer=rest_depth(ex.rest_url, "BTCUSDT", 5000)), daemon=True
        )
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive(), "REST answered before the recorded snapshot was played"
        ws = connect(ex.ws_url)
        try:
            control(ws, "SUBSCRIBE", ["ethusdt@trade"], 1)  # starts the playback clock
            waiter.join(5)
            assert not waiter.is_alive()
        finally:
            ws.close()
    status, book = result["answer"]
    assert status == 200
    assert book["lastUpdateId"] > 50093239218  # the recorded snapshot's id, then diffs
    assert book == expected_book(btc, book["lastUpdateId"])


def test_replay_when_speed_ten_takes_a_tenth_of_recorded_span(btc_slice):
    stamps = [ts for ts, _ in read_recording(btc_slice)]
    span_s = (stamps[-1] - stamps[0]) / 1e9
    with EmbeddedExchange(replay_files=[btc_slice], speed=10) as ex:
        ws = connect(ex.ws_url)
        try:
            started = time.monotonic()
            control(ws, "SUBSCRIBE", ["btcusdt@trade", "btcusdt@bookTicker"], 1)
            assert ex.finished.wait(10)
            elapsed = time.monotonic() - started
        finally:
            ws.close()
    assert span_s > 3.0
    assert span_s / 10 * 0.7 <= elapsed <= span_s / 10 + 1.0


# -- fault injection --------------------------------------------------------------------


def test_faults_from_str_when_valid_parses_and_when_bad_names_the_problem():
    f = Faults.from_str("drop_every=500, skip_ids=3,stall=1.5,only=btcusdt+ETHUSDT,garbage=0.25")
    assert (f.drop_every, f.skip_ids, f.stall, f.only, f.garbage) == (500, 3, 1.5, ("btcusdt", "ethusdt"), 0.25)
    assert Faults.from_str("") == Faults()
    for text, words in [("drop_every=0", "drop_every"), ("nonsense=1", "key one of"),
                        ("skip_ids=x", "not a number"), ("garbage=2", "probability"),
                        ("skip_ids=600", "skip_ids"), ("stall=-1", "stall")]:
        with pytest.raises(ValueError, match=words):
            Faults.from_str(text)
    with pytest.raises(ValueError, match="sim_rate"):
        EmbeddedExchange(sim_rate=0)
    assert EmbeddedExchange().fault_stats() == {}


def test_hostile_when_each_kind_drawn_has_the_promised_shape():
    import random

    from feed.exchange.faults import GARBAGE_KINDS, HUGE_FRAME_BYTES, hostile_message

    rng = random.Random(1)
    last = '{"stream":"btcusdt@trade","data":{"e":"trade","t":7}}'
    for kind in GARBAGE_KINDS:
        msg = hostile_message(kind, "btcusdt", rng, last)
        if kind == "binary":
            assert isinstance(msg, bytes)
        elif kind == "bad_utf8":
            assert isinstance(msg, tuple) and not _is_utf8(msg[0])
        elif kind == "huge":
            assert len(msg) > HUGE_FRAME_BYTES
        elif kind == "duplicate":
            assert msg == last
        else:
            assert isinstance(msg, str) and len(msg) < 200_000


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_fault_skip_ids_when_replayed_omits_exactly_the_reported_trades(btc_slice):
    expected = [json.loads(m)["data"]["t"] for m in recorded(btc_slice, "btcusdt@trade")]
    with EmbeddedExchange(replay_files=[btc_slice], speed=0, faults="skip_ids=2,skip_every=10") as ex:
        ws = connect(ex.ws_url)
        try:
            _, got = control(ws, "SUBSCRIBE", ["btcusdt@trade"], 1)
            assert ex.finished.wait(10)
            got += collect(ws, 0.3)
        finally:
            ws.close()
        stats = ex.fault_stats()
    ids = [json.loads(m)["data"]["t"] for m in got]
    skipped = stats["skipped"]["BTCUSDT"]
    assert len(skipped) == 2 * (len(expected) // 10) + min(max(len(expected) % 10 - 5, 0), 2)
    assert ids == [i for i in expected if i not in set(skipped)]
    assert stats["delivered"]["BTCUSDT"] == ids


def test_fault_drop_every_when_n_messages_sent_aborts_the_connection():
    ex = EmbeddedExchange(seed=3, sim_rate=20, faults="drop_every=25").start()
    try:
        ws = connect(ex.ws_url)
        control(ws, "SUBSCRIBE", ["btcusdt@trade"], 1)
        got = []
        with pytest.raises(Exception):  # connection closed / reset, no close frame
            while True:
                got.append(ws.recv())
        assert len(got) == 25  # everything queued before the drop marker was sent
        assert ex.fault_stats()["drops"] == 1
    finally:
        ex.stop()


def test_fault_refuse_when_window_open_answers_503_then_accepts():
    with EmbeddedExchange(faults="refuse=0.6") as ex:
        with pytest.raises(WebSocketBadStatusException) as exc:
            connect(ex.ws_url)
        assert exc.value.status_code == 503
        status, _ = rest_depth(ex.rest_url, "BTCUSDT")  # REST is not refused
        assert status == 200
        time.sleep(0.7)
        connect(ex.ws_url).close()
        assert ex.fault_stats()["refused"] == 1


def test_replay_when_snapshot_names_its_symbol_attributes_it_by_that_key(tmp_path):
    # The BTC snapshot comes right after an ETH diff: without its "symbol" key it would be
    # taken for ETH's (the file's last diff before it).
    def diff(sym, first, last, bid):
        return json.dumps({"stream": f"{sym}@depth@100ms", "data": {
            "e": "depthUpdate", "E": 1, "s": sym.upper(), "U": first, "u": last,
            "b": [[bid, "1.0"]], "a": []}}, separators=(",", ":"))

    t0 = 1_723_161_600_000_000_000
    lines = [
        diff("btcusdt", 101, 101, "60000.00"),
        diff("ethusdt", 501, 501, "3000.00"),
        '{"lastUpdateId":100,"symbol":"BTCUSDT","bids":[["59999.00","2.0"]],"asks":[["60001.00","1.0"]]}',
        '{"lastUpdateId":500,"symbol":"ETHUSDT","bids":[["2999.00","5.0"]],"asks":[["3001.00","4.0"]]}',
        diff("btcusdt", 102, 102, "60000.50"),
        diff("ethusdt", 502, 502, "3000.50"),
    ]
    path = tmp_path / "two.txt"
    path.write_text("".join(f"{t0 + i * 1000} {line}\n" for i, line in enumerate(lines)))
    with EmbeddedExchange(replay_files=[path], speed=0) as ex:
        ws = connect(f"{ex.ws_url}?streams=btcusdt@depth@100ms/ethusdt@depth@100ms")
        try:
            assert ex.finished.wait(10)
            btc = rest_depth(ex.rest_url, "BTCUSDT")[1]
            eth = rest_depth(ex.rest_url, "ETHUSDT")[1]
        finally:
            ws.close()
    assert btc["lastUpdateId"] == 102 and btc["asks"] == [["60001.00", "1.0"]]
    assert [b[0] for b in btc["bids"]] == ["60000.50", "60000.00", "59999.00"]
    assert eth["lastUpdateId"] == 502 and eth["asks"] == [["3001.00", "4.0"]]
    assert [b[0] for b in eth["bids"]] == ["3000.50", "3000.00", "2999.00"]
