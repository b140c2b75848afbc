"""Playback of cryptofeed's recorded Binance sessions (spot, USD-M, COIN-M) through the
Binance adapter and the order book: every message shape parses, counts per channel match
the recording, and books built from the recorded REST snapshots plus diffs stay in
sequence and uncrossed."""

from __future__ import annotations

import gzip
import heapq
import json
from collections import Counter

import pytest

from feed.core.book import OrderBook
from feed.core.models import BookDelta, BookTicker, Kline, Trade
from feed.vendors.binance import BinanceAdapter
from tests.helpers import require_shared_data


def received(path):
    """Yield ``(recv_ns, text)`` for every message the exchange sent (cryptofeed format)."""
    with gzip.open(path, "rt") as fh:
        for line in fh:
            head, sep, text = line.partition(": ")
            if not sep or " " in head:  # the connect line and sent requests
                continue
            yield int(float(head) * 1e9), text.rstrip("\n")


def snapshots(path):
    """Yield ``(recv_ns, symbol, body)`` for each REST depth reply in a ``.http.`` file."""
    with gzip.open(path, "rt") as fh:
        for line in fh:
            url, sep, rest = line.partition(" -> ")
            if not sep:
                continue
            ts, _, body = rest.partition(": ")
            symbol = url.split("symbol=")[1].split("&")[0]
            yield int(float(ts) * 1e9), symbol, body.rstrip("\n").encode()


@pytest.mark.parametrize("name,market,expected", [
    ("BINANCE", "spot", {"aggTrade": 2, "kline_1m": 2, "depth": 177, "bookTicker": 84}),
    ("BINANCE_FUTURES", "usdm", {"aggTrade": 91, "kline_1m": 67, "depth": 764, "bookTicker": 613}),
    ("BINANCE_DELIVERY", "coinm", {"aggTrade": 51, "kline_1m": 33, "depth": 2047, "bookTicker": 2240}),
])
def test_parse_when_cryptofeed_binance_session_played_every_message_shape_is_understood(name, market, expected):
    folder = require_shared_data("cryptofeed-ws-samples")
    adapter = BinanceAdapter(market)
    seen: Counter[str] = Counter()
    for recv_ns, text in received(folder / f"{name}.ws.1.0.gz"):
        stream = json.loads(text)["stream"]
        events = adapter.parse(text, recv_ns)  # raises MalformedMessage on anything unusable
        kind = stream.split("@")[1]
        seen[kind] += 1
        wanted = {"aggTrade": Trade, "kline_1m": Kline, "depth": BookDelta, "bookTicker": BookTicker}[kind]
        assert len(events) == 1 and isinstance(events[0], wanted), (stream, events)
        ev = events[0]
        assert ev.symbol == stream.split("@")[0].upper()
        if isinstance(ev, Trade):
            assert ev.price > 0 and ev.size > 0 and ev.trade_id is not None and ev.side in (1, -1)
    assert dict(seen) == expected


@pytest.mark.parametrize("name,market", [("BINANCE", "spot"), ("BINANCE_FUTURES", "usdm")])
def test_book_when_cryptofeed_snapshot_and_diffs_replayed_stays_in_sequence_and_uncrossed(name, market):
    folder = require_shared_data("cryptofeed-ws-samples")
    adapter = BinanceAdapter(market)
    books: dict[str, OrderBook] = {}
    ws = ((ns, 0, text) for ns, text in received(folder / f"{name}.ws.1.0.gz"))
    rest = ((ns, 1, (sym, body)) for ns, sym, body in snapshots(folder / f"{name}.http.0.0.gz"))
    applied = 0
    for recv_ns, kind, payload in heapq.merge(ws, rest, key=lambda x: (x[0], x[1])):
        if kind == 1:
            symbol, body = payload
            books.setdefault(symbol, OrderBook(symbol)).apply_snapshot(adapter.parse_snapshot(symbol, body, recv_ns))
            continue
        for ev in adapter.parse(payload, recv_ns):
            if isinstance(ev, BookDelta):
                book = books.setdefault(ev.symbol, OrderBook(ev.symbol))
                was_synced = book.synced
                book.apply_delta(ev)
                applied += was_synced and book.synced
    assert len(books) == 4
    assert applied > 100
    for symbol, book in books.items():
        assert book.sequence_gaps == 0 and book.crossed_resyncs == 0, (symbol, book.last_problem)
        assert book.synced, symbol
        assert book.best_bid()[0] < book.best_ask()[0]
