"""Per-bar verification against the vendor's 1m klines: verdicts and reason codes (pure),
and end to end on a recorded USD-M session through the embedded exchange: every covered
minute ``exact`` in ``/api/verify`` and the ``verified`` column of ``/api/bars`` (after
injected gaps were repaired), and a deliberately altered kline ``differs`` with the right
field and reason."""

from __future__ import annotations

import dataclasses
import json

import pytest

from feed.core.events import HistoryKlines
from feed.core.models import Bar, BarSpec, Kline, iso_ms
from feed.core.verify import Verifier, verdict_of
from tests.helpers import wait_for
from tests.test_backfill import KLINES_2023, MS, bar_matches, official_klines
from tests.test_gap_repair import COVERED, finish, start_replay

pytestmark = pytest.mark.timeout(120)

M = 60_000_000_000
T0 = 1_717_000_020_000_000_000  # a minute boundary


def bar(start: int = T0, **over) -> Bar:
    fields = dict(symbol="X", spec=BarSpec.from_str("1m"), start_ns=start, end_ns=start + M, open=10.0, high=11.0,
                  low=9.0, close=10.5, volume=3.0, turnover=31.0, trade_count=3, buy_volume=1.0, sell_volume=2.0,
                  closed=True)
    fields.update(over)
    return Bar(**fields)


def kline_of(b: Bar, **over) -> Kline:
    fields = dict(symbol=b.symbol, interval="1m", start_ns=b.start_ns, end_ns=b.end_ns, open=b.open, high=b.high,
                  low=b.low, close=b.close, volume=b.volume, turnover=b.turnover, buy_volume=b.buy_volume,
                  trade_count=b.trade_count, closed=True)
    fields.update(over)
    return Kline(**fields)


def test_verdicts_exact_unverified_and_each_reason_code():
    b = bar()
    facts = dict(covered=True, missing=False, excluded=0, revised=False, late=False)
    assert verdict_of(b, kline_of(b), **facts)["verdict"] == "exact"
    assert verdict_of(b, None, **facts)["verdict"] == "unverified"
    assert verdict_of(b, kline_of(b), **{**facts, "covered": False})["verdict"] == "unverified"
    assert verdict_of(dataclasses.replace(b, closed=False), kline_of(b), **facts)["verdict"] == "unverified"
    v = verdict_of(b, kline_of(b, volume=3.5), **facts)
    assert v["verdict"] == "differs" and v["reason"] == "unknown"
    assert v["fields"] == {"volume": {"vendor": 3.5, "ours": 3.0, "diff": 0.5}}
    assert verdict_of(b, kline_of(b, trade_count=4), **{**facts, "missing": True})["reason"] == "ids_missing"
    assert verdict_of(b, kline_of(b, trade_count=4), **{**facts, "excluded": 1})["reason"] == "non_market_excluded"
    assert verdict_of(b, kline_of(b, trade_count=5), **{**facts, "excluded": 1})["reason"] == "unknown"
    assert verdict_of(b, kline_of(b, close=10.0), **{**facts, "late": True})["reason"] == "late_trade"
    assert verdict_of(b, kline_of(b, close=10.0), **{**facts, "revised": True})["reason"] == "vendor_revised"


def test_verifier_marks_a_revised_kline_a_late_trade_and_an_unrepaired_gap():
    v = Verifier()
    v.add_symbol("X")
    b1, b2, b3 = bar(T0), bar(T0 + M), bar(T0 + 2 * M)
    for b in (b1, b2, b3):
        v.on_kline(kline_of(b))
    v.on_kline(kline_of(b1, high=12.0))  # the vendor revised minute 1
    v.on_trade("X", T0 + M + 5, True)  # a trade of minute 2 after its kline arrived
    v.note_gap("X", T0 + 2 * M + 1, T0 + 2 * M + 9, 4)
    report = v.report("X", [b1, dataclasses.replace(b2, close=10.4), dataclasses.replace(b3, trade_count=1)], T0)
    assert report["counts"] == {"exact": 0, "differs": 3, "unverified": 0}
    assert [d["reason"] for d in report["differs"]] == ["vendor_revised", "late_trade", "ids_missing"]
    assert report["verdicts"][T0] == "differs:high"
    v.note_repaired("X", T0 + 2 * M + 9, 4)
    assert v.missing_spans("X") == []


