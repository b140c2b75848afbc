"""OrderBook: Binance snapshot + diff sequencing (spot and futures rules), reads."""

from __future__ import annotations

import random

import pytest

from feed.core.book import OrderBook
from feed.core.models import BookDelta, BookSnapshot

SYM = "BTCUSDT"


def spot(first: int, last: int, bids=(), asks=(), ts: int = 0) -> BookDelta:
    return BookDelta(SYM, ts, first, last, None, tuple(bids), tuple(asks))


def fut(first: int, last: int, pu: int, bids=(), asks=(), ts: int = 0) -> BookDelta:
    return BookDelta(SYM, ts, first, last, pu, tuple(bids), tuple(asks))


def snap(lid: int, bids=((100.0, 1.0),), asks=((101.0, 1.0),), ts: int = 0) -> BookSnapshot:
    return BookSnapshot(SYM, ts, lid, tuple(bids), tuple(asks))


def partial(lid, bids, asks) -> BookSnapshot:
    return BookSnapshot(SYM, 0, lid, tuple(bids), tuple(asks), is_partial=True)


# -- before the snapshot ---------------------------------------------------------------


def test_apply_delta_when_no_snapshot_yet_buffers_without_changing_the_book():
    book = OrderBook(SYM)
    book.apply_delta(spot(1, 5, bids=[(100.0, 2.0)]))
    assert book.needs_snapshot and not book.synced
    assert book.buffered == 1
    assert book.best_bid() is None and book.best_ask() is None
    assert book.last_update_id is None


def test_apply_delta_when_buffer_full_drops_oldest_and_counts_overflow():
    book = OrderBook(SYM, max_buffer=3)
    for i in range(5):
        book.apply_delta(spot(10 * i + 1, 10 * i + 10))
    assert book.buffered == 3
    assert book.buffer_overflows == 2
    # The oldest surviving event starts at 21, so a snapshot at 5 is too old...
    book.apply_snapshot(snap(5))
    assert book.needs_snapshot and book.stale_snapshots == 1
    # ...and one inside the surviving range syncs.
    book.apply_snapshot(snap(25))
    assert book.synced and book.last_update_id == 50


def test_init_when_max_buffer_not_positive_raises_value_error():
    with pytest.raises(ValueError, match="max_buffer"):
        OrderBook(SYM, max_buffer=0)


# -- spot: snapshot bridging -----------------------------------------------------------


def test_apply_snapshot_when_spot_buffer_straddles_drops_contained_and_applies_rest():
    book = OrderBook(SYM)
    book.apply_delta(spot(1, 5, bids=[(99.0, 9.0)]))      # u <= 7: in the snapshot already
    book.apply_delta(spot(6, 10, bids=[(100.0, 3.0)]))    # U <= 8 <= u: first applied
    book.apply_delta(spot(11, 15, asks=[(101.5, 2.0)]))   # U == 10 + 1
    book.apply_snapshot(snap(7))
    assert book.synced and not book.needs_snapshot
    assert book.last_update_id == 15
    assert book.best_bid() == (100.0, 3.0)
    assert book.depth(5) == ([(100.0, 3.0)], [(101.0, 1.0), (101.5, 2.0)])
    assert 99.0 not in dict(book.depth(5)[0])
    assert book.sequence_gaps == 0 and book.resyncs == 0 and book.buffered == 0


def test_apply_snapshot_when_spot_event_ends_at_last_update_id_drops_it():
    book = OrderBook(SYM)
    book.apply_delta(spot(5, 7, bids=[(100.0, 5.0)]))     # spot drops u <= lastUpdateId
    book.apply_snapshot(snap(7))
    assert book.best_bid() == (100.0, 1.0)
    assert book.last_update_id == 7


def test_apply_snapshot_when_spot_first_event_starts_right_after_snapshot_applies_it():
    book = OrderBook(SYM)
    book.apply_delta(spot(8, 9, bids=[(100.5, 1.0)]))     # U == lastUpdateId + 1
    book.apply_snapshot(snap(7))
    assert book.synced and book.best_bid() == (100.5, 1.0) and book.stale_snapshots == 0


def test_apply_snapshot_when_snapshot_older_than_first_buffered_event_refuses_it():
    book = OrderBook(SYM)
    book.apply_delta(spot(10, 12))
    book.apply_delta(spot(13, 15))
    book.apply_snapshot(snap(8))                          # U=10 > 8 + 1: hole 9
    assert book.needs_snapshot and book.stale_snapshots == 1
    assert book.buffered == 2                             # kept for the next snapshot
    assert book.best_bid() is None
    book.apply_snapshot(snap(11))
    assert book.synced and book.last_update_id == 15 and book.resyncs == 0


