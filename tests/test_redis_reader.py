"""RedisReader against a real redis-server: entries written as the collectors' contract
(``feed.io.bus``) says, read back into a replica whose bars equal the engine's own market
state fed the same trades; hostile entries counted and skipped; stale collectors."""

from __future__ import annotations

import random
import socket
import time

import orjson
import pytest
import redis

from feed.core.config import MarketConfig
from feed.core.events import Parsed
from feed.core.market import MarketState
from feed.core.models import BUY, SELL, BarSpec, Trade
from feed.io.bus import HEARTBEAT_TTL_S, Keys, encode_trades
from feed.io.redis_reader import ReaderUnavailable, RedisReader

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BAR_OPTIONS = {"utc_offset": None, "session_tz": None, "session_open": "00:00", "empty": "gap",
               "late_tolerance_ns": 2_000_000_000, "session_reset": False}
SPECS = ["1m", "15s", "50t", "2.5v", "100000q"]
T0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00 UTC


class _Vendor:
    name = "test"
    consecutive_trade_ids = True
    serves_history = False

    @staticmethod
    def redact(text):
        return text


def make_trades(symbol: str, n: int, seed: int = 7) -> list[Trade]:
    rng = random.Random(seed)
    out, ts, price = [], T0, 60_000.0
    for i in range(n):
        ts += rng.randrange(1, 900_000_000)  # up to 0.9 s apart
        if rng.random() < 0.03:
            ts -= rng.randrange(0, 3_000_000_000)  # some trades come late
        price = round(price + rng.choice((-0.1, 0, 0.1)), 1)
        out.append(Trade(symbol, ts, price, round(rng.uniform(0.001, 2), 3), rng.choice((BUY, SELL)),
                         1000 + i, ts + 5_000_000))
    return out


def engine_market(trades_by_cycle, specs, symbol):
    """The collector's market state (exchange clock) fed cycle by cycle, with series of
    ``specs`` held from the start as the page would hold them."""
    m = MarketState(MarketConfig(clock="exchange", bar_options=BAR_OPTIONS), _Vendor())
    m.add_symbol(symbol)
    for spec in specs:
        seed = m.series_seed(symbol, BarSpec.from_str(spec), 0)
        m.install_series(seed, m.build_series(seed), 0)
    for cycle in trades_by_cycle:
        m.apply([Parsed(cycle[0].recv_ns, list(cycle))], 0, 0)
    return m


def beat(name, symbols, clock_ns, *, state="live", kind="replay", counters=None):
    return orjson.dumps({
        "name": name, "pid": 1, "host": "test", "symbols": symbols, "clock_ns": clock_ns,
        "beat_ns": time.time_ns(), "vendor": "binance", "default_spec": "1m",
        "source": {"kind": kind, "label": "REPLAY x max", "speed": 0, "progress": 0.5},
        "health": {"feed": {"state": state, "detail": "", "messages_per_s": 10.0},
                   "counters": counters or {"trades": 5, "messages": 7}, "queue_depth": 0,
                   "symbols": {s: {"trades": 5, "last_trade_ts": "2024-08-09T00:00:01.000Z",
                                   "book_synced": True} for s in symbols}},
    })


def publish(r, keys, name, symbol, cycles, *, state="live", ttl_s=HEARTBEAT_TTL_S):
    r.sadd(keys.collectors, name)
    for cycle in cycles:
        r.xadd(keys.trades(symbol), {"k": b"t", "d": encode_trades(cycle)})
    clock = max(t.ts_ns for c in cycles for t in c) if cycles else 0
    r.set(keys.collector(name), beat(name, [symbol], clock, state=state), px=int(ttl_s * 1000))


