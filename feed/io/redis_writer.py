"""The collector's side of the Redis boundary: publish each engine cycle to Redis.

:class:`RedisPublisher` is fed by the engine worker (:meth:`RedisPublisher.on_cycle`, an
O(1) enqueue that never blocks) and drains on a thread of its own: each pass writes every
cycle queued meanwhile with ONE pipeline (``transaction=False``): the trades of
``P:trades:S``, the closed bars of the default spec, the forming bar, the book (at most
every 100 ms, when it changed), the meta (at most every 250 ms, when it changed; its
verification report, built under the engine lock, at most every 2 s) and, once a second, the heartbeat and the renewal of the symbols' owner keys (key layout:
:mod:`feed.io.bus`).

Redis down or slow: the pass fails, is counted and retried with back-off (0.1 s doubling to
2 s) with the same cycles plus those queued meanwhile; the engine goes on. When more than
``queue_trades`` trades wait, new cycles are dropped and counted: the collector's health turns
``degraded`` and says readers may be missing trades. A Redis that restarted empty gets
what is published from then on (streams restart; readers skip trades they hold).

Symbol ownership and the command stream (``P:commands``) are in
:mod:`feed.io.redis_commands`.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from typing import Any, Callable

import orjson

from feed.io.bus import (
    HEARTBEAT_S, HEARTBEAT_TTL_S, TRADES_APPENDED, TRADES_INSERTED, Keys, encode_bar, encode_depth,
    encode_trades,
)
from feed.io.redis_commands import BACKOFF_MAX_S, OWNER_TTL_MS, RELEASE_SCRIPT, RENEW_SCRIPT, release_symbol

__all__ = ["RedisPublisher", "DEFAULT_RETENTION_S", "BOOK_EVERY_S", "META_EVERY_S", "VERIFY_EVERY_S",
           "MAX_ENTRY_TRADES"]

log = logging.getLogger("tickscope.redis")

#: Default retention of the trade and bar streams, seconds of wall time (``MINID ~``).
DEFAULT_RETENTION_S = 24 * 3600.0
#: The book is written at most this often, seconds.
BOOK_EVERY_S = 0.1
#: The meta key is written at most this often, seconds.
META_EVERY_S = 0.25
#: The verification report in the meta is rebuilt at most this often per symbol, seconds:
#: it reads every 1m bar held under the engine lock.
VERIFY_EVERY_S = 2.0
#: ``MarketConfig`` fields published in the heartbeat's ``market`` object.
MARKET_FIELDS = ("clock", "default_spec", "max_trades", "max_bars", "close_grace_s", "max_series",
                 "max_rebuild_bars")
#: ``P:commands`` is trimmed to about this many entries by every heartbeat.
COMMANDS_KEPT = 1000


class _BarCursor:
    # What of one symbol's default-spec series was published: closed bars up to index
    # ``n`` of generation ``gen``, and a digest of each bar's row by start, so that after
    # a new generation (a late trade revised a bar, history rebuilt the series) exactly
    # the bars that changed are published again.
    __slots__ = ("gen", "n", "rows")

    def __init__(self) -> None:
        self.gen = None
        self.n = 0
        self.rows: dict[int, int] = {}


class RedisPublisher:
    """Publishes one engine's cycles to Redis (see the module docstring).

    Parameters
    ----------
    engine : feed.io.engine.Engine
        The engine whose cycles come in through :meth:`on_cycle`; its readers
        (``bar_series``, ``depth``, ``health``, ...) are called from the publisher thread.
    client : redis.Redis
        A client of the target Redis (``decode_responses`` off).
    name : str
        This collector's name (``P:collector:NAME``, ``P:owner:S`` values).
    keys : Keys
        The key layout under the chosen prefix.
    retention_s : float
        Stream entries older than this (wall time) are trimmed (``MINID ~``); 0: no trim.
    queue_trades : int
        Trades that may wait for Redis (queued or being retried); the cycles beyond are
        dropped and counted.
    info : dict, optional
        Extra heartbeat fields (``vendor``, ``source``); ``source["progress"]`` may be a
        callable returning the replay's progress (0..1).
    """

    def __init__(self, engine: Any, client: Any, name: str, keys: Keys, *,
                 retention_s: float = DEFAULT_RETENTION_S, queue_trades: int = 1_000_000,
                 info: dict | None = None) -> None:
        self.engine = engine
        self.client = client
        self.name = name
        self.keys = keys
        self.retention_ms = int(retention_s * 1000)
        self.info = dict(info or {})
        self.spec = str(engine.default_spec)
        self.queue_trades = queue_trades
        # Trades queued by the engine worker and written by the publisher thread: each
        # counter has one writer, so their difference is exact.
        self._in_trades = 0
        self._out_trades = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []  # cycles taken off the queue, not yet written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bars: dict[str, _BarCursor] = {}
        self._book_sent: dict[str, bytes] = {}
        self._meta_sent: dict[str, bytes] = {}
        self._verify: dict[str, tuple[float, dict | None]] = {}  # symbol -> (monotonic s built, report)
        self._decimals: dict[str, tuple[int, int]] = {}
        self._forming_sent: dict[str, bytes | None] = {}
        self._owned: set[str] = set()  # symbols whose owner key the last beat renewed
        #: The command consumer whose figures the heartbeat carries (set by the collector).
        self.commands: Any = None
        self._book_at = self._meta_at = self._beat_at = 0.0
        self._renew = client.register_script(RENEW_SCRIPT)
        self.host = socket.gethostname()
        # Counters (written by the publisher thread, except dropped_* by the engine worker).
        self.dropped_cycles = 0
        self.dropped_trades = 0
        self.errors = 0
        self.last_error: str | None = None
        self.entries = 0
        self.trades_published = 0
        self.passes = 0
        self.lost_symbols: dict[str, str] = {}  # symbol -> the collector that took it
        self._last_drop_at: float | None = None
        self._connected = True

    # -- the engine worker's side: O(1), never blocks -------------------------------------

    def on_cycle(self, fx: Any) -> None:
        """Queue one engine cycle's trades (``fx.persist``, ``fx.inserted``) for Redis;
        counted as dropped when ``queue_trades`` trades wait already."""
        persist = fx.persist
        inserted = getattr(fx, "inserted", None)
        if not persist and not inserted:
            return
        n = len(persist) + len(inserted or ())
        if self._in_trades - self._out_trades + n > self.queue_trades:
            self.dropped_cycles += 1
            self.dropped_trades += n
            self._last_drop_at = time.monotonic()
            return
        self._in_trades += n
        # The lists are the cycle's own (a new Effects per apply): queued as they are.
        self._queue.put((persist, inserted or ()))

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> "RedisPublisher":
        """Start the publisher thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tickscope-redis", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0, *, release: bool = True) -> None:
        """Write what is queued (one last pass, if Redis answers), remove the heartbeat
        and, with ``release``, the owner keys still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self._pass(force=True)
        except Exception as exc:
            log.warning("last Redis write failed: %s", exc)
        if release:
            try:
                for s in self.engine.symbols():
                    release_symbol(self.client, self.keys, s, self.name)
                self.client.delete(self.keys.collector(self.name))
                # A clean stop leaves the deployment: readers stop listing it as stale.
                self.client.srem(self.keys.collectors, self.name)
            except Exception as exc:
                log.warning("could not release the owner keys: %s", exc)

    def wait_published(self, timeout: float = 10.0) -> bool:
        """Block until every queued cycle is written; False on timeout (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and not self._pending:
                time.sleep(0.15)  # one more pass: bars closed by the last cycle
                if self._queue.empty() and not self._pending:
                    return True
            time.sleep(0.01)
        return False

    # -- health -----------------------------------------------------------------------------

    def degraded(self) -> bool:
        """True while cycles were dropped within the last minute, or Redis cannot be written."""
        at = self._last_drop_at
        return (at is not None and time.monotonic() - at < 60.0) or not self._connected

    def stats(self) -> dict:
        """Return the publisher's figures (the ``redis`` object of the collector's health):
        ``{"connected", "queued_trades", "dropped_cycles", "dropped_trades", "errors",
        "last_error", "entries", "trades", "degraded", "lost_symbols"}``."""
        return {
            "connected": self._connected, "queued_trades": self._in_trades - self._out_trades,
            "dropped_cycles": self.dropped_cycles, "dropped_trades": self.dropped_trades,
            "errors": self.errors, "last_error": self.last_error, "entries": self.entries,
            "trades": self.trades_published, "degraded": self.degraded(),
            "lost_symbols": dict(self.lost_symbols),
        }

    def annotate(self, body: dict) -> None:
        """Add the publisher's figures to an engine health body (``body["redis"]``); while
        degraded, turn an ``ok`` status ``degraded`` and say why in ``reasons``."""
        st = self.stats()
        body["redis"] = st
        if not st["degraded"]:
            return
        if body.get("status") == "ok":
            body["status"] = "degraded"
        why = (f"Redis: {self.dropped_trades:,} trades dropped (publisher queue full): "
               "readers may be missing trades") if self.dropped_cycles else ""
        if not self._connected:
            why = (why + "; " if why else "") + f"Redis: cannot write ({self.last_error})"
        body.setdefault("reasons", []).append(why)

    # -- the publisher thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=BOOK_EVERY_S)
                self._pending.append(first)
            except queue.Empty:
                pass
            try:
                self._pass()
            except Exception as exc:  # Redis down or slow; a bug: logged the same way
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self._connected:
                    log.warning("cannot write to Redis (%s); retrying with back-off", self.last_error)
                self._connected = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if not self._connected:
                log.info("writing to Redis again")
            self._connected = True
            backoff = 0.1

    def _drain(self) -> None:
        pending = self._pending
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _pass(self, force: bool = False) -> None:
        # One pipeline: the queued cycles' trades, bars, book, meta, heartbeat.
        self._drain()
        pending = self._pending
        mono = time.monotonic()
        pipe = self.client.pipeline(transaction=False)
        trim = self._trim_args()
        n_entries = n_trades = 0
        for symbol, kind, trades in _runs(pending):
            pipe.xadd(self.keys.trades(symbol), {"k": kind, "d": encode_trades(trades)}, **trim)
            n_entries += 1
            n_trades += len(trades)
        symbols = self.engine.symbols()
        for gone in self._bars.keys() - set(symbols):
            del self._bars[gone]
        for gone in self._verify.keys() - set(symbols):
            del self._verify[gone]
        bar_commits = [self._bars_step(pipe, s, trim) for s in symbols]
        book_commits = meta_commits = ()
        if force or mono - self._book_at >= BOOK_EVERY_S:
            book_commits = [c for s in symbols if (c := self._book_step(pipe, s)) is not None]
        if force or mono - self._meta_at >= META_EVERY_S:
            status = self.engine.status()
            meta_commits = [c for s in symbols if (c := self._meta_step(pipe, s, status, mono, force)) is not None]
        beat = force or mono - self._beat_at >= HEARTBEAT_S
        if beat:
            self._beat(pipe, symbols)
        if not len(pipe):
            return
        results = pipe.execute(raise_on_error=False)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed and len(failed) == len(results):
            raise failed[0]
        # Commit what was written.
        self._pending = []
        self.entries += n_entries
        self.trades_published += n_trades
        self._out_trades += n_trades
        self.passes += 1
        for commit in (*bar_commits, *book_commits, *meta_commits):
            if commit is not None:
                commit()
        if book_commits or force or mono - self._book_at >= BOOK_EVERY_S:
            self._book_at = mono
        if meta_commits or force or mono - self._meta_at >= META_EVERY_S:
            self._meta_at = mono
        if beat:
            self._beat_at = mono
            self._check_owners(symbols, results[-len(symbols):] if symbols else [])
        if failed:
            log.warning("%d of %d Redis commands failed: %s", len(failed), len(results), failed[0])
            self.errors += 1
            self.last_error = str(failed[0])[:300]

    def _trim_args(self) -> dict:
        if self.retention_ms <= 0:
            return {}
        return {"minid": max(0, time.time_ns() // 1_000_000 - self.retention_ms), "approximate": True}

    def _bars_step(self, pipe: Any, symbol: str, trim: dict) -> Callable[[], None] | None:
        # Closed bars of the default spec not yet published (and revised ones), the forming bar.
        cur = self._bars.get(symbol) or _BarCursor()
        try:
            series = self.engine.bar_series(symbol, self.spec, since=cur.n if cur.gen is not None else 0)
        except (KeyError, ValueError):  # unsubscribed meanwhile
            return None
        if cur.gen is not None and (series.generation != cur.gen or series.n_closed < cur.n):
            # Bars already handed out changed (a late trade, a rebuild, the symbol
            # subscribed again): look again at all.
            series = self.engine.bar_series(symbol, self.spec, since=0)
        self._decimals[symbol] = (series.price_decimals, series.size_decimals)
        rows, changed = cur.rows, {}
        key = self.keys.bars(symbol, self.spec)
        for bar in series.closed:
            row = encode_bar(bar)
            digest = hash(tuple(row.values()))
            if rows.get(bar.start_ns) != digest:
                pipe.xadd(key, row, **trim)
                changed[bar.start_ns] = digest
        forming = orjson.dumps(series.current.as_dict()) if series.current is not None else None
        if forming != self._forming_sent.get(symbol, b""):
            if forming is not None:
                pipe.set(self.keys.forming(symbol), forming)
            else:
                pipe.delete(self.keys.forming(symbol))
        gen, n = series.generation, series.n_closed

        def commit() -> None:
            # After the write only: a failed pass sends the same bars again.
            cur.gen, cur.n = gen, n
            rows.update(changed)
            if len(rows) > keep:  # bars the series no longer holds
                for start in sorted(rows)[:len(rows) - keep]:
                    del rows[start]
            self._bars[symbol] = cur
            self._forming_sent[symbol] = forming
        keep = self.engine.config.market.max_bars + 64
        return commit

    def _book_step(self, pipe: Any, symbol: str) -> Callable[[], None] | None:
        view = self.engine.depth(symbol, 50)
        if view is None:
            return None
        data = encode_depth(view)
        if self._book_sent.get(symbol) == data:
            return None
        pipe.set(self.keys.book(symbol), data)
        return lambda: self._book_sent.__setitem__(symbol, data)

    def _verification(self, symbol: str, mono: float | None, force: bool) -> dict | None:
        # The engine's verification report (/api/verify, the page's "verified" marks), when
        # verification is on: with --kline-check, and whenever REST history is on (the
        # vendor's REST klines). verify() builds the 1m series and reads every bar under the
        # engine lock: at most every VERIFY_EVERY_S per symbol (mono None: now).
        if not (self.engine.config.market.kline_check or self.engine.market.verifier is not None):
            return None
        built = self._verify.get(symbol)
        if built is not None and mono is not None and not force and mono - built[0] < VERIFY_EVERY_S:
            return built[1]
        report = self.engine.verify(symbol)
        self._verify[symbol] = (time.monotonic() if mono is None else mono, report)
        return report

    def _meta_step(self, pipe: Any, symbol: str, status: Any, mono: float | None = None,
                   force: bool = False) -> Callable[[], None] | None:
        try:
            total, marks = self.engine.gap_marks_since(symbol, 0)
            verify = self._verification(symbol, mono, force)
        except (KeyError, ValueError):
            return None
        st = status.symbols.get(symbol)
        dec = self._decimals.get(symbol, (0, 0))
        body = {
            "gaps": {"total": total, "marks": [list(m) for m in marks]},
            "verify": verify,
            "decimals": {"price": dec[0], "size": dec[1]},
            "symbol": st.as_json() if st is not None else None,
        }
        # Verification reports key bars by start (ints): JSON wants them as strings.
        data = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
        if self._meta_sent.get(symbol) == data:
            return None
        pipe.set(self.keys.meta(symbol), data)
        return lambda: self._meta_sent.__setitem__(symbol, data)

    def heartbeat_body(self, symbols: list[str]) -> dict:
        """Return the JSON body of ``P:collector:NAME`` (see ``feed.io.bus``)."""
        source = dict(self.info.get("source") or {})
        progress = source.get("progress")
        if callable(progress):
            try:
                source["progress"] = progress()
            except Exception:
                source["progress"] = None
        health = self.engine.health()  # with self.annotate's figures
        return {
            "name": self.name, "pid": os.getpid(), "host": self.host, "symbols": symbols,
            "clock_ns": self.engine.clock_ns(), "beat_ns": time.time_ns(), "health": health,
            "vendor": self.info.get("vendor"), "source": source, "default_spec": self.spec,
            "commands": self.commands.stats() if self.commands is not None else None,
            "market": self.market_json(),
        }

    def market_json(self) -> dict:
        """Return the engine's bar rules and limits (``feed.core.config.MarketConfig``
        fields ``clock``, ``default_spec``, ``max_trades``, ``max_bars``, ``close_grace_s``,
        ``max_series``, ``max_rebuild_bars`` and ``bar_options``, the ``make_aggregator``
        keywords): a reader builds bars of any spec with the same rules."""
        m = self.engine.config.market
        out = {k: getattr(m, k) for k in MARKET_FIELDS}
        out["bar_options"] = dict(m.bar_options)
        return out

    def _beat(self, pipe: Any, symbols: list[str]) -> None:
        body = orjson.dumps(self.heartbeat_body(symbols), default=str)
        pipe.set(self.keys.collector(self.name), body, px=int(HEARTBEAT_TTL_S * 1000))
        pipe.sadd(self.keys.collectors, self.name)
        # Commands are read as they come: the stream needs only its recent entries.
        pipe.xtrim(self.keys.commands, maxlen=COMMANDS_KEPT, approximate=True)
        for s in self._owned.difference(symbols):  # unsubscribed meanwhile (a vendor refusal)
            pipe.eval(RELEASE_SCRIPT, 1, self.keys.owner(s), self.name)
        for s in symbols:  # last: _check_owners reads their replies
            self._renew(keys=[self.keys.owner(s)], args=[self.name, OWNER_TTL_MS], client=pipe)

    def _check_owners(self, symbols: list[str], replies: list) -> None:
        # A symbol another collector took (our key expired during a long pause): stop
        # publishing it rather than write into its streams beside the owner.
        self._owned = set(symbols)
        for s, owner in zip(symbols, replies):
            if isinstance(owner, Exception):
                continue
            owner = owner.decode("utf-8", "replace") if isinstance(owner, bytes) else str(owner)
            if owner != self.name:
                log.error("%s is now owned by the collector %r: unsubscribing it here", s, owner)
                self.lost_symbols[s] = owner
                self._owned.discard(s)
                try:
                    self.engine.unsubscribe(s)
                except Exception:
                    log.exception("could not unsubscribe %s", s)


#: Trades in one stream entry at most (about 1 MB encoded; readers refuse entries over
#: ``feed.io.bus.MAX_ENTRY_BYTES``): a backlog written after an outage is split.
MAX_ENTRY_TRADES = 10_000


def _runs(pending: list) -> list[tuple[str, bytes, list]]:
    # (symbol, kind, trades) entries of queued cycles, in order: consecutive cycles' trades
    # of one symbol and kind go in one entry (appending them one by one is the same).
    out: list[tuple[str, bytes, list]] = []
    last: dict[str, tuple[bytes, list]] = {}
    for persist, inserted in pending:
        for kind, trades in ((TRADES_APPENDED, persist), (TRADES_INSERTED, inserted)):
            for t in trades:
                run = last.get(t.symbol)
                if run is None or run[0] != kind or len(run[1]) >= MAX_ENTRY_TRADES:
                    run = (kind, [])
                    last[t.symbol] = run
                    out.append((t.symbol, kind, run[1]))
                run[1].append(t)
    return out
