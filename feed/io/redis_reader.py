"""The Redis implementation of :class:`feed.io.bus.MarketReader`: a dashboard worker's
replica of what the collectors publish.

One thread per reader runs :meth:`feed.io.redis_tail.ReplicaTail.poll` in a loop: it tails
``P:trades:S`` of every symbol any collector lists (``XREAD`` with one cursor per stream:
the id of the last entry applied) into a :class:`feed.core.replica.Replica`, whose tapes
equal the collectors' and whose bar series of any spec are built by the engine's own code,
and reads the heartbeats, ``P:meta:S`` and ``P:book:S`` (``feed.io.redis_tail`` says how
often, how each value is checked, and how time bars are closed). Readers (Dash callbacks,
``/api/*``) take the lock for microseconds and copy out; a new bar series is built outside
it, as in the engine. A Redis lost while running is retried every second; the replica
keeps what it holds meanwhile.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from types import SimpleNamespace
from typing import Any, Mapping

import pandas as pd
import redis

from feed.core import olderbars
from feed.core.batch import series_frame
from feed.core.collectors import Beat, health_body, merge_status
from feed.core.config import MarketConfig
from feed.core.health import Status
from feed.core.models import BarSpec, Trade
from feed.core.seriesbuild import series_or_build
from feed.core.symbol import marks_since
from feed.core.views import BarSeries, DepthView
from feed.io.bus import DEFAULT_PREFIX, encode_command
from feed.io.redis_tail import READ_COUNT, ReplicaTail, decode_depth_value

__all__ = ["RedisReader", "ReaderUnavailable", "READ_COUNT"]  # READ_COUNT: from feed.io.redis_tail

log = logging.getLogger("tickscope.redis_reader")

_SUBSCRIBE_WAIT_S = 4.0
#: Entries ``P:commands`` keeps (``MAXLEN ~``): commands are read as they come.
_COMMANDS_KEPT = 1000


class ReaderUnavailable(ConnectionError):
    """Redis cannot be reached (the message names the URL and the reason)."""


class RedisReader(ReplicaTail):
    """Market state read from Redis: a replica kept by one thread (see the module docstring).

    Parameters
    ----------
    url : str
        ``redis://HOST:PORT/DB``.
    prefix : str, default ``feed.io.bus.DEFAULT_PREFIX``
        Key prefix the collectors write under.
    default_bar_options : mapping, optional
        Bar rules of a collector that does not publish its own (``tickscope``'s defaults,
        ``dashboard.runconfig.RunConfig.bar_options``, are the usual choice).
    client : redis.Redis, optional
        A client to use instead of one made from ``url`` (tests).

    Notes
    -----
    Call :meth:`start` in the process that serves (after a fork, never before: a Redis
    connection and a thread do not survive one).
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *,
                 default_bar_options: Mapping[str, Any] | None = None, client: Any = None) -> None:
        super().__init__(url, prefix, default_bar_options=default_bar_options, client=client)

    # -- life cycle ------------------------------------------------------------------------

    def check(self) -> None:
        """Ping Redis once.

        Raises
        ------
        ReaderUnavailable
            With a message naming the URL and why, when it cannot be reached.
        """
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as exc:
            raise ReaderUnavailable(f"cannot reach Redis at {self.url}: {exc}") from None

    def start(self) -> "RedisReader":
        """Check Redis, read it once, and start the tailing thread; return self.

        Raises
        ------
        ReaderUnavailable
            When Redis cannot be reached.
        """
        self.check()
        if self._thread is None:
            self.poll(block_ms=0)
            self._thread = threading.Thread(target=self._run, name="tickscope-redis-reader", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the tailing thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except (redis.RedisError, OSError) as exc:
                self.read_errors += 1
                log.warning("reading Redis at %s failed (%s); retrying", self.url, exc)
                self._stop.wait(1.0)
            except Exception:  # a bug must not stop the page from updating
                self.read_errors += 1
                log.exception("redis reader step failed")
                self._stop.wait(1.0)

    # -- MarketReader ------------------------------------------------------------------------

    @property
    def default_spec(self) -> str:
        """The first collector's default bar spec (``"1m"`` before any heartbeat)."""
        with self._lock:
            for beat, _, _ in self._beats.values():
                return beat.default_spec
        return "1m"

    @property
    def config(self) -> SimpleNamespace:
        """``config.market``: the first symbol's collector's market config (its
        ``bar_options`` and ``max_trades`` are read by the order-flow views), else the
        defaults."""
        with self._lock:
            for s in self._held:
                return SimpleNamespace(market=self._replica.config(s))
        return SimpleNamespace(market=MarketConfig(bar_options=self._default_bar_options))

    def symbols(self) -> list[str]:
        """Return the symbols the collectors list (a stale collector's too), in
        collector-name order."""
        with self._lock:
            return list(self._held)

    def clock_ns(self) -> int:
        """Return the newest collector clock, UTC ns (0 before any heartbeat)."""
        with self._lock:
            clocks = [self._published_clock(n) or b.clock_ns for n, (b, _, _) in self._beats.items()]
        return max(clocks, default=0)

    def normalize_symbol(self, text: str) -> str:
        """Return a symbol as held when ``text`` names one (case and ``/`` aside), else
        ``text`` upper-cased without ``/`` (the collector's adapter checks it).

        Raises
        ------
        ValueError
            For empty text, more than 32 characters or characters no vendor uses.
        """
        t = str(text).strip()
        flat = t.upper().replace("/", "")
        if not flat or len(flat) > 32 or not all(c.isalnum() or c in "._$:-" for c in flat):
            raise ValueError(f"{t[:40]!r} is not a symbol (letters, digits and . _ $ : - only)")
        for s in self.symbols():
            if s.upper().replace("/", "") == flat:
                return s
        return flat

    def subscribe(self, text: str) -> str:
        """Ask the collectors to subscribe a symbol (``P:commands``); return it once a
        collector lists it.

        Raises
        ------
        ValueError
            For a malformed symbol, or when no collector took it within a few seconds
            (none runs, or none's vendor lists it).
        """
        symbol = self.normalize_symbol(text)
        if symbol in self.symbols():
            return symbol
        self._redis.xadd(self.keys.commands, encode_command("subscribe", symbol), maxlen=_COMMANDS_KEPT, approximate=True)
        deadline = time.monotonic() + _SUBSCRIBE_WAIT_S
        while time.monotonic() < deadline:
            if self._thread is None:
                self.poll(block_ms=0)
                self._next_beats = 0.0
            if symbol in self.symbols():
                return symbol
            time.sleep(0.05)
        raise ValueError(f"no collector took {symbol} within {_SUBSCRIBE_WAIT_S:.0f} s: is a collector "
                         "running whose vendor lists it?")

    def unsubscribe(self, symbol: str) -> None:
        """Ask the symbol's collector to unsubscribe it (``P:commands``); the symbol goes
        when its collector no longer lists it."""
        with self._lock:
            held = self._held.get(symbol)
            owner = held.owner if held is not None else ""
        self._redis.xadd(self.keys.commands, encode_command("unsubscribe", symbol, owner),
                         maxlen=_COMMANDS_KEPT, approximate=True)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and symbol in self.symbols():
            time.sleep(0.05)

    def bar_series(self, symbol: str, spec: BarSpec | str, since: int = 0) -> BarSeries:
        """As ``Engine.bar_series``: a new spec's series is built from the tape outside
        the lock and swapped in.

        Raises
        ------
        KeyError
            If ``symbol`` is not held. ValueError: a bad spec, or one too fine for the tape.
        """
        spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
        return series_or_build(self._lock, self._replica, symbol, spec, since, lambda: self._clock_of(symbol))

    def older_bars(self, symbol: str, spec: BarSpec | str, before_ns: int, limit: int = 500) -> pd.DataFrame:
        """As ``Engine.older_bars``, from the tape held (Redis keeps no older trades).

        Raises
        ------
        KeyError
            If ``symbol`` is not held. ValueError: not a time bar spec.
        """
        spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
        with self._lock:
            view = self._replica.trade_view(symbol)
            cfg = self._replica.config(symbol)
        return olderbars.older_bars(olderbars.trade_frame(view.columns()), None, spec, int(before_ns), limit,
                                    options=cfg.bar_options, max_trades=2 * cfg.max_trades)

    def bars_frame(self, symbol: str, spec: BarSpec | str) -> pd.DataFrame:
        """As ``Engine.bars_frame`` (columns ``BAR_COLUMNS``, decimals in ``attrs``)."""
        return series_frame(self.bar_series(symbol, spec))

    def vendor_candles(self, symbol: str) -> list:
        """The vendor's own candles are not published: always []."""
        return []

    def verify(self, symbol: str) -> dict | None:
        """Return the collector's verification report of ``symbol`` (``P:meta:S``), or None.

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        with self._lock:
            return self._held[symbol].verify

    def depth(self, symbol: str, levels: int = 50) -> DepthView | None:
        """Return the top ``levels`` of ``symbol``'s book as published (``P:book:S``),
        not synced while its collector is stale; None if not held."""
        with self._lock:
            held = self._held.get(symbol)
            if held is None:
                return None
            body = held.book
            alive = self._beats.get(held.owner, (None, False, 0))[1]
        empty = DepthView(symbol, 0, [], [], None, None, None, None, False)
        if body is None:
            return empty
        try:
            view = decode_depth_value(symbol, body, max(1, int(levels)))
        except ValueError:
            self.bad_entries["bad_book"] += 1
            return empty
        if not alive:
            view = DepthView(view.symbol, view.ts_ns, view.bids, view.asks, view.best_bid, view.best_ask,
                             view.mid, view.spread, False)
        return view

    def trades(self, symbol: str, limit: int = 100) -> list[Trade]:
        """Return the last ``limit`` trades of ``symbol`` (oldest first; [] if not held)."""
        with self._lock:
            return self._replica.trades(symbol, limit)

    def gap_marks_since(self, symbol: str, since: int = 0) -> tuple[int, list[tuple[int, int]]]:
        """As ``Engine.gap_marks_since``, from ``P:meta:S``.

        Raises
        ------
        ValueError
            If ``since`` is negative.
        """
        with self._lock:
            held = self._held.get(symbol)
            total, marks = held.gaps if held is not None else (0, [])
        return marks_since(total, marks, since)

    def _beats_list(self) -> list[tuple[Beat, bool]]:
        return [(b, alive) for b, alive, _ in self._beats.values()]

    def status(self) -> Status:
        """Return the merged status of every collector (``feed.core.collectors.merge_status``):
        a collector whose heartbeat expired makes it ``stale``, naming it and its symbols."""
        clock = self.clock_ns()
        with self._lock:
            beats = self._beats_list()
            symbols = list(self._held)
            meta = {s: h.status for s, h in self._held.items() if h.status is not None}
        return merge_status(beats, symbols, symbol_meta=meta, clock_ns=clock, now_ns=time.time_ns())

    def symbol_state(self, symbol: str | None, status: Status) -> str:
        """Return the feed state of ``symbol``'s collector (``stale`` while its heartbeat is
        missing), or ``status.state`` for a symbol not held: the chart and book of a symbol
        whose collector is alive are not marked stale because another collector is."""
        with self._lock:
            held = self._held.get(symbol or "")
            got = self._beats.get(held.owner) if held is not None else None
        if got is None:
            return status.state
        beat, alive, _ = got
        return beat.state if alive else "stale"

    def health(self) -> dict:
        """Return ``/api/health``: the merged status's JSON, ``collectors`` (``{NAME:
        {"alive", "symbols", "counters", "last_beat", ...}}``), each symbol's ``collector``
        and ``stale``, and ``reader`` (this worker's replica: its pid, trades held per
        symbol, duplicates skipped, entries skipped as bad, read errors)."""
        status = self.status()
        with self._lock:
            beats = self._beats_list()
            owners = {s: h.owner for s, h in self._held.items()}
            held = {s: self._replica.n_trades(s) for s in self._held}
            duplicates = self._replica.duplicates()
        body = health_body(status, beats, owners)
        body["reader"] = {"pid": os.getpid(), "trades_held": held, "duplicates_skipped": duplicates,
                          "bad_entries": dict(self.bad_entries), "read_errors": self.read_errors}
        return body

    def source_info(self) -> dict | None:
        """Return the status line's source badge (``dashboard.sourcebadge.source_info``
        shape) of the collectors: the first one's, or None before any heartbeat."""
        with self._lock:
            sources = [b.source for b, _, _ in self._beats.values() if b.source]
        if not sources:
            return None
        src = dict(sources[0])
        labels = list(dict.fromkeys(str(s.get("label", "")) for s in sources if s.get("label")))
        src["label"] = " + ".join(labels)[:80]
        if src.get("kind") not in ("simulated", "replay", "live"):
            src["kind"] = "live"
        progress = [p for p in (s.get("progress") for s in sources)
                    if type(p) in (int, float) and math.isfinite(p)]
        src["progress"] = min(progress) if progress else None
        return src