def cycles_of(trades, rng):
    out, i = [], 0
    while i < len(trades):
        k = rng.randrange(1, 40)
        out.append(trades[i:i + k])
        i += k
    return out


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_reader_when_collector_published_cycles_bars_of_every_spec_equal_the_collectors(redis_url):
    r = redis.Redis.from_url(redis_url)
    keys = Keys("t1")
    trades = make_trades("BTCUSDT", 6000)
    cycles = cycles_of(trades, random.Random(3))
    # a restarted collector replays its start: the reader skips those ids
    publish(r, keys, "c1", "BTCUSDT", cycles + cycles[:20], state="replay-finished")
    r.set(keys.meta("BTCUSDT"), orjson.dumps({"gaps": {"total": 2, "marks": [[T0 + 5, 3], [T0 + 9, 1]]},
                                               "verify": None, "decimals": {"price": 1, "size": 3},
                                               "symbol": {"trades": len(trades)}}))
    reader = RedisReader(redis_url, "t1", default_bar_options=BAR_OPTIONS).start()
    try:
        assert wait_for(lambda: len(reader.trades("BTCUSDT", 10**6)) == len(trades))
        time.sleep(0.5)  # a few more polls: nothing more may come
        market = engine_market(cycles, SPECS, "BTCUSDT")
        for spec in SPECS:
            ours = market.bar_series("BTCUSDT", BarSpec.from_str(spec))
            theirs = reader.bar_series("BTCUSDT", spec)
            assert ours.n_closed > 3, spec
            assert theirs.closed == ours.closed, spec
            assert theirs.current == ours.current, spec
            assert theirs.n_closed == ours.n_closed
        assert reader.trades("BTCUSDT", 5) == trades[-5:]
        assert reader.gap_marks_since("BTCUSDT", 1) == (2, [(T0 + 9, 1)])
        assert reader.gap_marks_since("BTCUSDT", 0) == (2, [(T0 + 5, 3), (T0 + 9, 1)])
        with pytest.raises(ValueError):
            reader.gap_marks_since("BTCUSDT", -1)
        frame = reader.bars_frame("BTCUSDT", "1m")
        assert frame.attrs["price_decimals"] == 1 and frame.attrs["size_decimals"] == 3
        health = reader.health()
        assert health["reader"]["duplicates_skipped"] == sum(len(c) for c in cycles[:20])
        assert health["collectors"]["c1"]["alive"] is True
        assert health["symbols"]["BTCUSDT"]["collector"] == "c1"
        assert reader.status().state == "replay-finished"
    finally:
        reader.stop()


def test_reader_when_entries_are_hostile_counts_and_skips_them_and_keeps_reading(redis_url):
    r = redis.Redis.from_url(redis_url)
    keys = Keys("t2")
    good = make_trades("ETHUSDT", 300, seed=11)
    publish(r, keys, "c1", "ETHUSDT", [good[:100]])
    stream = keys.trades("ETHUSDT")
    bad = [
        {"k": b"t", "d": b"not json"},
        {"k": b"x", "d": encode_trades(good[100:110])},  # unknown kind
        {"d": encode_trades(good[100:110])},  # no kind
        {"k": b"t", "d": orjson.dumps({"ts": [1], "px": [1.0]})},  # columns missing
        {"k": b"t", "d": orjson.dumps({k: [1, 2] if k != "px" else [1.0] for k in
                                       ("ts", "px", "sz", "sd", "id", "rv", "ib", "c")})},  # unequal
        {"k": b"t", "d": orjson.dumps({"ts": ["x"], "px": [1.0], "sz": [1.0], "sd": [1], "id": [1],
                                       "rv": [1], "ib": [1], "c": [1]})},  # wrong type
        {"k": b"t", "d": b"[" * 100_000},  # deep nesting
    ]
    for fields in bad:
        r.xadd(stream, fields)
    r.xadd(stream, {"k": b"t", "d": encode_trades(good[100:])})
    r.set(keys.book("ETHUSDT"), b"{\"bids\": [[1, 2, 3]]}")
    r.set(keys.meta("ETHUSDT"), b"\xff\xfe garbage")
    r.sadd(keys.collectors, "forged")
    r.set(keys.collector("forged"), orjson.dumps({"symbols": "ETHUSDT"}), px=5000)
    reader = RedisReader(redis_url, "t2", default_bar_options=BAR_OPTIONS).start()
    try:
        assert wait_for(lambda: len(reader.trades("ETHUSDT", 10**6)) == len(good))
        assert reader.trades("ETHUSDT", 10**6) == good
        assert wait_for(lambda: reader.health()["reader"]["bad_entries"].get("bad_trade_entry", 0) == len(bad))
        bad_entries = reader.health()["reader"]["bad_entries"]
        assert bad_entries["bad_heartbeat"] >= 1 and bad_entries["bad_meta"] >= 1
        view = reader.depth("ETHUSDT")
        assert view.bids == [] and view.synced is False
        assert reader.bar_series("ETHUSDT", "1m").n_closed > 0
    finally:
        reader.stop()


