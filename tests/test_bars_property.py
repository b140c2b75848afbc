"""Property tests: batch ``aggregate`` equals the streaming aggregators on random streams.

Streams mix equal timestamps, trades exactly on interval boundaries, huge trades and
out-of-order (late) trades; every bar kind and option is covered.
"""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.core.bars import make_aggregator
from feed.core.batch import aggregate, bars_to_frame
from feed.core.models import BUY, SELL, UNKNOWN, Trade

S = 1_000_000_000
BASE = 1_710_000_000 * S  # 2024-03-09 16:00 UTC: New York DST starts the next day


@st.composite
def trade_streams(draw, max_size=80):
    """Draw a list of trades in arrival order."""
    n = draw(st.integers(1, max_size))
    t = BASE + draw(st.integers(0, 3600)) * S
    trades = []
    for _ in range(n):
        step = draw(st.sampled_from(["same", "boundary", "small", "jump", "late", "far_late"]))
        if step == "same":
            ts = t
        elif step == "boundary":
            ts = (t // (60 * S) + 1) * 60 * S  # exactly on the next minute
        elif step == "small":
            ts = t + draw(st.integers(1, 5 * S))
        elif step == "jump":
            ts = t + draw(st.integers(1, 5400)) * S
        elif step == "late":
            ts = t - draw(st.integers(1, 2 * S))  # within the default tolerance
        else:
            ts = t - draw(st.integers(3, 600)) * S  # beyond it
        t = max(t, ts)
        price = draw(st.sampled_from([99.5, 100.0, 100.25, 101.0, 0.1, 1e5]))
        size = draw(st.one_of(
            st.sampled_from([0.001, 0.1, 0.2, 0.3, 1.0, 7.0]),
            st.floats(0.0001, 50.0, allow_nan=False),  # includes huge trades vs thresholds
        ))
        side = draw(st.sampled_from([BUY, SELL, UNKNOWN]))
        in_bars = draw(st.sampled_from([True] * 9 + [False]))
        trades.append(Trade("BTCUSDT", int(ts), price, size, side, None, 0, in_bars))
    return trades


def streaming(trades, spec, **options):
    agg = make_aggregator("BTCUSDT", spec, **options)
    agg.on_trades(trades)
    return bars_to_frame(agg.bars())


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("spec,options", [
    ("1m", {}),
    ("5s", {}),
    ("1h", {"utc_offset": "+05:30"}),
    ("1m", {"empty": "flat"}),
    ("15m", {"empty": "flat", "late_tolerance_ns": 0}),
    ("1h", {"session_tz": "America/New_York", "session_open": "09:30"}),
    ("4h", {"session_tz": "America/New_York", "session_open": "09:30", "empty": "flat"}),
])
@PROPERTY
@given(trades=trade_streams())
def test_aggregate_when_random_stream_time_bars_equal_streaming(trades, spec, options):
    pd.testing.assert_frame_equal(
        aggregate(trades, spec, **options), streaming(trades, spec, **options), check_exact=True)


@pytest.mark.parametrize("spec,options", [
    ("1t", {}),
    ("3t", {}),
    ("10t", {"session_reset": True}),
    ("5v", {}),
    ("0.3v", {}),
    ("50v", {"session_reset": True, "session_tz": "America/New_York", "session_open": "09:30"}),
    ("100000q", {}),
    ("25000q", {"session_reset": True}),
])
@PROPERTY
@given(trades=trade_streams())
def test_aggregate_when_random_stream_threshold_bars_equal_streaming(trades, spec, options):
    pd.testing.assert_frame_equal(
        aggregate(trades, spec, **options), streaming(trades, spec, **options), check_exact=True)


@PROPERTY
@given(trades=trade_streams(), step=st.sampled_from([0.5, 5.0, 40.0]))
def test_volume_bars_when_any_stream_each_closed_bar_holds_exactly_the_threshold(trades, step):
    agg = make_aggregator("BTCUSDT", f"{step}v")
    agg.on_trades(trades)
    used = sum(t.size for t in trades if t.in_bars)
    for bar in agg.closed:
        assert bar.volume == pytest.approx(step, rel=1e-9)
        assert bar.buy_volume + bar.sell_volume <= bar.volume * (1 + 1e-9)
    held = sum(b.volume for b in agg.bars())
    assert held == pytest.approx(used, rel=1e-9, abs=1e-9)


@PROPERTY
@given(trades=trade_streams())
def test_time_bars_when_any_stream_every_on_time_trade_counted_once(trades):
    agg = make_aggregator("BTCUSDT", "1m")
    agg.on_trades(trades)
    counted = sum(b.trade_count for b in agg.bars())
    in_bars = sum(t.in_bars for t in trades)
    assert counted + agg.late == in_bars
    for bar in agg.bars():
        assert bar.low <= min(bar.open, bar.close) and bar.high >= max(bar.open, bar.close)
