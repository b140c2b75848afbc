"""The reading side of :class:`feed.io.redis_reader.RedisReader`: one step of its thread
(:meth:`ReplicaTail.poll`) and the checks every Redis value goes through.

A step reads, when due, the heartbeats (``P:collectors``, ``P:collector:NAME``: every
quarter second) and ``P:meta:S`` (gap marks, verification, decimals, symbol figures), the
books (``P:book:S``, every 100 ms), then one ``XREAD`` of every ``P:trades:S`` from its
cursor (the id of the last entry applied), applied to the
:class:`feed.core.replica.Replica` under the lock.

Every entry and key is hostile until checked: one that is too large
(``MAX_ENTRY_BYTES``), not JSON, or not what the layout says is counted by reason
(``bad_entries``) and skipped.

Closing time bars: while a stream is read behind its end (a reader started after the
collector, or catching up), bars close by the newest exchange time of the entries
applied; once at the end, by the collector's published clock (a wall-clock collector's
advanced by the time since its heartbeat was read; a replay collector's once it has
played out), so a backlog closes bars as the collector did.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any, Mapping

import orjson
import redis

from feed.core.collectors import Beat, market_of, parse_beat, symbol_status
from feed.core.health import SymbolStatus
from feed.core.replica import Replica
from feed.core.views import DepthView
from feed.io.bus import DEFAULT_PREFIX, MAX_ENTRY_BYTES, TRADES_APPENDED, TRADES_INSERTED, Keys, decode_trades

__all__ = ["ReplicaTail", "READ_COUNT", "decode_depth_value"]

#: Entries read per stream per XREAD (a bound on one lock hold).
READ_COUNT = 200
_BEATS_EVERY_S = 0.25
_BOOK_EVERY_S = 0.1
_BLOCK_MS = 100
_MAX_COLLECTORS = 256
_MAX_MARKS = 1000


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


def decode_depth_value(symbol: str, body: Any, levels: int) -> DepthView:
    """Return the top ``levels`` of a decoded ``P:book:S`` value as a DepthView (not
    synced when the collector marked it ``stale``).

    Raises
    ------
    ValueError
        If ``body`` is not such a value.
    """
    return _depth(symbol, body, levels)


class ReplicaTail:
    """A replica of the collectors' market state and the step that keeps it up to date
    (see the module docstring); :class:`feed.io.redis_reader.RedisReader` runs the step
    on a thread and reads the replica.

    Parameters are those of ``RedisReader``.
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