def test_every_covered_minute_exact_after_repair_and_an_altered_kline_differs_with_field_and_reason():
    rt = start_replay("skip_ids=3,skip_every=600")
    try:
        finish(rt)
        client = rt.app.server.test_client()
        official = official_klines(KLINES_2023)
        covered = [m for m in official if COVERED[0] <= m <= COVERED[1]]

        def report():
            return json.loads(client.get("/api/verify?symbol=BTCUSDT").get_data())

        # The vendor klines of the closed minutes arrive over REST shortly after they close.
        wait_for(lambda: report()["counts"]["exact"] >= len(covered), 30, "the covered minutes to verify")
        r = report()
        assert r["counts"]["differs"] == 0 and r["differs"] == []
        rows = client.get("/api/bars?symbol=BTCUSDT&bar=1m").get_data(as_text=True).splitlines()
        assert rows[0].endswith(",verified")
        verified = {row.split(",")[2]: row.split(",")[-1] for row in rows[1:]}
        for m in covered:
            iso = iso_ms(m)
            assert verified[iso] == "exact", (iso, verified)
        # A deliberately altered vendor kline: 00:02 with a volume 1.5 higher.
        minute = 1680652920000 * MS
        bars = {b.start_ns: b for b in rt.engine.bar_series("BTCUSDT", "1m").closed}
        assert not bar_matches(bars[minute], official[minute])
        b = bars[minute]
        altered = Kline("BTCUSDT", "1m", minute, minute + M, b.open, b.high, b.low, b.close, b.volume + 1.5,
                        b.turnover, b.buy_volume, b.trade_count, True)
        rt.engine.submit_control(HistoryKlines(0, "BTCUSDT", (altered,)))
        assert rt.engine.wait_idle(10)
        r = report()
        assert r["counts"]["differs"] == 1 and r["reasons"] == {"vendor_revised": 1}
        (d,) = r["differs"]
        assert d["minute"] == "2023-04-05T00:02:00.000Z" and list(d["fields"]) == ["volume"]
        assert d["fields"]["volume"]["diff"] == pytest.approx(1.5)
        rows = client.get("/api/bars?symbol=BTCUSDT&bar=1m").get_data(as_text=True)
        assert ",differs:volume\n" in rows
    finally:
        rt.stop()


def test_chart_marks_each_verdict_above_its_candle_and_none_for_unverified():
    from dashboard.candles import TRACE_VERIFY, candles_figure
    from feed.core.batch import bars_to_frame

    bars = [bar(T0), bar(T0 + M, high=12.0), bar(T0 + 2 * M), bar(T0 + 3 * M, closed=False)]
    verdicts = {T0: "exact", T0 + M: "differs:volume+trade_count", T0 + 2 * M: ""}
    fig = candles_figure(bars_to_frame(bars), symbol="X", spec="1m", verdicts=verdicts)
    marks = fig.data[TRACE_VERIFY]
    assert marks.name == "verified" and len(marks.x) == 2
    assert list(marks.marker.symbol) == ["circle", "x"]
    assert marks.y[0] > 11.0 and marks.y[1] > 12.0  # above the highs
    assert marks.text[1] == "vendor kline ✗ differs: volume, trade_count"
    assert len(candles_figure(bars_to_frame(bars), symbol="X", spec="1m").data[TRACE_VERIFY].x) == 0


def test_live_kline_stream_verifies_the_bars_of_the_market_state():
    from feed.core.config import MarketConfig
    from feed.core.events import Parsed
    from feed.core.market import MarketState
    from feed.core.models import BUY, SELL, Trade
    from feed.vendors.binance import BinanceAdapter

    m = MarketState(MarketConfig(kline_check="1m", clock="exchange"), BinanceAdapter("usdm", klines="1m"))
    m.add_symbol("BTCUSDT")
    spec = BarSpec.from_str("1m")
    m.install_series(m.series_seed("BTCUSDT", spec, 0), m.build_series(m.series_seed("BTCUSDT", spec, 0)), 0)
    trades = [Trade("BTCUSDT", T0 + i * 20 * 10**9, 100.0 + i, 1.0, BUY if i % 2 else SELL, 1 + i, T0)
              for i in range(12)]  # 4 minutes, 3 trades each
    m.apply([Parsed(T0, trades)], T0, 0)
    series = m.bar_series("BTCUSDT", spec)
    closed = series.closed
    assert len(closed) == 3
    klines = [kline_of(dataclasses.replace(b, symbol="BTCUSDT")) for b in closed]
    klines[2] = dataclasses.replace(klines[2], buy_volume=klines[2].buy_volume + 1.0)
    m.apply([Parsed(T0, klines)], T0, 0)
    r = m.verify_report("BTCUSDT", closed)
    # The first minute is cut by the start: unverified; the next exact; the altered one differs.
    assert r["counts"] == {"exact": 1, "differs": 1, "unverified": 1}
    assert r["differs"][0]["fields"] == {"buy_volume": {"vendor": 2.0, "ours": 1.0, "diff": 1.0}}
    assert r["differs"][0]["reason"] == "unknown"
