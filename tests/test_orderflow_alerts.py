"""Alert rules (feed.core.alerts) on a recorded Binance session and on hand-made cases."""

from __future__ import annotations

import statistics


from feed.core.alerts import AlertRules, AlertState, check_alerts, volume_surge
from feed.core.batch import aggregate
from feed.core.models import BUY, SELL, Trade
from tests.test_orderflow import SESSIONS, load

S = 1_000_000_000


def t(ts_s, price, size=1.0, side=BUY, tid=None):
    return Trade("X", int(ts_s * S), price, size, side, tid)


def test_first_check_when_history_held_then_baseline_only_no_alert():
    trades = [t(1, 100, 50, tid=1), t(2, 101, 1, tid=2)]
    alerts, st = check_alerts(AlertRules(trade_size=10, price_level=100.5), AlertState(), trades)
    assert alerts == [] and st.last_trade_id == 2 and st.last_price == 101


def test_price_level_when_crossed_up_then_down_then_two_alerts_naming_the_way():
    st = AlertState(last_ts_ns=1, last_trade_id=1, last_price=99.0)
    rules = AlertRules(price_level=100.0)
    seen = [t(1, 99, tid=1)]
    alerts, st = check_alerts(rules, st, seen + [t(2, 99.5, tid=2), t(3, 100.0, tid=3), t(4, 100.5, tid=4),
                                                 t(5, 99.9, tid=5)], symbol="X")
    assert [a.text.split(": ")[0] for a in alerts] == ["X crossed 100 up", "X crossed 100 down"]
    assert [a.ts_ns for a in alerts] == [3 * S, 5 * S]
    again, _ = check_alerts(rules, st, [t(5, 99.9, tid=5)])  # nothing new: nothing fires
    assert again == []


def test_trade_size_when_recorded_session_then_alerts_are_exactly_the_large_trades(hft_data):
    trades = load(hft_data, SESSIONS[0])
    big = 5.0
    st = AlertState()
    _, st = check_alerts(AlertRules(trade_size=big), st, trades[:100])
    fired = []
    for i in range(100, len(trades), 250):  # as the dashboard polls: overlapping windows of 2000
        alerts, st = check_alerts(AlertRules(trade_size=big), st, trades[max(0, i + 250 - 2000):i + 250])
        fired.extend(alerts)
    expected = [x for x in trades[100:] if x.size >= big]
    capped = sum(1 for a in fired if a.text.startswith("…"))
    assert capped == 0, "windows of 250 trades never exceed the per-check cap here"
    assert [a.ts_ns for a in fired] == [x.ts_ns for x in expected]
    assert all(("buy" in a.text) == (x.side == BUY) for a, x in zip(fired, expected))


def test_volume_surge_when_recorded_bars_then_fires_where_pandas_rolling_says(hft_data):
    trades = load(hft_data, SESSIONS[0])
    bars = aggregate(trades, "5s")
    vols = bars["volume"].tolist()[:-1]  # closed bars
    window, n = 10, 2.0
    expected = []
    for k in range(window, len(vols)):
        w = vols[k - window:k]
        if vols[k] > statistics.fmean(w) + n * statistics.pstdev(w):
            expected.append(int(bars["start"].iloc[k]))
    assert expected, "the session has surges"
    rules = AlertRules(surge_std=n, surge_window=window)
    st = AlertState(last_ts_ns=1)
    fired = []
    starts = bars["start"].tolist()
    for k in range(window, len(vols)):
        closed = list(zip(starts[:k + 1], vols[:k + 1]))
        alerts, st = check_alerts(rules, st, [t(k, 1.0)], closed)
        fired.extend(a.ts_ns for a in alerts if a.kind == "surge")
    assert fired == expected


def test_volume_surge_when_too_few_bars_then_never():
    assert volume_surge([1.0, 100.0], 1.0)[0] is False
    assert volume_surge([1.0, 1.0, 1.0, 1.0001], 1.0)[0] is True  # zero std: any excess surges


def test_many_alerts_in_one_check_then_capped_with_a_summary():
    st = AlertState(last_ts_ns=1, last_trade_id=0, last_price=1.0)
    trades = [t(2 + i, 1.0, 10, SELL, tid=i + 1) for i in range(50)]
    alerts, _ = check_alerts(AlertRules(trade_size=1), st, trades)
    assert len(alerts) == 20 and alerts[-1].text == "… and 31 more"