def test_apply_snapshot_when_newer_than_every_buffered_event_waits_for_live_bridge():
    book = OrderBook(SYM)
    book.apply_delta(spot(1, 5))
    book.apply_snapshot(snap(20))
    assert book.synced and book.buffered == 0 and book.last_update_id == 20
    book.apply_delta(spot(18, 25, bids=[(100.0, 7.0)]))   # straddles 21
    assert book.best_bid() == (100.0, 7.0) and book.last_update_id == 25


def test_apply_delta_when_first_live_event_after_snapshot_skips_ids_counts_gap():
    book = OrderBook(SYM)
    book.apply_snapshot(snap(20))
    book.apply_delta(spot(23, 25))                        # 21, 22 missing
    assert book.sequence_gaps == 1 and book.needs_snapshot and book.buffered == 1


def test_apply_snapshot_when_full_snapshot_has_no_update_id_raises_value_error():
    book = OrderBook(SYM)
    with pytest.raises(ValueError, match="last_update_id"):
        book.apply_snapshot(BookSnapshot(SYM, 0, None, ((1.0, 1.0),), ((2.0, 1.0),)))


# -- spot: continuing the sequence -----------------------------------------------------


def synced_spot_book(lid: int = 10) -> OrderBook:
    book = OrderBook(SYM)
    book.apply_snapshot(snap(lid, bids=[(100.0, 1.0), (99.0, 2.0)], asks=[(101.0, 1.0), (102.0, 2.0)]))
    return book


def test_apply_delta_when_spot_ids_continue_applies_levels_and_time():
    book = synced_spot_book()
    book.apply_delta(spot(11, 14, bids=[(100.5, 4.0)], asks=[(101.0, 0.5)], ts=123))
    assert book.best_bid() == (100.5, 4.0) and book.best_ask() == (101.0, 0.5)
    assert book.last_update_id == 14 and book.ts_ns == 123 and book.applied_events == 1


def test_apply_delta_when_size_zero_deletes_level_and_unknown_delete_is_harmless():
    book = synced_spot_book()
    book.apply_delta(spot(11, 11, bids=[(100.0, 0.0), (50.0, 0.0)], asks=[(101.0, 0.0)]))
    assert book.best_bid() == (99.0, 2.0) and book.best_ask() == (102.0, 2.0)
    assert book.level_counts() == (1, 1)


def test_apply_delta_when_spot_event_skips_ids_counts_gap_clears_and_rebuffers():
    book = synced_spot_book()
    book.apply_delta(spot(11, 12))
    gap = spot(15, 16, bids=[(100.0, 9.0)])               # 13, 14 lost
    book.apply_delta(gap)
    assert book.sequence_gaps == 1
    assert book.needs_snapshot and not book.synced
    assert book.best_bid() is None and book.level_counts() == (0, 0)
    assert book.buffered == 1                             # buffering restarts at the gap
    assert "gap" in book.last_problem
    book.apply_delta(spot(17, 18))
    book.apply_snapshot(snap(15))
    assert book.synced and book.last_update_id == 18 and book.resyncs == 1
    assert book.best_bid() == (100.0, 9.0)


def test_apply_delta_when_event_already_contained_ignores_it():
    book = synced_spot_book()
    book.apply_delta(spot(11, 15, bids=[(100.0, 3.0)]))
    book.apply_delta(spot(12, 14, bids=[(100.0, 8.0)]))   # u <= 15
    assert book.best_bid() == (100.0, 3.0) and book.stale_events == 1
    assert book.sequence_gaps == 0 and book.last_update_id == 15


def test_apply_delta_when_spot_event_overlaps_book_id_applies_it():
    # Binance's update procedure: only U > id + 1 is a gap; an overlap is applied.
    book = synced_spot_book()
    book.apply_delta(spot(9, 12, bids=[(100.0, 6.0)]))
    assert book.synced and book.best_bid() == (100.0, 6.0) and book.last_update_id == 12