def test_reader_when_a_collector_stops_beating_marks_its_symbols_stale_then_alive_again(redis_url):
    r = redis.Redis.from_url(redis_url)
    keys = Keys("t3")
    publish(r, keys, "a", "BTCUSDT", [make_trades("BTCUSDT", 50)])
    publish(r, keys, "b", "ETHUSDT", [make_trades("ETHUSDT", 50, seed=2)], ttl_s=0.6)
    reader = RedisReader(redis_url, "t3", default_bar_options=BAR_OPTIONS).start()
    try:
        assert wait_for(lambda: reader.symbols() == ["BTCUSDT", "ETHUSDT"])
        assert wait_for(lambda: reader.health()["collectors"]["b"]["alive"] is False)
        health = reader.health()
        assert health["symbols"]["ETHUSDT"]["stale"] is True
        assert health["symbols"]["BTCUSDT"]["stale"] is False
        assert health["collectors"]["a"]["alive"] is True
        assert health["counters"]["trades"] == 10  # summed over both
        status = reader.status()
        assert status.state == "stale" and "collector b stale" in status.detail and "ETHUSDT" in status.detail
        assert reader.symbols() == ["BTCUSDT", "ETHUSDT"]  # still shown
        publish(r, keys, "b", "ETHUSDT", [])
        assert wait_for(lambda: reader.health()["collectors"]["b"]["alive"] is True)
        assert reader.status().state == "live"
    finally:
        reader.stop()


def test_reader_when_redis_is_unreachable_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ReaderUnavailable, match=f"127.0.0.1:{port}"):
        RedisReader(f"redis://127.0.0.1:{port}/0").start()


def test_reader_subscribe_writes_a_command_and_fails_clearly_without_a_collector(redis_url, monkeypatch):
    import feed.io.redis_reader as rr

    monkeypatch.setattr(rr, "_SUBSCRIBE_WAIT_S", 0.3)
    reader = RedisReader(redis_url, "t4").start()
    try:
        with pytest.raises(ValueError, match="no collector took SOLUSDT"):
            reader.subscribe("sol/usdt")
        entries = redis.Redis.from_url(redis_url).xrange(Keys("t4").commands)
        assert entries[-1][1] == {b"op": b"subscribe", b"symbol": b"SOLUSDT", b"collector": b""}
        with pytest.raises(ValueError):
            reader.normalize_symbol("BTC USDT; DROP")
    finally:
        reader.stop()


# -- the pure parts: heartbeats merged -----------------------------------------------------------


def test_heartbeats_when_merged_give_worst_state_summed_counters_and_symbols_in_order():
    from feed.core.collectors import iso_to_ns, market_of, merge_status, parse_beat

    a = parse_beat("a", orjson.loads(beat("a", ["BTCUSDT", "SOLUSDT"], T0, state="live", kind="live",
                                          counters={"trades": 3, "malformed": 1})))
    b = parse_beat("b", orjson.loads(beat("b", ["ETHUSDT"], T0 + 5, state="reconnecting", kind="live",
                                          counters={"trades": 4, "bogus": 9})))
    status = merge_status([(a, True), (b, True)], ["BTCUSDT", "SOLUSDT", "ETHUSDT"], clock_ns=T0 + 5)
    assert status.state == "reconnecting"
    assert status.counters.trades == 7 and status.counters.malformed == 1
    assert list(status.symbols) == ["BTCUSDT", "SOLUSDT", "ETHUSDT"]
    assert status.symbols["ETHUSDT"].last_trade_ts_ns == iso_to_ns("2024-08-09T00:00:01.000Z") == T0 + 1_000_000_000
    stale = merge_status([(a, True), (b, False)], ["BTCUSDT", "SOLUSDT", "ETHUSDT"], now_ns=b.beat_ns + 7 * 10**9)
    assert stale.state == "stale" and stale.detail == "collector b stale (no heartbeat for 7 s): ETHUSDT"
    assert merge_status([], []).state == "connecting"
    # a replay collector runs on the exchange clock; a published market config wins
    assert market_of(parse_beat("r", orjson.loads(beat("r", [], 0))), BAR_OPTIONS).clock == "exchange"
    assert market_of(a, BAR_OPTIONS).clock == "wall" and market_of(a, BAR_OPTIONS).bar_options == BAR_OPTIONS
    published = parse_beat("p", {"symbols": [], "market": {"clock": "exchange", "close_grace_s": 1.5,
                                                           "bar_options": {"empty": "flat"}, "max_trades": 10}})
    cfg = market_of(published, BAR_OPTIONS)
    assert (cfg.clock, cfg.close_grace_s, dict(cfg.bar_options), cfg.max_trades) == ("exchange", 1.5, {"empty": "flat"}, 10)
    forged = parse_beat("f", {"symbols": [], "market": {"max_trades": -5, "clock": "moon"}})
    assert market_of(forged, BAR_OPTIONS).max_trades == MarketConfig().max_trades


