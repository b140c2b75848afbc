"""Backfill on start: the embedded exchange's REST history (aggTrades, klines, weights,
429/418), aggregate trades in bars (count l - f + 1), and end to end on a recorded USD-M
session started mid-session: every covered minute before and after the start equals
Binance's official kline."""

from __future__ import annotations

import csv
import json
import time
import urllib.error
import urllib.request

import pytest
import websocket

from dashboard.cli import config_from_argv
from dashboard.runconfig import UsageError, parse_duration
from feed.core.batch import aggregate
from feed.core.config import EngineConfig, MarketConfig
from feed.core.history import trades_from_aggregates
from feed.core.models import BUY, SELL, AggTrade, Trade
from feed.exchange.rest_history import History
from feed.exchange.server import EmbeddedExchange
from feed.io.backfill import HistoryFetcher
from feed.io.client import FeedClient
from feed.io.engine import Engine
from feed.io.snapshots import SnapshotFetcher
from feed.vendors.binance import BinanceAdapter
from tests.helpers import require_shared_data, wait_for

pytestmark = pytest.mark.timeout(90)

S = 1_000_000_000
MS = 1_000_000
HFT = "binance-ws-captures-hftbacktest"
USDM_2023 = ("btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz")
KLINES_2023 = "usdm_BTCUSDT_1m_2023-04-04T2355Z_2023-04-05T0010Z.csv"
FAST_FEED = {"backoff_initial_s": 0.05, "backoff_cap_s": 1.0, "stale_after_s": 5.0, "ping_interval_s": 0}


