"""The trade store against hostile or damaged inputs: a second process on the data dir,
planted pickles, corrupt batches and metadata, a future-stamped trade under retention,
and a full disk. Every test checks that the good data is exact afterwards.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import diskcache
import pytest

from feed.core.config import EngineConfig
from feed.core.health import health_json, health_state
from feed.core.models import BUY, Trade
from feed.io.dirlock import LOCK_NAME
from feed.io.engine import Engine
from feed.io.keeper import StoreKeeper
from feed.io.store import StoreCorrupt, StoreError, StoreLocked, TradeStore
from feed.io.store_format import PlainDisk
from feed.vendors.binance import BinanceAdapter
from tests.helpers import make_status
from tests.test_store import make_trade

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
DAY_NS = 86_400 * 10**9


def write_batches(directory: Path, sizes: list[int], symbol: str = "BTCUSDT") -> list[list[Trade]]:
    """Store one batch per size (consecutive ``make_trade`` numbers); return the batches."""
    batches, n = [], 0
    with TradeStore(directory) as s:
        for size in sizes:
            batch = [make_trade(k, symbol) for k in range(n, n + size)]
            s.extend(batch)
            s.flush()
            batches.append(batch)
            n += size
    return batches


def plant(directory: Path, key: str, value: object) -> None:
    """Write ``value`` at ``key`` the way any diskcache user could (pickling non-plain values)."""
    with diskcache.Cache(str(directory)) as cache:
        cache.set(key, value)


class Evil:
    """Unpickling this creates ``path``: the proof that stored code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------------------------------
# one owner per data dir
# ---------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from feed.io.store import TradeStore
    from tests.test_store import make_trade

    store = TradeStore(sys.argv[1])
    store.extend(make_trade(n) for n in range(30))
    store.flush()
    print("ready", flush=True)
    time.sleep(60)
