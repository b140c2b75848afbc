"""``tickscope collect`` against a real redis-server on loopback: what a collector publishes
(trades, bars, book, heartbeat), symbol ownership between collector processes, the
command stream, and Redis going away under a running collector."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from dashboard.collect import start_collector
from feed.core.events import Effects
from feed.core.models import Trade
from feed.io.bus import (
    HEARTBEAT_TTL_S, TRADES_APPENDED, TRADES_INSERTED, Keys, decode_bar, decode_depth, decode_trades,
    encode_bar, encode_command,
)
from feed.io.redis_writer import RedisPublisher

ROOT = Path(__file__).resolve().parents[1]
SPOT_BTC = "raw/spot/btcusdt_20240808.gz"


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stream_trades(r: redis.Redis, key: str, symbol: str) -> tuple[list[Trade], list[Trade]]:
    appended, inserted = [], []
    for _id, fields in r.xrange(key):
        trades = decode_trades(symbol, fields[b"d"])
        (appended if fields[b"k"] == TRADES_APPENDED else inserted).append(trades)
        assert fields[b"k"] in (TRADES_APPENDED, TRADES_INSERTED)
    return [t for ts in appended for t in ts], [t for ts in inserted for t in ts]


@pytest.fixture
def exchange():
    """The embedded simulator serving BTCUSDT, ETHUSDT, SOLUSDT on loopback, on its own:
    a collector pointed at it (``--url``) can subscribe any of them later."""
    from feed.exchange.server import EmbeddedExchange

    ex = EmbeddedExchange(seed=3, sim_rate=5).start()
    yield ["--url", ex.ws_url, "--rest-url", ex.rest_url]
    ex.stop()


@pytest.fixture
def collectors():
    """``start(*argv)``: an in-process collector, stopped at teardown."""
    started = []

    def start(*argv: str, **options):
        col = start_collector(list(argv), **options)
        started.append(col)
        return col

    yield start
    for col in reversed(started):
        col.stop()


def spawn(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dashboard", "collect", *argv, "--log-level", "WARNING"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_collect_replay_publishes_exactly_the_engines_trades_bars_book_and_a_heartbeat(redis_url, hft_data, collectors):
    col = collectors("--redis", redis_url, "--name", "c1", "--replay", str(hft_data / SPOT_BTC), "--speed", "0",
                     "--utc-offset", "+08:00")
    rt = col.runtime
    assert rt.app is None  # no web server
    assert rt.exchange.finished.wait(120) and rt.engine.wait_idle(60, quiet_s=1.0)
    assert col.publisher.wait_published(20)
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    held = rt.engine.trades("BTCUSDT", limit=10**9)
    assert len(held) > 1000
    appended, inserted = stream_trades(r, keys.trades("BTCUSDT"), "BTCUSDT")
    # ids, prices, sizes, times, sides, order: the decoded concatenation is the engine's tape.
    assert inserted == [] and appended == held
    # Closed 1m bars: one entry per bar, equal to the engine's, field for field.
    closed = [b for b in rt.engine.bar_series("BTCUSDT", "1m").closed]
    entries = [fields for _id, fields in r.xrange(keys.bars("BTCUSDT", "1m"))]
    assert [{k.decode(): v.decode() for k, v in f.items()} for f in entries] == [encode_bar(b) for b in closed]
    assert [decode_bar(f)["start"] for f in entries] == [b.start_ns for b in closed]
    assert all(decode_bar(f)["closed"] for f in entries) and len(entries) >= 5
    # Book and meta.
    book = decode_depth(r.get(keys.book("BTCUSDT")))
    assert book == rt.engine.depth("BTCUSDT", 50) and book.synced
    wait_for(lambda: r.get(keys.meta("BTCUSDT")), what="meta")
    # Heartbeat with a TTL, naming the symbol; ownership.
    beat = wait_for(lambda: r.get(keys.collector("c1")), what="heartbeat")
    import orjson

    body = orjson.loads(beat)
    assert body["name"] == "c1" and body["symbols"] == ["BTCUSDT"] and body["pid"] == os.getpid()
    assert body["health"]["counters"]["trades"] == len(held) and body["default_spec"] == "1m"
    assert body["health"]["redis"]["connected"] and body["source"]["kind"] == "replay"
    assert body["market"]["clock"] == "exchange" and body["market"]["max_trades"] == rt.engine.config.market.max_trades
    assert body["market"]["bar_options"]["utc_offset"] == "+08:00" and body["market"]["bar_options"]["empty"] == "gap"
    assert 0 < r.pttl(keys.collector("c1")) <= HEARTBEAT_TTL_S * 1000
    assert r.get(keys.owner("BTCUSDT")) == b"c1" and r.sismember(keys.collectors, "c1")
    # A symbol the replay does not hold is left to another collector, never claimed.
    r.xadd(keys.commands, encode_command("subscribe", "ETHUSDT"))
    wait_for(lambda: col.commands.stats()["refused"] == 1, 10, "the command refused")
    assert rt.engine.symbols() == ["BTCUSDT"] and r.get(keys.owner("ETHUSDT")) is None
    # A clean stop removes the heartbeat and releases the owner key at once.
    col.stop()
    assert r.get(keys.collector("c1")) is None and r.get(keys.owner("BTCUSDT")) is None
    assert not r.sismember(keys.collectors, "c1")  # left the deployment: not listed as stale


def test_second_collector_of_an_owned_symbol_exits_2_until_the_owner_dies_and_its_key_expires(redis_url, hft_data):
    replay = str(hft_data / SPOT_BTC)
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    first = spawn("--redis", redis_url, "--name", "first", "--replay", replay, "--speed", "0")
    try:
        wait_for(lambda: r.get(keys.collector("first")), 60, "the first collector's heartbeat")
        second = subprocess.run(
            [sys.executable, "-m", "dashboard", "collect", "--redis", redis_url, "--name", "second",
             "--replay", replay, "--speed", "0"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "BTCUSDT" in second.stderr and "'first'" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert r.get(keys.owner("BTCUSDT")) == b"first"
        # Killed without a chance to clean up: heartbeat and owner key expire on their own.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: r.get(keys.collector("first")) is None and r.get(keys.owner("BTCUSDT")) is None,
                 HEARTBEAT_TTL_S + 2, "the heartbeat to expire")
        assert time.monotonic() - killed_at <= HEARTBEAT_TTL_S + 2
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    third = spawn("--redis", redis_url, "--name", "third", "--replay", replay, "--speed", "0")
    try:
        wait_for(lambda: r.get(keys.owner("BTCUSDT")) == b"third", 60, "the new owner")
        wait_for(lambda: r.get(keys.collector("third")), 10, "the new heartbeat")
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0
        assert r.get(keys.owner("BTCUSDT")) is None and r.get(keys.collector("third")) is None
    finally:
        if third.poll() is None:
            third.kill()
            third.wait(10)


def test_collector_killed_and_restarted_under_its_name_takes_over_at_once(redis_url, hft_data):
    # The usual restart after a crash: same name, before the old heartbeat expired.
    replay = str(hft_data / SPOT_BTC)
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    procs = [spawn("--redis", redis_url, "--name", "again", "--replay", replay, "--speed", "0")]
    try:
        wait_for(lambda: r.get(keys.collector("again")), 60, "the heartbeat")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        procs.append(spawn("--redis", redis_url, "--name", "again", "--replay", replay, "--speed", "0"))
        import orjson

        wait_for(lambda: orjson.loads(r.get(keys.collector("again")) or b'{"pid": 0}')["pid"] == procs[1].pid,
                 60, "the restarted collector's heartbeat")
        assert r.get(keys.owner("BTCUSDT")) == b"again" and procs[1].poll() is None
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_collect_with_a_bad_url_or_unreachable_redis_says_so_and_exits_2(hft_data):
    replay = str(hft_data / SPOT_BTC)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    for url, words in ((f"redis://127.0.0.1:{port}/0", "cannot reach Redis"), ("http://x/0", "not a Redis URL"),
                       ("redis://:secret@127.0.0.1:%d/0" % port, "cannot reach Redis")):
        proc = subprocess.run([sys.executable, "-m", "dashboard", "collect", "--redis", url, "--replay", replay],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "secret" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_subscribe_command_makes_the_collector_publish_the_symbol_and_hostile_entries_are_skipped(
        redis_url, tmp_path, exchange, collectors):
    col = collectors("--redis", redis_url, "--name", "sim", "--symbols", "BTCUSDT", "--backfill", "0",
                     "--data-dir", str(tmp_path), *exchange)
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    wait_for(lambda: r.xlen(keys.trades("BTCUSDT")) > 0, 30, "BTCUSDT trades")
    # Hostile entries first: missing fields, a 10 MB symbol, an unknown op, a bad symbol.
    r.xadd(keys.commands, {"nothing": "here"})
    r.xadd(keys.commands, {"op": "subscribe", "symbol": "E" * (10 * 1024 * 1024)})
    r.xadd(keys.commands, {"op": "explode", "symbol": "ETHUSDT"})
    r.xadd(keys.commands, {"op": "subscribe", "symbol": "no spaces allowed!"})
    # Addressed to another collector: not ours.
    r.xadd(keys.commands, encode_command("subscribe", "SOLUSDT", "someone-else"))
    r.xadd(keys.commands, encode_command("subscribe", "ethusdt"))
    wait_for(lambda: "ETHUSDT" in col.runtime.engine.symbols(), 20, "ETHUSDT subscribed")
    wait_for(lambda: r.xlen(keys.trades("ETHUSDT")) > 0, 30, "ETHUSDT trades")
    assert r.get(keys.owner("ETHUSDT")) == b"sim"
    stats = col.commands.stats()
    assert stats["bad"] == 3 and stats["refused"] == 1 and stats["taken"] == 1
    assert "SOLUSDT" not in col.runtime.engine.symbols()
    trades = decode_trades("ETHUSDT", r.xrange(keys.trades("ETHUSDT"), count=1)[0][1][b"d"])
    assert trades and all(t.symbol == "ETHUSDT" for t in trades)
    # The heartbeat lists it; an unsubscribe command stops it and releases the owner key.
    wait_for(lambda: b'"ETHUSDT"' in (r.get(keys.collector("sim")) or b""), 5, "heartbeat with ETHUSDT")
    r.xadd(keys.commands, encode_command("unsubscribe", "ETHUSDT"))
    wait_for(lambda: "ETHUSDT" not in col.runtime.engine.symbols(), 20, "ETHUSDT unsubscribed")
    wait_for(lambda: r.get(keys.owner("ETHUSDT")) is None, 5, "ETHUSDT released")
    assert col.runtime.engine.symbols() == ["BTCUSDT"]


def test_subscribe_command_of_a_symbol_another_collector_owns_is_left_to_it(redis_url, tmp_path, exchange,
                                                                            collectors):
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    r.set(keys.owner("ETHUSDT"), "other", px=60_000)
    col = collectors("--redis", redis_url, "--name", "sim", "--symbols", "BTCUSDT", "--backfill", "0",
                     "--data-dir", str(tmp_path), *exchange)
    r.xadd(keys.commands, encode_command("subscribe", "ETHUSDT"))
    r.xadd(keys.commands, encode_command("subscribe", "SOLUSDT", "sim"))
    wait_for(lambda: "SOLUSDT" in col.runtime.engine.symbols(), 20, "SOLUSDT subscribed")
    assert "ETHUSDT" not in col.runtime.engine.symbols() and r.get(keys.owner("ETHUSDT")) == b"other"


def _redis_server(port: int, workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False
    wait_for(up, 10, "redis-server")
    return proc


def test_redis_killed_mid_run_engine_goes_on_errors_counted_publishing_resumes(redis_url, tmp_path, collectors):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    # A server of our own, so that it can be killed and started again on the same port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _redis_server(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        col = collectors("--redis", url, "--name", "phoenix", "--symbols", "BTCUSDT", "--backfill", "0",
                         "--data-dir", str(tmp_path / "data"), "--sim-rate", "5")
        r = redis.Redis.from_url(url)
        keys = Keys()
        wait_for(lambda: r.xlen(keys.trades("BTCUSDT")) > 0, 30, "trades published")
        engine, pub = col.runtime.engine, col.publisher
        server.kill()
        server.wait(5)
        last_at_kill = engine.trades("BTCUSDT", 1)[-1].trade_id
        wait_for(lambda: pub.errors > 0, 10, "write errors counted")
        n0 = engine.counters().trades
        wait_for(lambda: engine.counters().trades > n0 + 5, 20, "the engine going on without Redis")
        health = engine.health()
        assert health["redis"]["connected"] is False and health["redis"]["errors"] > 0
        assert health["status"] == "degraded" and any("Redis" in why for why in health["reasons"])
        server = _redis_server(port, tmp_path)
        r = redis.Redis.from_url(url)
        # A Redis restarted empty: heartbeat, ownership and trades come back.
        wait_for(lambda: r.get(keys.collector("phoenix")), 15, "the heartbeat again")
        wait_for(lambda: r.get(keys.owner("BTCUSDT")) == b"phoenix", 10, "the owner key again")
        wait_for(lambda: r.xlen(keys.trades("BTCUSDT")) > 0, 15, "trades published again")
        wait_for(lambda: engine.health()["redis"]["connected"], 10, "connected again")
        # The trades applied while Redis was down were kept and published when it came back:
        # the new stream starts at or before them and has no hole.
        assert pub.wait_published(10)
        ids = [t.trade_id for t in stream_trades(r, keys.trades("BTCUSDT"), "BTCUSDT")[0]]
        assert ids[0] <= last_at_kill + 1
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    finally:
        server.kill()
        server.wait(5)


class _EngineStub:
    default_spec = "1m"


def test_publisher_queue_overflow_is_counted_and_shown_degraded(redis_url):
    pub = RedisPublisher(_EngineStub(), redis.Redis.from_url(redis_url), "c", Keys(), queue_trades=5)
    t = Trade("BTCUSDT", 1, 1.0, 1.0, 1, 1, 1, True, 1)
    for _ in range(3):
        pub.on_cycle(Effects(persist=[t, t]))
    pub.on_cycle(Effects())  # nothing to publish: nothing queued
    assert pub.dropped_cycles == 1 and pub.dropped_trades == 2
    body = {"status": "ok", "reasons": []}
    pub.annotate(body)
    assert body["status"] == "degraded" and body["redis"]["dropped_trades"] == 2
    assert body["redis"]["queued_trades"] == 4
    assert any("missing trades" in why for why in body["reasons"])


def test_a_backlog_is_split_into_entries_readers_accept_in_order():
    from feed.io.redis_writer import MAX_ENTRY_TRADES, _runs

    btc = [Trade("BTCUSDT", i, 1.0, 1.0, 1, i, i, True, 1) for i in range(MAX_ENTRY_TRADES + 5)]
    eth = [Trade("ETHUSDT", i, 2.0, 1.0, 1, i, i, True, 1) for i in range(3)]
    old = [Trade("BTCUSDT", 0, 1.0, 1.0, 1, -1, 0, True, 1)]
    runs = _runs([(btc[:7] + eth[:1], []), (btc[7:], old), (eth[1:], [])])
    assert [(s, k, len(ts)) for s, k, ts in runs] == [
        ("BTCUSDT", TRADES_APPENDED, MAX_ENTRY_TRADES), ("ETHUSDT", TRADES_APPENDED, 3),
        ("BTCUSDT", TRADES_APPENDED, 5), ("BTCUSDT", TRADES_INSERTED, 1)]
    assert [t for s, k, ts in runs if s == "BTCUSDT" and k == TRADES_APPENDED for t in ts] == btc


def test_a_closed_bar_revised_by_a_late_trade_is_published_again_and_the_last_entry_is_the_engines(redis_url):
    from benchmarks.firehose import trade_json
    from feed.core.config import EngineConfig, MarketConfig
    from feed.core.events import RawMessage
    from feed.io.engine import Engine
    from feed.vendors.binance import BinanceAdapter

    engine = Engine(BinanceAdapter("spot"), EngineConfig(market=MarketConfig(clock="exchange")))
    engine.subscribe("BTCUSDT")
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    pub = RedisPublisher(engine, r, "t", keys).start()
    engine.attach_publisher(pub)
    try:
        base = 1_723_161_600_000  # a whole minute, ms
        engine.process([RawMessage(0, trade_json(1, base + 1_000)), RawMessage(0, trade_json(2, base + 61_000))])
        assert pub.wait_published(10)
        first = r.xrange(keys.bars("BTCUSDT", "1m"))
        assert [decode_bar(f)["trade_count"] for _id, f in first] == [1]
        # 1.5 s older than the newest trade: within the tolerance, it revises the closed bar.
        engine.process([RawMessage(0, trade_json(3, base + 59_500))])
        assert pub.wait_published(10)
        raw = [{k.decode(): v.decode() for k, v in f.items()} for _id, f in r.xrange(keys.bars("BTCUSDT", "1m"))]
        closed = engine.bar_series("BTCUSDT", "1m").closed
        assert len(closed) == 1 and closed[0].trade_count == 2
        assert [decode_bar(e)["start"] for e in raw] == [base * 1_000_000] * 2
        assert raw[-1] == encode_bar(closed[0]) and raw[0] != raw[-1]
        appended, _ = stream_trades(r, keys.trades("BTCUSDT"), "BTCUSDT")
        assert [t.trade_id for t in appended] == [1, 2, 3]
    finally:
        pub.stop()


def test_meta_when_verification_reports_bars_by_start_is_written_with_string_keys(redis_url):
    # The verification report keys verdicts by bar start (ints); the meta write must not
    # fail on them (orjson refuses non-string keys unless told).
    from types import SimpleNamespace

    import orjson

    from feed.io.redis_writer import RedisPublisher

    start = 1_723_161_600_000_000_000
    report = {"symbol": "BTCUSDT", "interval": "1m", "counts": {"exact": 1, "differs": 0, "unverified": 0},
              "reasons": {}, "differs": [], "verdicts": {start: "exact"}}
    engine = SimpleNamespace(
        config=SimpleNamespace(market=SimpleNamespace(kline_check="1m", max_bars=100)),
        default_spec="1m", gap_marks_since=lambda symbol, since: (0, []), verify=lambda symbol: report)
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    pub = RedisPublisher(engine, r, "meta-test", keys)
    pipe = r.pipeline(transaction=False)
    commit = pub._meta_step(pipe, "BTCUSDT", SimpleNamespace(symbols={}))
    assert commit is not None
    pipe.execute()
    body = orjson.loads(r.get(keys.meta("BTCUSDT")))
    assert body["verify"]["verdicts"] == {str(start): "exact"} and body["gaps"] == {"total": 0, "marks": []}


def test_collect_with_history_on_publishes_its_verification_without_kline_check(redis_url, tmp_path, collectors):
    # REST history is on by default against a vendor serving it (here the embedded
    # simulator's REST, its default start: half an hour of history): the engine verifies
    # its 1m bars against the vendor's REST klines, and the meta must carry that report
    # too (what the page of ``tickscope serve`` draws as marks), though --kline-check is
    # not given.
    import orjson

    from feed.io.redis_reader import RedisReader

    col = collectors("--redis", redis_url, "--name", "sim", "--symbols", "BTCUSDT", "--data-dir", str(tmp_path))
    engine = col.runtime.engine
    assert not engine.config.market.kline_check and engine.market.verifier is not None
    r = redis.Redis.from_url(redis_url)
    keys = Keys()

    def published():
        report = orjson.loads(r.get(keys.meta("BTCUSDT")) or b"{}").get("verify")
        return report if report and report["counts"]["exact"] > 0 else None

    report = wait_for(published, 60, "a published verification with exact bars")
    ours = engine.verify("BTCUSDT")
    exact = {start for start, verdict in report["verdicts"].items() if verdict == "exact"}
    assert exact <= {str(start) for start, verdict in ours["verdicts"].items() if verdict == "exact"}
    reader = RedisReader(redis_url).start()
    try:
        got = wait_for(lambda: "BTCUSDT" in reader.symbols() and reader.verify("BTCUSDT"), 20,
                       "the reader's copy of the verification")
        assert got["counts"]["exact"] > 0
    finally:
        reader.stop()


def test_meta_verification_is_rebuilt_at_most_every_verify_every_s_and_on_a_forced_pass(redis_url):
    from types import SimpleNamespace

    from feed.io.redis_writer import VERIFY_EVERY_S

    built = []

    def verify(symbol):
        built.append(symbol)
        return {"symbol": symbol, "counts": {"exact": len(built)}, "verdicts": {}}

    engine = SimpleNamespace(
        config=SimpleNamespace(market=SimpleNamespace(kline_check=None, max_bars=100)),
        market=SimpleNamespace(verifier=object()),  # on because history is on
        default_spec="1m", gap_marks_since=lambda symbol, since: (0, []), verify=verify)
    r = redis.Redis.from_url(redis_url)
    pub = RedisPublisher(engine, r, "meta-test", Keys())
    status = SimpleNamespace(symbols={})
    for mono, force, expected in ((100.0, False, 1), (100.5, False, 1), (100.0 + VERIFY_EVERY_S - 0.01, False, 1),
                                  (100.0 + VERIFY_EVERY_S, False, 2), (100.0 + VERIFY_EVERY_S + 0.1, True, 3)):
        pipe = r.pipeline(transaction=False)
        pub._meta_step(pipe, "BTCUSDT", status, mono, force)
        pipe.execute()
        assert len(built) == expected, (mono, force)
    engine.market.verifier = None  # verification off: never built, never published
    pipe = r.pipeline(transaction=False)
    pub._meta_step(pipe, "BTCUSDT", status, 200.0, True)
    pipe.execute()
    assert len(built) == 3
