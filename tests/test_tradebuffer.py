"""The columnar trades held per symbol (feed/core/tradebuffer.py)."""

from __future__ import annotations

import pytest

from feed.core import tradebuffer
from feed.core.models import BUY, SELL, UNKNOWN, BarSpec, Trade
from feed.core.tradebuffer import CHUNK, TradeBuffer, estimate_held

T0 = 1_723_161_255_000_000_000


def _trade(i: int, *, tid: int | None = -1, in_bars: bool = True) -> Trade:
    return Trade("BTCUSDT", T0 + i * 1_000_000, 61000.0 + (i % 97) * 0.01, 0.001 * (1 + i % 13),
                 (BUY, SELL, UNKNOWN)[i % 3], i if tid == -1 else tid, T0 + i * 1_000_000 + 7, in_bars)


def test_buffer_when_trades_cross_chunks_gives_back_equal_trades_in_order():
    buf = TradeBuffer("BTCUSDT", 10 * CHUNK)
    trades = [_trade(i, tid=None if i % 11 == 0 else -1, in_bars=i % 5 != 0) for i in range(2 * CHUNK + 17)]
    buf.extend(trades)
    assert len(buf) == len(trades)
    assert list(buf.snapshot()) == trades  # every field, floats exactly
    assert buf.last(CHUNK + 20) == trades[-(CHUNK + 20):]
    assert buf.last(5) == trades[-5:] and buf.last(0) == []
    assert buf.last(10**9) == trades


def test_buffer_when_over_max_trades_keeps_the_newest():
    buf = TradeBuffer("BTCUSDT", CHUNK + 100)
    trades = [_trade(i) for i in range(3 * CHUNK + 5)]
    buf.extend(trades)
    assert len(buf) == CHUNK + 100
    assert list(buf.snapshot()) == trades[-(CHUNK + 100):]
    small = TradeBuffer("BTCUSDT", 3)
    small.extend(trades[:10])
    assert small.last(10) == trades[7:10]


def test_view_when_buffer_moves_on_stays_as_taken():
    buf = TradeBuffer("BTCUSDT", 2 * CHUNK)
    trades = [_trade(i) for i in range(2 * CHUNK)]
    buf.extend(trades)
    view = buf.snapshot()
    buf.extend(_trade(i) for i in range(2 * CHUNK, 4 * CHUNK))  # rolls every old trade out
    buf.insert([_trade(2 * CHUNK + 3 * CHUNK // 2, tid=10**9)])
    assert len(view) == 2 * CHUNK and list(view) == trades


def test_buffer_when_held_costs_at_most_64_bytes_a_trade():
    buf = TradeBuffer("BTCUSDT", 10**6)
    buf.extend(_trade(i) for i in range(50 * CHUNK))
    assert buf.nbytes / len(buf) <= 64


def test_insert_when_gap_repaired_keeps_id_order_and_skips_held_ids():
    buf = TradeBuffer("BTCUSDT", 10 * CHUNK)
    ids = [i for i in range(3 * CHUNK) if not (100 <= i < 150 or 2 * CHUNK + 10 <= i < 2 * CHUNK + 12
                                                or i == 3 * CHUNK - 3)]
    buf.extend(_trade(i) for i in ids)
    missing = [_trade(i) for i in [*range(100, 150), 2 * CHUNK + 10, 2 * CHUNK + 11, 3 * CHUNK - 3]]
    assert buf.insert(reversed(missing + [_trade(5), _trade(3 * CHUNK - 1)])) == len(missing)
    assert list(buf.snapshot()) == [_trade(i) for i in range(3 * CHUNK)]


def test_insert_when_full_drops_what_falls_off_the_old_end():
    buf = TradeBuffer("BTCUSDT", 100)
    buf.extend(_trade(i) for i in range(10, 110))
    assert buf.insert([_trade(5), _trade(50)]) == 1  # 50 was held; 5 goes in, then out
    assert [t.trade_id for t in buf.last(100)] == list(range(10, 110))


def test_insert_when_trade_has_no_id_or_another_symbol_raises():
    buf = TradeBuffer("BTCUSDT", 100)
    with pytest.raises(ValueError, match="no trade id"):
        buf.insert([_trade(1, tid=None)])
    with pytest.raises(ValueError, match="ETHUSDT"):
        buf.insert([Trade("ETHUSDT", T0, 1.0, 1.0, BUY, 1)])


def test_estimate_held_when_view_agrees_with_the_list_estimate():
    from feed.core.batch import estimate_bars

    buf = TradeBuffer("BTCUSDT", 10**6)
    trades = [_trade(i * 50) for i in range(CHUNK + 300)]
    buf.extend(trades)
    view = buf.snapshot()
    for spec in ("1m", "1s", "100t", "2v", "500q"):
        s = BarSpec.from_str(spec)
        for empty in ("gap", "flat"):
            assert estimate_held(s, view, empty) == pytest.approx(estimate_bars(s, trades, empty))
    assert estimate_held(BarSpec.from_str("1m"), TradeBuffer("X", 5).snapshot()) == 0.0
    assert tradebuffer.TradeView("X", (), []).columns()["ts"].size == 0


def test_insert_when_backfill_pages_come_newest_first_they_go_in_whole_and_views_stay_valid():
    buf = TradeBuffer("BTCUSDT", 100 * CHUNK)
    live = list(range(10 * CHUNK, 10 * CHUNK + CHUNK + 7))  # a sealed chunk and a tail
    buf.extend(_trade(i) for i in live)
    before = buf.snapshot()
    # Pages of 1000 older and older, the oldest page overlapping one id already put in.
    for hi in range(10 * CHUNK, 0, -1000):
        page = [_trade(i) for i in range(max(0, hi - 1000), hi)]
        assert buf.insert(page) == len(page)
    assert buf.insert([_trade(0), _trade(5000)]) == 0  # held already
    assert [t.trade_id for t in buf.snapshot()] == list(range(0, 10 * CHUNK + CHUNK + 7))
    assert [t.trade_id for t in before] == live  # the view taken before is unchanged
    # Ids inside the sealed part and past the tail, in one call.
    buf2 = TradeBuffer("BTCUSDT", 100 * CHUNK)
    held = [i for i in range(3 * CHUNK) if i % 97]
    buf2.extend(_trade(i) for i in held)
    missing = [i for i in range(3 * CHUNK + 5) if i % 97 == 0 or i >= 3 * CHUNK]
    assert buf2.insert([_trade(i) for i in reversed(missing)]) == len(missing)
    assert [t.trade_id for t in buf2.snapshot()] == list(range(3 * CHUNK + 5))
