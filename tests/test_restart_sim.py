"""History that survives a restart: the default (simulator) runtime stopped and started
again on the same data dir keeps every earlier bar, counts no trade-id gap, continues the
simulated price where it stopped and subscribes again the symbols added before; the store
is kept per source, so a replay on the same data dir never sees simulated trades.

Real runtimes (embedded exchange on loopback, feed client, engine, store on disk); the
HTTP API is read through the Dash app's Flask server.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from dashboard.runtime import _replay_store_name
from feed.exchange.simulator import MarketSimulator
from feed.io.store import TradeStore
from tests.helpers import run, wait_for
from tests.test_faults import spot_files

pytestmark = pytest.mark.timeout(120)

FAST = {"backoff_initial_s": 0.05, "backoff_cap_s": 1.0, "ping_interval_s": 0}


def bars_csv(rt, symbol: str, spec: str = "1s") -> pd.DataFrame:
    resp = rt.app.server.test_client().get(f"/api/bars?symbol={symbol}&bar={spec}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return pd.read_csv(io.StringIO(resp.get_data(as_text=True)))


def closed_bars(rt, symbol: str, spec: str = "1s") -> pd.DataFrame:
    frame = bars_csv(rt, symbol, spec)
    return frame[frame["closed"].astype(str).str.lower().isin(["true", "1"])]


def gaps(rt) -> int:
    return rt.engine.health()["counters"]["gaps"]


def test_restart_when_same_data_dir_then_history_kept_no_gap_price_continues_symbol_back(tmp_path):
    argv = ("--data-dir", str(tmp_path), "--sim-rate", "4", "--bar", "1s")
    first = run(argv, feed_options=FAST)
    try:
        assert first.engine.subscribe("adausdt") == "ADAUSDT"  # added from the UI in real use
        wait_for(lambda: len(closed_bars(first, "BTCUSDT")) >= 4 and first.engine.trades("ADAUSDT", 1),
                 30, "closed 1s bars of BTCUSDT and ADAUSDT trades")
        assert gaps(first) == 0
    finally:
        first.stop()
    before = closed_bars(first, "BTCUSDT")  # the engine still answers after stop
    with TradeStore(tmp_path / "embedded") as store:
        last_ts, last_price, last_id = store.last_trade("BTCUSDT")
        stored = store.count("BTCUSDT")
        assert store.subscribed() == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT"]
    assert stored >= before["trade_count"].sum()

    second = run(argv, feed_options=FAST)
    try:
        assert "ADAUSDT" in second.engine.symbols()
        wait_for(lambda: second.engine.trades("BTCUSDT", 1)
                 and second.engine.trades("BTCUSDT", 1)[-1].trade_id > last_id + 5,
                 30, "new BTCUSDT trades after the restart")
        wait_for(lambda: second.engine.trades("ADAUSDT", 1)
                 and second.engine.trades("ADAUSDT", 1)[-1].ts_ns > last_ts, 30, "new ADAUSDT trades")
        held = second.engine.trades("BTCUSDT", 100_000)
        new = [t for t in held if t.trade_id > last_id]
        assert new[0].trade_id == last_id + 1  # continues the stored ids: nothing missed
        assert new[0].ts_ns >= last_ts
        assert abs(new[0].price / last_price - 1) < 0.005, (new[0].price, last_price)
        assert gaps(second) == 0
        after = closed_bars(second, "BTCUSDT")
    finally:
        second.stop()
    # Every bar closed before the stop is there again, unchanged.
    old = before.set_index("start")
    kept = after.set_index("start").reindex(old.index)
    assert kept["close"].notna().all(), "bars of the first run missing after the restart"
    pd.testing.assert_frame_equal(kept[old.columns.drop("closed")], old[old.columns.drop("closed")],
                                  check_dtype=False)


def test_replay_when_data_dir_used_by_simulator_then_no_simulated_trades(tmp_path, hft_data):
    files = spot_files(hft_data, ("btcusdt_20240808.gz",))
    sim = run(("--data-dir", str(tmp_path), "--sim-rate", "4"), feed_options=FAST)
    try:
        wait_for(lambda: sim.engine.trades("BTCUSDT", 1), 30, "simulated BTCUSDT trades")
    finally:
        sim.stop()
    with TradeStore(tmp_path / "embedded") as store:
        simulated = {t.trade_id for t in store.load("BTCUSDT")}
    assert simulated

    replay = run(("--replay", *map(str, files), "--speed", "0", "--data-dir", str(tmp_path)), feed_options=FAST)
    try:
        wait_for(lambda: replay.engine.trades("BTCUSDT", 1), 60, "replayed BTCUSDT trades")
        assert replay.store.directory == str(tmp_path / _replay_store_name(tuple(files), "spot"))
        held = {t.trade_id for t in replay.engine.trades("BTCUSDT", 10_000_000)}
        assert held and not held & simulated
        assert "SOLUSDT" not in replay.engine.symbols()  # the simulator's symbols stay with it
    finally:
        replay.stop()


def test_replay_store_name_when_same_names_and_sizes_elsewhere_then_same_store(tmp_path):
    a, b = tmp_path / "one" / "x.gz", tmp_path / "two" / "x.gz"
    for path, body in ((a, b"12345"), (b, b"12345")):
        path.parent.mkdir()
        path.write_bytes(body)
    assert _replay_store_name((a,), "spot") == _replay_store_name((b,), "spot")
    b.write_bytes(b"123456")  # a longer capture under the same name is another set
    assert _replay_store_name((a,), "spot") != _replay_store_name((b,), "spot")


def test_store_subscribed_when_damaged_then_ignored_and_bounded(tmp_path):
    with TradeStore(tmp_path / "s") as store:
        assert store.subscribed() == []
        store.set_subscribed(["BTCUSDT", "ETHUSDT"])
        assert store.subscribed() == ["BTCUSDT", "ETHUSDT"]
        store._cache.set("subscribed", '{"not": "a list"}')
        assert store.subscribed() == []
        store._cache.set("subscribed", '["BTCUSDT", 3, null, "' + "X" * 100 + '"]')
        assert store.subscribed() == ["BTCUSDT"]
        store._cache.set("subscribed", b"\x80\x04pickle")
        assert store.subscribed() == []


def test_market_simulator_when_resumed_then_ids_continue_and_price_starts_at_the_stored_one():
    start = 1_700_000_000_000_000_000
    fresh = MarketSimulator("BTCUSDT", start_ns=start)
    resumed = MarketSimulator("BTCUSDT", start_ns=start, resume=(43_210.5, 123_456))
    fills = resumed.advance(start + 5_000_000_000)
    assert fills and [f.trade_id for f in fills] == list(range(123_457, 123_457 + len(fills)))
    tick = resumed.instrument.tick
    assert abs(fills[0].price_ticks * tick / 43_210.5 - 1) < 0.005
    assert fresh.advance(start + 5_000_000_000)[0].trade_id > 100_000_000  # not resumed: time-based ids
    for bad in ((0.0, 1), (float("nan"), 1), (100.0, -1)):
        with pytest.raises(ValueError, match="resume"):
            MarketSimulator("BTCUSDT", start_ns=start, resume=bad)
