"""Hostile values at the adapter: every vendor refuses unusable prices, sizes, ids and times.

Each parser (Binance trade, aggTrade, depth, kline; AllTick trade and depth; iTick tick and
depth) is fed each hostile value a vendor or an attacker could send and must refuse it as
``Malformed`` with its reason (``bad_price``, ``bad_size``, ``bad_trade_id``, ``bad_time``,
``time_out_of_window``), never read it as a number. The end-to-end test sends them through
a real WebSocket on loopback into the real feed client and engine, and checks that the bars
of the good trades are exact and health counts the refused ones by reason.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from feed.core.batch import aggregate
from feed.core.config import EngineConfig, MarketConfig
from feed.core.events import RawMessage
from feed.core.models import MalformedMessage, Trade
from feed.exchange.loopback import ServerThread
from feed.io.client import FeedClient
from feed.io.engine import Engine
from feed.vendors.alltick import AllTickAdapter
from feed.vendors.binance import BinanceAdapter
from feed.vendors.itick import ITickAdapter
from tests.helpers import binance_trade_msg, wait_for

T0_MS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC
RECV = T0_MS * 1_000_000 + 5_000_000  # received 5 ms after T0
DAY_S = 86_400.0
BAR_COLUMNS = ["start", "open", "high", "low", "close", "volume", "turnover", "vwap",
               "trade_count", "buy_volume"]

#: Prices no vendor sends that float() would still read (or that break turnover/VWAP).
BAD_PRICES = [True, False, None, "5_0", " 5 ", "5 ", "infinity", "inf", "nan", "NaN", "1e308",
              1e308, "0", 0, "-1", -1.5, "", "0x10", "１２", "1e12", [1], {"p": 1}]
#: Sizes likewise (a trade of size 0 is no trade on Binance).
BAD_SIZES = [True, None, "5_0", " 1", "infinity", "nan", "1e308", 1e300, "0", 0, "-2", "1e12", "", [1]]
#: Trade ids that are not int64.
BAD_IDS = [True, False, None, 1.0, "12", -1, 2**63, 2**70]
#: Exchange times (Binance, ms) that are no time.
BAD_TIMES_MS = [0, 1, -1000, 10**18, True, False, 1.5, "1723161600000", None]


def spot(window: float | None = None) -> BinanceAdapter:
    return BinanceAdapter("spot", time_window_s=window)


def trade_frame(**fields) -> str:
    data = {"e": "trade", "E": T0_MS, "s": "BTCUSDT", "t": 7, "p": "60000.5", "q": "0.25",
            "T": T0_MS, "m": False, "M": True, **fields}
    return json.dumps({"stream": "btcusdt@trade", "data": data})


def agg_frame(**fields) -> str:
    data = {"e": "aggTrade", "E": T0_MS, "s": "BTCUSDT", "a": 7, "p": "60000.5", "q": "0.25",
            "f": 1, "l": 2, "T": T0_MS, "m": True, "M": True, **fields}
    return json.dumps({"stream": "btcusdt@aggTrade", "data": data})


def reason(adapter, raw: str, recv_ns: int = RECV) -> str:
    with pytest.raises(MalformedMessage) as info:
        adapter.parse(raw, recv_ns)
    return info.value.reason


# -- Binance trades and aggTrades ---------------------------------------------------------


@pytest.mark.parametrize("frame", [trade_frame, agg_frame], ids=["trade", "aggTrade"])
@pytest.mark.parametrize("value", BAD_PRICES, ids=repr)
def test_binance_trade_when_price_hostile_refused_as_bad_price(frame, value):
    assert reason(spot(), frame(p=value)) == "bad_price"


@pytest.mark.parametrize("frame", [trade_frame, agg_frame], ids=["trade", "aggTrade"])
@pytest.mark.parametrize("value", BAD_SIZES, ids=repr)
def test_binance_trade_when_size_hostile_refused_as_bad_size(frame, value):
    assert reason(spot(), frame(q=value)) == "bad_size"


def test_binance_trade_when_notional_beyond_range_refused_as_bad_size():
    # Both in range alone, but price x size would make turnover lose every cent.
    assert reason(spot(), trade_frame(p="900000000000", q="2000000")) == "bad_size"
    [t] = spot().parse(trade_frame(p="900000000000", q="1000"), RECV)
    assert t.price * t.size == 9e14


@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_binance_trade_when_id_not_int64_refused_as_bad_trade_id(value):
    assert reason(spot(), trade_frame(t=value)) == "bad_trade_id"
    assert reason(spot(), agg_frame(a=value)) == "bad_trade_id"


def test_binance_trade_when_id_is_largest_int64_taken():
    [t] = spot().parse(trade_frame(t=2**63 - 1), RECV)
    assert t.trade_id == 2**63 - 1


@pytest.mark.parametrize("value", BAD_TIMES_MS, ids=repr)
def test_binance_trade_when_time_is_no_time_refused_as_bad_time(value):
    assert reason(spot(), trade_frame(T=value)) == "bad_time"
    assert reason(spot(), agg_frame(T=value)) == "bad_time"


@pytest.mark.parametrize("offset_s", [-2 * DAY_S, 2 * DAY_S, 365 * DAY_S])
def test_binance_trade_when_time_outside_window_refused_unless_window_none(offset_s):
    frame = trade_frame(T=T0_MS + int(offset_s * 1000))
    assert reason(spot(DAY_S), frame) == "time_out_of_window"
    [t] = spot(None).parse(frame, RECV)  # a replay: recorded times are old
    assert t.ts_ns == (T0_MS + int(offset_s * 1000)) * 1_000_000


def test_binance_trade_when_time_inside_window_taken():
    [t] = spot(60.0).parse(trade_frame(T=T0_MS - 59_000), RECV)
    assert t.ts_ns == (T0_MS - 59_000) * 1_000_000


def test_binance_adapter_when_window_not_positive_refuses_the_option():
    for bad in (0, -1, float("nan"), "1d", True):
        with pytest.raises(ValueError, match="time_window_s"):
            BinanceAdapter("spot", time_window_s=bad)


def test_binance_trade_when_values_plain_reads_them_exactly():
    [t] = spot(DAY_S).parse(trade_frame(p="60000.50000000", q="1e-3", t=2**40), RECV)
    assert (t.price, t.size, t.trade_id, t.ts_ns) == (60000.5, 0.001, 2**40, T0_MS * 1_000_000)
    [t] = spot().parse(trade_frame(p=60000.5, q=2), RECV)  # JSON numbers are fine too
    assert (t.price, t.size) == (60000.5, 2.0)


# -- Binance depth and klines -------------------------------------------------------------


def depth_frame(bids, asks=(), **fields) -> str:
    data = {"e": "depthUpdate", "E": T0_MS, "s": "BTCUSDT", "U": 10, "u": 12,
            "b": [list(x) for x in bids], "a": [list(x) for x in asks], **fields}
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


@pytest.mark.parametrize("level", [
    ["5_0", "1"], [" 50", "1"], ["infinity", "1"], ["nan", "1"], ["1e308", "1"], [True, "1"],
    ["50", "1_0"], ["50", "1e308"], ["50", True], ["50", "inf"], ["50", "-1"], ["１２", "1"],
], ids=repr)
def test_binance_depth_when_level_hostile_refused_as_bad_level(level):
    assert reason(spot(), depth_frame([level])) == "bad_level"


def test_binance_depth_when_level_size_zero_deletes_the_level_and_is_kept():
    [delta] = spot(DAY_S).parse(depth_frame([["60000.10", "0.00000000"]], [["60001", "2.5"]]), RECV)
    assert delta.bids == ((60000.1, 0.0),) and delta.asks == ((60001.0, 2.5),)


def test_binance_depth_when_event_time_outside_window_refused():
    frame = depth_frame([["60000", "1"]], E=T0_MS + 3 * 86_400_000)
    assert reason(spot(DAY_S), frame) == "time_out_of_window"
    assert spot(None).parse(frame, RECV)[0].ts_ns == (T0_MS + 3 * 86_400_000) * 1_000_000


def kline_frame(**k) -> str:
    kline = {"t": T0_MS, "T": T0_MS + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2,
             "o": "100", "c": "101", "h": "102", "l": "99", "v": "3", "n": 2, "x": True,
             "q": "300", "V": "1", "Q": "100", "B": "0", **k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": T0_MS, "s": "BTCUSDT", "k": kline}})


@pytest.mark.parametrize("field,value,why", [
    ("o", "1_00", "bad_price"), ("h", True, "bad_price"), ("l", "nan", "bad_price"),
    ("c", "1e308", "bad_price"), ("v", "3_0", "bad_size"), ("v", True, "bad_size"),
    ("q", "infinity", "bad_size"), ("V", "1e308", "bad_size"),
])
def test_binance_kline_when_value_hostile_refused_with_reason(field, value, why):
    assert reason(spot(), kline_frame(**{field: value})) == why


# -- AllTick -------------------------------------------------------------------------------


def alltick_trade(**fields) -> str:
    data = {"code": "AAPL.US", "seq": "30841440", "tick_time": str(T0_MS), "price": "191.52",
            "volume": "100", "turnover": "19152.00", "trade_direction": 1, **fields}
    return json.dumps({"cmd_id": 22998, "data": data})


@pytest.fixture
def alltick():
    return AllTickAdapter(token="test-token-123", time_window_s=DAY_S)


@pytest.mark.parametrize("value", BAD_PRICES, ids=repr)
def test_alltick_trade_when_price_hostile_refused_as_bad_price(alltick, value):
    assert reason(alltick, alltick_trade(price=value)) == "bad_price"


@pytest.mark.parametrize("value", [v for v in BAD_SIZES if v not in ("0", 0)], ids=repr)
def test_alltick_trade_when_volume_hostile_refused_as_bad_size(alltick, value):
    assert reason(alltick, alltick_trade(volume=value)) == "bad_size"


def test_alltick_trade_when_fx_volume_zero_is_kept(alltick):
    [t] = alltick.parse(alltick_trade(code="EURUSD", price="1.0850", volume="0"), RECV)
    assert t.size == 0.0 and t.price == 1.085


@pytest.mark.parametrize("value", [True, 1.5, "1.5", "12a", -1, 2**63, "9" * 20, " 12"], ids=repr)
def test_alltick_trade_when_seq_not_int64_refused_as_bad_trade_id(alltick, value):
    assert reason(alltick, alltick_trade(seq=value)) == "bad_trade_id"


@pytest.mark.parametrize("value", [0, 1, -1000, True, "1_723_161_600", "infinity", 10**22], ids=repr)
def test_alltick_trade_when_tick_time_is_no_time_refused_as_bad_time(alltick, value):
    assert reason(alltick, alltick_trade(tick_time=value)) == "bad_time"


def test_alltick_trade_when_tick_time_outside_window_refused(alltick):
    # 10^18 reads as ns (2001) in the unit AllTick leaves open: the window catches it.
    assert reason(alltick, alltick_trade(tick_time=10**18)) == "time_out_of_window"
    assert reason(alltick, alltick_trade(tick_time=str(T0_MS - 2 * 86_400_000))) == "time_out_of_window"


@pytest.mark.parametrize("level", [
    {"price": "5_0", "volume": "1"}, {"price": True, "volume": "1"}, {"price": "1e308", "volume": "1"},
    {"price": "50", "volume": "1_0"}, {"price": "50", "volume": "nan"},
], ids=repr)
def test_alltick_depth_when_level_hostile_refused_as_bad_level(alltick, level):
    raw = json.dumps({"cmd_id": 22999, "data": {"code": "BTCUSDT", "seq": "1", "tick_time": str(T0_MS),
                                                 "bids": [level], "asks": []}})
    assert reason(alltick, raw) == "bad_level"


# -- iTick ---------------------------------------------------------------------------------


def itick_tick(**fields) -> str:
    data = {"s": "AAPL", "ld": 191.52, "v": 100, "t": T0_MS, "type": "tick", **fields}
    return json.dumps({"code": 1, "data": data})


@pytest.fixture
def itick():
    adapter = ITickAdapter(token="test-token-123", time_window_s=DAY_S)
    adapter.subscribe_messages(["AAPL$US"])
    return adapter


@pytest.mark.parametrize("value", BAD_PRICES, ids=repr)
def test_itick_tick_when_price_hostile_refused_as_bad_price(itick, value):
    assert reason(itick, itick_tick(ld=value)) == "bad_price"


@pytest.mark.parametrize("value", [v for v in BAD_SIZES if v not in ("0", 0)], ids=repr)
def test_itick_tick_when_volume_hostile_refused_as_bad_size(itick, value):
    assert reason(itick, itick_tick(v=value)) == "bad_size"


@pytest.mark.parametrize("value", [0, 1, -1000, True, "soon", "1_723_161_600", 10**22], ids=repr)
def test_itick_tick_when_time_is_no_time_refused_as_bad_time(itick, value):
    assert reason(itick, itick_tick(t=value)) == "bad_time"


def test_itick_tick_when_time_outside_window_refused(itick):
    assert reason(itick, itick_tick(t=T0_MS + 2 * 86_400_000)) == "time_out_of_window"


def test_itick_depth_when_level_hostile_refused_as_bad_level(itick):
    raw = json.dumps({"code": 1, "data": {"s": "AAPL", "type": "depth",
                                          "a": [{"po": 1, "p": "5_0", "v": 3, "o": 1}]}})
    assert reason(itick, raw) == "bad_level"


# -- duplicates are judged after validation ----------------------------------------------


def engine(window: float | None = None) -> Engine:
    eng = Engine(spot(window), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    eng.subscribe("BTCUSDT")
    return eng


def good_stream(n: int) -> list[str]:
    return [binance_trade_msg(T0_MS + i * 1000, 1 + i, f"{60000 + i % 7}.5", "0.25", i % 2 == 0)
            for i in range(n)]


def expected_bars(messages: list[str], spec: str):
    adapter = spot()
    trades = [ev for m in messages for ev in adapter.parse(m, 0) if isinstance(ev, Trade)]
    return aggregate(trades, spec)[BAR_COLUMNS]


@pytest.mark.parametrize("bad", [{"price": "5_0"}, {"price": True}, {"qty": "1e308"}, {"price": "1e308"}],
                         ids=repr)
def test_engine_when_bad_trade_carries_its_twins_id_keeps_the_good_twin(bad):
    good = good_stream(10)
    twin = binance_trade_msg(T0_MS + 5000, 6, **bad)  # id 6 is good[5]'s
    eng = engine()
    eng.process([RawMessage(RECV, m) for m in good[:5] + [twin] + good[5:]])
    c = eng.counters()
    assert c.trades == 10 and c.duplicates == 0 and c.gaps == 0
    assert set(eng.health()["malformed_by_reason"]) <= {"bad_price", "bad_size"}
    assert eng.bars_frame("BTCUSDT", "1m")[BAR_COLUMNS].to_dict("list") == \
        expected_bars(good, "1m").to_dict("list")


# -- end to end: a hostile exchange on loopback -------------------------------------------


class HostileBinance(ServerThread):
    """A Binance-dialect WebSocket server on loopback that answers SUBSCRIBE, then sends
    a scripted list of frames (good trades with hostile ones among them) and stays open."""

    thread_name = "hostile-binance"

    def __init__(self, frames: list[str]) -> None:
        super().__init__()
        self.frames = frames
        self.sent = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    async def _handle(self, ws) -> None:
        async for text in ws:
            msg = json.loads(text)
            if msg.get("method") != "SUBSCRIBE":
                continue
            await ws.send(json.dumps({"result": None, "id": msg["id"]}))
            if any(p.endswith("@trade") for p in msg["params"]):
                for frame in self.frames:
                    await ws.send(frame)
                    self.sent += 1
                    await asyncio.sleep(0)


def test_loopback_when_hostile_values_among_trades_bars_exact_and_malformed_counted_by_reason():
    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - 600_000  # ten minutes of trades up to now: inside the live window
    good = [binance_trade_msg(start_ms + i * 1000, 1 + i, f"{60000 + i % 11}.25", f"0.{1 + i % 9}", i % 3 == 0)
            for i in range(300)]
    hostile = {
        "bad_price": [binance_trade_msg(start_ms + 10_000, 11, price=v) for v in (True, "5_0", " 5 ", "infinity", "nan", "1e308")],
        "bad_size": [binance_trade_msg(start_ms + 20_000, 21, qty=v) for v in (True, "1_0", "1e308", "0")],
        "bad_trade_id": [binance_trade_msg(start_ms + 30_000, v) for v in (True, 2**63, -1)]
        + [binance_trade_msg(start_ms + 30_000, 31).replace('"t": 31', '"t": 31.0')],
        "bad_time": [binance_trade_msg(v, 41) for v in (0, 1, -1000, 10**18)],
        "time_out_of_window": [binance_trade_msg(now_ms - 3 * 86_400_000, 51),
                               binance_trade_msg(now_ms + 3 * 86_400_000, 52)],
    }
    frames = list(good)
    for i, (why, bad) in enumerate(hostile.items()):
        for j, frame in enumerate(bad):
            frames.insert(10 * (i + 1) + j * 3, frame)  # among the good trades, before their twins
    with HostileBinance(frames) as server:
        adapter = BinanceAdapter("spot", ws_url=server.ws_url, time_window_s=DAY_S)
        eng = Engine(adapter, EngineConfig(MarketConfig(clock="wall", close_grace_s=0)))
        feed = FeedClient(adapter, eng, backoff_initial_s=0.05, backoff_cap_s=1.0,
                          stale_after_s=None, ping_interval_s=0)
        eng.attach(feed)
        eng.start()
        try:
            eng.subscribe("BTCUSDT")
            for spec in ("1m", "50t"):
                eng.bar_series("BTCUSDT", spec)
            feed.start()
            wait_for(lambda: eng.counters().trades == len(good) and server.sent == len(frames), 20,
                     "every frame delivered")
            assert eng.wait_idle(10, quiet_s=0.2)
            health = eng.health()
            assert health["malformed_by_reason"] == {why: len(bad) for why, bad in hostile.items()}
            c = eng.counters()
            assert c.trades == len(good) and c.duplicates == 0 and c.gaps == 0
            for spec in ("1m", "50t"):
                assert eng.bars_frame("BTCUSDT", spec)[BAR_COLUMNS].to_dict("list") == \
                    expected_bars(good, spec).to_dict("list")
        finally:
            feed.stop()
            eng.stop()