def test_apply_delta_when_gap_occurs_while_draining_buffer_rebuffers_the_rest():
    book = OrderBook(SYM)
    book.apply_delta(spot(6, 10))
    book.apply_delta(spot(15, 20, bids=[(100.2, 1.0)]))   # 11..14 lost
    book.apply_delta(spot(21, 25))
    book.apply_snapshot(snap(7))
    assert book.sequence_gaps == 1 and book.needs_snapshot and book.buffered == 2
    book.apply_snapshot(snap(17))
    assert book.synced and book.last_update_id == 25 and book.resyncs == 1


# -- futures (pu) ----------------------------------------------------------------------


def test_apply_snapshot_when_futures_event_ends_at_last_update_id_applies_it():
    book = OrderBook(SYM)
    book.apply_delta(fut(90, 95, 80, bids=[(99.0, 1.0)]))          # u < 100: dropped
    book.apply_delta(fut(96, 100, 95, bids=[(100.0, 4.0)]))        # U <= 100 <= u
    book.apply_snapshot(snap(100))
    assert book.synced and book.best_bid() == (100.0, 4.0)
    assert 99.0 not in dict(book.depth(10)[0])


def test_apply_delta_when_futures_ids_jump_but_pu_chains_applies():
    book = OrderBook(SYM)
    book.apply_delta(fut(96, 105, 90))
    book.apply_snapshot(snap(100))
    book.apply_delta(fut(230, 260, 105, asks=[(100.9, 1.0)]))      # U far above u + 1
    book.apply_delta(fut(300, 300, 260))
    assert book.synced and book.sequence_gaps == 0 and book.last_update_id == 300
    assert book.best_ask() == (100.9, 1.0)


def test_apply_delta_when_futures_pu_breaks_counts_gap_even_if_ids_look_contiguous():
    book = OrderBook(SYM)
    book.apply_delta(fut(96, 105, 90))
    book.apply_snapshot(snap(100))
    book.apply_delta(fut(106, 110, 104))                            # pu != 105
    assert book.sequence_gaps == 1 and book.needs_snapshot and book.buffered == 1


def test_apply_snapshot_when_futures_first_event_starts_after_snapshot_refuses_it():
    book = OrderBook(SYM)
    book.apply_delta(fut(101, 110, 99))                             # U > lastUpdateId
    book.apply_snapshot(snap(100))
    assert book.needs_snapshot and book.stale_snapshots == 1
    book.apply_snapshot(snap(105))
    assert book.synced and book.last_update_id == 110


def test_apply_delta_when_futures_duplicate_of_last_event_ignores_it():
    book = OrderBook(SYM)
    book.apply_delta(fut(96, 105, 90))
    book.apply_snapshot(snap(100))
    book.apply_delta(fut(96, 105, 90))                              # redelivered
    assert book.synced and book.stale_events == 1 and book.sequence_gaps == 0


# -- crossed books ---------------------------------------------------------------------


def test_apply_delta_when_book_ends_crossed_counts_and_forces_resync():
    book = synced_spot_book()
    book.apply_delta(spot(11, 11, bids=[(101.5, 1.0)]))             # bid above the ask
    assert book.crossed_resyncs == 1 and book.sequence_gaps == 0
    assert book.needs_snapshot and book.level_counts() == (0, 0)
    assert "crossed" in book.last_problem
    book.apply_delta(spot(12, 12))
    book.apply_snapshot(snap(11))
    assert book.synced and book.resyncs == 1


def test_apply_delta_when_bid_equals_ask_counts_as_crossed():
    book = synced_spot_book()
    book.apply_delta(spot(11, 11, asks=[(100.0, 1.0)]))
    assert book.crossed_resyncs == 1 and book.needs_snapshot


# -- partial snapshots -----------------------------------------------------------------


def test_apply_snapshot_when_partial_replaces_book_wholesale_without_sequencing():
    book = OrderBook(SYM)
    book.apply_snapshot(partial(500, [(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0)]))
    assert book.synced and not book.needs_snapshot
    book.apply_snapshot(partial(400, [(98.0, 2.0)], [(99.5, 3.0), (100.0, 1.0)]))  # older id
    assert book.depth(10) == ([(98.0, 2.0)], [(99.5, 3.0), (100.0, 1.0)])
    assert book.resyncs == 0 and book.sequence_gaps == 0 and book.last_update_id == 400


def test_apply_snapshot_when_partial_has_no_update_id_then_diff_needs_full_snapshot():
    book = OrderBook(SYM)
    book.apply_snapshot(partial(None, [(100.0, 1.0)], [(101.0, 1.0)]))
    assert book.synced
    book.apply_delta(spot(1, 2))
    assert book.needs_snapshot and book.buffered == 1


