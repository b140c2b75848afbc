"""Tests for feed/io/store.py: round trips, restart, retention and a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import feed.io.store as store_mod
from feed.core.models import BUY, SELL, UNKNOWN, Trade
from feed.io.store import NO_TRADE_ID, TRADE_DTYPE, TradeStore

pytestmark = pytest.mark.timeout(60)

T0 = 1_717_000_000_000_000_000  # 2024-05-29 UTC, ns


def make_trade(n: int, symbol: str = "BTCUSDT") -> Trade:
    # Values chosen so that every field varies and floats are not "round".
    return Trade(
        symbol=symbol,
        ts_ns=T0 + n * 1_000_003,
        price=67000.01 + n * 0.1,
        size=0.00150 * (n + 1),
        side=(BUY, SELL, UNKNOWN)[n % 3],
        trade_id=None if n % 11 == 5 else 3_600_000_000 + n,
        recv_ns=T0 + n * 1_000_003 + 2_500_000,
        in_bars=n % 7 != 6,
    )


@pytest.fixture
def store(tmp_path):
    s = TradeStore(tmp_path / "db")
    yield s
    s.close(flush=False)


def test_append_flush_load_when_round_trip_values_are_exact(store):
    trades = [make_trade(n) for n in range(50)]
    for t in trades:
        store.append(t)
    assert store.flush() == 50
    assert store.load("BTCUSDT") == trades
    arr = store.load_arrays("BTCUSDT")
    assert arr.dtype == TRADE_DTYPE and len(arr) == 50
    assert arr["price"].tolist() == [t.price for t in trades]
    assert arr["size"].tolist() == [t.size for t in trades]
    assert arr["trade_id"][5] == NO_TRADE_ID
    assert store.count("BTCUSDT") == 50 and store.symbols() == ["BTCUSDT"]


def test_load_when_trades_buffered_includes_them_in_arrival_order(store):
    trades = [make_trade(n) for n in range(10)]
    for t in trades[:6]:
        store.append(t)
    store.flush()
    for t in trades[6:]:
        store.append(t)
    assert store.load("BTCUSDT") == trades
    assert store.count("BTCUSDT") == 10


def test_load_when_arrival_order_differs_from_time_order_keeps_arrival_order(store):
    late = [make_trade(5), make_trade(1), make_trade(9), make_trade(0)]
    for t in late:
        store.append(t)
    store.flush()
    assert [t.ts_ns for t in store.load("BTCUSDT")] == [t.ts_ns for t in late]


def test_load_when_since_and_limit_filter_by_time_and_keep_the_last(store):
    trades = [make_trade(n) for n in range(30)]
    for i, t in enumerate(trades):
        store.append(t)
        if i % 7 == 6:
            store.flush()  # several batches
    assert store.load("BTCUSDT", since_ns=trades[20].ts_ns) == trades[20:]
    assert store.load("BTCUSDT", limit=4) == trades[-4:]
    assert store.load("BTCUSDT", since_ns=trades[10].ts_ns, limit=100) == trades[10:]
    assert store.load("BTCUSDT", limit=0) == []
    assert store.load("NOPE") == [] and len(store.load_arrays("NOPE")) == 0


def test_flush_when_many_symbols_keeps_them_apart(store):
    a = [make_trade(n, "BTCUSDT") for n in range(5)]
    b = [make_trade(n, "EUR/USD") for n in range(3)]  # a "/" in a symbol is fine
    for x, y in zip(a, b + [None] * 2):
        store.append(x)
        if y:
            store.append(y)
    store.flush()
    assert store.load("BTCUSDT") == a and store.load("EUR/USD") == b
    assert store.symbols() == ["BTCUSDT", "EUR/USD"]


def test_flush_when_batch_exceeds_max_splits_it(store, monkeypatch):
    monkeypatch.setattr(store_mod, "_MAX_BATCH_TRADES", 4)
    trades = [make_trade(n) for n in range(10)]
    store.extend(trades)
    store.flush()
    assert store._manifest["symbols"]["BTCUSDT"]["next"] == 3
    assert store.load("BTCUSDT") == trades


def test_flush_when_nothing_buffered_writes_nothing(store):
    assert store.flush() == 0
    assert store.symbols() == []


def test_flush_when_write_fails_keeps_trades_buffered(store, monkeypatch):
    trades = [make_trade(n) for n in range(5)]
    store.extend(trades[:3])

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store._cache, "set", boom)
    with pytest.raises(OSError):
        store.flush()
    monkeypatch.undo()
    store.extend(trades[3:])
    assert store.flush() == 5
    assert store.load("BTCUSDT") == trades


def test_flush_due_when_delay_passed_is_true(tmp_path):
    s = TradeStore(tmp_path / "db", batch_max_delay_s=1.0)
    try:
        assert not s.flush_due(100.0)  # nothing buffered
        s.append(make_trade(0))
        assert not s.flush_due(100.0)  # the wait starts now
        assert not s.flush_due(100.9)
        assert s.flush_due(101.0)
        s.flush()
        assert not s.flush_due(200.0)
    finally:
        s.close()


def test_reopen_when_flushed_keeps_history(tmp_path):
    trades = [make_trade(n) for n in range(20)]
    s = TradeStore(tmp_path / "db")
    s.extend(trades[:12])
    s.flush()
    s.extend(trades[12:])
    s.close()  # close flushes
    s2 = TradeStore(tmp_path / "db")
    try:
        assert s2.load("BTCUSDT") == trades
        s2.append(make_trade(20))
        s2.flush()
        assert s2.count("BTCUSDT") == 21
    finally:
        s2.close()


def test_reopen_when_trades_not_flushed_they_are_gone(tmp_path):
    trades = [make_trade(n) for n in range(8)]
    s = TradeStore(tmp_path / "db")
    s.extend(trades[:5])
    s.flush()
    s.extend(trades[5:])
    assert s.count("BTCUSDT") == 8
    s.close(flush=False)  # as if the process died here
    s2 = TradeStore(tmp_path / "db")
    try:
        assert s2.load("BTCUSDT") == trades[:5]
        assert s2.count("BTCUSDT") == 5
    finally:
        s2.close()


def test_meta_and_bars_when_saved_survive_reopen(tmp_path):
    bars = [{"symbol": "BTCUSDT", "bar": "1m", "start": T0, "open": 0.1 + 0.2, "high": 1e300,
             "low": 5e-324, "close": 67000.01, "closed": True, "trade_count": 3}]
    s = TradeStore(tmp_path / "db")
    s.set_meta("BTCUSDT", {"price_decimals": 2, "size_decimals": 5})
    s.set_meta("BTCUSDT", {"price_decimals": 2, "size_decimals": 5})  # unchanged: no write
    s.save_bars("BTCUSDT", "1m", bars)
    s.close()
    s2 = TradeStore(tmp_path / "db")
    try:
        assert s2.get_meta("BTCUSDT") == {"price_decimals": 2, "size_decimals": 5}
        assert s2.get_meta("ETHUSDT") is None
        assert s2.load_bars("BTCUSDT", "1m") == bars
        assert s2.load_bars("BTCUSDT", "5m") == []
    finally:
        s2.close()


def test_prune_when_max_age_drops_whole_old_batches(store):
    for batch in range(5):
        store.extend(make_trade(batch * 10 + k) for k in range(10))
        store.flush()
    newest = make_trade(49).ts_ns
    # Keep trades younger than 25 trades' worth of time: batches 0 and 1 are all older.
    removed = store.prune(max_age_ns=newest - make_trade(25).ts_ns, now_ns=newest)
    assert removed == 20
    assert store.load("BTCUSDT") == [make_trade(n) for n in range(20, 50)]
    assert store.prune(max_age_ns=10**18, now_ns=newest) == 0
    assert store.prune(max_age_ns=0, now_ns=newest + 1) == 30
    assert store.count("BTCUSDT") == 0 and store.symbols() == []
    store.append(make_trade(99))  # numbering goes on after a full prune
    store.flush()
    assert store.load("BTCUSDT") == [make_trade(99)]


def test_prune_when_max_bytes_drops_oldest_batches_across_symbols(store):
    for batch in range(4):
        for sym, offset in (("AAA", 0), ("BBB", 5)):
            store.extend(make_trade(batch * 10 + offset + k, sym) for k in range(5))
        store.flush()
    per_batch = store.nbytes() // 8
    removed = store.prune(max_bytes=per_batch * 5)
    assert removed == 15 and store.nbytes() == per_batch * 5
    # The three oldest batches went: AAA 0, BBB 0, AAA 1 (by their first trade time).
    assert store.count("AAA") == 10 and store.count("BBB") == 15


def test_prune_when_reopened_counts_are_consistent(tmp_path):
    s = TradeStore(tmp_path / "db")
    for batch in range(3):
        s.extend(make_trade(batch * 4 + k) for k in range(4))
        s.flush()
    s.prune(max_bytes=1)
    s.close()
    s2 = TradeStore(tmp_path / "db")
    try:
        assert s2.count("BTCUSDT") == 0 and s2.nbytes() == 0
    finally:
        s2.close()


def test_load_when_flushing_concurrently_sees_each_trade_once(store):
    stop = threading.Event()
    seen = []
    ids = np.array([make_trade(n).trade_id or NO_TRADE_ID for n in range(200)])

    def reader():
        while not stop.is_set():
            arr = store.load_arrays("BTCUSDT")
            # Always a prefix of what was appended: nothing doubled or missing while a
            # flush moves trades from memory to disk.
            seen.append(len(arr) if np.array_equal(arr["trade_id"], ids[:len(arr)]) else -1)

    t = threading.Thread(target=reader)
    t.start()
    for batch in range(40):
        store.extend(make_trade(batch * 5 + k) for k in range(5))
        store.flush()
    stop.set()
    t.join(5)
    assert seen and -1 not in seen
    assert seen == sorted(seen)


# ---------------------------------------------------------------------------------------
# kill -9
# ---------------------------------------------------------------------------------------

BATCH = 400
WRITER = textwrap.dedent(f"""
    import sys
    from feed.core.models import Trade
    from feed.io.store import TradeStore

    T0 = {T0}
    store = TradeStore(sys.argv[1])
    n = store.count("AAA")        # resume after the previous kill
    assert n == store.count("BBB") and n % {BATCH} == 0, (n, store.count("BBB"))
    print("start", n, flush=True)
    while True:
        for sym, mult in (("AAA", 1), ("BBB", 3)):
            for k in range(n, n + {BATCH}):
                store.append(Trade(sym, T0 + k * mult, k * 0.25 + 0.125, (k % 7) + 0.5,
                                   (1, -1, 0)[k % 3], k, T0 + k + 1, k % 5 != 0))
        store.flush()
        n += {BATCH}
        print("flushed", n, flush=True)