@pytest.mark.parametrize("body", [[], "x", {"symbols": "BTCUSDT"}, {"symbols": [1]}, {"symbols": ["x" * 65]},
                                  {"symbols": ["S"] * 1001}])
def test_heartbeat_when_forged_is_refused(body):
    from feed.core.collectors import parse_beat

    with pytest.raises(ValueError):
        parse_beat("f", body)


def test_reader_when_history_is_put_in_place_inserts_it_and_rebuilds_every_series(redis_url):
    r = redis.Redis.from_url(redis_url)
    keys = Keys("t5")
    trades = make_trades("BTCUSDT", 2000, seed=21)
    trades.sort(key=lambda t: t.ts_ns)
    trades = [Trade(t.symbol, t.ts_ns, t.price, t.size, t.side, 1000 + i, t.recv_ns) for i, t in enumerate(trades)]
    missing = trades[800:900]  # a trade-id gap the collector repaired from REST history
    publish(r, keys, "c1", "BTCUSDT", [trades[:800], trades[900:]], state="replay-finished")
    reader = RedisReader(redis_url, "t5", default_bar_options=BAR_OPTIONS).start()
    try:
        assert wait_for(lambda: len(reader.trades("BTCUSDT", 10**6)) == 1900)
        before = reader.bar_series("BTCUSDT", "1m")
        r.xadd(keys.trades("BTCUSDT"), {"k": b"i", "d": encode_trades(missing)})
        assert wait_for(lambda: len(reader.trades("BTCUSDT", 10**6)) == 2000)
        assert reader.trades("BTCUSDT", 10**6) == trades
        after = reader.bar_series("BTCUSDT", "1m")
        assert after.generation == before.generation + 1  # readers redraw
        whole = engine_market([trades], ["1m", "100t"], "BTCUSDT")
        assert after.closed == whole.bar_series("BTCUSDT", BarSpec.from_str("1m")).closed
        assert reader.bar_series("BTCUSDT", "100t").closed == whole.bar_series("BTCUSDT", BarSpec.from_str("100t")).closed
    finally:
        reader.stop()


def test_reader_symbol_state_is_its_collectors(redis_url):
    r = redis.Redis.from_url(redis_url)
    keys = Keys("t6")
    publish(r, keys, "a", "BTCUSDT", [make_trades("BTCUSDT", 20)])
    publish(r, keys, "b", "ETHUSDT", [make_trades("ETHUSDT", 20, seed=2)], ttl_s=0.5)
    reader = RedisReader(redis_url, "t6", default_bar_options=BAR_OPTIONS).start()
    try:
        assert wait_for(lambda: reader.health()["collectors"].get("b", {}).get("alive") is False)
        status = reader.status()
        assert status.state == "stale"
        assert reader.symbol_state("BTCUSDT", status) == "live"
        assert reader.symbol_state("ETHUSDT", status) == "stale"
        assert reader.symbol_state("XRPUSDT", status) == "stale"  # not held: the whole feed's
        assert reader.depth("ETHUSDT").synced is False
    finally:
        reader.stop()
