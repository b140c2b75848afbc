"""Recording (``--record FILE``): a live session written in the replay format replays to the
same trades and bars, and the recorder itself keeps every line readable.

The end-to-end test records a session from the embedded simulator (two symbols, ten times
the usual trade rate) over loopback, replays the recording with ``--replay`` and checks the
replayed session against the live one: the same trades (values and ids), the same bars of
every kind, and -- recorded again during the replay -- the same stream messages byte for
byte.
"""

from __future__ import annotations

import gzip
import json
import threading

import pandas as pd
import pytest

from dashboard.cli import config_from_argv, main
from dashboard.runtime import start_runtime
from feed.core.batch import aggregate
from feed.io.recorder import Recorder
from feed.io.readers import read_recording
from tests.test_faults import BAR_COLUMNS, FAST_FEED, SPECS, key, wait_for

pytestmark = pytest.mark.timeout(60)

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def stream_lines(path) -> list[str]:
    """Return the recorded stream messages (no receive times, replies or snapshots)."""
    return [raw for _, raw in read_recording(path) if raw.startswith('{"stream":')]


def test_record_when_simulator_session_replayed_gives_identical_trades_bars_and_messages(tmp_path):
    live_file, replay_file = tmp_path / "live.txt.gz", tmp_path / "replayed.txt"
    args = config_from_argv([
        "--symbols", ",".join(SYMBOLS), "--sim-rate", "10", "--data-dir", str(tmp_path / "data"),
        "--record", str(live_file),
    ])
    rt = start_runtime(args, feed_options=FAST_FEED)
    try:
        for sym in SYMBOLS:
            for spec in SPECS:
                rt.engine.bar_series(sym, spec)
        wait_for(lambda: all(rt.engine.status().symbols[s].trades >= 300 for s in SYMBOLS)
                 and all(rt.engine.depth(s, 1).synced for s in SYMBOLS), 30, "trades and synced books")
    finally:
        rt.stop()  # flushes and closes the recording
    live = rt.engine
    assert rt.recorder.stats()["errors"] == 0 and rt.recorder.stats()["buffered"] == 0

    # Snapshots are bare JSON lines that now name their symbol.
    snapshots = [json.loads(raw) for _, raw in read_recording(live_file) if raw.startswith('{"lastUpdateId"')]
    assert {s["symbol"] for s in snapshots} == set(SYMBOLS)

    args = config_from_argv(["--replay", str(live_file), "--speed", "0", "--record", str(replay_file)])
    rt = start_runtime(args, feed_options={**FAST_FEED, "stale_after_s": 30.0})
    try:
        assert sorted(rt.engine.symbols()) == sorted(SYMBOLS)
        for sym in SYMBOLS:
            for spec in SPECS:
                rt.engine.bar_series(sym, spec)
        assert rt.exchange.finished.wait(30)
        assert rt.engine.wait_idle(20, quiet_s=0.5)
        for sym in SYMBOLS:
            want = live.trades(sym, 10**7)
            got = rt.engine.trades(sym, 10**7)
            assert len(got) >= 300 and [key(t) for t in got] == [key(t) for t in want]
            for spec in SPECS:
                a = live.bars_frame(sym, spec)[BAR_COLUMNS]
                b = rt.engine.bars_frame(sym, spec)[BAR_COLUMNS]
                pd.testing.assert_frame_equal(a, b, check_exact=True, obj=f"{sym} {spec}")
                pd.testing.assert_frame_equal(b, aggregate(got, spec)[BAR_COLUMNS], check_exact=True)
            assert rt.engine.depth(sym, 1).synced
        health = rt.engine.health()
        assert health["counters"]["malformed"] == 0 and health["counters"]["gaps"] == live.counters().gaps
    finally:
        rt.stop()
    # Recorded again while replaying: the very same stream messages, byte for byte.
    assert stream_lines(replay_file) == stream_lines(live_file)


def test_record_when_file_exists_exits_2_without_touching_it(tmp_path, capsys):
    target = tmp_path / "session.txt"
    target.write_text("keep me\n")
    assert main(["--record", str(target), "--data-dir", str(tmp_path / "d"), "--port", "1"]) == 2
    assert "--record" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"


# -- the Recorder alone ------------------------------------------------------------------


def test_recorder_when_written_and_flushed_lines_read_back_in_replay_format(tmp_path):
    path = tmp_path / "r.txt"
    with Recorder(path) as rec:
        rec.write(1_723_161_600_000_000_001, b'{"stream":"btcusdt@trade","data":{"t":1}}')
        rec.write(1_723_161_600_000_000_002, '{"result":null,"id":1}')
        rec.write(1_723_161_600_000_000_003, b'{"a":\n1}')  # JSON whitespace line break
        rec.write(1_723_161_600_000_000_004, b"\xff\xfe not utf-8")  # skipped
        rec.write(1_723_161_600_000_000_005, b"garbage")  # skipped: not JSON-looking
        rec.write(1_723_161_600_000_000_006, b"")  # skipped
        assert rec.stats()["lines"] == 3 and rec.stats()["skipped"] == 3
    assert list(read_recording(path)) == [
        (1_723_161_600_000_000_001, '{"stream":"btcusdt@trade","data":{"t":1}}'),
        (1_723_161_600_000_000_002, '{"result":null,"id":1}'),
        (1_723_161_600_000_000_003, '{"a": 1}'),
    ]


