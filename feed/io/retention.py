"""Retention rules of the trade store: which stored batches a pass deletes, in what order.

The store (``feed.io.store.TradeStore.prune``) runs these inside one transaction, handing
in how to read a batch's figures and how to delete one; the rules only walk the manifest
entries (``{"first", "next", "count", "bytes"}`` per symbol, updated in place). Batches go
whole, from the front of a symbol (its oldest, in arrival order).

* By age: a symbol's batches are deleted up to its last batch whose newest trade is older
  than the cutoff and that comes before any batch at or after it. The cutoff is measured
  from the wall clock by the caller, so one trade stamped in the future keeps only its own
  batch, never makes real trades look old.
* By size: the batch holding the oldest first trade goes next, across symbols, until the
  total is within the limit. An unreadable batch counts as oldest: it holds no trade that
  can be read, so it is the first to go when space is short.
* An unreadable or missing batch has no age of its own: by age it goes only together with
  a readable older batch after it.
* Its trade count is unknown, so after one is deleted the symbol's ``count`` and ``bytes``
  are recounted from the batches left (a read of each; rare, as damage is).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BatchInfo", "prune_by_age", "prune_by_bytes"]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A stored batch's figures: ``size`` in bytes, ``count`` trades, ``lo``/``hi`` its
    oldest and newest exchange time (UTC ns); ``readable`` False for a damaged batch (whose
    count and times are unknown, given as 0)."""

    size: int
    count: int
    lo: int
    hi: int
    readable: bool = True


#: ``info_of(symbol, seq)``: the batch's figures, None when it is missing.
InfoOf = Callable[[str, int], "BatchInfo | None"]
#: ``drop(symbol, seq)``: delete the batch.
Drop = Callable[[str, int], None]

_OLDEST = -(1 << 63)  # sort key of an unreadable batch


def prune_by_age(entries: dict[str, dict], info_of: InfoOf, drop: Drop, cutoff_ns: int) -> int:
    """Delete batches whose newest trade is older than ``cutoff_ns`` (UTC ns).

    Returns
    -------
    int
        Trades deleted (unreadable batches count none).
    """
    removed = 0
    for symbol, entry in entries.items():
        infos: list[BatchInfo | None] = []
        upto = entry["first"]  # batches first <= seq < upto go
        for seq in range(entry["first"], entry["next"]):
            info = info_of(symbol, seq)
            infos.append(info)
            if info is None or not info.readable:
                continue
            if info.hi >= cutoff_ns:
                break
            upto = seq + 1
        dropped = infos[: upto - entry["first"]]
        for info in dropped:
            removed += _drop_front(symbol, entry, info, drop)
        if any(info is None or not info.readable for info in dropped):
            _recount(symbol, entry, info_of)
    return removed


def prune_by_bytes(entries: dict[str, dict], info_of: InfoOf, drop: Drop, max_bytes: int) -> int:
    """Delete the oldest batches across symbols until they total at most ``max_bytes``.

    Returns
    -------
    int
        Trades deleted (unreadable batches count none).
    """
    removed = 0
    total = sum(e["bytes"] for e in entries.values())
    fronts: list[tuple[int, str, int, BatchInfo]] = []  # (first trade time, symbol, seq, info)
    for symbol, entry in entries.items():
        _push_front(fronts, symbol, entry, info_of)
    while total > max_bytes and fronts:
        _, symbol, _, info = heapq.heappop(fronts)
        entry = entries[symbol]
        before = entry["bytes"]
        removed += _drop_front(symbol, entry, info, drop)
        if not info.readable:
            _recount(symbol, entry, info_of)
        total -= before - entry["bytes"]
        _push_front(fronts, symbol, entry, info_of)
    return removed


def _drop_front(symbol: str, entry: dict, info: BatchInfo | None, drop: Drop) -> int:
    # Delete the oldest batch of a symbol and update its manifest entry.
    drop(symbol, entry["first"])
    entry["first"] += 1
    n = info.count if info is not None else 0
    entry["count"] = max(0, entry["count"] - n)
    entry["bytes"] = max(0, entry["bytes"] - (info.size if info is not None else 0))
    if entry["first"] >= entry["next"]:
        entry["count"] = entry["bytes"] = 0
    return n


def _recount(symbol: str, entry: dict, info_of: InfoOf) -> None:
    # The count and bytes of what is left, after a batch of unknown count went.
    infos = [info_of(symbol, seq) for seq in range(entry["first"], entry["next"])]
    entry["count"] = sum(i.count for i in infos if i is not None)
    entry["bytes"] = sum(i.size for i in infos if i is not None)


def _push_front(heap: list, symbol: str, entry: dict, info_of: InfoOf) -> None:
    # Push the symbol's oldest present batch; missing ones in front are skipped over.
    while entry["first"] < entry["next"]:
        info = info_of(symbol, entry["first"])
        if info is None:
            entry["first"] += 1
            continue
        heapq.heappush(heap, (info.lo if info.readable else _OLDEST, symbol, entry["first"], info))
        return
