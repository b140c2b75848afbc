"""End to end over real loopback sockets: recorded Binance sessions replayed by the embedded
exchange, received by FeedClient, aggregated by the Engine, served by /api/bars."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from dashboard.cli import config_from_argv
from dashboard.runtime import start_runtime
from feed.core.batch import aggregate
from feed.core.models import Trade
from feed.io.readers import merge_recordings
from feed.vendors.binance import BinanceAdapter
from tests.test_bars import assert_matches_klines


def parse_recording(paths, market):
    """Return (trades, first_event_ns, last_event_ns) parsed straight from the files."""
    adapter = BinanceAdapter(market)
    trades, first, last = [], None, None
    for recv_ns, _, raw in merge_recordings(paths):
        if not raw.startswith('{"stream"'):
            continue
        for ev in adapter.parse(raw, recv_ns):
            ts = getattr(ev, "ts_ns", 0)
            if ts:
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
            if isinstance(ev, Trade):
                trades.append(ev)
    return trades, first, last


def run_replay(files, *extra):
    args = config_from_argv(["--replay", *map(str, files), "--speed", "0", *extra])
    rt = start_runtime(args)
    try:
        assert rt.exchange.finished.wait(120), "replay did not finish"
        assert rt.engine.wait_idle(60, quiet_s=1.0)
        return rt
    except BaseException:
        rt.stop()
        raise


@pytest.mark.parametrize("files,market,klines", [
    (["usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"], "usdm",
     "usdm_BTCUSDT_1m_2023-04-04T2355Z_2023-04-05T0010Z.csv"),
    (["usdm/btcusdt_20240808.gz"], "usdm", "usdm_BTCUSDT_1m_2024-08-08T2350Z_2024-08-09T0010Z.csv"),
])
def test_replay_when_usdm_capture_served_over_loopback_api_bars_match_official_klines(hft_data, files, market, klines):
    paths = [hft_data / "raw" / f for f in files]
    direct, first_ns, last_ns = parse_recording(paths, market)
    rt = run_replay(paths, "--market", market)
    try:
        # Every recorded trade arrived once, in order, with no gap.
        health = rt.engine.health()
        assert health["counters"]["trades"] == len(direct)
        assert health["counters"]["gaps"] == 0 and health["counters"]["dropped"] == 0
        assert health["counters"]["malformed"] == 0
        # The live path's bars equal a direct batch aggregation of the same trades.
        live = rt.engine.bars_frame("BTCUSDT", "1m")
        batch = aggregate(direct, "1m")
        cols = ["start", "open", "high", "low", "close", "volume", "turnover", "trade_count", "buy_volume", "sell_volume"]
        pd.testing.assert_frame_equal(live[cols], batch[cols], check_exact=True)
        # /api/bars serves them as CSV, and the covered minutes equal Binance's klines.
        client = rt.app.server.test_client()
        resp = client.get("/api/bars?symbol=BTCUSDT&bar=1m")
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        csv_bars = pd.read_csv(io.StringIO(resp.get_data(as_text=True)))
        csv_bars["start"] = pd.to_datetime(csv_bars["start"], utc=True).dt.as_unit("ns").astype("int64")
        official = pd.read_csv(hft_data / "klines_official" / klines)
        n = assert_matches_klines(csv_bars, official, first_ns, last_ns)
        assert n >= 5
        assert json.loads(client.get("/api/health").get_data())["symbols"]["BTCUSDT"]["trades"] == len(direct)
    finally:
        rt.stop()


def test_replay_when_spot_capture_played_book_synced_and_bars_equal_direct(hft_data):
    paths = [hft_data / "raw" / "spot" / "btcusdt_20240808.gz", hft_data / "raw" / "spot" / "btcusdt_20240809.gz"]
    direct, _, _ = parse_recording(paths, "spot")
    rt = run_replay(paths)
    try:
        assert rt.engine.symbols() == ["BTCUSDT"]
        live = rt.engine.bars_frame("BTCUSDT", "1m")
        batch = aggregate(direct, "1m")
        pd.testing.assert_frame_equal(live.drop(columns=["closed"]), batch.drop(columns=["closed"]), check_exact=True)
        depth = rt.engine.depth("BTCUSDT", 20)
        assert depth.synced and depth.best_bid < depth.best_ask
        assert len(depth.bids) == 20 and len(depth.asks) == 20
    finally:
        rt.stop()


def test_replay_when_session_rules_given_on_command_line_bars_follow_them(hft_data):
    paths = [hft_data / "raw" / "usdm" / "btcusdt_20230404.dat.gz", hft_data / "raw" / "usdm" / "btcusdt_20230405.dat.gz"]
    rt = run_replay(paths, "--market", "usdm", "--session-tz", "America/New_York", "--session-open", "09:30",
                    "--empty", "flat")
    try:
        hourly = rt.engine.bars_frame("BTCUSDT", "1h")
        # 2023-04-04 is EDT (UTC-4): sessions open at 13:30 UTC, so hour bars start at :30.
        assert len(hourly) == 1 and hourly["start"].iloc[0] % 3_600_000_000_000 == 1_800_000_000_000
        direct, _, _ = parse_recording(paths, "usdm")
        pd.testing.assert_frame_equal(
            rt.engine.bars_frame("BTCUSDT", "1s").drop(columns=["closed"]),
            aggregate(direct, "1s", session_tz="America/New_York", session_open="09:30",
                      empty="flat").drop(columns=["closed"]), check_exact=True)
    finally:
        rt.stop()


@pytest.mark.parametrize("argv,fragment", [
    (["--session-tz", "Mars/Base"], "unknown time zone"),
    (["--utc-offset", "8"], "bad UTC offset"),
    (["--bar", "7m"], "must divide 60"),
    (["--replay", "/nonexistent/file.gz"], "no such file"),
    (["--late-tolerance", "-1"], "--late-tolerance"),
])
def test_cli_when_argument_bad_exits_2_with_one_message(argv, fragment, capsys, tmp_path):
    from dashboard.cli import main

    assert main([*argv, "--data-dir", str(tmp_path), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
