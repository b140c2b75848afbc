"""Persistence end to end: a real ``python -m dashboard`` process is killed with SIGKILL during
heavy ingestion and restarted on the same data dir.

The source is a recorded capture replayed by the embedded exchange (``--replay ...
--data-dir DIR`` persists under ``DIR/replay/<market>-<hash>``), because then what was
sent is known exactly: the trades in the files, in order. The checks:

* after the kill the store opens, and its trades are exactly the first N recorded trades
  (values equal, ids contiguous from the first) -- nothing torn, nothing reordered -- with
  N at least what the process had applied two seconds before the kill (the engine flushes
  every second);
* a restart that receives nothing new (the exchange refuses connections) restores those
  trades, and its ``/api/bars`` equal ``aggregate()`` of them, for time and tick bars;
* a restart that replays the files again ends with every recorded trade exactly once
  (already-stored ids are skipped as duplicates) and bars equal to the whole recording's.

Also here: retention (``--retention-days/--retention-mb`` -> ``TradeStore.prune`` from
the engine's housekeeping).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from dashboard.cli import config_from_argv
from dashboard.runtime import start_runtime
from feed.core.batch import aggregate
from feed.core.config import EngineConfig, MarketConfig
from feed.io.engine import Engine
from feed.core.models import Trade
from feed.io.store import TradeStore
from feed.vendors.binance import BinanceAdapter
from tests.test_faults import key, recorded_trades, spot_files

pytestmark = pytest.mark.timeout(120)

FILES = ("btcusdt_20240808.gz", "btcusdt_20240809.gz")
NUMERIC = ["open", "high", "low", "close", "volume", "turnover", "trade_count", "buy_volume", "sell_volume"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """One ``python -m dashboard`` child process and its HTTP API."""

    def __init__(self, args: list[str], cwd: Path, log: Path) -> None:
        self.port = free_port()
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard", *args, "--port", str(self.port), "--log-level", "WARNING"],
            cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def get(self, path: str, timeout: float = 5.0) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
                return resp.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def health(self) -> dict | None:
        body = self.get("/api/health")
        return json.loads(body) if body else None

    def wait_health(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the app exited with {self.proc.returncode}"
            h = self.health()
            if h is not None and predicate(h):
                return h
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def bars(self, symbol: str, spec: str) -> pd.DataFrame:
        body = self.get(f"/api/bars?symbol={symbol}&bar={spec}", timeout=15)
        assert body is not None
        frame = pd.read_csv(io.StringIO(body.decode()))
        frame["start"] = pd.to_datetime(frame["start"], utc=True).dt.as_unit("ns").astype("int64")
        return frame

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._log.close()


def btc_trades(health: dict) -> int:
    return (health.get("symbols", {}).get("BTCUSDT") or {}).get("trades", 0)


def assert_bars_equal(api: pd.DataFrame, trades: list[Trade], spec: str) -> None:
    batch = aggregate(trades, spec)
    assert len(api) == len(batch)
    assert api["start"].tolist() == batch["start"].tolist()
    # The CSV prints prices and sizes with the symbol's decimals: equal to within them.
    pd.testing.assert_frame_equal(api[NUMERIC].astype(float), batch[NUMERIC].astype(float),
                                  check_exact=False, rtol=1e-9, atol=1e-8)


@pytest.fixture(scope="module")
def recording(hft_data_module):
    paths = spot_files(hft_data_module, FILES)
    return paths, recorded_trades(paths)["BTCUSDT"]


@pytest.fixture(scope="module")
def hft_data_module():
    from tests.helpers import require_shared_data

    return require_shared_data("binance-ws-captures-hftbacktest")


def test_kill9_when_ingesting_store_keeps_a_prefix_and_restart_restores_bars(recording, tmp_path):
    paths, sent = recording
    data_dir = tmp_path / "data"
    replay = ["--replay", *map(str, paths), "--data-dir", str(data_dir)]
    log = tmp_path / "app.log"

    # 1. Ingest at 60x (about 1,700 trades/s) and SIGKILL in the middle of it.
    app = App([*replay, "--speed", "60"], tmp_path, log)
    try:
        polls: list[tuple[float, int]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert app.proc.poll() is None, log.read_text()[-2000:]
            h = app.health()
            if h is not None:
                polls.append((time.monotonic(), btc_trades(h)))
                if polls[-1][1] >= 5000:
                    break
            time.sleep(0.05)
        assert polls and polls[-1][1] >= 5000, "ingestion did not get going"
        killed_at = time.monotonic()
        assert app.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        app.stop(signal.SIGKILL)
    applied_before = max((n for t, n in polls if t <= killed_at - 2.0), default=0)
    assert applied_before > 0

    # 2. The store opens and holds exactly a prefix of what was sent.
    stores = list((data_dir / "replay").iterdir())
    assert len(stores) == 1 and stores[0].name.startswith("spot-")
    with TradeStore(stores[0]) as store:
        stored = store.load("BTCUSDT")
    assert applied_before <= len(stored) < len(sent)
    assert [key(t) for t in stored] == [key(t) for t in sent[: len(stored)]]
    ids = [t.trade_id for t in stored]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous from the first

    # 3. Restart receiving nothing new (every handshake refused): history is restored.
    app = App([*replay, "--faults", "refuse=120"], tmp_path, log)
    try:
        h = app.wait_health(lambda h: btc_trades(h) == len(stored), 30, "restored trades")
        assert h["counters"]["trades"] == 0 and h["feed"]["state"] in ("connecting", "reconnecting")
        for spec in ("1m", "10s", "100t"):
            assert_bars_equal(app.bars("BTCUSDT", spec), stored, spec)
        assert app.stop() == 0
    finally:
        app.stop(signal.SIGKILL)

    # 4. Restart and replay everything: each recorded trade once, bars of the whole file.
    app = App([*replay, "--speed", "0"], tmp_path, log)
    try:
        h = app.wait_health(lambda h: h["feed"]["state"] == "replay-finished", 60, "the replay to finish")
        assert btc_trades(h) == len(sent)
        assert h["counters"]["trades"] == len(sent) - len(stored)
        assert h["counters"]["duplicates"] == len(stored)
        assert h["counters"]["gaps"] == 0 and h["counters"]["malformed"] == 0
        assert_bars_equal(app.bars("BTCUSDT", "1m"), sent, "1m")
        assert app.stop() == 0
    finally:
        app.stop(signal.SIGKILL)
    with TradeStore(stores[0]) as store:
        assert [key(t) for t in store.load("BTCUSDT")] == [key(t) for t in sent]
    if os.environ.get("TICKSCOPE_FAULT_REPORT"):
        with open(os.environ["TICKSCOPE_FAULT_REPORT"], "a") as fh:
            fh.write(json.dumps({"scenario": "kill -9 during ingestion, restart", "faults": "SIGKILL",
                                 "facts": {"applied_at_kill": polls[-1][1], "applied_2s_before_kill": applied_before,
                                           "stored_after_kill": len(stored), "recorded_trades": len(sent)},
                                 "health": h}) + "\n")


def test_retention_when_store_over_limits_engine_prunes_oldest_batches(tmp_path):
    store = TradeStore(tmp_path / "store")
    day = 86_400 * 10**9
    t0 = time.time_ns() - 5 * day - 10**9  # the newest batch starts a second ago
    for batch in range(6):  # six batches, a day apart, 1,000 trades each
        store.extend(Trade("BTCUSDT", t0 + batch * day + i * 10**6, 100.0 + i, 1.0, 1, batch * 1000 + i)
                     for i in range(1000))
        store.flush()
    per_batch = store.nbytes() // 6
    engine = Engine(BinanceAdapter("spot"), EngineConfig(retention_max_age_s=2.5 * 86_400,
                    retention_max_bytes=2 * per_batch, prune_every_s=0.05), store=store)
    engine.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and engine.health()["store"]["pruned_trades"] < 4000:
            time.sleep(0.02)
        health = engine.health()["store"]
        # Age: days 0-2 are older than 2.5 days before now (the wall clock); size: then one more.
        assert health["pruned_trades"] == 4000 and health["bytes"] <= 2 * per_batch
        left = store.load("BTCUSDT")
        assert [t.trade_id for t in left] == list(range(4000, 6000))
        engine.subscribe("BTCUSDT")  # restores what is left
        assert engine.status().symbols["BTCUSDT"].trades == 2000
    finally:
        engine.stop()
        store.close()


def test_cli_when_retention_options_given_wires_them_to_the_engine(tmp_path):
    port = free_port()  # nothing listens: the feed just retries
    args = config_from_argv([
        "--url", f"ws://127.0.0.1:{port}/stream", "--data-dir", str(tmp_path),
        "--retention-days", "2", "--retention-mb", "5", "--stale-after", "7",
    ])
    rt = start_runtime(args)
    try:
        assert rt.engine.config.retention_max_age_s == 2 * 86_400
        assert rt.engine.config.retention_max_bytes == 5 * 1024 * 1024
        assert rt.store.directory == str(tmp_path / "binance")
        assert rt.feed.stale_after_s == 7.0
        assert rt.engine.health()["store"]["retention_max_bytes"] == 5 * 1024 * 1024
    finally:
        rt.stop()


@pytest.mark.parametrize("argv,message", [
    (["--retention-days", "0"], "--retention-days must be a number > 0"),
    (["--retention-mb", "x"], "--retention-mb must be a number"),
    (["--stale-after", "-1"], "--stale-after must be a number > 0"),
])
def test_cli_when_retention_option_bad_exits_2_with_one_message(argv, message, capsys):
    from dashboard.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_replay_when_no_data_dir_given_persists_nothing(hft_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = config_from_argv(["--replay", str(spot_files(hft_data, FILES[:1])[0]), "--speed", "0"])
    rt = start_runtime(args)
    try:
        assert rt.store is None
    finally:
        rt.stop()
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
