"""Kline cross-check: the pure checker, Binance kline parsing on real pushes, and end to end
(embedded simulator klines over loopback; a recorded session replayed with its klines)."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from dashboard.cli import UsageError, config_from_argv
from dashboard.runtime import start_runtime
from feed.core.klinecheck import MAX_MISMATCHES, KlineChecker, compare
from feed.core.models import Kline
from feed.core.models import BUY, SELL, Trade
from feed.vendors.binance import BinanceAdapter
from tests.helpers import require_shared_data, wait_for

pytestmark = pytest.mark.timeout(30)

S = 1_000_000_000
M = 60 * S
T0 = 1_717_000_020 * S  # 2024-05-29T16:27:00Z, a minute boundary
FAST = {"backoff_initial_s": 0.05, "backoff_cap_s": 1.0, "ping_interval_s": 0}


def trade(ts: int, price: float, size: float = 1.0, side: int = BUY, tid: int | None = None) -> Trade:
    return Trade("BTCUSDT", ts, price, size, side, tid)


def kline_of(trades: list[Trade], start: int, interval: int = M, **over) -> Kline:
    """The candle Binance would send for ``trades`` in [start, start + interval)."""
    inside = [t for t in trades if start <= t.ts_ns < start + interval]
    prices = [t.price for t in inside] or [0.0]
    fields = dict(
        symbol="BTCUSDT", interval="1m" if interval == M else "1s", start_ns=start, end_ns=start + interval,
        open=prices[0], high=max(prices), low=min(prices), close=prices[-1],
        volume=sum(t.size for t in inside), turnover=sum(t.price * t.size for t in inside),
        buy_volume=sum(t.size for t in inside if t.side == BUY), trade_count=len(inside), closed=True,
    )
    fields.update(over)
    return Kline(**fields)


def feed(checker: KlineChecker, trades: list[Trade]) -> None:
    for t in trades:
        checker.on_trade(t)


def minute_trades(minute: int, n: int = 5) -> list[Trade]:
    base = T0 + minute * M
    return [trade(base + (i + 1) * 7 * S, 100.0 + i * (-1) ** i, 0.5 + i, BUY if i % 2 else SELL) for i in range(n)]


# ======================================================================================
# The checker (pure)
# ======================================================================================


def test_checker_when_candle_equals_bar_counts_agreement_and_skips_the_first_partial_minute():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    trades = minute_trades(0) + minute_trades(1) + minute_trades(2)
    feed(chk, trades)
    for minute in (0, 1):
        chk.on_kline(kline_of(trades, T0 + minute * M))
    r = chk.results()["BTCUSDT"]
    assert (r["checked"], r["agreed"], r["skipped"]) == (1, 1, 1)  # minute 0: joined mid-way
    assert r["mismatches"] == [] and r["last"] == {"minute": "2024-05-29T16:28:00Z", "agreed": True}


def test_checker_when_candle_differs_names_each_field_with_vendor_and_ours():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    trades = minute_trades(0) + minute_trades(1) + minute_trades(2)
    feed(chk, trades)
    good = kline_of(trades, T0 + M)
    chk.on_kline(kline_of(trades, T0 + M, close=good.close + 0.5, trade_count=good.trade_count + 1))
    r = chk.results()["BTCUSDT"]
    assert (r["checked"], r["agreed"]) == (1, 0)
    [mismatch] = r["mismatches"]
    assert mismatch["minute"] == "2024-05-29T16:28:00Z"
    assert mismatch["fields"] == {"close": [good.close + 0.5, good.close],
                                  "trade_count": [good.trade_count + 1, good.trade_count]}
    json.dumps(r)  # the health endpoint serves it as JSON


def test_checker_when_candle_comes_first_waits_for_our_bar_to_close():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    trades = minute_trades(0) + minute_trades(1)
    feed(chk, trades)
    chk.on_kline(kline_of(trades, T0 + M))
    assert chk.results()["BTCUSDT"]["pending"] == 1 and chk.results()["BTCUSDT"]["checked"] == 0
    chk.on_clock(T0 + 2 * M - 1)  # not yet: the bar is still open
    assert chk.results()["BTCUSDT"]["pending"] == 1
    chk.on_clock(T0 + 2 * M)
    r = chk.results()["BTCUSDT"]
    assert (r["pending"], r["checked"], r["agreed"]) == (0, 1, 1)


def test_checker_when_float_sums_differ_in_last_bits_still_agrees():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    trades = [trade(T0 + M + i * S, 0.1, 0.1) for i in range(3)] + minute_trades(2)
    feed(chk, minute_trades(0) + trades)
    chk.on_kline(kline_of(trades, T0 + M, volume=0.3, turnover=0.03))  # exact decimal sums
    assert chk.results()["BTCUSDT"]["agreed"] == 1


def test_checker_when_interval_empty_flat_candle_agrees_and_candle_with_trades_is_a_mismatch():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    feed(chk, minute_trades(0) + minute_trades(3))
    flat = dict(open=101.0, high=101.0, low=101.0, close=101.0, volume=0.0, turnover=0.0, buy_volume=0.0,
                trade_count=0)
    chk.on_kline(kline_of([], T0 + M, **flat))  # no trades anywhere: Binance's flat candle
    chk.on_kline(kline_of([], T0 + 2 * M, **{**flat, "trade_count": 2, "volume": 1.5}))
    r = chk.results()["BTCUSDT"]
    assert (r["checked"], r["agreed"]) == (2, 1)
    fields = r["mismatches"][0]["fields"]
    assert fields["volume"] == [1.5, 0.0] and fields["trade_count"] == [2, 0]
    assert fields["close"] == [101.0, None]  # the vendor had trades; tickscope none


def test_checker_when_reconnect_or_trade_id_gap_skips_the_intervals_touched():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    trades = minute_trades(0) + minute_trades(1)
    feed(chk, trades)
    chk.on_reconnect()  # trades of minute 1 after its last one seen, and of minute 2, may be lost
    later = minute_trades(2) + minute_trades(3) + minute_trades(4) + minute_trades(5)
    feed(chk, later[:6])
    chk.mark_incomplete("BTCUSDT", T0 + 3 * M + 10 * S, T0 + 3 * M + 20 * S)  # engine saw an id gap
    feed(chk, later[6:])
    everything = trades + later
    for minute in (1, 2, 3, 4):
        chk.on_kline(kline_of(everything, T0 + minute * M, volume=999.0))  # wrong, but skipped if touched
    r = chk.results()["BTCUSDT"]
    assert r["skipped"] == 3 and r["checked"] == 1 and len(r["mismatches"]) == 1
    assert r["mismatches"][0]["minute"] == "2024-05-29T16:31:00Z"


def test_checker_when_many_mismatches_keeps_the_latest_twenty():
    chk = KlineChecker("1s")
    chk.add_symbol("BTCUSDT")
    trades = [trade(T0 + i * S + S // 2, 100.0 + i) for i in range(40)]
    feed(chk, trades)
    for i in range(1, 39):
        chk.on_kline(kline_of(trades, T0 + i * S, interval=S, close=1.0, low=1.0))
    r = chk.results()["BTCUSDT"]
    assert r["checked"] == 38 and len(r["mismatches"]) == MAX_MISMATCHES
    assert r["mismatches"][-1]["minute"] == "2024-05-29T16:27:38Z"


def test_checker_when_symbol_unknown_interval_other_or_candle_not_final_ignores_it():
    chk = KlineChecker("1m")
    chk.add_symbol("BTCUSDT")
    trades = minute_trades(0) + minute_trades(1) + minute_trades(2)
    feed(chk, trades)
    chk.on_kline(kline_of(trades, T0 + M, closed=False))
    chk.on_kline(kline_of(trades, T0 + M, interval=S))
    chk.on_kline(Kline("ETHUSDT", "1m", T0 + M, T0 + 2 * M, 1, 1, 1, 1, 1, 1, 1, 1, True))
    assert chk.results()["BTCUSDT"]["checked"] == 0 and set(chk.results()) == {"BTCUSDT"}
    chk.remove_symbol("BTCUSDT")
    assert chk.results() == {}


def test_compare_when_bar_missing_and_candle_flat_agrees():
    k = Kline("X", "1m", 0, M, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 0, True)
    assert compare(k, None) == {}


# ======================================================================================
# Binance kline pushes (real captures, cryptofeed sample_data)
# ======================================================================================


def _kline_lines(name: str) -> list[str]:
    path = require_shared_data("cryptofeed-ws-samples", name)
    with gzip.open(path, "rt") as fh:
        return [line.split(": ", 1)[1] for line in fh if "@kline_" in line and " <-> " not in line]


@pytest.mark.parametrize("name, market, pushes, final", [
    ("BINANCE.ws.1.0.gz", "spot", 2, 0),
    ("BINANCE_FUTURES.ws.1.0.gz", "usdm", 67, 4),
    ("BINANCE_DELIVERY.ws.1.0.gz", "coinm", 33, 0),
])
def test_parse_when_real_kline_pushes_returns_kline_events(name, market, pushes, final):
    adapter = BinanceAdapter(market)
    events = [ev for raw in _kline_lines(name) for ev in adapter.parse(raw, 0)]
    assert len(events) == pushes and all(isinstance(e, Kline) for e in events)
    assert sum(e.closed for e in events) == final
    for e in events:
        assert e.end_ns - e.start_ns == M and e.interval == "1m"
        assert e.low <= min(e.open, e.close) <= max(e.open, e.close) <= e.high
        assert 0 <= e.buy_volume <= e.volume and e.trade_count >= 1


def test_parse_when_final_futures_kline_reads_every_field():
    adapter = BinanceAdapter("usdm")
    sushi = next(raw for raw in _kline_lines("BINANCE_FUTURES.ws.1.0.gz")
                 if "sushiusdt" in raw and '"x":true' in raw)
    [k] = adapter.parse(sushi, 0)
    assert k == Kline("SUSHIUSDT", "1m", 1626992700000 * 10**6, 1626992760000 * 10**6, 7.608, 7.618, 7.607,
                      7.617, 3005.0, 22875.859, 1900.0, 113, True, 126902874, 126902986, 1626992760203 * 10**6)


def test_subscribe_when_klines_on_sends_kline_streams_in_their_own_frame():
    adapter = BinanceAdapter("spot", klines="1m")
    frames = [json.loads(f) for f in adapter.subscribe_messages(["BTCUSDT", "ethusdt"])]
    assert frames[0]["params"] == ["btcusdt@trade", "btcusdt@depth@100ms", "ethusdt@trade", "ethusdt@depth@100ms"]
    assert frames[1]["params"] == ["btcusdt@kline_1m", "ethusdt@kline_1m"]
    with pytest.raises(ValueError, match="not available on Binance usdm"):
        BinanceAdapter("usdm", klines="1s")


# ======================================================================================
# End to end
# ======================================================================================




def klines(rt) -> dict:
    resp = rt.app.server.test_client().get("/api/health")
    assert resp.status_code == 200
    return json.loads(resp.get_data())["kline_check"]


def test_kline_check_when_simulator_klines_compared_live_all_agree(tmp_path):
    # 1 s candles: the simulator's final candles against tickscope's own 1 s bars.
    args = config_from_argv(["--kline-check", "--kline-interval", "1s", "--symbols", "BTCUSDT,ETHUSDT",
                                      "--sim-rate", "4", "--data-dir", str(tmp_path)])
    rt = start_runtime(args, feed_options=FAST)
    try:
        wait_for(lambda: all(v["checked"] >= 3 for v in klines(rt).values()), 15, "three compared candles")
        for sym, r in klines(rt).items():
            assert r["interval"] == "1s" and r["agreed"] == r["checked"] >= 3, (sym, r)
            assert r["mismatches"] == []
        assert rt.engine.status().kline_check["BTCUSDT"]["checked"] >= 3
        assert rt.engine.counters().malformed == 0
    finally:
        rt.stop()


def test_kline_check_when_exchange_sends_a_wrong_candle_reports_the_field(tmp_path):
    args = config_from_argv(["--kline-check", "--kline-interval", "1s", "--symbols", "BTCUSDT",
                                      "--sim-rate", "4", "--faults", "kline_bad_every=3",
                                      "--data-dir", str(tmp_path)])
    rt = start_runtime(args, feed_options=FAST)
    try:
        r = wait_for(lambda: (lambda v: v if v["mismatches"] and v["agreed"] >= 1 else None)(klines(rt)["BTCUSDT"]),
                     15, "a mismatch and an agreement")
        bad = {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
               for ms in rt.exchange.fault_stats()["bad_klines"]["BTCUSDT"]}
        for m in r["mismatches"]:
            assert set(m["fields"]) == {"volume"} and m["minute"] in bad
            vendor, ours = m["fields"]["volume"]
            assert vendor > ours
    finally:
        rt.stop()


def _recording(path, minutes: int = 4, wrong_minute: int = 2) -> None:
    # A small Binance spot session: one trade every 5 s, a diff, and each minute's final
    # kline (the one for ``wrong_minute`` with one trade too many) pushed 1 s after it ends.
    lines = []
    base_ms = T0 // 1_000_000
    trades = []
    lines.append((base_ms, {"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": base_ms, "s": "BTCUSDT", "U": 1, "u": 1,
        "b": [["99.00", "1.0"]], "a": [["101.00", "1.0"]]}}))
    for i in range(minutes * 12):
        ms = base_ms + 2_000 + i * 5_000
        price = f"{100 + (i % 7) * 0.25:.2f}"
        trades.append((ms, float(price), 0.5 + (i % 3) * 0.25, i % 2 == 0))
        lines.append((ms, {"stream": "btcusdt@trade", "data": {
            "e": "trade", "E": ms, "s": "BTCUSDT", "t": 1000 + i, "p": price,
            "q": f"{0.5 + (i % 3) * 0.25:.2f}", "T": ms, "m": i % 2 == 0, "M": True}}))
    for minute in range(minutes - 1):
        start = base_ms + minute * 60_000
        inside = [t for t in trades if start <= t[0] < start + 60_000]
        n = len(inside) + (1 if minute == wrong_minute else 0)
        k = {"t": start, "T": start + 59_999, "s": "BTCUSDT", "i": "1m", "f": 0, "L": 0,
             "o": f"{inside[0][1]:.2f}", "c": f"{inside[-1][1]:.2f}",
             "h": f"{max(t[1] for t in inside):.2f}", "l": f"{min(t[1] for t in inside):.2f}",
             "v": f"{sum(t[2] for t in inside):.2f}", "n": n, "x": True,
             "q": f"{sum(t[1] * t[2] for t in inside):.4f}",
             "V": f"{sum(t[2] for t in inside if not t[3]):.2f}", "Q": "0", "B": "0"}
        lines.append((start + 61_000, {"stream": "btcusdt@kline_1m",
                                       "data": {"e": "kline", "E": start + 61_000, "s": "BTCUSDT", "k": k}}))
    lines.sort(key=lambda x: x[0])
    path.write_text("".join(f"{ms * 1_000_000} {json.dumps(d, separators=(',', ':'))}\n" for ms, d in lines))


def test_kline_check_when_replay_holds_klines_compares_them_on_the_exchange_clock(tmp_path):
    rec = tmp_path / "session.txt"
    _recording(rec)
    # Paced (4 minutes in ~1.2 s): the kline SUBSCRIBE follows the trade one by 0.25 s.
    rt = start_runtime(config_from_argv(["--replay", str(rec), "--speed", "200", "--kline-check"]),
                       feed_options=FAST)
    try:
        assert rt.exchange.finished.wait(15)
        r = wait_for(lambda: (lambda v: v if v["checked"] + v["skipped"] >= 3 else None)(klines(rt)["BTCUSDT"]),
                     10, "three candles resolved")
        assert (r["checked"], r["agreed"], r["skipped"]) == (2, 1, 1)  # minute 0: joined mid-way
        [m] = r["mismatches"]
        assert m["minute"] == "2024-05-29T16:29:00Z" and m["fields"] == {"trade_count": [13, 12]}
    finally:
        rt.stop()


def test_kline_check_when_replay_has_no_klines_refuses_with_a_message(tmp_path):
    rec = tmp_path / "no_klines.txt"
    _recording(rec)
    rec.write_text("".join(line for line in rec.read_text().splitlines(True) if "kline" not in line))
    with pytest.raises(UsageError, match="no @kline_1m streams"):
        start_runtime(config_from_argv(["--replay", str(rec), "--kline-check"]))
