"""REST calls, request weight and time per hour of backfill, on recorded Binance sessions.

For each recorded session (the hftbacktest captures: spot BTCUSDT 2024-08-08/09, USD-M
BTCUSDT 2024-08-08 and 2023-04-04/05), the embedded exchange plays it at full speed on
loopback (its REST history holds every trade played and charges request weight as Binance
does: spot aggTrades 4, USD-M 20, header ``X-MBX-USED-WEIGHT-1M``). Then tickscope's own
``HistoryFetcher`` backfills the whole session, newest first, from its last trade back to
its first: the code path of ``--backfill`` against a live vendor.

Printed per session: the recorded span, trades and aggregates, REST calls, weight and
wall time of the backfill, and the same scaled to one hour of history. The scaling is
linear in the recording's trade density (calls grow with aggregates, 1000 a page): an
hour as busy as the recording. Ratios against baselines measured in the same run: the
time the exchange took to play the session (the backfill's seconds per played second),
and the market's weight limit per minute (the minutes of budget an hour of history takes).

Uncertain: the embedded exchange joins fills into aggregates by trade id, time (ms),
price and side; Binance's USD-M rule is worded "in 100ms with the same price and the same
taking side", so Binance may hold fewer, larger aggregates (fewer calls) than counted here.

Run::

    python benchmarks/bench_backfill.py

Not part of the test suite; runs offline (loopback only). Set ``TICKSCOPE_SHARED_DATA``
if the recorded data is not at ``../shared/data``.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import websocket  # noqa: E402

from feed.core.events import HistoryFailed, HistoryPage, HistoryRequest  # noqa: E402
from feed.exchange.server import EmbeddedExchange  # noqa: E402
from feed.io.backfill import HistoryFetcher  # noqa: E402
from feed.vendors.binance import BinanceAdapter  # noqa: E402
from tests.helpers import require_shared_data  # noqa: E402

HFT = "binance-ws-captures-hftbacktest"
#: (label, market, files under raw/<market>, per-minute weight limit of that market)
SESSIONS = (
    ("spot BTCUSDT 2024-08-08/09", "spot", ("btcusdt_20240808.gz", "btcusdt_20240809.gz"), 6000),
    ("usdm BTCUSDT 2024-08-08", "usdm", ("btcusdt_20240808.gz",), 2400),
    ("usdm BTCUSDT 2023-04-04/05", "usdm", ("btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"), 2400),
)
_MS = 1_000_000


class _Pages:
    # A sink for the fetcher: collects pages until the request is done or failed.
    def __init__(self) -> None:
        self.pages: list[HistoryPage] = []
        self.failed: HistoryFailed | None = None
        self.done = threading.Event()

    def submit_control(self, item) -> None:
        if isinstance(item, HistoryFailed):
            self.failed = item
            self.done.set()
        elif isinstance(item, HistoryPage):
            self.pages.append(item)
            if item.done:
                self.done.set()


def measure(label: str, market: str, files: tuple[str, ...], limit_per_min: int) -> dict:
    data = require_shared_data(HFT, "raw", market)
    ex = EmbeddedExchange(replay_files=[data / f for f in files], speed=0, history_weight_limit=limit_per_min).start()
    try:
        # A subscriber makes the session play; the REST history keeps every trade played.
        t0 = time.perf_counter()
        kick = websocket.create_connection(ex.ws_url + "?streams=btcusdt@trade", timeout=10)
        while not ex.finished.wait(0.05):
            try:
                kick.settimeout(0.05)
                kick.recv()
            except websocket.WebSocketTimeoutException:
                pass
        play_s = time.perf_counter() - t0
        kick.close()
        h = ex.history.symbols["btcusdt"]
        first_ms, last_ms = h.T[0], h.T[-1]
        trades = sum(l - f + 1 for f, l in zip(h.f, h.l))
        aggregates = len(h.T)
        before = dict(ex.history.stats)
        adapter = BinanceAdapter(market, rest_url=ex.rest_url)
        sink = _Pages()
        fetcher = HistoryFetcher(sink, adapter.history_url("aggTrades"), weight_budget=limit_per_min)
        # As the market state asks on the first live trade: every id before the session's
        # last one, back to its first trade.
        req = HistoryRequest("backfill", "BTCUSDT", None, h.l[-1], first_ms * _MS, last_ms * _MS + 1)
        t0 = time.perf_counter()
        fetcher.request(req)
        sink.done.wait(600)
        took_s = time.perf_counter() - t0
        fetcher.stop()
        if sink.failed is not None:
            raise SystemExit(f"{label}: backfill failed: {sink.failed.error}")
        rows = sum(len(p.rows) for p in sink.pages)
        return {
            "label": label, "span_h": (last_ms - first_ms) / 3_600_000, "trades": trades, "aggregates": aggregates,
            "rows": rows, "calls": sum(p.calls for p in sink.pages),
            "weight": ex.history.stats["weight"] - before["weight"], "took_s": took_s, "play_s": play_s,
            "limit": limit_per_min, "refused": ex.history.stats["refused"] - before["refused"],
        }
    finally:
        ex.stop()


def main() -> None:
    print(f"{'session':28} {'span':>7} {'trades':>8} {'aggs':>7} {'calls':>5} {'weight':>6} {'time':>6}"
          f" | per hour: {'calls':>5} {'weight':>7} {'min of limit':>12} {'seconds':>7} | backfill/play")
    for label, market, files, limit in SESSIONS:
        r = measure(label, market, files, limit)
        per_h = 1 / r["span_h"]
        assert r["rows"] == r["aggregates"], r  # every aggregate of the session came back once
        print(f"{r['label']:28} {r['span_h'] * 60:6.1f}m {r['trades']:8,} {r['aggregates']:7,} {r['calls']:5}"
              f" {r['weight']:6} {r['took_s']:5.2f}s | {'':10}{r['calls'] * per_h:5.0f} {r['weight'] * per_h:7.0f}"
              f" {r['weight'] * per_h / r['limit']:12.2f} {r['took_s'] * per_h:7.1f} | {r['took_s'] / r['play_s']:.2f}"
              + (f"  ({r['refused']} refused)" if r["refused"] else ""))
    print("per hour: scaled linearly from the recording's trade density (an hour as busy as the "
          "recording); 'min of limit': minutes of the market's per-minute weight limit one hour uses")


if __name__ == "__main__":
    main()