def get(url: str) -> tuple[int, dict, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def official_klines(name: str) -> dict[int, dict]:
    path = require_shared_data(HFT, "klines_official", name)
    with open(path) as fh:
        return {int(r["open_time"]) * MS: r for r in csv.DictReader(fh)}


def bar_matches(bar, k: dict) -> list[str]:
    """Fields of ``bar`` that differ from the official kline row ``k`` (empty: exact)."""
    diffs = []
    for name, ours in (("open", bar.open), ("high", bar.high), ("low", bar.low), ("close", bar.close)):
        if ours != float(k[name]):
            diffs.append(name)
    if bar.trade_count != int(k["count"]):
        diffs.append("count")
    for name, ours in (("volume", bar.volume), ("taker_buy_volume", bar.buy_volume)):
        if abs(ours - float(k[name])) > 1e-9 * max(1.0, abs(ours)):
            diffs.append(name)
    return diffs


# -- the exchange's REST history --------------------------------------------------------


def test_history_aggregates_consecutive_fills_of_one_order_and_serves_binance_rows():
    h = History()
    h.add("BTCUSDT", 10, 1000, "100.0", "0.5", False)
    h.add("BTCUSDT", 11, 1000, "100.0", "0.25", False)  # same order: joins
    h.add("BTCUSDT", 12, 1000, "100.1", "1", False)  # another price: new aggregate
    h.add("BTCUSDT", 13, 1001, "100.1", "1", True)
    rows = h.symbols["btcusdt"].agg_trades(None, None, None, 500)
    assert [(r["a"], r["f"], r["l"], r["q"]) for r in rows] == [(1, 10, 11, "0.75"), (2, 12, 12, "1"),
                                                               (3, 13, 13, "1")]
    assert rows[0] == {"a": 1, "p": "100.0", "q": "0.75", "f": 10, "l": 11, "T": 1000, "m": False, "M": True}
    assert [r["a"] for r in h.symbols["btcusdt"].agg_trades(2, None, None, 500)] == [2, 3]
    assert [r["a"] for r in h.symbols["btcusdt"].agg_trades(None, 1001, 1001, 500)] == [3]
    (k,) = h.symbols["btcusdt"].klines(0, None, 10)
    assert k[:6] == [0, "100.0", "100.1", "100.0", "100.1", "2.75"] and k[8] == 4 and k[9] == "1.75"


def test_rest_history_over_http_weights_range_errors_and_429_then_418_with_retry_after():
    ex = EmbeddedExchange(history_s=120, history_weight_limit=16, history_window_s=3600).start()
    try:
        base = ex.rest_url
        status, headers, rows = get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&limit=5")
        assert status == 200 and len(rows) == 5 and headers["X-MBX-USED-WEIGHT-1M"] == "4"
        assert set(rows[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
        ids = [r["a"] for r in rows]
        assert ids == sorted(ids) and all(r["f"] <= r["l"] for r in rows)
        status, _, body = get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&startTime=0&endTime=3600000")
        assert status == 400 and body["code"] == -1127
        status, _, body = get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&limit=1001")
        assert status == 400 and body["code"] == -1130
        status, _, body = get(f"{base}/api/v3/aggTrades?limit=10")
        assert status == 400 and body["code"] == -1102
        status, _, body = get(f"{base}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=3")
        assert status == 200 and len(body) >= 1 and len(body[0]) == 12
        status, headers, body = get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&limit=5")
        assert status == 200
        status, headers, body = get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&limit=5")
        assert status == 429 and body["code"] == -1003 and int(headers["Retry-After"]) >= 1
        status, headers, body = get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&limit=5")
        assert status == 418 and int(headers["Retry-After"]) >= 1
    finally:
        ex.stop()


def test_simulator_past_is_made_only_when_history_is_asked_and_joins_the_live_ids_and_price():
    from feed.exchange.instruments import instrument_for
    from feed.exchange.sim_past import past_rows

    inst = instrument_for("BTCUSDT")
    end_ns = 1_700_000_000 * S
    rows = past_rows(inst, end_ns=end_ns, span_s=600, last_id=5000, end_ticks=6_000_000, seed=7)
    assert rows == past_rows(inst, end_ns=end_ns, span_s=600, last_id=5000, end_ticks=6_000_000, seed=7)
    ids = [r[0] for r in rows]
    assert ids[-1] == 5000 and ids == list(range(ids[0], 5001)) and len(rows) > 600 * inst.trades_per_s * 0.8
    assert all(end_ns // MS - 600_000 <= r[1] < end_ns // MS for r in rows)
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert abs(float(rows[-1][2]) / 60_000 - 1) < 0.01  # the walk ends at the start price
    h = History()
    h.add("BTCUSDT", 5001, end_ns // MS + 3, "60000.00", "0.5", False)  # the first live trade
    made = []
    h.add_past("BTCUSDT", lambda: made.append(1) or rows)
    assert not made  # nothing made at start
    resp = h.respond("/api/v3/aggTrades", {"symbol": ["BTCUSDT"], "fromId": ["1"], "limit": ["1000"]})
    page = json.loads(resp.body)
    assert resp.status_code == 200 and made == [1] and page[0]["a"] == 1 and page[0]["f"] == ids[0]
    resp = h.respond("/api/v3/aggTrades", {"symbol": ["BTCUSDT"], "limit": ["2"]})
    newest = json.loads(resp.body)
    assert made == [1] and newest[-1]["f"] == 5001 and newest[-2]["l"] == 5000  # no hole, no overlap


# -- aggregate trades into bars ----------------------------------------------------------


def test_aggregates_in_place_count_l_minus_f_plus_one_and_a_straddling_one_gives_only_its_missing_part():
    live = [Trade("X", 5 * S, 10.0, 0.2, BUY, 103), Trade("X", 5 * S, 10.0, 0.3, BUY, 104)]
    rows = (AggTrade(1, 9.0, 1.0, 100, 101, 4 * S, SELL), AggTrade(2, 10.0, 0.9, 102, 104, 5 * S, BUY))
    trades, ids = trades_from_aggregates("X", rows, None, 102, 0, [103, 104], [0.2, 0.3], None)
    assert ids == 3
    assert [(t.trade_id, t.count, t.size) for t in trades] == [(101, 2, 1.0), (102, 1, pytest.approx(0.4))]
    bars = aggregate(trades + live, "1m")
    assert bars["trade_count"].tolist() == [5] and bars["volume"].tolist() == [pytest.approx(1.9)]
    # Rows applied already for the request, and rows before the backfill's start, are skipped.
    assert trades_from_aggregates("X", rows, None, 102, 0, [103, 104], [0.2, 0.3], (1, 2)) == ([], 0)
    assert trades_from_aggregates("X", rows, None, 102, 5 * S, [103, 104], [0.2, 0.3], None)[1] == 1


def test_backfill_duration_parses_and_defaults_per_source():
    assert parse_duration("30m", "--backfill") == 1800 and parse_duration("6h", "--backfill") == 21600
    assert parse_duration("0", "--backfill") == 0
    for bad in ("abc", "-5m", "30x", "8d"):
        with pytest.raises(UsageError, match="--backfill"):
            parse_duration(bad, "--backfill")
    assert config_from_argv([]).backfill_s == 1800  # the simulator: the default start opens with history
    assert config_from_argv(["--sim-rate", "2"]).backfill_s == 0
    assert config_from_argv(["--vendor", "binance"]).backfill_s == 3600
    assert config_from_argv(["--vendor", "binance", "--backfill", "0"]).backfill_s == 0
    assert config_from_argv(["--backfill", "30m"]).backfill_s == 1800


# -- end to end --------------------------------------------------------------------------


def start_feed(ex: EmbeddedExchange, *, backfill_s: float, market: str = "usdm", symbols=("BTCUSDT",)):
    """Engine + feed client + snapshot and history fetchers on ``ex`` (the live code path)."""
    adapter = BinanceAdapter(market, ws_url=ex.ws_url)
    engine = Engine(adapter, EngineConfig(market=MarketConfig(clock="exchange", backfill_s=backfill_s,
                                                              repair_gaps=True)))
    feed = FeedClient(adapter, engine, symbols=(), name=adapter.name, **FAST_FEED)
    snaps = SnapshotFetcher(engine)
    history = HistoryFetcher(engine, adapter.history_url("aggTrades"))
    engine.attach(feed, snaps, history)
    engine.start()
    for s in symbols:
        engine.subscribe(s)
    feed.start()
    return engine, feed, snaps, history


def test_backfill_started_mid_session_every_covered_minute_equals_the_official_kline():
    data = require_shared_data(HFT, "raw", "usdm")
    official = official_klines(KLINES_2023)
    ex = EmbeddedExchange(replay_files=[data / f for f in USDM_2023], speed=40).start()
    kick = websocket.create_connection(ex.ws_url + "?streams=btcusdt@trade", timeout=10)
    engine = feed = snaps = history = None
    try:
        # The session plays for about three recorded minutes before tickscope starts.
        start_ms = 1680652800000 + 2 * 60_000  # 2023-04-05 00:02
        wait_for(lambda: ex.history.symbols.get("btcusdt") and ex.history.symbols["btcusdt"].T[-1] >= start_ms,
                 30, "the replay to reach 00:02")
        engine, feed, snaps, history = start_feed(ex, backfill_s=1800)
        for spec in ("1m",):
            engine.bar_series("BTCUSDT", spec)
        assert ex.finished.wait(60)
        assert engine.wait_idle(20, quiet_s=1.0)
        wait_for(lambda: (engine.health()["history"]["backfill"].get("BTCUSDT") or {}).get("state") == "done",
                 20, "the backfill to finish")
        assert engine.wait_idle(10)
        health = engine.health()
        first_live = min(t.recv_ns for t in engine.trades("BTCUSDT", 10**6) if t.recv_ns)
        bars = {b.start_ns: b for b in engine.bar_series("BTCUSDT", "1m").closed}
        covered = [m for m in official if 1680652740000 * MS <= m <= 1680653100000 * MS]  # 23:59..00:05
        assert len(covered) == 7
        diffs = {m: bar_matches(bars[m], official[m]) for m in covered if m in bars}
        assert len(diffs) == 7 and all(not d for d in diffs.values()), diffs
        # History joined live with no hole and no double count: ids are consecutive.
        # (The one INSURANCE_FUND trade, id 3535191080 at 00:01:14, is in no aggregate.)
        tape = engine.trades("BTCUSDT", 10**6)
        holes = [(a.trade_id, b.trade_id - b.count + 1) for a, b in zip(tape, tape[1:])
                 if b.trade_id - b.count + 1 != a.trade_id + 1]
        assert holes in ([], [(3535191079, 3535191081)]), holes[:5]
        assert health["counters"]["backfilled"] > 1000 and health["counters"]["gaps"] == 0
        assert health["history"]["backfill"]["BTCUSDT"]["calls"] >= 1
        assert first_live > 0
    finally:
        kick.close()
        for part in (feed, ex, snaps, history):
            if part is not None:
                part.stop()
        if engine is not None:
            engine.stop()


def test_simulator_default_start_opens_with_half_an_hour_of_history_equal_to_the_exchange_klines(tmp_path):
    from dashboard.runtime import start_runtime

    started_ns = time.time_ns()
    rt = start_runtime(config_from_argv(["--symbols", "BTCUSDT", "--data-dir", str(tmp_path)]), feed_options=FAST_FEED)
    try:
        wait_for(lambda: ((rt.engine.health()["history"] or {}).get("backfill", {}).get("BTCUSDT") or {})
                 .get("state") == "done", 30, "the backfill to finish")
        assert rt.engine.wait_idle(10)
        health = rt.engine.health()
        assert health["counters"]["backfilled"] > 1000 and health["counters"]["gaps"] == 0
        series = rt.engine.bar_series("BTCUSDT", "1m")
        # Half an hour before the start (the made-up past is a Poisson process: the first
        # trade is within seconds of its start).
        assert abs(series.closed[0].start_ns - (started_ns - 1800 * S)) < 2 * 60 * S
        status, _, rows = get(f"{rt.exchange.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000")
        klines = {r[0] * MS: r for r in rows}
        closed = series.closed[1:]  # the first minute is cut by the backfill's start
        assert len(closed) >= 28
        for bar in closed:
            k = klines[bar.start_ns]
            row = {"open": k[1], "high": k[2], "low": k[3], "close": k[4], "volume": k[5], "count": k[8],
                   "taker_buy_volume": k[9]}
            assert not bar_matches(bar, row), (bar, k)
    finally:
        rt.stop()


def test_status_line_shows_backfill_progress_repairs_and_why_a_gap_stays():
    from dashboard.statusline import history_item, status_children
    from tests.helpers import make_status

    history = {"backfilled": 1200, "repaired": 30, "calls": 3, "repairs_fetching": 0,
               "symbols": {"BTCUSDT": {"backfilled": 1200, "repaired": 30}, "ETHUSDT": {"backfilled": 0, "repaired": 0}},
               "backfill": {"BTCUSDT": {"kind": "backfill", "state": "fetching", "trades": 1200, "calls": 2,
                                        "weight": 8, "since": "2024-08-08T23:00:00.000Z",
                                        "oldest": "2024-08-08T23:41:05.120Z"}},
               "unrepaired": [{"symbol": "BTCUSDT", "from_id": 5, "to_id": 9, "missing": 5,
                               "error": "endpoint unavailable: HTTP 503"}]}
    item = history_item(history, "BTCUSDT")
    text = " ".join(str(c.children) for c in item.children)
    assert "history" in text and "fetching 1,200 trades · back to 23:41:05 · 30 repaired" in text
    assert "ids 5..9: 5 still missing: endpoint unavailable: HTTP 503" in item.title
    assert "warn" in item.className
    assert history_item(None, "BTCUSDT") is None
    assert history_item(history, "ETHUSDT") is None  # repaired per symbol: none of ETHUSDT's
    history["symbols"]["ETHUSDT"]["repaired"] = 4
    assert "4 repaired" in " ".join(str(c.children) for c in history_item(history, "ETHUSDT").children)
    children = status_children(make_status(history=history), "BTCUSDT")
    assert any(getattr(c, "title", "") == item.title for c in children)


def test_hostile_history_bodies_are_refused_whole_and_the_fetcher_gives_up_with_words():
    from feed.core.events import HistoryFailed, HistoryRequest
    from feed.core.models import MalformedMessage
    from feed.vendors.binance_wire import parse_agg_trades_body, parse_klines_body

    good = {"a": 1, "p": "1.5", "q": "2", "f": 10, "l": 11, "T": 1000, "m": True}
    assert parse_agg_trades_body(json.dumps([good]))[0].size == 2.0
    for bad in ("not json", "{}", json.dumps([{**good, "l": 9}]), json.dumps([{**good, "p": "NaN"}]),
                json.dumps([{**good, "q": "-1"}]), json.dumps([{**good, "a": 2**64}]), json.dumps([{**good, "m": 1}]),
                json.dumps([good] * 1501), b"\xff\xfe"):
        with pytest.raises(MalformedMessage) as err:
            parse_agg_trades_body(bad)
        assert err.value.reason == "bad_history"
    for bad in ("[[1]]", json.dumps([[0, "1", "1", "1", "1", "1", -5, "1", 3, "1", "1", "0"]])):
        with pytest.raises(MalformedMessage):
            parse_klines_body("X", bad)

    class Garbage(EmbeddedExchange):
        async def _process_request(self, connection, request):
            from feed.exchange.dialect import json_response
            return json_response(200, {"not": "a list"})

    ex = Garbage().start()
    sink = []
    try:
        fetcher = HistoryFetcher(type("S", (), {"submit_control": staticmethod(sink.append)})(),
                                 ex.rest_url + "/api/v3/aggTrades")
        fetcher.request(HistoryRequest("repair", "BTCUSDT", 5, 9, 10**18, 10**18 + 10**9))
        wait_for(lambda: sink, 10, "the fetcher to give up")
        fetcher.stop()
    finally:
        ex.stop()
    (item,) = sink
    assert isinstance(item, HistoryFailed) and "unusable answer" in item.error


def test_api_verify_answers_400_404_never_500(tmp_path):
    from dashboard.runtime import start_runtime

    rt = start_runtime(config_from_argv(["--symbols", "BTCUSDT", "--backfill", "0", "--data-dir", str(tmp_path)]),
                       feed_options=FAST_FEED)
    try:
        client = rt.app.server.test_client()
        assert client.get("/api/verify").status_code == 400
        assert client.get("/api/verify?symbol=" + "X" * 100).status_code == 400
        assert client.get("/api/verify?symbol=bad$$").status_code == 400
        assert client.get("/api/verify?symbol=DOGEUSDT").status_code == 404
        r = client.get("/api/verify?symbol=BTCUSDT")  # --backfill 0 and no --kline-check: off
        assert r.status_code == 404 and "verification is off" in r.get_json()["error"]
    finally:
        rt.stop()
