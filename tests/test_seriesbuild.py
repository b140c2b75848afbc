"""series_or_build: the one read-seed-build-install loop of the engine and the replica,
driven with a real MarketState / Replica and a real lock; what a writer does while the
series is built (outside the lock) is done from inside ``build_series``."""

from __future__ import annotations

import threading

import pytest

from feed.core.config import MarketConfig
from feed.core.events import Parsed
from feed.core.market import MarketState
from feed.core.models import BUY, BarSpec, Trade
from feed.core.replica import Replica
from feed.core.seriesbuild import series_or_build
from feed.vendors.binance import BinanceAdapter

S = 1_000_000_000
T0 = 1_723_161_600 * S  # a minute boundary
SPEC = BarSpec.from_str("1m")


def trade(tid: int, ts_s: float, price: float = 100.0) -> Trade:
    return Trade("BTCUSDT", T0 + int(ts_s * S), price, 1.0, BUY, trade_id=tid)


class WriterDuringBuild:
    """The state with a writer step run while the series is being built (lock not held)."""

    def __init__(self, state, during_build) -> None:
        self.state, self.during_build, self.builds = state, during_build, 0

    def __getattr__(self, name):
        return getattr(self.state, name)

    def build_series(self, seed):
        self.builds += 1
        agg = self.state.build_series(seed)
        self.during_build()
        return agg


def market() -> MarketState:
    m = MarketState(MarketConfig(clock="exchange", close_grace_s=0), BinanceAdapter("spot"))
    m.add_symbol("BTCUSDT")
    return m


def test_series_or_build_when_trades_arrive_during_the_build_then_the_installed_series_holds_them():
    m = market()
    m.apply([Parsed(T0, [trade(1, 0, 100.0), trade(2, 30, 101.0)])], T0, 0)
    late = [trade(3, 61, 105.0), trade(4, 125, 99.0)]
    state = WriterDuringBuild(m, lambda: m.apply([Parsed(T0, late)], T0, 0))
    got = series_or_build(threading.Lock(), state, "BTCUSDT", SPEC, 0, lambda: T0)
    assert state.builds == 1
    assert [(b.open, b.high, b.close, b.trade_count) for b in got.closed] == [(100.0, 101.0, 101.0, 2), (105.0, 105.0, 105.0, 1)]
    assert got.current is not None and got.current.close == 99.0
    # built once: a second read finds it
    assert series_or_build(threading.Lock(), state, "BTCUSDT", SPEC, 1, lambda: T0).closed[0].open == 105.0
    assert state.builds == 1


def test_series_or_build_when_symbol_dropped_during_the_build_then_key_error():
    m = market()
    m.apply([Parsed(T0, [trade(1, 0)])], T0, 0)
    state = WriterDuringBuild(m, lambda: m.remove_symbol("BTCUSDT"))
    with pytest.raises(KeyError):
        series_or_build(threading.Lock(), state, "BTCUSDT", SPEC, 0, lambda: T0)


def test_series_or_build_when_replica_then_bars_closed_by_the_clock_given():
    r = Replica()
    r.hold("BTCUSDT", MarketConfig(close_grace_s=0))
    r.append("BTCUSDT", [trade(1, 0, 100.0), trade(2, 61, 102.0)], T0 + 61 * S)
    got = series_or_build(threading.Lock(), r, "BTCUSDT", SPEC, 0, lambda: T0 + 121 * S)
    assert [b.close for b in got.closed] == [100.0, 102.0]
    assert got.current is None