def test_apply_snapshot_when_other_symbol_raises_value_error():
    book = OrderBook(SYM)
    with pytest.raises(ValueError, match="ETHUSDT"):
        book.apply_snapshot(BookSnapshot("ETHUSDT", 0, 1, (), ()))
    with pytest.raises(ValueError, match="ETHUSDT"):
        book.apply_delta(BookDelta("ETHUSDT", 0, 1, 1, None, (), ()))


# -- reads -----------------------------------------------------------------------------


def test_mid_and_spread_when_both_sides_present_return_quote_values():
    book = synced_spot_book()
    assert book.mid() == 100.5 and book.spread() == 1.0


def test_reads_when_book_empty_return_none_and_empty_lists():
    book = OrderBook(SYM)
    assert book.best_bid() is None and book.best_ask() is None
    assert book.mid() is None and book.spread() is None
    assert book.depth(10) == ([], []) and book.depth(0) == ([], [])


def test_depth_when_levels_churn_matches_a_sorted_reference():
    # Random inserts, updates, deletes and re-inserts (duplicate heap entries) against
    # a plain dict reference; past the heap's compaction threshold.
    rng = random.Random(7)
    book = OrderBook(SYM)
    book.apply_snapshot(snap(0, bids=[(50.0, 1.0)], asks=[(150.0, 1.0)]))
    ref_b, ref_a = {50.0: 1.0}, {150.0: 1.0}
    for i in range(1, 3000):
        bids, asks = [], []
        for _ in range(rng.randint(1, 8)):
            p = float(rng.randint(51, 99))
            q = rng.choice([0.0, 0.0, 1.0, 2.5])
            bids.append((p, q))
            ref_b.pop(p, None) if q == 0.0 else ref_b.__setitem__(p, q)
            p = float(rng.randint(101, 149))
            q = rng.choice([0.0, 0.0, 1.0, 2.5])
            asks.append((p, q))
            ref_a.pop(p, None) if q == 0.0 else ref_a.__setitem__(p, q)
        book.apply_delta(spot(i, i, bids, asks))
        if i % 97 == 0:
            want = (
                sorted(ref_b.items(), reverse=True)[:20],
                sorted(ref_a.items())[:20],
            )
            assert book.depth(20) == want
            assert book.best_bid() == want[0][0] and book.best_ask() == want[1][0]
    assert book.synced and book.sequence_gaps == 0
    # Stale heap entries stay bounded by the compaction rule.
    assert len(book._bid_heap) <= 2 * len(ref_b) + 1024 + 16


def test_copy_levels_when_called_returns_immutable_partial_image():
    book = synced_spot_book()
    book.apply_delta(spot(11, 11, bids=[(100.0, 5.0)], ts=77))
    image = book.copy_levels(1)
    assert image.is_partial and image.symbol == SYM and image.ts_ns == 77
    assert image.bids == ((100.0, 5.0),) and image.asks == ((101.0, 1.0),)
    assert image.last_update_id == 11
    book.apply_delta(spot(12, 12, bids=[(100.0, 0.0)]))
    assert image.bids == ((100.0, 5.0),)


def test_reset_when_called_waits_for_snapshot_without_counting_a_gap():
    book = synced_spot_book()
    book.reset()
    assert book.needs_snapshot and book.level_counts() == (0, 0)
    assert book.sequence_gaps == 0 and book.last_update_id is None


def test_apply_snapshot_when_synced_book_is_newer_refuses_the_older_image():
    book = synced_spot_book(10)
    book.apply_delta(spot(11, 20, bids=[(100.0, 4.0)]))
    book.apply_snapshot(snap(15))
    assert book.synced and book.last_update_id == 20 and book.best_bid() == (100.0, 4.0)
    assert book.stale_snapshots == 1 and book.resyncs == 0


def test_apply_snapshot_when_synced_book_gets_newer_image_replaces_it_and_continues():
    book = synced_spot_book(10)
    book.apply_snapshot(snap(30, bids=[(100.2, 1.0)]))
    assert book.resyncs == 1 and book.best_bid() == (100.2, 1.0)
    book.apply_delta(spot(25, 31, asks=[(101.2, 1.0)]))   # straddles 31
    assert book.synced and book.last_update_id == 31 and book.sequence_gaps == 0
