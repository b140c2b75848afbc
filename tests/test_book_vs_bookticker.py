"""Real Binance captures: the local book's best levels agree with Binance's bookTicker.

Each recording (hftbacktest's collector: diff depth + bookTicker + trades, and one bare
REST snapshot line) is replayed line by line through ``BinanceAdapter.parse`` into an
``OrderBook``. After every diff the synced book applies, its best bid and best ask (price
and size) must equal those of the latest bookTicker whose update id ``u`` is at most the
diff's final update id. Some diffs arrive before the snapshot line; the book must buffer
them, or it starts from a stale image.

Measured when written: spot BTCUSDT 6490/6492 (0.99969), USD-M BTCUSDT 2024 6545/6545,
USD-M BTCUSDT 2023 16110/16110. Both spot misses are the same Binance quirk: a new best
bid (61565.10 at u=50093478171, 61556.11 at u=50093480488) shows in bookTicker but not in
the 100 ms diff whose range covers it; the next diff deletes that level, which the diff
stream never added (Binance: "an event that removes a price level that is not in your
local order book can happen and is normal").
"""

from __future__ import annotations

import bisect
import itertools
from pathlib import Path

import pytest

from feed.core.book import OrderBook
from feed.core.models import BookDelta, BookSnapshot, BookTicker
from feed.io.readers import read_recording
from feed.vendors.binance import BinanceAdapter

pytestmark = pytest.mark.data

MIN_AGREEMENT = 0.999

# case -> (market, files in order, diffs recorded before the snapshot line?). In the 2023
# capture the collector got the snapshot before the first diff, which then bridges it live.
CASES = {
    "spot-btcusdt-2024": (
        "spot", ["raw/spot/btcusdt_20240808.gz", "raw/spot/btcusdt_20240809.gz"], True),
    "usdm-btcusdt-2024": ("usdm", ["raw/usdm/btcusdt_20240808.gz"], True),
    "usdm-btcusdt-2023": (
        "usdm", ["raw/usdm/btcusdt_20230404.dat.gz", "raw/usdm/btcusdt_20230405.dat.gz"], False),
}


def replay(market: str, paths: list[Path]) -> dict:
    """Parse a recording pair and return its events, in file order, and counts."""
    adapter = BinanceAdapter(market)
    events: list = []
    symbol = None
    diffs_before_snapshot = 0
    snapshot_seen = False
    for recv_ns, raw in itertools.chain.from_iterable(read_recording(p) for p in paths):
        if raw.startswith('{"lastUpdateId"'):
            assert symbol is not None, "snapshot line before any stream told the symbol"
            events.append(adapter.parse_snapshot(symbol, raw.encode(), recv_ns))
            snapshot_seen = True
            continue
        for event in adapter.parse(raw.encode(), recv_ns):  # bytes, as the live client gets
            symbol = symbol or event.symbol
            if isinstance(event, BookDelta) and not snapshot_seen:
                diffs_before_snapshot += 1
            events.append(event)
    return {"events": events, "symbol": symbol, "diffs_before_snapshot": diffs_before_snapshot}


@pytest.mark.parametrize("case", list(CASES))
def test_replay_when_book_rebuilt_from_diffs_matches_book_ticker(hft_data, case):
    market, files, early_diffs = CASES[case]
    rec = replay(market, [hft_data / f for f in files])
    events = rec["events"]
    assert (rec["diffs_before_snapshot"] > 0) == early_diffs  # buffering is exercised

    tickers = sorted((e for e in events if isinstance(e, BookTicker)), key=lambda t: t.update_id)
    ticker_ids = [t.update_id for t in tickers]
    book = OrderBook(rec["symbol"])
    compared = agreed = 0
    for event in events:
        if isinstance(event, BookSnapshot):
            book.apply_snapshot(event)
        elif isinstance(event, BookDelta):
            applied = book.applied_events
            book.apply_delta(event)
            if book.applied_events == applied or not book.synced:
                continue
            i = bisect.bisect_right(ticker_ids, event.final_update_id) - 1
            if i < 0:
                continue
            t = tickers[i]
            compared += 1
            agreed += book.best_bid() == (t.bid, t.bid_size) and book.best_ask() == (t.ask, t.ask_size)

    assert book.synced
    assert book.sequence_gaps == 0 and book.crossed_resyncs == 0 and book.stale_snapshots == 0
    assert compared > 3000
    ratio = agreed / compared
    assert ratio >= MIN_AGREEMENT, f"{case}: {agreed}/{compared} = {ratio:.5f}"
