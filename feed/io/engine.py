"""The engine: one bounded queue, one worker thread, the market state and its effects.

Data flows one way (DESIGN.md). Producer threads (the feed client, the snapshot fetcher)
hand :mod:`feed.core.events` queue items to the engine through the
:class:`~feed.core.events.Sink` methods, which never block. The worker takes batches off
the queue, records them, parses raw frames with the vendor adapter outside the lock, and
applies the typed inputs to :class:`feed.core.market.MarketState` under the lock; the
market state answers with :class:`~feed.core.events.Effects` that the worker carries out
after releasing it: persist trades, fetch REST snapshots, reconnect, fail, unsubscribe,
log malformed samples. The worker is the only writer of market state; readers (Dash
callbacks, HTTP routes) get copies under a lock held for microseconds, and a new bar series
is built outside the lock and swapped in.

Only raw and rejected frames are bounded by ``queue_size`` (dropped and counted when the
queue is full: health turns ``degraded`` for ``DEGRADED_FOR_S``); snapshot bodies and
life-cycle events always get in, in order, so that a reconnect is never lost and the
socket thread never waits. Stored trades are flushed about once a second
(``flush_every_s``) outside the lock, and restored when a symbol is subscribed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from feed.core import olderbars
from feed.core.batch import series_frame
from feed.core.config import EngineConfig
from feed.core.events import (
    ControlEvent, Effects, FeedControl, FeedStatus, Malformed, MarketInput, Parsed,
    PlannedDisconnect, QueueItem, RawMessage, RejectedFrame, SnapshotBody,
)
from feed.core.health import DEGRADED_FOR_S, Counters, Status, health_json
from feed.core.latency import LatencyWindow
from feed.core.market import MarketState
from feed.core.models import BarSpec, MalformedMessage, Trade
from feed.core.seriesbuild import series_or_build
from feed.core.views import BarSeries, DepthView
from feed.io.keeper import StoreKeeper

__all__ = ["Engine"]

log = logging.getLogger("tickscope.engine")

_BATCH = 2048  # frames applied per lock hold (about 10 ms of work at the ceiling)
#: Adapter ``MalformedMessage`` reasons that announce a planned disconnect, not bad input.
PLANNED_DISCONNECT_REASONS = frozenset({"server_shutdown"})


class RawBatch:
    """Frames handed over together by ``Engine.submit_many`` (one queue item).

    ``recv_ns``: local receive time of the first frame, UTC ns; ``frames``: the frames,
    in wire order (bytes, or str from a client that validates UTF-8).
    """

    __slots__ = ("recv_ns", "frames")

    def __init__(self, recv_ns: int, frames: list) -> None:
        self.recv_ns = recv_ns
        self.frames = frames


class _FeedQueue(queue.Queue):
    # A bounded queue with an unbounded side door for rare items that must not be lost
    # (snapshots, life-cycle events): they keep their place in the order and never wait.
    # Its size counts frames, not items: a RawBatch weighs as many frames as it holds, so
    # ``maxsize`` bounds the frames waiting whatever the batching.

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._frames = 0

    def _qsize(self) -> int:
        return self._frames

    def _put(self, item: Any) -> None:
        self.queue.append(item)
        self._frames += len(item.frames) if type(item) is RawBatch else 1

    def _get(self) -> Any:
        item = self.queue.popleft()
        self._frames -= len(item.frames) if type(item) is RawBatch else 1
        return item

    def put_always(self, item: Any) -> None:
        with self.mutex:
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def take(self, first: Any, limit: int) -> list:
        """Return ``first`` and the items behind it, up to about ``limit`` frames."""
        items = [first]
        n = len(first.frames) if type(first) is RawBatch else 1
        with self.mutex:
            q = self.queue
            while q and n < limit:
                item = self._get()
                items.append(item)
                n += len(item.frames) if type(item) is RawBatch else 1
            self.not_full.notify_all()
        return items


class Engine:
    """Queue + worker + market state; the one place market state lives.

    Parameters
    ----------
    adapter : feed.vendors.base.VendorAdapter
        Parses raw messages into events, validates symbols, gives REST snapshot URLs.
    config : EngineConfig, optional
        Queue, flush and retention limits and the market rules; defaults throughout.
    store : feed.io.store.TradeStore, optional
        Persistence of raw trades; history is restored per symbol on subscribe.
    recorder : feed.io.recorder.Recorder, optional
        Receives every message and REST snapshot the worker takes off the queue.
    """

    def __init__(self, adapter: Any, config: EngineConfig | None = None, *,
                 store: Any = None, recorder: Any = None) -> None:
        self.config = config = config or EngineConfig()
        self.adapter = adapter
        self.store = store
        self.recorder = recorder
        self.default_spec = config.market.default_spec
        self.clock_mode = config.market.clock
        self.market = MarketState(config.market, adapter)
        self._queue = _FeedQueue(maxsize=config.queue_size)
        self._lock = threading.RLock()  # guards self.market
        self._dropped = 0  # written by producer threads only (GIL-atomic increments)
        self._dropped_seen = 0  # _dropped at the last housekeeping
        self._last_drop_at: float | None = None  # monotonic s when drops were last seen
        self._worker_errors = 0  # batches the worker failed on (a bug, logged)
        self._keeper = StoreKeeper(store, recorder, config) if (store or recorder) is not None else None
        self._msg_rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._feed: FeedControl | None = None
        self._fetcher: Any = None  # SnapshotFetcher, when attached
        self._history: Any = None  # feed.io.backfill.HistoryFetcher, when attached
        self._publisher: Any = None  # feed.io.redis_writer.RedisPublisher, when attached
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Exchange time -> applied, per trade (written by the worker, read by health()).
        self._latency = LatencyWindow()
        self._latency_lock = threading.Lock()

    # -- wiring ----------------------------------------------------------------------

    def attach(self, feed: FeedControl | None = None, fetcher: Any = None, history: Any = None) -> None:
        """Attach the feed client (subscriptions go to it), the snapshot fetcher and the
        REST history fetcher (backfill, gap repair)."""
        self._feed = feed
        self._fetcher = fetcher
        self._history = history

    def attach_publisher(self, publisher: Any) -> None:
        """Attach a publisher (``feed.io.redis_writer.RedisPublisher``) whose ``on_cycle(fx)``
        hears every cycle's effects on the worker thread: it must only enqueue (O(1),
        never block). Its ``annotate(body)`` adds its figures to :meth:`health`."""
        self._publisher = publisher

    def start(self) -> "Engine":
        """Start the worker thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tickscope-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after it drains what is queued; flush the store and recorder.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the worker.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._keeper is not None:
            self._keeper.close()

    def mark_source_finished(self) -> None:
        """Record that a replay source has played out (shown in the status at once)."""
        with self._lock:
            self.market.source_finished = True

    # -- the Sink: producer threads, O(1), never blocks ---------------------------------

    def submit(self, raw: bytes | str, recv_ns: int) -> bool:
        """Queue one raw vendor frame (``recv_ns``: local receive time, UTC ns).

        Returns False, and counts the frame as dropped, when the queue is full.
        """
        return self._offer(RawMessage(recv_ns, raw))

    def submit_many(self, frames: list, recv_ns: int) -> bool:
        """Queue raw vendor frames read together, in wire order, as one item (``recv_ns``:
        local receive time of the first, UTC ns); the list is the engine's afterwards.

        Returns False, and counts every frame as dropped, when the queue is full.
        """
        if not frames:
            return True
        try:
            self._queue.put_nowait(RawBatch(recv_ns, frames))
            return True
        except queue.Full:
            self._dropped += len(frames)
            return False

    def submit_rejected(self, reason: str, sample: bytes | str, recv_ns: int) -> bool:
        """Queue a frame the feed client did not deliver (``reason``: ``binary_frame``,
        ``too_large``) to be counted as malformed; False (dropped) when the queue is full."""
        return self._offer(RejectedFrame(recv_ns, reason, sample[:120]))

    def submit_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> None:
        """Queue a REST depth-snapshot body for ``symbol``; never blocks, never dropped."""
        self._queue.put_always(SnapshotBody(recv_ns, symbol, body))

    def submit_control(self, event: ControlEvent) -> None:
        """Queue a life-cycle event; never blocks, never dropped, kept in order."""
        self._queue.put_always(event)

    def _offer(self, item: QueueItem) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self._dropped += 1
            return False

    # -- subscriptions ---------------------------------------------------------------

    def normalize_symbol(self, text: str) -> str:
        """Return the vendor's normalised form of a symbol typed or passed by a user.

        The adapter is the one place symbols are validated: the CLI, the UI box, the HTTP
        API and :meth:`subscribe` all ask it.

        Raises
        ------
        ValueError
            With words for the user, when the vendor's pattern refuses ``text``.
        """
        return self.adapter.normalize_symbol(text)

    def subscribe(self, text: str) -> str:
        """Validate and subscribe a symbol; return its normalised form.

        Nothing is stored or sent for a refused symbol; stored history is restored.

        Raises
        ------
        ValueError
            With a user-facing message when the symbol does not match the vendor's
            pattern, or the vendor cannot take it with the current symbols
            (``adapter.validate_subscription``: plan limit, endpoint mixing).
        """
        symbol = self.adapter.normalize_symbol(text)
        with self._lock:
            if symbol in self.market:
                return symbol
            current = self.market.symbols()
        self.adapter.validate_subscription([*current, symbol])
        restored, meta = self._restore(symbol)  # can take a while: not under the lock
        with self._lock:
            new = self.market.add_symbol(symbol, restored, meta)
        if new and self._feed is not None:
            try:
                self._feed.subscribe([symbol])
            except ValueError:  # the client's own check refused it (raced another subscribe)
                with self._lock:
                    self.market.remove_symbol(symbol)
                raise
        if new and self._keeper is not None:
            self._keeper.save_subscribed(self.symbols())  # a restart subscribes them again
        return symbol

    def unsubscribe(self, symbol: str) -> None:
        """Stop receiving ``symbol``; its history stays in the store."""
        with self._lock:
            held = self.market.remove_symbol(symbol)
        if held and self._feed is not None:
            self._feed.unsubscribe([symbol])
        if held and self._keeper is not None:
            self._keeper.save_subscribed(self.symbols())

    def symbols(self) -> list[str]:
        """Return subscribed symbols in subscription order."""
        with self._lock:
            return self.market.symbols()

    def _restore(self, symbol: str) -> tuple[list[Trade], dict | None]:
        if self.store is None:
            return [], None
        try:
            restored = self.store.load(symbol, limit=self.config.market.max_trades)
        except Exception:
            log.exception("could not restore stored trades of %s", symbol)
            restored = []
        return restored, self.store.get_meta(symbol)

    # -- readers ---------------------------------------------------------------------

    def clock_ns(self) -> int:
        """Return the engine clock, UTC ns (wall clock, or newest exchange time in replay)."""
        return self.market.clock_ns(time.time_ns())

    def bar_series(self, symbol: str, spec: BarSpec | str, since: int = 0) -> BarSeries:
        """Return copies of the closed bars with index >= ``since`` and the bar in progress.

        A series for a spec not seen before is built from the trades held, outside the
        lock, and swapped in.

        Raises
        ------
        KeyError
            If ``symbol`` is not subscribed.
        ValueError
            If ``spec`` is not a valid bar spec.
        """
        spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
        return series_or_build(self._lock, self.market, symbol, spec, since, time.time_ns)

    def older_bars(self, symbol: str, spec: BarSpec | str, before_ns: int, limit: int = 500) -> pd.DataFrame:
        """Return up to ``limit`` time bars of ``spec`` ending at or before ``before_ns``
        (UTC ns, the start of the oldest bar drawn), oldest first: history older than the
        bars the series holds, a chunk at a time (``feed.core.olderbars.older_bars``).

        Built outside the lock from the trades held and, past those, the store's (at
        most ``2 * max_trades`` trades read per call: the store is read newest first, so
        history further back than that is out of reach). Columns ``BAR_COLUMNS``;
        ``attrs["exhausted"]`` is True when no older trade exists.

        Raises
        ------
        KeyError
            If ``symbol`` is not subscribed.
        ValueError
            If ``spec`` is not a valid time bar spec.
        """
        spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
        with self._lock:
            view = self.market.trade_view(symbol)
        store, cap = self.store, 2 * self.config.market.max_trades

        def load(n: int) -> tuple[pd.DataFrame, bool]:
            arr = store.load_arrays(symbol, limit=n + 1)
            return olderbars.trade_frame(arr[-n:]), len(arr) <= n

        return olderbars.older_bars(olderbars.trade_frame(view.columns()), load if store is not None else None,
                                  spec, int(before_ns), limit, options=self.config.market.bar_options,
                                  max_trades=cap)

    def bars_frame(self, symbol: str, spec: BarSpec | str) -> pd.DataFrame:
        """Return every held bar (closed + in progress) as a DataFrame.

        Columns are ``feed.core.models.BAR_COLUMNS`` (start/end int UTC ns);
        ``attrs["price_decimals"]`` and ``attrs["size_decimals"]`` give the precision seen in
        the vendor's prices and sizes.

        Raises
        ------
        KeyError, ValueError
            As :meth:`bar_series`.
        """
        return series_frame(self.bar_series(symbol, spec))

    def vendor_candles(self, symbol: str) -> list:
        """Return the vendor's own 1m candles (``feed.core.models.Kline``) held for
        ``symbol`` (a TickDB seed), oldest first; never part of tickscope's bars."""
        with self._lock:
            return self.market.vendor_candles(symbol)

    def verify(self, symbol: str) -> dict | None:
        """Return the per-bar verification of ``symbol``'s 1m bars against the vendor's
        klines (``feed.core.verify.Verifier.report``; the 1m series is built if needed), or
        None when verification is off.

        Raises
        ------
        KeyError
            If ``symbol`` is not subscribed.
        """
        series = self.bar_series(symbol, "1m")
        with self._lock:
            return self.market.verify_report(symbol, series.closed)

    def depth(self, symbol: str, levels: int = 50) -> DepthView | None:
        """Return the top ``levels`` of ``symbol``'s book, or None if not subscribed."""
        with self._lock:
            return self.market.depth(symbol, levels)

    def trades(self, symbol: str, limit: int = 100) -> list[Trade]:
        """Return the last ``limit`` trades of ``symbol`` (oldest first)."""
        with self._lock:
            return self.market.trades(symbol, limit)

    def gap_marks(self, symbol: str) -> list[tuple[int, int]]:
        """Return ``(ts_ns, missing_trades)`` for each trade-id gap seen on ``symbol``
        (the latest 1000, oldest first)."""
        return self.gap_marks_since(symbol, 0)[1]

    def gap_marks_since(self, symbol: str, since: int = 0) -> tuple[int, list[tuple[int, int]]]:
        """Return ``(total, marks)`` (``feed.core.market.MarketState.gap_marks_since``)."""
        with self._lock:
            return self.market.gap_marks_since(symbol, since)

    def counters(self) -> Counters:
        """Return the health counters (:class:`feed.core.health.Counters`)."""
        with self._lock:
            return self._counters_locked()

    def _counters_locked(self) -> Counters:
        m = self.market
        return Counters(
            messages=m.count("messages"), trades=m.count("trades"),
            malformed=sum(m.malformed.values()), dropped=self._dropped,
            reconnects=m.count("reconnects"), gaps=m.missing_trades(), late=m.late_trades(),
            duplicates=m.count("duplicates"), server_shutdowns=m.count("server_shutdowns"),
            repaired=m.history.repaired, backfilled=m.history.backfilled,
        )

    def status(self) -> Status:
        """Return the status line's data (:class:`feed.core.health.Status`).

        ``state`` is the feed client's (connecting, live, reconnecting, stale, failed,
        stopped) or ``replay-finished``; ``detail`` says why (e.g. "next retry in 2.0 s
        (...)") and notes dropped messages.
        """
        feed = self._feed_status()
        state = feed.state if feed is not None else "stopped"
        detail = (feed.last_error if feed is not None else None) or ""
        with self._lock:
            m = self.market
            finished = m.source_finished
            symbols = m.symbol_status(time.monotonic_ns())
            errors = m.refusals()
            klines = m.klines.results() if m.klines is not None else None
            counters = self._counters_locked()
            malformed = dict(m.malformed)
            clock_ns = m.clock_ns(time.time_ns())
            history = m.history_json() if self._history is not None else None
        if finished:
            state, detail = "replay-finished", "the recorded session has played out"
        elif state == "reconnecting" and feed is not None and feed.next_retry_in_s is not None:
            detail = f"next retry in {feed.next_retry_in_s:.1f} s" + (f" ({detail})" if detail else "")
        degraded = self._dropping()
        if degraded:
            note = f"{self._dropped:,} messages dropped: the engine cannot keep up (queue full)"
            detail = f"{detail}; {note}" if detail else note
        store = self._keeper.status() if self._keeper is not None else None
        if store is not None and store.failing:
            note = (f"the trade store cannot write ({store.errors:,} failed flushes; disk full?): "
                    f"{store.unsaved_trades:,} trades wait unsaved")
            detail = f"{detail}; {note}" if detail else note
        return Status(
            state=state, detail=detail, messages_per_s=self._msg_rate,
            queue_depth=self._queue.qsize(), counters=counters, symbols=symbols,
            clock_ns=clock_ns, errors=errors, degraded=degraded, feed=feed,
            vendor=self.adapter.name, kline_check=klines, malformed_by_reason=malformed,
            store=store,
            recorder=self.recorder.stats() if self.recorder is not None else None,
            history=history,
        )

    def health(self) -> dict:
        """Return the JSON body of ``GET /api/health`` (``feed.core.health.health_json``)
        plus ``latency_ms``: ``{"p50", "p99", "max", "samples"}`` of exchange trade time ->
        applied to the bars over the last minute, ms (``feed.core.latency``); null in a
        replay or before the first trade."""
        body = health_json(self.status())
        with self._latency_lock:
            body["latency_ms"] = self._latency.summary(time.time_ns())
        if self._publisher is not None:
            self._publisher.annotate(body)
        return body

    def _feed_status(self) -> FeedStatus | None:
        if self._feed is None:
            return None
        return self._feed.status()

    def _dropping(self) -> bool:
        # True while messages were dropped within the last DEGRADED_FOR_S seconds.
        if self._dropped != self._dropped_seen:
            return True
        at = self._last_drop_at
        return at is not None and time.monotonic() - at < DEGRADED_FOR_S

    def wait_idle(self, timeout: float = 10.0, *, quiet_s: float = 0.0) -> bool:
        """Block until every queued item is processed; return False on timeout.

        With ``quiet_s`` > 0, also wait until no new message has arrived for ``quiet_s``
        seconds (messages still in flight on the socket after a replay source finished).
        """
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.market.count("messages") + self._dropped
            if n != seen:
                seen, since = n, time.monotonic()
            if self._queue.unfinished_tasks == 0 and time.monotonic() - since >= quiet_s:
                return True
            time.sleep(0.01)
        return False

    # -- worker ----------------------------------------------------------------------

    def _run(self) -> None:
        q = self._queue
        while True:
            try:
                first = q.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    break
                self._housekeeping()
                continue
            items = q.take(first, _BATCH)
            try:
                self.process(items)
            except Exception:  # a bug must not kill the feed; count and go on
                log.exception("engine worker failed on a batch of %d items", len(items))
                self._worker_errors += 1
            finally:
                for _ in items:
                    q.task_done()
            self._housekeeping()

    def process(self, items: Sequence[QueueItem]) -> None:
        """Record, parse and apply queue items in order (the worker's step; also for tests)."""
        inputs = []  # parse (and record) outside the lock
        for item in items:
            if type(item) is RawBatch:
                parsed, recv_ns = self._parsed, item.recv_ns
                inputs.extend([parsed(recv_ns, raw) for raw in item.frames])
            else:
                inputs.append(self._input_of(item))
        with self._lock:
            fx = self.market.apply(inputs, time.time_ns(), time.monotonic_ns())
        if fx.persist and self.clock_mode == "wall":
            applied_ns = time.time_ns()
            with self._latency_lock:
                self._latency.record(applied_ns, [t.ts_ns for t in fx.persist])
        self._carry_out(fx)
        if self._publisher is not None:
            self._publisher.on_cycle(fx)

    def _input_of(self, item: QueueItem) -> MarketInput:
        kind = type(item)
        rec = self.recorder
        if kind is RawMessage:
            return self._parsed(item.recv_ns, item.data)
        if kind is RejectedFrame:
            return Malformed(item.recv_ns, item.reason, "frame not delivered by the feed client", item.sample)
        if kind is SnapshotBody and rec is not None:
            rec.write_snapshot(item.recv_ns, item.symbol, item.body)
        return item

    def _parsed(self, recv_ns: int, raw: bytes | str) -> MarketInput:
        # One raw frame: recorded, then parsed (the per-frame hot path).
        rec = self.recorder
        if rec is not None:
            rec.write(recv_ns, raw)
        if len(raw) > self.config.max_message_bytes:
            return Malformed(recv_ns, "too_large", f"{len(raw):,} bytes", raw[:120])
        try:
            return Parsed(recv_ns, self.adapter.parse(raw, recv_ns))
        except MalformedMessage as exc:
            if exc.reason in PLANNED_DISCONNECT_REASONS:
                return PlannedDisconnect(recv_ns, exc.detail or exc.reason)
            return Malformed(recv_ns, exc.reason, exc.detail, raw)
        except Exception as exc:  # adapter bug on hostile input: still skip it
            return Malformed(recv_ns, "parse_error", repr(exc)[:200], raw)

    def _carry_out(self, fx: Effects) -> None:
        # Outside the lock: I/O and calls into the feed client.
        if self.store is not None:
            if fx.persist:
                self.store.extend(fx.persist)  # an in-memory append; the keeper flushes
            if fx.inserted:  # history put in place: stored too, so a restart restores the repair
                self.store.extend(fx.inserted)
        for reason, detail, sample in fx.malformed_logs:
            log.warning("malformed message (%s: %s), %d so far; sample %r",
                        reason, detail, sum(self.market.malformed.values()), sample)
        if self._fetcher is not None:
            # A fetcher that backs off after refused bodies hears how each one went.
            outcome = getattr(self._fetcher, "outcome", None)
            for symbol, ok in fx.snapshot_outcomes if outcome is not None else ():
                outcome(symbol, ok)
            for symbol, url in fx.snapshots:
                self._fetcher.request(symbol, url)
        if self._history is not None:
            for request in fx.history:
                self._history.request(request)
        if fx.fail is not None and self._feed is not None:
            log.error("vendor refused for good: %s", fx.fail)
            self._feed.fail(fx.fail)
        if fx.reconnect is not None and self._feed is not None:
            log.info("%s: reconnecting now", fx.reconnect)
            self._feed.reconnect(fx.reconnect, planned=True)
        for symbol, reason in fx.unsubscribe:
            log.warning("%s: refused by the vendor (%s), unsubscribed", symbol, reason)
            self.unsubscribe(symbol)

    def _housekeeping(self) -> None:
        # Clock-driven closes and snapshot requests, store/recorder flushes, retention, rates.
        mono = time.monotonic()
        keeper = self._keeper
        with self._lock:
            fx = self.market.on_clock(time.time_ns(), time.monotonic_ns())
            meta = self.market.decimals() if keeper is not None and keeper.flush_due(mono) else None
        self._carry_out(fx)
        if self._publisher is not None:
            self._publisher.on_cycle(fx)
        if keeper is not None:
            keeper.tick(mono, meta)
        if self._dropped != self._dropped_seen:
            self._dropped_seen = self._dropped
            self._last_drop_at = mono
        t0, n0 = self._rate_mark
        if mono - t0 >= 1.0:
            n = self.market.count("messages")
            self._msg_rate = (n - n0) / (mono - t0)
            self._rate_mark = (mono, n)