""")


def expected(n: int, mult: int) -> np.ndarray:
    k = np.arange(n, dtype=np.int64)
    out = np.empty(n, TRADE_DTYPE)
    out["ts_ns"] = T0 + k * mult
    out["price"] = k * 0.25 + 0.125
    out["size"] = (k % 7) + 0.5
    out["side"] = np.array([1, -1, 0], dtype=np.int8)[k % 3]
    out["trade_id"] = k
    out["in_bars"] = k % 5 != 0
    out["recv_ns"] = T0 + k + 1
    out["count"] = 1
    return out


def test_store_when_writer_killed_9_keeps_every_flushed_batch_intact(tmp_path):
    directory = tmp_path / "db"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rng = np.random.default_rng(1)
    confirmed = 0
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            start = proc.stdout.readline().split()
            assert start and start[0] == "start", proc.stderr.read()
            assert int(start[1]) >= confirmed  # nothing confirmed was lost by the last kill
            # Let it write for a while, then kill it at an arbitrary moment.
            deadline = time.monotonic() + 10
            flushed = 0
            while flushed < confirmed + 20 * BATCH and time.monotonic() < deadline:
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                flushed = int(line.split()[1])
            time.sleep(float(rng.uniform(0, 0.05)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
            confirmed = flushed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            proc.stdout.close()
            proc.stderr.close()

        s = TradeStore(directory)
        try:
            for sym, mult in (("AAA", 1), ("BBB", 3)):
                n = s.count(sym)
                assert n % BATCH == 0 and n >= confirmed, (round_, sym, n, confirmed)
                arr = s.load_arrays(sym)
                assert len(arr) == n
                np.testing.assert_array_equal(arr, expected(n, mult))
            # Both symbols are written in one transaction: they never diverge.
            assert s.count("AAA") == s.count("BBB")
        finally:
            s.close(flush=False)


def test_store_when_history_put_in_place_keeps_aggregate_counts_and_reads_version_1_batches(tmp_path):
    from feed.core.history import in_id_order
    from feed.io.store_format import _HEADER, TRADE_DTYPE_V1, unpack_batch

    live = [Trade("BTCUSDT", T0 + i, 100.0, 1.0, BUY, 10 + i, T0 + i) for i in range(5)]
    repaired = Trade("BTCUSDT", T0 - 5, 99.0, 3.0, SELL, 9, 0, True, 4)  # an aggregate of ids 6..9
    with TradeStore(tmp_path / "s") as store:
        store.extend(live)
        store.flush()
        store.extend([repaired, live[2]])  # history after newer live trades; one id again
        store.flush()
        loaded = store.load("BTCUSDT")
        # A version-1 batch (42-byte records, no count) written by an older tickscope.
        old = np.zeros(1, TRADE_DTYPE_V1)
        old[0] = (T0 + 100, 101.0, 2.0, 1, 20, True, T0 + 100)
        blob = _HEADER.pack(b"TSB1", 1, TRADE_DTYPE_V1.itemsize, 1, T0 + 100, T0 + 100) + old.tobytes()
        assert unpack_batch(blob)["count"].tolist() == [1]
        assert unpack_batch(blob)["trade_id"].tolist() == [20]
    # History put in place comes back in id order, each id once (live-only: arrival order).
    assert [t.trade_id for t in loaded] == [9, 10, 11, 12, 13, 14]
    assert loaded[0].count == 4 and loaded[0].recv_ns == 0 and loaded[3].recv_ns == T0 + 2
    assert in_id_order([*live, repaired, live[2]]) == [repaired, *live]
    with TradeStore(tmp_path / "s") as store:  # the newest is the newest live trade, not the last stored
        assert store.last_trade("BTCUSDT") == (T0 + 4, 100.0, 14)
