"""Garbage-collector settings for a long-running ingest process.

CPython's cyclic collector runs a young-generation pass every 700 net allocations and,
now and then, a full pass over every tracked object. An ingest process allocates a few
objects per message (frame bytes, decoded dict, event) that die young and form no cycles,
and holds a large, stable heap (modules, the Dash app, restored history): the default
thresholds make it pay many small passes and, worse, full passes that walk that whole
heap while the feed waits -- the p99 latency at 10,000 trades/s was mostly such pauses.

:func:`settle` (called once start-up is done) collects what start-up left, moves every
surviving object into the permanent generation (``gc.freeze``: never scanned again) and
raises the young threshold so passes are rarer but each stays short. Reference counting
still frees almost everything at once; only reference cycles wait for a pass.
"""

from __future__ import annotations

import gc

__all__ = ["settle", "THRESHOLDS"]

#: (young, middle, old) thresholds: a young pass every 50,000 net allocations (a few ms
#: of messages) and older passes at CPython's usual ratios.
THRESHOLDS = (50_000, 20, 10)


def settle() -> None:
    """Collect, freeze the start-up heap and set :data:`THRESHOLDS` (process-wide)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