""")


def start_holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


def stop_holder(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()


def test_store_when_another_process_owns_the_dir_raises_store_locked_naming_dir_and_pid(tmp_path):
    directory = tmp_path / "db"
    proc = start_holder(directory)
    try:
        with pytest.raises(StoreLocked) as exc:
            TradeStore(directory)
        message = str(exc.value)
        assert str(directory) in message and f"process {proc.pid}" in message and "--data-dir" in message
        assert isinstance(exc.value, StoreError)
    finally:
        stop_holder(proc)  # kill -9: the OS releases the lock with the process
    with TradeStore(directory) as s:
        assert s.load("BTCUSDT") == [make_trade(n) for n in range(30)]
    assert stat.S_IMODE(os.stat(directory / LOCK_NAME).st_mode) == 0o600


def test_store_when_one_is_open_a_second_waits_for_close(tmp_path):
    first = TradeStore(tmp_path / "db")
    first.extend(make_trade(n) for n in range(5))
    with pytest.raises(StoreLocked, match=f"process {os.getpid()}"):
        TradeStore(tmp_path / "db")
    first.close()  # flushes and releases
    with TradeStore(tmp_path / "db") as second:
        assert second.load("BTCUSDT") == [make_trade(n) for n in range(5)]


def test_cli_when_data_dir_in_use_exits_2_naming_dir_and_process(tmp_path, capsys):
    from dashboard.cli import main

    directory = tmp_path / "embedded"  # the default mode's store under --data-dir
    proc = start_holder(directory)
    try:
        assert main(["--data-dir", str(tmp_path), "--port", "1"]) == 2
        err = capsys.readouterr().err
        assert str(directory) in err and f"process {proc.pid}" in err and "Traceback" not in err
    finally:
        stop_holder(proc)
    with TradeStore(directory) as s:  # the holder's history is untouched
        assert s.load("BTCUSDT") == [make_trade(n) for n in range(30)]


# ---------------------------------------------------------------------------------------
# never unpickle
# ---------------------------------------------------------------------------------------


def test_store_when_batch_is_a_planted_pickle_never_runs_it_and_loads_the_rest(tmp_path, caplog):
    directory, marker = tmp_path / "db", tmp_path / "pwned"
    batches = write_batches(directory, [10, 10, 10])
    plant(directory, "trades/BTCUSDT/1", Evil(marker))
    with caplog.at_level(logging.WARNING, "tickscope.store"), TradeStore(directory) as s:
        assert s.load("BTCUSDT") == batches[0] + batches[2]
        assert s.bad_batches == 1
    assert not marker.exists()
    assert "trades/BTCUSDT/1" in caplog.text and "pickle" in caplog.text


def test_store_when_manifest_is_a_planted_pickle_refuses_to_open_without_running_it(tmp_path):
    directory, marker = tmp_path / "db", tmp_path / "pwned"
    write_batches(directory, [10])
    plant(directory, "manifest", Evil(marker))
    with pytest.raises(StoreCorrupt) as exc:
        TradeStore(directory)
    assert not marker.exists()
    assert str(directory) in str(exc.value) and "--data-dir" in str(exc.value)
    with diskcache.Cache(str(directory)) as c:
        assert c.get("trades/BTCUSDT/0") is not None  # nothing was deleted


def test_store_when_meta_is_a_planted_pickle_ignores_it_and_loads_trades(tmp_path):
    directory, marker = tmp_path / "db", tmp_path / "pwned"
    batches = write_batches(directory, [10, 10])
    plant(directory, "meta/BTCUSDT", Evil(marker))
    with TradeStore(directory) as s:
        assert s.get_meta("BTCUSDT") is None
        assert s.load("BTCUSDT") == batches[0] + batches[1]
        s.set_meta("BTCUSDT", {"price_decimals": 2})  # overwrites the planted value
    with TradeStore(directory) as s:
        assert s.get_meta("BTCUSDT") == {"price_decimals": 2}
    assert not marker.exists()


def test_store_when_row_names_a_file_outside_never_reads_or_removes_it(tmp_path):
    directory, victim = tmp_path / "db", tmp_path / "victim.txt"
    victim.write_text("precious")
    batches = write_batches(directory, [10])
    with sqlite3.connect(directory / "cache.db") as db:  # a row pointing at a file elsewhere
        db.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
                   " tag, size, mode, filename, value) VALUES ('meta/BTCUSDT', 1, 0, NULL, 0, 0,"
                   " NULL, 8, 2, ?, NULL)", (str(victim),))
    with TradeStore(directory) as s:
        assert s.get_meta("BTCUSDT") is None  # refused, not read
        s.set_meta("BTCUSDT", {"price_decimals": 2})  # replaces the row
        assert s.load("BTCUSDT") == batches[0]
    assert victim.read_text() == "precious"


def test_plain_disk_when_asked_for_non_plain_values_or_pickled_keys_refuses():
    disk = PlainDisk("/nonexistent", min_file_size=1, pickle_protocol=5, unknown_setting=1)
    with pytest.raises(TypeError):
        disk.store({"a": 1}, False)
    with pytest.raises(TypeError):
        disk.put(("tuple", "key"))
    with pytest.raises(StoreCorrupt):
        disk.get(pickle.dumps("key"), False)
    assert disk.store(b"x" * 100, False)[1:3] == (diskcache.core.MODE_RAW, None)  # never a side file


# ---------------------------------------------------------------------------------------
# corrupt batches and metadata
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["bad header", "truncated", "wrong type", "text"])
def test_store_when_one_batch_is_corrupt_skips_it_counts_it_and_loads_the_others(tmp_path, damage, caplog):
    directory = tmp_path / "db"
    batches = write_batches(directory, [10, 20, 30, 40])
    with diskcache.Cache(str(directory)) as cache:
        blob = cache.get("trades/BTCUSDT/2")
        cache.set("trades/BTCUSDT/2", {"bad header": b"XXXX" + blob[4:], "truncated": blob[:-7],
                                       "wrong type": 42, "text": "hello"}[damage])
    config = EngineConfig(retention_max_age_s=None)
    with caplog.at_level(logging.WARNING, "tickscope.store"), TradeStore(directory) as s:
        assert s.load("BTCUSDT") == batches[0] + batches[1] + batches[3]
        assert s.load("BTCUSDT", limit=45) == (batches[1] + batches[3])[-45:]
        assert s.load("BTCUSDT") == batches[0] + batches[1] + batches[3]  # counted once
        status = StoreKeeper(s, None, config).status()
        assert status.bad_batches == 1
        assert health_json(make_status(store=status))["store"]["bad_batches"] == 1
    assert caplog.text.count("trades/BTCUSDT/2") == 1


def test_retention_when_a_batch_is_corrupt_still_prunes_around_it(tmp_path):
    directory = tmp_path / "db"
    batches = write_batches(directory, [10, 10, 10, 10])
    with diskcache.Cache(str(directory)) as cache:
        cache.set("trades/BTCUSDT/1", b"junk")
    with TradeStore(directory) as s:
        # By age: the corrupt batch sits between two old ones, so it goes with them.
        cutoff_trade = batches[3][0]
        assert s.prune(max_age_ns=1, now_ns=cutoff_trade.ts_ns) == 20
        assert s.load("BTCUSDT") == batches[3] and s.count("BTCUSDT") == 10


def test_retention_when_corrupt_batch_is_at_a_front_it_goes_first_for_size(tmp_path):
    directory = tmp_path / "db"
    aaa = [make_trade(k, "AAA") for k in range(100, 120)]
    bbb = [make_trade(k, "BBB") for k in range(20)]  # older trades than any of AAA's
    with TradeStore(directory) as s:
        for batch in (aaa[:10], bbb[:10], bbb[10:] + aaa[10:]):
            s.extend(batch)
            s.flush()
    with diskcache.Cache(str(directory)) as cache:
        cache.set("trades/AAA/0", b"junk")
    with TradeStore(directory) as s:
        # The unreadable batch holds nothing loadable: it goes before BBB's older trades.
        assert s.prune(max_bytes=s.nbytes() - 1) == 0
        assert s.load("AAA") == aaa[10:] and s.load("BBB") == bbb
        assert s.count("AAA") == 10 and s.nbytes() == 3 * s.nbytes("BBB") // 2


@pytest.mark.parametrize("manifest", [
    "{not json", "[]", '{"version": 1, "symbols": []}', '{"version": 2, "symbols": {}}',
    '{"version": 1, "symbols": {"BTCUSDT": {"first": "0", "next": 1, "count": 1, "bytes": 1}}}',
    '{"version": 1, "symbols": {"BTCUSDT": {"first": 3, "next": 1, "count": 1, "bytes": 1}}}',
    b"bytes", 7, "[" * 100_000,
])
def test_store_when_manifest_is_corrupt_raises_store_corrupt_saying_what_to_do(tmp_path, manifest):
    directory = tmp_path / "db"
    write_batches(directory, [10])
    plant(directory, "manifest", manifest)
    with pytest.raises(StoreCorrupt) as exc:
        TradeStore(directory)
    message = str(exc.value)
    assert str(directory) in message and "manifest" in message
    assert "Move that directory away" in message and "--data-dir" in message
    with diskcache.Cache(str(directory)) as c:
        assert c.get("trades/BTCUSDT/0") is not None  # refused, not repaired or deleted


def test_store_when_database_file_is_garbage_raises_store_corrupt(tmp_path):
    directory = tmp_path / "db"
    directory.mkdir()
    (directory / "cache.db").write_bytes(b"this is not sqlite" * 100)
    for _ in range(2):  # the second time too: the failed open released its lock
        with pytest.raises(StoreCorrupt, match="--data-dir"):
            TradeStore(directory)
    assert (directory / "cache.db").read_bytes() == b"this is not sqlite" * 100


def test_cli_when_store_manifest_corrupt_exits_2_with_one_message(tmp_path, capsys):
    from dashboard.cli import main

    directory = tmp_path / "embedded"
    write_batches(directory, [5])
    plant(directory, "manifest", "{truncated")
    assert main(["--data-dir", str(tmp_path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert str(directory) in err and "--data-dir" in err and "Traceback" not in err


@pytest.mark.parametrize("meta", ['{"price_decimals": ', "[1, 2]", 7, b"\x80\x04"])
def test_engine_when_meta_is_corrupt_ignores_it_and_restores_trades(tmp_path, meta, caplog):
    directory = tmp_path / "db"
    batches = write_batches(directory, [10, 15])
    plant(directory, "meta/BTCUSDT", meta)
    store = TradeStore(directory)
    engine = Engine(BinanceAdapter("spot"), EngineConfig(), store=store).start()
    try:
        with caplog.at_level(logging.WARNING, "tickscope.store"):
            engine.subscribe("BTCUSDT")
        assert engine.status().symbols["BTCUSDT"].trades == 25
        assert "meta/BTCUSDT" in caplog.text
    finally:
        engine.stop()
        store.close()
    with TradeStore(directory) as s:
        assert s.load("BTCUSDT") == batches[0] + batches[1]


# ---------------------------------------------------------------------------------------
# retention by the wall clock
# ---------------------------------------------------------------------------------------


def test_retention_when_one_trade_is_stamped_in_the_future_keeps_every_real_trade(tmp_path):
    now = time.time_ns()
    old = [Trade("BTCUSDT", now - 3 * DAY_NS + i, 100.0, 1.0, BUY, 1 + i, now - 3 * DAY_NS) for i in range(2)]
    real = [Trade("BTCUSDT", now - (500 - i) * 10**9, 100.0 + i / 8, 0.5, BUY, 1000 + i, now) for i in range(500)]
    future = Trade("BTCUSDT", 7_258_118_400 * 10**9, 100.0, 1.0, BUY, 5000, now)  # 2200-01-01
    store = TradeStore(tmp_path / "db")
    try:
        for batch in (old, real[:250], real[250:] + [future]):  # the future one in the newest batch
            store.extend(batch)
            store.flush()
        keeper = StoreKeeper(store, None, EngineConfig(retention_max_age_s=86_400.0, prune_every_s=0.01))
        keeper.tick(time.monotonic() + 1.0, None)  # a retention pass, as the engine runs it
        assert keeper.errors == 0 and keeper.pruned == 2  # only the genuinely old trades
        assert store.load("BTCUSDT") == real + [future]
        assert keeper.status().pruned_trades == 2
    finally:
        store.close()


def test_prune_when_max_age_given_without_wall_clock_refuses(tmp_path):
    with TradeStore(tmp_path / "db") as s:
        s.extend(make_trade(n) for n in range(3))
        s.flush()
        with pytest.raises(ValueError, match="now_ns"):
            s.prune(max_age_ns=10**9)
        assert s.load("BTCUSDT") == [make_trade(n) for n in range(3)]


# ---------------------------------------------------------------------------------------
# disk full
# ---------------------------------------------------------------------------------------


def test_store_when_disk_full_health_degrades_buffer_stays_bounded_and_recovers(tmp_path, monkeypatch, caplog):
    trades = [make_trade(n) for n in range(310)]
    store = TradeStore(tmp_path / "db", max_pending_trades=100)
    keeper = StoreKeeper(store, None, EngineConfig(flush_every_s=0.01))

    def health(mono: float) -> str:
        keeper.tick(mono, [("BTCUSDT", {"price_decimals": 2})])
        return health_state(make_status(store=keeper.status()))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        store.extend(trades[:50])
        assert health(1.0) == "ok" and store.unsaved == 0
        monkeypatch.setattr(store._cache, "transact", no_space)
        monkeypatch.setattr(store._cache, "set", no_space)
        store.extend(trades[50:300])
        with caplog.at_level(logging.WARNING, "tickscope.store"):
            assert health(2.0) == "degraded"
        status = keeper.status()
        assert status.failing and status.errors == 1
        assert status.unsaved_trades == 100 and status.unsaved_dropped == 150
        assert "dropped" in caplog.text
        store.extend(trades[300:310])  # still full: ten more of the oldest go
        assert health(3.0) == "degraded" and keeper.status().unsaved_dropped == 160
        assert health_json(make_status(store=keeper.status()))["status"] == "degraded"
        monkeypatch.undo()  # space again
        assert health(4.0) == "ok"
        status = keeper.status()
        assert not status.failing and status.unsaved_trades == 0 and status.unsaved_dropped == 160
        assert store.load("BTCUSDT") == trades[:50] + trades[210:310]
    finally:
        store.close()
    with TradeStore(tmp_path / "db") as s:
        assert s.load("BTCUSDT") == trades[:50] + trades[210:310]
        assert s.get_meta("BTCUSDT") == {"price_decimals": 2}


def test_engine_when_store_flush_fails_health_json_shows_it_and_buffer_bounded(tmp_path, monkeypatch):
    import json

    from feed.core.config import MarketConfig
    from tests.helpers import wait_for

    store = TradeStore(tmp_path / "db", max_pending_trades=20)
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange"), flush_every_s=0.05),
                    store=store).start()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        monkeypatch.setattr(store._cache, "transact", no_space)
        monkeypatch.setattr(store._cache, "set", no_space)
        engine.subscribe("BTCUSDT")
        for i in range(50):
            engine.submit(json.dumps({"stream": "btcusdt@trade", "data": {
                "e": "trade", "E": 1, "s": "BTCUSDT", "t": i + 1, "p": "1.5", "q": "2",
                "T": 1_723_161_600_000 + i, "m": False, "M": True}}).encode(), 10**18 + i)
        assert engine.wait_idle(5)
        body = wait_for(lambda: (h := engine.health())["store"]["failing"] and h, 5, "a failed flush")
        assert body["store"]["unsaved_trades"] == 20 and body["store"]["unsaved_dropped"] == 30
        assert engine.status().symbols["BTCUSDT"].trades == 50  # the market state is unharmed
        monkeypatch.undo()
        wait_for(lambda: not engine.health()["store"]["failing"], 5, "a good flush")
        assert [t.trade_id for t in store.load("BTCUSDT")] == list(range(31, 51))
    finally:
        engine.stop()
        store.close()


def test_health_when_store_failing_is_degraded_and_down_still_wins():
    from feed.core.health import StoreStatus

    failing = StoreStatus(directory="/d", bytes=0, last_flush_age_s=5.0, errors=3, pruned_trades=0,
                          retention_max_age_s=None, retention_max_bytes=None, failing=True)
    assert health_state(make_status(store=failing)) == "degraded"
    assert health_state(make_status(state="failed", store=failing)) == "down"
    assert health_state(make_status(store=None)) == "ok"
