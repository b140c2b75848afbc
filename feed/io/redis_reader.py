"""The Redis implementation of :class:`feed.io.bus.MarketReader`: a dashboard worker's
replica of what the collectors publish.

One thread per reader tails ``P:trades:S`` of every symbol any collector lists (``XREAD``
with one cursor per stream: the id of the last entry applied) into a
:class:`feed.core.replica.Replica`, whose tapes equal the collectors' and whose bar series
of any spec are built by the engine's own code. It also reads, every quarter second, the
heartbeats (``P:collectors``, ``P:collector:NAME``: status, health, which collector is
stale) and ``P:meta:S`` (gap marks, verification, decimals, symbol figures), and every
100 ms ``P:book:S``. Readers (Dash callbacks, ``/api/*``) take the lock for microseconds
and copy out; a new bar series is built outside it, as in the engine.

Every entry and key is hostile until checked: one that is too large
(``MAX_ENTRY_BYTES``), not JSON, or not what the layout says is counted by reason
(``health()["reader"]["bad_entries"]``) and skipped.

Closing time bars: while a stream is read behind its end (a reader started after the
collector, or catching up), bars close by the newest exchange time of the entries
applied; once at the end, by the collector's published clock (a wall-clock collector's
advanced by the time since its heartbeat was read; a replay collector's once it has
played out), so a backlog closes bars as the collector did.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any, Mapping

import orjson
import pandas as pd
import redis

from feed.core import olderbars
from feed.core.batch import bars_to_frame
from feed.core.collectors import Beat, health_body, market_of, merge_status, parse_beat, symbol_status
from feed.core.config import MarketConfig
from feed.core.health import Status, SymbolStatus
from feed.core.models import BarSpec, Trade
from feed.core.replica import Replica
from feed.core.views import BarSeries, DepthView
from feed.io.bus import (
    DEFAULT_PREFIX, MAX_ENTRY_BYTES, TRADES_APPENDED, TRADES_INSERTED, Keys, decode_trades, encode_command,
)

__all__ = ["RedisReader", "ReaderUnavailable", "READ_COUNT"]

log = logging.getLogger("tickscope.redis_reader")

#: Entries read per stream per XREAD (a bound on one lock hold).
READ_COUNT = 200
_BEATS_EVERY_S = 0.25
_BOOK_EVERY_S = 0.1
_BLOCK_MS = 100
_MAX_COLLECTORS = 256
_MAX_MARKS = 1000
_SUBSCRIBE_WAIT_S = 4.0
_NS = 1_000_000_000


class ReaderUnavailable(ConnectionError):
    """Redis cannot be reached (the message names the URL and the reason)."""


def _loads(raw: Any) -> Any:
    # A key's JSON, bounded; ValueError for anything else.
    if raw is None:
        return None
    if not isinstance(raw, (bytes, bytearray)) or len(raw) > MAX_ENTRY_BYTES:
        raise ValueError("value too large or not bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def _num(v: Any) -> float | None:
    return float(v) if type(v) in (int, float) and math.isfinite(v) else None


def _levels(rows: Any, levels: int) -> list[tuple[float, float]]:
    if not isinstance(rows, list):
        raise ValueError("book side is not a list")
    out = []
    for row in rows[:levels]:
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            raise ValueError("book level is not [price, size]")
        p, s = _num(row[0]), _num(row[1])
        if p is None or s is None:
            raise ValueError("book level is not numbers")
        out.append((p, s))
    return out


def _depth(symbol: str, body: Any, levels: int) -> DepthView:
    if not isinstance(body, dict):
        raise ValueError("book is not a JSON object")
    ts = body.get("ts_ns")
    return DepthView(
        symbol=symbol, ts_ns=ts if type(ts) is int else 0,
        bids=_levels(body.get("bids", []), levels), asks=_levels(body.get("asks", []), levels),
        best_bid=_num(body.get("best_bid")), best_ask=_num(body.get("best_ask")),
        mid=_num(body.get("mid")), spread=_num(body.get("spread")),
        synced=body.get("synced") is True and body.get("stale") is not True,
    )


def _gaps(body: Any) -> tuple[int, list[tuple[int, int]]]:
    gaps = body.get("gaps") if isinstance(body, dict) else None
    if not isinstance(gaps, dict):
        return 0, []
    total, marks = gaps.get("total"), gaps.get("marks")
    if type(total) is not int or total < 0 or not isinstance(marks, list):
        raise ValueError("gaps are not {total, marks}")
    marks = marks[-_MAX_MARKS:]
    out = []
    for m in marks:
        if not (isinstance(m, list) and len(m) == 2 and type(m[0]) is int and type(m[1]) is int):
            raise ValueError("a gap mark is not [ts_ns, missing]")
        out.append((m[0], m[1]))
    return max(total, len(out)), out


def _verify(body: Any) -> dict | None:
    report = body.get("verify") if isinstance(body, dict) else None
    if not isinstance(report, dict):
        return None
    verdicts = report.get("verdicts")
    if isinstance(verdicts, dict):  # JSON keys are text; the engine's are bar start ns
        fixed = {}
        for k, v in verdicts.items():
            try:
                fixed[int(k)] = str(v)
            except (TypeError, ValueError):
                continue
        report = {**report, "verdicts": fixed}
    return report


class _Symbol:
    # What the reader holds per symbol besides the replica's tape and bars.
    __slots__ = ("owner", "cursor", "caught_up", "gaps", "verify", "status", "book", "decimals")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.cursor = b"0-0"
        self.caught_up = False
        self.gaps: tuple[int, list[tuple[int, int]]] = (0, [])
        self.verify: dict | None = None
        self.status: SymbolStatus | None = None
        self.book: Any = None  # decoded JSON of P:book:S
        self.decimals: tuple[int, int] | None = None


class RedisReader:
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
        self.url = url
        self.keys = Keys(prefix)
        self._default_bar_options = dict(default_bar_options or {})
        self._redis = client if client is not None else redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=10)
        self._lock = threading.Lock()
        self._replica = Replica()
        self._held: dict[str, _Symbol] = {}  # symbol -> reader state, in display order
        self._beats: dict[str, tuple[Beat, bool, int]] = {}  # name -> (beat, alive, mono ns when read)
        self.bad_entries: Counter[str] = Counter()  # by reason: counted and skipped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_beats = 0.0
        self._next_book = 0.0
        self.read_errors = 0  # Redis calls that failed (connection lost, ...)

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

    def poll(self, block_ms: int = _BLOCK_MS) -> int:
        """Do one step of the thread: heartbeats and meta when due, the book when due, then
        one XREAD of every trade stream (blocking up to ``block_ms``); return entries read."""
        mono = time.monotonic()
        if mono >= self._next_beats:
            self._next_beats = mono + _BEATS_EVERY_S
            self._read_beats()
            self._read_meta()
        if mono >= self._next_book:
            self._next_book = mono + _BOOK_EVERY_S
            self._read_books()
        n = self._read_trades(block_ms)
        self._close_caught_up()
        return n

    # -- reading Redis (the thread) --------------------------------------------------------

    def _read_beats(self) -> None:
        names = sorted(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                       for n in self._redis.smembers(self.keys.collectors))[:_MAX_COLLECTORS]
        raws = self._redis.mget([self.keys.collector(n) for n in names]) if names else []
        now = time.monotonic_ns()
        beats: dict[str, tuple[Beat, bool, int]] = {}
        for name, raw in zip(names, raws):
            old = self._beats.get(name)
            if raw is None:
                if old is not None:
                    beats[name] = (old[0], False, old[2])
                continue
            try:
                beat = parse_beat(name, _loads(raw))
            except ValueError:
                self.bad_entries["bad_heartbeat"] += 1
                if old is not None:
                    beats[name] = (old[0], old[1], old[2])
                continue
            seen = old[2] if old is not None and old[0].beat_ns == beat.beat_ns else now
            beats[name] = (beat, True, seen)
        owners: dict[str, str] = {}
        for name, (beat, alive, _) in beats.items():  # a live owner wins over a stale one
            for s in beat.symbols:
                if s not in owners or (alive and not beats[owners[s]][1]):
                    owners[s] = name
        with self._lock:
            self._beats = beats
            for s in [s for s in self._held if s not in owners]:
                del self._held[s]
                self._replica.drop(s)
            for s, name in owners.items():
                cfg = market_of(beats[name][0], self._default_bar_options)
                if self._replica.hold(s, cfg) or s not in self._held:
                    self._held[s] = _Symbol(name)
                self._held[s].owner = name

    def _read_meta(self) -> None:
        symbols = list(self._held)
        if not symbols:
            return
        raws = self._redis.mget([self.keys.meta(s) for s in symbols])
        for s, raw in zip(symbols, raws):
            if raw is None:
                continue
            try:
                body = _loads(raw)
                gaps, verify = _gaps(body), _verify(body)
                status = symbol_status(body.get("symbol")) if isinstance(body, dict) else None
                dec = body.get("decimals") if isinstance(body, dict) else None
                decimals = None
                if isinstance(dec, dict) and type(dec.get("price")) is int and type(dec.get("size")) is int:
                    decimals = (dec["price"], dec["size"])
            except ValueError:
                self.bad_entries["bad_meta"] += 1
                continue
            with self._lock:
                held = self._held.get(s)
                if held is None:
                    continue
                held.gaps, held.verify, held.status = gaps, verify, status
                if decimals is not None and decimals != held.decimals:
                    held.decimals = decimals
                    self._replica.set_decimals(s, *decimals)

    def _read_books(self) -> None:
        symbols = list(self._held)
        if not symbols:
            return
        raws = self._redis.mget([self.keys.book(s) for s in symbols])
        for s, raw in zip(symbols, raws):
            try:
                body = _loads(raw)
            except ValueError:
                self.bad_entries["bad_book"] += 1
                continue
            held = self._held.get(s)
            if held is not None:
                held.book = body

    def _read_trades(self, block_ms: int) -> int:
        with self._lock:
            cursors = {self.keys.trades(s): h.cursor for s, h in self._held.items()}
        if not cursors:
            if block_ms:
                self._stop.wait(block_ms / 1000)
            return 0
        got = self._redis.xread(cursors, count=READ_COUNT, block=block_ms or None)
        n = 0
        plen = len(self.keys.prefix) + len(":trades:")
        for stream, entries in got or ():
            key = stream.decode("utf-8", "replace") if isinstance(stream, bytes) else str(stream)
            symbol = key[plen:]
            n += len(entries)
            with self._lock:
                held = self._held.get(symbol)
                if held is None:
                    continue
                for entry_id, fields in entries:
                    self._apply_entry(symbol, fields)
                    held.cursor = entry_id
                held.caught_up = len(entries) < READ_COUNT
        return n

    def _apply_entry(self, symbol: str, fields: Any) -> None:
        # One P:trades:S entry, under the lock; a bad one is counted and skipped.
        if not isinstance(fields, dict):
            self.bad_entries["bad_trade_entry"] += 1
            return
        kind, data = fields.get(b"k"), fields.get(b"d")
        if kind not in (TRADES_APPENDED, TRADES_INSERTED) or not isinstance(data, bytes):
            self.bad_entries["bad_trade_entry"] += 1
            return
        if len(data) > MAX_ENTRY_BYTES:
            self.bad_entries["oversize_entry"] += 1
            return
        try:
            trades = decode_trades(symbol, data)
        except ValueError:
            self.bad_entries["bad_trade_entry"] += 1
            return
        if not trades:
            return
        last = self._replica.last_ts(symbol) or 0
        clock = max(last, max(t.ts_ns for t in trades))
        if kind == TRADES_APPENDED:
            self._replica.append(symbol, trades, clock)
        else:
            try:
                self._replica.insert(symbol, trades, clock)
            except ValueError:
                self.bad_entries["bad_trade_entry"] += 1

    def _published_clock(self, owner: str) -> int | None:
        # The owner's clock to close caught-up symbols by, UTC ns; None: trades' own.
        got = self._beats.get(owner)
        if got is None:
            return None
        beat, alive, seen_ns = got
        kind = (beat.source or {}).get("kind")
        if kind == "replay" or (beat.market or {}).get("clock") == "exchange":
            return beat.clock_ns if beat.state == "replay-finished" else None
        if not alive:
            return beat.clock_ns
        return beat.clock_ns + max(0, time.monotonic_ns() - seen_ns)

    def _close_caught_up(self) -> None:
        with self._lock:
            for s, held in self._held.items():
                if held.caught_up:
                    clock = self._published_clock(held.owner)
                    if clock is not None:
                        self._replica.on_clock(s, clock)

    def _clock_of(self, symbol: str) -> int:
        # Under the lock: the clock a new series of ``symbol`` is closed by.
        held = self._held.get(symbol)
        last = self._replica.last_ts(symbol) or 0
        if held is None or not held.caught_up:
            return last
        return max(last, self._published_clock(held.owner) or 0)

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
        self._redis.xadd(self.keys.commands, encode_command("subscribe", symbol), maxlen=10_000, approximate=True)
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
                         maxlen=10_000, approximate=True)
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
        while True:
            with self._lock:
                series = self._replica.bar_series(symbol, spec, since)
                if series is not None:
                    return series
                seed = self._replica.seed(symbol, spec, self._clock_of(symbol))
            agg = self._replica.build(seed) if seed is not None else None
            with self._lock:
                if agg is not None and symbol in self._replica:
                    self._replica.install(seed, agg, self._clock_of(symbol))

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
        series = self.bar_series(symbol, spec)
        bars = series.closed + ([series.current] if series.current is not None else [])
        frame = bars_to_frame(bars)
        frame.attrs["price_decimals"] = series.price_decimals
        frame.attrs["size_decimals"] = series.size_decimals
        return frame

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
            view = _depth(symbol, body, max(1, int(levels)))
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
        if since < 0:
            raise ValueError(f"since must be >= 0, not {since}")
        with self._lock:
            held = self._held.get(symbol)
            total, marks = held.gaps if held is not None else (0, [])
        first = total - len(marks)
        return total, marks[max(since - first, 0):]

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
        progress = [p for p in (s.get("progress") for s in sources) if _num(p) is not None]
        src["progress"] = min(progress) if progress else None
        return src