def test_recorder_when_snapshot_has_no_symbol_adds_it_after_last_update_id_only(tmp_path):
    path = tmp_path / "r.txt"
    spot = b'{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[]}'
    coinm = b'{"lastUpdateId":7,"E":1,"T":1,"symbol":"BTCUSD_PERP","pair":"BTCUSD","bids":[],"asks":[]}'
    with Recorder(path) as rec:
        rec.write_snapshot(10**18, "btcusdt", spot)
        rec.write_snapshot(10**18 + 1, "BTCUSD_PERP", coinm)
        rec.write_snapshot(10**18 + 2, "BTCUSDT", b'{"code":-1121,"msg":"Invalid symbol."}')  # skipped
        rec.write_snapshot(10**18 + 3, "BTCUSDT", b'{"bids":[],"lastUpdateId":5,"asks":[]}')
    lines = [raw for _, raw in read_recording(path)]
    assert lines[0] == ('{"lastUpdateId":50093239218,"symbol":"BTCUSDT",'
                        '"bids":[["61837.63000000","3.78826000"]],"asks":[]}')
    assert lines[1] == coinm.decode()  # already named: unchanged
    assert json.loads(lines[2]) == {"lastUpdateId": 5, "symbol": "BTCUSDT", "bids": [], "asks": []}
    assert lines[2].startswith('{"lastUpdateId"') and len(lines) == 3


def test_recorder_when_gzip_and_never_closed_every_flushed_line_is_readable(tmp_path):
    # A kill -9 skips close(): each flush is a complete gzip member, so what was flushed
    # reads back without an end-of-stream error.
    path = tmp_path / "r.txt.gz"
    rec = Recorder(path)
    for i in range(3):
        rec.write(10**18 + i, f'{{"n":{i}}}')
        rec.flush()
    rec.write(10**18 + 9, '{"n":9}')  # buffered, lost in a crash
    assert [raw for _, raw in read_recording(path)] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 3
    rec.close()
    assert [raw for _, raw in read_recording(path)][-1] == '{"n":9}'
    with pytest.raises(FileExistsError):
        Recorder(path)


def test_recorder_when_engine_records_writes_only_from_the_worker_thread(tmp_path):
    from feed.core.config import EngineConfig, MarketConfig
    from feed.io.engine import Engine
    from feed.vendors.binance import BinanceAdapter

    class Spy(Recorder):
        threads: set[str] = set()

        def write(self, recv_ns, raw):
            self.threads.add(threading.current_thread().name)
            super().write(recv_ns, raw)

    rec = Spy(tmp_path / "r.txt")
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange")), recorder=rec).start()
    try:
        engine.subscribe("BTCUSDT")
        for i in range(50):
            engine.submit(json.dumps({"stream": "btcusdt@trade", "data": {
                "e": "trade", "E": 1, "s": "BTCUSDT", "t": i + 1, "p": "1.5", "q": "2",
                "T": 1_723_161_600_000 + i, "m": False, "M": True}}).encode(), 10**18 + i)
        assert engine.wait_idle(5)
    finally:
        engine.stop()
        rec.close()
    assert Spy.threads == {"tickscope-engine"}
    assert len(list(read_recording(tmp_path / "r.txt"))) == 50


# -- secrets and file mode ---------------------------------------------------------------

ITICK_KEY = "itk-Secret-0123456789abcdef"


@pytest.mark.parametrize("name", ["session.txt", "session.txt.gz"])
def test_recorder_when_itick_auth_reply_echoes_the_key_writes_it_masked_to_an_owner_only_file(tmp_path, name):
    import os
    import stat

    from feed.vendors.itick import ITickAdapter

    adapter = ITickAdapter(token=ITICK_KEY)
    path = tmp_path / name
    reply = {"code": 1, "resAc": "auth", "msg": "authenticated", "data": {"params": ITICK_KEY}}
    quote = '{"code":1,"data":{"s":"AAPL","r":"US","ld":187.5,"t":1723161600000,"type":"quote"}}'
    with Recorder(path, redact=adapter.redact) as rec:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        rec.write(10**18, b'{"code":1,"msg":"Connected Successfully"}')
        rec.write(10**18 + 1, json.dumps(reply).encode())
        rec.write(10**18 + 2, quote)
    raw = path.read_bytes()
    text = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert ITICK_KEY.encode() not in raw and ITICK_KEY.encode() not in text
    lines = [line for _, line in read_recording(path)]
    assert json.loads(lines[1]) == {**reply, "data": {"params": "***"}}
    assert lines[0] == '{"code":1,"msg":"Connected Successfully"}' and lines[2] == quote  # the rest exact
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_recorder_when_no_redact_given_keeps_messages_byte_for_byte(tmp_path):
    path = tmp_path / "r.txt"
    with Recorder(path) as rec:
        rec.write(1, '{"params":"itk-Secret-0123456789abcdef"}')
    assert [line for _, line in read_recording(path)] == ['{"params":"itk-Secret-0123456789abcdef"}']


@pytest.mark.parametrize("name", ["r.txt", "r.txt.gz"])
def test_recorder_when_created_is_readable_by_its_owner_only(tmp_path, name):
    import os
    import stat

    with Recorder(tmp_path / name) as rec:
        rec.write(1, "{}")
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
