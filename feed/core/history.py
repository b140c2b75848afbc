"""REST history in the pure core: backfill before the first live trade and trade-id gap
repair, from vendor aggregate trades, exact to the trade.

Rules
-----
* A Binance aggregate trade holds exchange trade ids ``f..l`` (one taker order's fills at
  one price and time). The ids a request wants are ``[lo_id, hi_id]`` (backfill: every id
  up to the one before the first live trade, at or after ``start_ns``). An aggregate wholly
  inside becomes one :class:`~feed.core.models.Trade` with ``count = l - f + 1`` and
  ``trade_id = l``. An aggregate that straddles the edge of the range (some of its fills
  were received live) contributes only its missing part: its size minus the sizes of its
  fills held in the tape, counted as the ids missing. So bars from live trades plus
  history equal the bars of the underlying trades: no hole, no double count.
* Rows outside the range, rows already applied for the request (a page fetched twice)
  and rows older than a backfill's ``start_ns`` are skipped.
* A tail request (every id after the newest held, asked when a replay source has played
  out) is a repair whose end is unknown: what it finds counts as ``repaired`` (a gap seen
  and repaired at once), and finding nothing is no failure.
* Progress and outcome per request are kept in :class:`HistoryLedger` for the page and
  ``/api/health``: ``backfilled`` (trades fetched at start), ``repaired`` (trades
  recovered in gaps and tails), calls and weight, and why a gap stays a gap.

Pure: no I/O, no clock (times come in the events).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from feed.core.events import HistoryFailed, HistoryPage, HistoryRequest
from feed.core.models import AggTrade, Trade, iso_ms

__all__ = ["RequestProgress", "HistoryLedger", "trades_from_aggregates", "MAX_REPAIR_IDS", "in_id_order",
           "not_held"]

#: A gap of more trade ids than this is not fetched (it would take thousands of calls).
MAX_REPAIR_IDS = 2_000_000
#: Finished repairs remembered per ledger for the page and health (oldest forgotten).
_KEPT = 200


@dataclass(slots=True)
class RequestProgress:
    """How one history request went.

    ``state`` is ``"fetching"``, ``"done"`` or ``"failed"``; ``trades`` counts exchange
    trades recovered (sum of ``count``); ``missing`` (repairs) the ids still missing;
    ``oldest_ns`` the oldest trade time applied (backfill progress); ``error`` why it
    failed or why ids stay missing.
    """

    request: HistoryRequest
    state: str = "fetching"
    pages: int = 0
    calls: int = 0
    rows: int = 0
    trades: int = 0
    missing: int = 0
    oldest_ns: int | None = None
    weight: int | None = None
    error: str = ""
    last_agg_ids: tuple[int, int] | None = None  # (min, max) aggregate id applied

    def as_json(self) -> dict:
        """Return the progress as plain JSON values (times ISO-8601)."""
        r = self.request
        out = {"kind": r.kind, "symbol": r.symbol, "state": self.state, "trades": self.trades,
               "pages": self.pages, "calls": self.calls, "weight": self.weight}
        if r.kind == "repair":
            out.update(from_id=r.lo_id, to_id=r.hi_id, missing=self.missing)
        elif r.kind == "tail":
            out.update(from_id=r.lo_id, since=iso_ms(r.start_ns))
        else:
            out.update(since=iso_ms(r.start_ns), oldest=iso_ms(self.oldest_ns) if self.oldest_ns else None)
        if self.error:
            out["error"] = self.error
        return out


def trades_from_aggregates(symbol: str, rows: tuple[AggTrade, ...], lo: int | None, hi: int,
                           start_ns: int | None, held_ids: Sequence[int], held_sizes: Sequence[float],
                           seen: tuple[int, int] | None, *,
                           held_counts: Sequence[int] | None = None) -> tuple[list[Trade], int]:
    """Return ``(trades, ids)``: the part of ``rows`` inside ids ``[lo, hi]`` as trades
    sorted by id, and how many exchange trade ids they hold.

    Parameters
    ----------
    rows : tuple of AggTrade
        One page, any order.
    lo : int or None
        First id wanted (None: no lower bound).
    hi : int
        Last id wanted.
    start_ns : int or None
        Rows older than this (UTC ns) are left out (backfill cut).
    held_ids, held_sizes : sequence (list or 1-d array)
        Trade ids (sorted) and sizes (base units) of the trades held, for straddling
        aggregates; the columns of ``TradeBuffer.snapshot().columns()`` serve as they are.
    seen : (int, int) or None
        Aggregate ids already applied for this request (inclusive), skipped.
    held_counts : sequence, optional
        Exchange trades each held trade holds (``count`` column; default 1 each).

    Notes
    -----
    A straddling aggregate whose other fills up to the newest held are not all held either
    (two gaps in one aggregate: a skipped id and a dropped connection) cannot say how its
    missing size splits between the requests: each gets a share by its count of missing
    ids, and the last one the rest. Every fill of an aggregate has its time, so the bar
    gets the whole size either way; counts are exact. Fills after the newest held are
    taken to come live with their own sizes.
    """
    out: list[Trade] = []
    total = 0
    for row in rows:
        if seen is not None and seen[0] <= row.agg_id <= seen[1]:
            continue
        if start_ns is not None and row.ts_ns < start_ns:
            continue
        a = row.first_id if lo is None else max(row.first_id, lo)
        b = min(row.last_id, hi)
        if a > b:
            continue
        n = b - a + 1
        size = row.size
        if n != row.last_id - row.first_id + 1:
            # Straddles the range: the fills outside it held are taken off; fills outside
            # it that are missing too (another gap) keep their share of what is left.
            i = bisect.bisect_left(held_ids, row.first_id)
            j = bisect.bisect_right(held_ids, row.last_id)
            held = held_n = 0
            for k in range(i, j):
                if not a <= held_ids[k] <= b:
                    held += float(held_sizes[k])
                    held_n += 1 if held_counts is None else int(held_counts[k])
            size = row.size - held
            if size <= row.size * 1e-12:
                continue  # every fill of it is held already
            # Missing outside the range: ids up to the newest held that are not held (ids
            # after it are still to come live, with their own sizes).
            top = min(row.last_id, int(held_ids[-1])) if len(held_ids) else row.first_id - 1
            elsewhere = (top - row.first_id + 1) - max(0, min(b, top) - a + 1) - held_n
            if elsewhere > 0:
                size *= n / (n + elsewhere)
        out.append(Trade(symbol, row.ts_ns, row.price, size, row.side, b, 0, True, n))
        total += n
    out.sort(key=lambda t: t.trade_id)
    return out, total


def in_id_order(trades: Sequence[Trade]) -> Sequence[Trade]:
    """Return ``trades`` (a vendor's with consecutive ids) in id order, each id once.

    The store keeps arrival order, and history put in place (backfill, gap repair) arrives
    after newer live trades; a trade stored twice (two runs fetching the same ids) must not
    count twice. Trades without an id keep their order (nothing to sort by).
    """
    ids = [t.trade_id for t in trades]
    if None in ids or all(a < b for a, b in zip(ids, ids[1:])):
        return trades
    out: list[Trade] = []
    last = None
    for t in sorted(trades, key=lambda t: t.trade_id):  # stable: the first stored copy wins
        if t.trade_id != last:
            out.append(t)
            last = t.trade_id
    return out


def not_held(new: list[Trade], held_ids) -> list[Trade]:
    """Return the trades of ``new`` whose ids are not among ``held_ids`` (a sorted int64
    array: the tape of a vendor with consecutive ids is kept in id order), in order."""
    if not new or not len(held_ids):
        return new
    ids = np.fromiter((t.trade_id for t in new), np.int64, len(new))
    pos = np.minimum(np.searchsorted(held_ids, ids), len(held_ids) - 1)
    dup = held_ids[pos] == ids
    return [t for t, d in zip(new, dup.tolist()) if not d] if dup.any() else new


@dataclass
class HistoryLedger:
    """Every history request's progress, and the counters ``backfilled`` / ``repaired``."""

    backfills: dict[str, RequestProgress] = field(default_factory=dict)
    repairs: list[RequestProgress] = field(default_factory=list)
    backfilled: int = 0
    repaired: int = 0
    calls: int = 0
    #: symbol -> {"backfilled", "repaired"}: the counters per symbol
    per_symbol: dict[str, dict[str, int]] = field(default_factory=dict)

    def open(self, request: HistoryRequest) -> RequestProgress:
        """Start tracking ``request``; return its progress."""
        # A tail's ids are unknown until fetched: none is missing until then.
        p = RequestProgress(request, missing=request.hi_id - request.lo_id + 1 if request.kind == "repair" else 0)
        if request.kind == "backfill":
            self.backfills[request.symbol] = p
        else:
            self.repairs.append(p)
            if len(self.repairs) > _KEPT:
                for i, old in enumerate(self.repairs):
                    if old.state != "fetching":
                        del self.repairs[i]
                        break
        return p

    def find(self, request: HistoryRequest) -> RequestProgress | None:
        """Return the progress of ``request`` (None if unknown: a symbol dropped meanwhile)."""
        if request.kind == "backfill":
            p = self.backfills.get(request.symbol)
            return p if p is not None and p.request == request else None
        for p in reversed(self.repairs):
            if p.request == request:
                return p
        return None

    def note_page(self, p: RequestProgress, page: HistoryPage, trades: list[Trade], ids: int) -> None:
        """Count one applied page."""
        p.pages += 1
        p.calls += page.calls
        self.calls += page.calls
        p.rows += len(page.rows)
        if page.weight is not None:
            p.weight = page.weight
        if page.rows:
            lo = min(r.agg_id for r in page.rows)
            hi = max(r.agg_id for r in page.rows)
            if p.last_agg_ids is not None:
                lo, hi = min(lo, p.last_agg_ids[0]), max(hi, p.last_agg_ids[1])
            p.last_agg_ids = (lo, hi)
        p.trades += ids
        if trades:
            oldest = trades[0].ts_ns
            p.oldest_ns = oldest if p.oldest_ns is None else min(p.oldest_ns, oldest)
        mine = self.per_symbol.setdefault(p.request.symbol, {"backfilled": 0, "repaired": 0})
        if p.request.kind == "backfill":
            self.backfilled += ids
            mine["backfilled"] += ids
        else:
            self.repaired += ids
            mine["repaired"] += ids
            p.missing = max(0, p.missing - ids)
        if page.done:
            p.state = "done"
            if p.request.kind == "repair" and p.missing:
                p.error = (f"the vendor's history did not hold {p.missing:,} of the "
                           f"{p.request.hi_id - p.request.lo_id + 1:,} missing ids")

    def note_failed(self, p: RequestProgress, item: HistoryFailed) -> None:
        """Record that ``p`` was given up."""
        p.state = "failed"
        p.error = item.error

    def unrepaired(self) -> list[dict]:
        """Return the repairs that left ids missing, with the reason, oldest first."""
        return [p.as_json() for p in self.repairs if p.state != "fetching" and p.missing]

    def as_json(self) -> dict:
        """Return the ledger for ``/api/health`` (``history``) and the status line:
        ``backfilled`` / ``repaired`` over every symbol and per symbol (``symbols``)."""
        return {
            "backfilled": self.backfilled, "repaired": self.repaired, "calls": self.calls,
            "symbols": {s: dict(v) for s, v in self.per_symbol.items()},
            "backfill": {s: p.as_json() for s, p in self.backfills.items()},
            "repairs_fetching": sum(1 for p in self.repairs if p.state == "fetching"),
            "unrepaired": self.unrepaired(),
        }
