"""The engine: one bounded queue, one worker thread, all market state.

Data flows one way (DESIGN.md): the feed thread calls :meth:`Engine.submit` with raw
vendor messages (O(1), never blocks; overflow is counted in ``dropped``); the worker parses
them with the vendor adapter and applies the events to per-symbol state (order book, bar
aggregators, trade tape, store). The worker is the only writer of market state except
that readers may create a new bar series under the lock (a user picking a new bar type).
Readers (Dash callbacks, HTTP routes) get copies under a lock held for microseconds.

Queue items are ``(kind, recv_ns, payload)`` tuples: ``"ws"`` raw message text/bytes,
``"rest"`` a REST depth snapshot ``(symbol, body)``, ``"ctl"`` a life-cycle event
``(name, detail)``, ``"rej"`` a frame the feed client did not deliver ``(reason, sample)``.
Only ``"ws"`` and ``"rej"`` items are bounded by ``queue_size`` (dropped and counted when
the queue is full); snapshots and life-cycle events always get in, in order, so that a
reconnect is never lost and the socket thread never waits.

Robustness (tracker issue 4)
----------------------------
* Bad input: a message the adapter refuses (``MalformedMessage``), one longer than
  ``max_message_bytes`` (not parsed), a binary frame, or an event for a symbol not
  subscribed is counted under its reason (health ``malformed_by_reason``), logged at most
  every 5 s with a 120-character sample, and skipped. The adapter reason
  ``server_shutdown`` is not malformed: it is the vendor's notice of a planned disconnect,
  and the engine asks the feed client to reconnect at once (``reconnect(planned=True)``).
* Gaps: a jump in a symbol's vendor trade ids adds the trades missing to health ``gaps``
  and a ``(ts_ns, missing)`` mark to :meth:`Engine.gap_marks` (numbered, for readers that
  fetch only new ones: :meth:`Engine.gap_marks_since`); no bar is invented for them.
  A trade id at or below the last one seen is a duplicate (a replayed or re-sent trade)
  and is skipped (counter ``duplicates``). A broken diff-depth sequence or a crossed book
  resyncs that symbol's book alone (``feed.core.book``; a REST snapshot is requested), and a
  reconnect resyncs every book.
* Backpressure: the socket thread never waits; a full queue drops the message and counts
  it in ``dropped``; health turns ``degraded`` for ``DEGRADED_FOR_S`` after the last drop,
  and the lost trades show up as trade-id gaps as well.
* Persistence (``store``): every trade is appended to the store and flushed about once a
  second (``flush_every_s``), outside the reader lock; a symbol's stored trades are
  restored when it is subscribed, so bars of any type from before a restart are rebuilt
  from them. Closed bars are not stored (``TradeStore.save_bars`` is unused): rebuilding
  from trades gives every bar type, including ones never shown before, and cannot
  disagree with the trades after a late-trade revision. Retention
  (``retention_max_age_s`` / ``retention_max_bytes``) prunes the store every
  ``prune_every_s`` (first shortly after start).
* Recording (``recorder``, ``feed.io.recorder.Recorder``): the worker writes every message it
  takes off the queue, and every REST snapshot, in the replay format; it is flushed with
  the store and on stop.

Vendors (tracker issue 5)
-------------------------
* Fatal replies: a ``VendorReply`` for which ``adapter.is_fatal_reply`` is true (AllTick
  401/603, iTick auth failed) is shown in ``errors`` and the feed client is told to give
  up (``FeedClient.fail(message)``): the state turns ``failed`` with the vendor's words in
  ``detail``, and nothing reconnects.
* Trade ids: adapters with ``consecutive_trade_ids = False`` (AllTick ``seq``, whose step
  per trade is undocumented) get no gap counting and no duplicate dropping by id.
* Symbols the vendor refuses (``adapter.rejected_symbols(reply)``, e.g. AllTick 600/604)
  are unsubscribed again, with the refusal kept in ``errors`` for the page.
* Subscriptions are validated with ``adapter.validate_subscription(current + [new])``
  before anything is stored or sent (plan limits, endpoint mixing: a ValueError for the UI).
* Secrets: malformed-message samples in the log pass through ``adapter.redact``.
* Kline cross-check (``kline_check="1m"``): vendor candles (``feed.core.klinecheck.Kline``) are
  compared with tickscope's own bars of that interval; results in ``status()`` and
  ``health()`` under ``kline_check``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd

from feed.core.bars import BarAggregator, bars_to_frame, make_aggregator
from feed.core.book import OrderBook
from feed.core.config import EngineConfig
from feed.core.events import (  # merge shim: the control events
    FeedClosed, FeedError, FeedOpened, FeedStatus, SnapshotFailed, SourceFinished)
from feed.core.health import DEGRADED_FOR_S, Counters, Status, StoreStatus, SymbolStatus, health_json
from feed.core.klinecheck import KlineChecker
from feed.core.models import (
    Kline,
    Bar,
    BarSpec,
    BookDelta,
    BookSnapshot,
    BookTicker,
    MalformedMessage,
    Trade,
    VendorReply,
    decimals_of,
    iso_ms,
)

__all__ = ["Engine", "BarSeries", "DepthView", "iso_ns"]

log = logging.getLogger("tickscope.engine")

ClockMode = Literal["wall", "exchange"]

_BATCH = 2048  # messages applied per lock hold
_FLUSH_EVERY_S = 1.0  # trade store batch interval (at most ~1 s of trades unsaved)
_SNAPSHOT_RETRY_S = 1.0  # minimum spacing of REST depth snapshot requests per symbol
_FIRST_PRUNE_S = 5.0  # seconds after start of the first retention pass

#: Adapter ``MalformedMessage`` reasons that announce a planned disconnect, not bad input.
PLANNED_DISCONNECT_REASONS = frozenset({"server_shutdown"})
#: Seconds a time bar stays open after its interval ended on the engine clock, so that a
#: trade still on its way lands in it instead of revising it after the fact (a revision
#: gives the same bar, but makes the chart redraw). Wall clock: transport latency, kept
#: below one 250 ms dashboard refresh so a passed interval shows closed within a refresh
#: even when no further trade arrives. Exchange clock
#: (replay): the clock is the newest exchange time on any stream, and diff events run
#: ahead of trades -- in the hftbacktest captures by up to 0.19 s (spot, 2024) and 2.0 s
#: (USD-M, 2023) when a trade arrives. Trades close their own symbol's bars as soon as a
#: later interval starts, so the grace only delays the close of a quiet symbol's last bar.
WALL_CLOSE_GRACE_S = 0.2
EXCHANGE_CLOSE_GRACE_S = 5.0


class _FeedQueue(queue.Queue):
    # A bounded queue with an unbounded side door for rare items that must not be lost
    # (snapshots, life-cycle events): they keep their place in the order and never wait.

    def put_always(self, item: Any) -> None:
        with self.mutex:
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()


def iso_ns(ts_ns: int | None) -> str | None:
    """Return UTC ns as ISO-8601 with milliseconds and ``Z``, or None for None (``iso_ms``)."""
    return None if ts_ns is None else iso_ms(ts_ns)


def _decimals(x: float) -> int:
    # Decimals needed to print a vendor price or size exactly, at most 12.
    return min(12, decimals_of(x))


@dataclass(frozen=True, slots=True)
class BarSeries:
    """A reader's copy of one bar series.

    Parameters
    ----------
    key : str
        ``"SYMBOL|SPEC"``.
    generation : int
        Changes whenever closed bars already handed out changed (late-trade revision,
        rebuild); a reader holding older bars must redraw them all.
    n_closed : int
        Closed bars produced in this generation.
    closed : list of Bar
        Copies of closed bars with index >= the ``since`` asked for (and still held).
    current : Bar or None
        Copy of the bar in progress.
    first_index : int
        Index of the oldest closed bar still held.
    price_decimals, size_decimals : int
        Decimals seen in the vendor's prices and sizes (the export's precision).
    """

    key: str
    generation: int
    n_closed: int
    closed: list[Bar]
    current: Bar | None
    first_index: int
    price_decimals: int = 8
    size_decimals: int = 8


@dataclass(frozen=True, slots=True)
class DepthView:
    """A reader's copy of the top of one order book.

    Parameters
    ----------
    symbol : str
    ts_ns : int
        Exchange time of the last book change, UTC ns (0 if unknown).
    bids, asks : list of (price, size)
        Best first; prices in quote currency, sizes in base units.
    best_bid, best_ask, mid, spread : float or None
    synced : bool
        False while the book waits for a snapshot (then bids/asks may be empty).
    """

    symbol: str
    ts_ns: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    best_bid: float | None
    best_ask: float | None
    mid: float | None
    spread: float | None
    synced: bool


class _SymbolState:
    # Everything the engine holds for one symbol.

    __slots__ = (
        "symbol", "book", "trades", "series", "n_trades", "last_trade_ts_ns",
        "last_trade_id", "gaps", "missing_trades", "price_dp", "size_dp",
        "snapshot_requested_at", "gap_marks", "generation_bump",
    )

    def __init__(self, symbol: str, max_trades: int) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.trades: deque[Trade] = deque(maxlen=max_trades)
        self.series: dict[BarSpec, BarAggregator] = {}
        self.n_trades = 0
        self.last_trade_ts_ns: int | None = None
        self.last_trade_id: int | None = None
        self.gaps = 0  # trade-id jumps seen
        self.missing_trades = 0  # trades missing across those jumps
        self.price_dp = 0
        self.size_dp = 0
        self.snapshot_requested_at = -math.inf  # monotonic seconds
        self.gap_marks: deque[tuple[int, int]] = deque(maxlen=1000)  # (ts_ns, missing)
        self.generation_bump = 0  # added to aggregator generations after rebuilds


class Engine:
    """Queue + worker + per-symbol state; the one place market state lives.

    Parameters
    ----------
    adapter
        Vendor adapter (``feed.vendors.base``): parses raw messages into events,
        validates symbols, gives REST snapshot URLs.
    store : feed.io.store.TradeStore, optional
        Persistence of raw trades; history is restored per symbol on subscribe.
    clock : {"wall", "exchange"}, default "wall"
        Engine clock: the wall clock (live) or the newest exchange time seen (replay),
        which closes time bars whose interval has passed.
    queue_size : int, default 200_000
        Bound of the message queue; when full, messages are dropped and counted.
    default_spec : str, default "1m"
        Bar spec shown first in the UI.
    max_trades : int, default 2_000_000
        Trades per symbol held in memory (for rebuilding bar types and the tape).
    max_bars : int, default 5000
        Closed bars held per series.
    bar_options : dict, optional
        Options passed to every time-bar aggregator (``offset_ns``, ``empty``,
        ``late_tolerance_ns``).
    recorder : feed.io.recorder.Recorder, optional
        Receives every message and REST snapshot the worker takes off the queue.
    retention_max_age_s : float, optional
        Prune stored trades older than this many seconds (exchange time, relative to the
        newest stored trade); None keeps them.
    retention_max_bytes : int, optional
        Then prune the oldest stored trades until the store holds at most this many bytes
        of trades; None: no size limit.
    prune_every_s : float, default 60
        Seconds between retention passes (the first comes 5 s after construction, or
        sooner if this is shorter).
    flush_every_s : float, default 1.0
        Seconds between store (and recorder) flushes: at most about this much is lost to
        a kill -9.
    max_message_bytes : int, default 1 MiB
        Messages longer than this are counted as ``too_large`` without being parsed.
    snapshot_spacing_s : float, default 1.0
        Least seconds between two REST depth snapshot requests for one symbol (a book
        that loses sync again right after a resync waits this long; Binance weighs a
        1000-level snapshot at 50 of 6000 per minute).
    close_grace_s : float, optional
        Seconds a time bar stays open after its interval ended on the engine clock;
        default ``WALL_CLOSE_GRACE_S`` with the wall clock, ``EXCHANGE_CLOSE_GRACE_S``
        with the exchange clock.
    kline_check : str, optional
        Interval (``"1m"``) of vendor candles to compare with tickscope's own bars
        (``feed.core.klinecheck``); None: no cross-check. The adapter must subscribe them.
    """

    def __init__(self, adapter: Any, config: EngineConfig | None = None, *,
                 store: Any = None, recorder: Any = None) -> None:
        config = config or EngineConfig()
        market = config.market
        self.config = config
        self.recorder = recorder
        self.retention_max_age_s = config.retention_max_age_s
        self.retention_max_bytes = config.retention_max_bytes
        self.prune_every_s = float(config.prune_every_s)
        self.flush_every_s = float(config.flush_every_s)
        self.max_message_bytes = int(config.max_message_bytes)
        self._close_grace_ns = int(market.close_grace_s * 1e9)
        self.snapshot_spacing_s = float(market.snapshot_spacing_s)
        self.adapter = adapter
        self.store = store
        self.clock_mode = market.clock
        self.default_spec = market.default_spec
        self.max_trades = market.max_trades
        self.max_bars = market.max_bars
        self.bar_options = dict(market.bar_options)
        kline_check = market.kline_check
        queue_size = config.queue_size
        self._queue = _FeedQueue(maxsize=queue_size)
        self._lock = threading.RLock()  # guards everything below
        self._states: dict[str, _SymbolState] = {}
        self._counters: Counter[str] = Counter()
        self._malformed: Counter[str] = Counter()
        self._dropped = 0  # written by the socket thread only (GIL-atomic increments)
        self._dropped_seen = 0  # _dropped at the last housekeeping
        self._last_drop_at: float | None = None  # monotonic s when drops were last seen
        self._shutdown_requested = False  # worker: a planned-disconnect notice arrived
        self._store_errors = 0  # failed store flushes / prunes
        self._last_store_flush: float | None = None  # monotonic s of the last good flush
        self._pruned = 0  # trades removed by retention
        self._next_prune = time.monotonic() + min(_FIRST_PRUNE_S, self.prune_every_s)
        self._exchange_clock_ns = 0
        self._replies: deque[tuple[int, VendorReply]] = deque(maxlen=50)
        self._msg_rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._last_malformed_log = 0.0
        self._feed: Any = None  # FeedClient, when attached
        self._fetcher: Any = None  # SnapshotFetcher, when attached
        self._source_done = False  # replay finished
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = time.monotonic()
        # Vendor traits (feed/vendors/base.py "Optional capabilities").
        self._ids_consecutive = bool(getattr(adapter, "consecutive_trade_ids", True))
        self._is_fatal = getattr(adapter, "is_fatal_reply", None)
        self._redact = getattr(adapter, "redact", None)
        self._fatal_reply: str | None = None  # worker: a fatal reply to hand to the feed
        # Symbols the vendor refused (adapter.rejected_symbols): unsubscribed by the worker
        # outside the lock, so a refused code does not poison every later full-list request.
        self._rejected_of = getattr(adapter, "rejected_symbols", None)
        self._to_drop: set[str] = set()
        # Kline cross-check (None: off). Written by the worker under the lock.
        self._klines = KlineChecker(kline_check) if kline_check else None

    # -- wiring ----------------------------------------------------------------------

    def attach(self, feed: Any = None, fetcher: Any = None) -> None:
        """Attach the FeedClient (subscriptions go to it) and the SnapshotFetcher."""
        self._feed = feed
        self._fetcher = fetcher

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
        if self.store is not None:
            try:
                self.store.flush()
            except Exception:
                log.exception("trade store flush failed on stop")
        if self.recorder is not None:
            self.recorder.flush()

    def mark_source_finished(self) -> None:
        """Record that a replay source has played out (shown in the status)."""
        self._source_done = True

    # -- producer side (feed thread; O(1), never blocks) -----------------------------

    def submit(self, raw: bytes | str, recv_ns: int) -> bool:
        """Queue one raw vendor message; return False (and count it) if the queue is full.

        Parameters
        ----------
        raw : bytes or str
            The message as received.
        recv_ns : int
            Local receive time, UTC ns.
        """
        try:
            self._queue.put_nowait(("ws", recv_ns, raw))
            return True
        except queue.Full:
            self._dropped += 1
            return False

    def submit_rejected(self, reason: str, sample: bytes | str, recv_ns: int) -> bool:
        """Count a frame the feed client did not deliver (binary, too large) as malformed.

        Non-blocking like :meth:`submit` (dropped and counted when the queue is full).

        Parameters
        ----------
        reason : str
            Counter key, e.g. ``"binary_frame"`` or ``"too_large"``.
        sample : bytes or str
            The first bytes of the frame, for the log.
        recv_ns : int
            Local receive time, UTC ns.
        """
        try:
            self._queue.put_nowait(("rej", recv_ns, (reason, sample[:120])))
            return True
        except queue.Full:
            self._dropped += 1
            return False

    def submit_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> None:
        """Queue a REST depth snapshot body for ``symbol`` (from the SnapshotFetcher).

        Never blocks and is never dropped (snapshots are rare and each one matters).
        """
        self._queue.put_always(("rest", recv_ns, (symbol, body)))

    def submit_control(self, name: Any, recv_ns: int = 0, detail: dict | None = None) -> None:
        """Queue a feed life-cycle event (``open``, ``close``, ``error``, ``snapshot_error``).

        Never blocks and is never dropped: called from the socket thread, and an ``open``
        after a reconnect must reach the worker in order to resync the books. ``name`` may
        be a :data:`feed.core.events.ControlEvent` (the feed client and fetcher send those).
        """
        if not isinstance(name, str):  # merge shim: typed ControlEvent -> the internal tuple
            name, recv_ns, detail = _control_tuple(name)
        self._queue.put_always(("ctl", recv_ns, (name, detail or {})))

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, text: str) -> str:
        """Validate and subscribe a symbol; return its normalised form.

        Nothing is stored or sent for a refused symbol.

        Raises
        ------
        ValueError
            With a user-facing message when the symbol does not match the vendor's
            pattern, or the vendor cannot take it with the current symbols
            (``adapter.validate_subscription``: plan limit, endpoint mixing).
        """
        symbol = self.adapter.normalize_symbol(text)
        with self._lock:
            if symbol in self._states:
                return symbol
            current = list(self._states)
        validate = getattr(self.adapter, "validate_subscription", None)
        if validate is not None:
            validate([*current, symbol])
        # Restoring stored history can take a while: not under the readers' lock.
        state = self._new_state(symbol)
        with self._lock:
            new = symbol not in self._states
            if new:
                self._states[symbol] = state
                if self._klines is not None:
                    self._klines.add_symbol(symbol)
                if self.clock_mode == "exchange" and state.last_trade_ts_ns:
                    self._exchange_clock_ns = max(self._exchange_clock_ns, state.last_trade_ts_ns)
        if new and self._feed is not None:
            try:
                self._feed.subscribe([symbol])
            except ValueError:  # the client's own check refused it (raced another subscribe)
                with self._lock:
                    self._states.pop(symbol, None)
                    if self._klines is not None:
                        self._klines.remove_symbol(symbol)
                raise
        return symbol

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

    def unsubscribe(self, symbol: str) -> None:
        """Stop receiving ``symbol``; its history stays in the store."""
        with self._lock:
            state = self._states.pop(symbol, None)
            if self._klines is not None:
                self._klines.remove_symbol(symbol)
        if state is not None and self._feed is not None:
            self._feed.unsubscribe([symbol])

    def symbols(self) -> list[str]:
        """Return subscribed symbols in subscription order."""
        with self._lock:
            return list(self._states)

    # -- readers ---------------------------------------------------------------------

    def clock_ns(self) -> int:
        """Return the engine clock, UTC ns (wall clock, or newest exchange time in replay)."""
        if self.clock_mode == "wall":
            return time.time_ns()
        return self._exchange_clock_ns

    def bar_series(self, symbol: str, spec: BarSpec | str, since: int = 0) -> BarSeries:
        """Return copies of the closed bars with index >= ``since`` and the bar in progress.

        Creating a series for a new spec rebuilds it from the trades held.

        Raises
        ------
        KeyError
            If ``symbol`` is not subscribed.
        ValueError
            If ``spec`` is not a valid bar spec.
        """
        spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
        with self._lock:
            state = self._states[symbol]
            agg = self._series(state, spec)
            lo = max(since - agg.first_index, 0)
            closed = [replace(b) for b in agg.closed[lo:]]
            current = replace(agg.current) if agg.current is not None else None
            return BarSeries(
                key=f"{symbol}|{spec}",
                generation=agg.generation + state.generation_bump,
                n_closed=agg.n_closed,
                closed=closed,
                current=current,
                first_index=agg.first_index,
                price_decimals=state.price_dp,
                size_decimals=state.size_dp,
            )

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
        series = self.bar_series(symbol, spec)
        bars = series.closed + ([series.current] if series.current is not None else [])
        frame = bars_to_frame(bars)
        frame.attrs["price_decimals"] = series.price_decimals
        frame.attrs["size_decimals"] = series.size_decimals
        return frame

    def depth(self, symbol: str, levels: int = 50) -> DepthView | None:
        """Return the top ``levels`` of ``symbol``'s book, or None if not subscribed."""
        with self._lock:
            state = self._states.get(symbol)
            if state is None:
                return None
            book = state.book
            bids, asks = book.depth(levels)
            bb, ba = book.best_bid(), book.best_ask()
            return DepthView(
                symbol=symbol,
                ts_ns=book.ts_ns or 0,
                bids=list(bids),
                asks=list(asks),
                best_bid=bb[0] if bb else None,
                best_ask=ba[0] if ba else None,
                mid=book.mid(),
                spread=book.spread(),
                synced=book.synced,
            )

    def trades(self, symbol: str, limit: int = 100) -> list[Trade]:
        """Return the last ``limit`` trades of ``symbol`` (oldest first)."""
        with self._lock:
            state = self._states.get(symbol)
            if state is None:
                return []
            n = len(state.trades)
            return [state.trades[i] for i in range(max(0, n - limit), n)]

    def gap_marks(self, symbol: str) -> list[tuple[int, int]]:
        """Return ``(ts_ns, missing_trades)`` for each trade-id gap seen on ``symbol``
        (the latest 1000, oldest first)."""
        with self._lock:
            state = self._states.get(symbol)
            return list(state.gap_marks) if state else []

    def gap_marks_since(self, symbol: str, since: int = 0) -> tuple[int, list[tuple[int, int]]]:
        """Return ``(total, marks)``: how many trade-id gap marks ``symbol`` has had, and
        ``(ts_ns, missing_trades)`` of those with sequence index >= ``since`` still held.

        Marks are numbered 0, 1, 2, ... in the order seen; the latest 1000 are held. A
        reader that drew marks ``0..since-1`` passes ``since`` and gets exactly the new
        ones: it missed some (and must redraw) when ``total - len(marks) != since``, i.e.
        when older marks it never saw were dropped, or ``since > total`` (the symbol was
        unsubscribed and subscribed again). An unknown symbol gives ``(0, [])``.
        """
        if since < 0:
            raise ValueError(f"since must be >= 0, not {since}")
        with self._lock:
            state = self._states.get(symbol)
            if state is None:
                return 0, []
            total = state.gaps  # one mark per trade-id jump (see _on_trade)
            held = state.gap_marks
            first = total - len(held)
            skip = max(since - first, 0)
            return total, [held[i] for i in range(skip, len(held))]

    def counters(self) -> Counters:
        """Return the health counters (:class:`feed.core.health.Counters`)."""
        with self._lock:
            return self._counters_locked()

    def _counters_locked(self) -> Counters:
        # A trade late for one time-bar series is late for every finer one too: count
        # each symbol's worst series, not their sum.
        late = sum(
            max((agg.late for agg in st.series.values()), default=0)
            for st in self._states.values()
        )
        return Counters(
            messages=self._counters["messages"],
            trades=self._counters["trades"],
            malformed=sum(self._malformed.values()),
            dropped=self._dropped,
            reconnects=self._counters["reconnects"],
            gaps=sum(st.missing_trades for st in self._states.values()) + self._counters["gaps_other"],
            late=late,
            duplicates=self._counters["duplicates"],
            server_shutdowns=self._counters["server_shutdowns"],
        )

    def _dropping(self) -> bool:
        # True while messages were dropped within the last DEGRADED_FOR_S seconds.
        if self._dropped != self._dropped_seen:
            return True
        at = self._last_drop_at
        return at is not None and time.monotonic() - at < DEGRADED_FOR_S

    def status(self) -> Status:
        """Return the status line's data (:class:`feed.core.health.Status`).

        ``state`` is the feed client's (connecting, live, reconnecting, stale, failed,
        stopped) or ``replay-finished``; ``detail`` says why (e.g. "next retry in 2.0 s
        (...)") and notes dropped messages.
        """
        feed = self._feed_status()
        state = feed.state if feed is not None else "stopped"
        detail = (feed.last_error if feed is not None else None) or ""
        if self._source_done:
            state, detail = "replay-finished", "the recorded session has played out"
        elif state == "reconnecting" and feed is not None and feed.next_retry_in_s is not None:
            detail = f"next retry in {feed.next_retry_in_s:.1f} s" + (f" ({detail})" if detail else "")
        degraded = self._dropping()
        if degraded:
            note = f"{self._dropped:,} messages dropped: the engine cannot keep up (queue full)"
            detail = f"{detail}; {note}" if detail else note
        with self._lock:
            symbols = {
                s: SymbolStatus(
                    trades=st.n_trades, last_trade_ts_ns=st.last_trade_ts_ns,
                    book_synced=st.book.synced, gaps=st.missing_trades, gap_events=st.gaps,
                    book_resyncs=st.book.resyncs, book_sequence_gaps=st.book.sequence_gaps,
                    book_crossed=st.book.crossed_resyncs)
                for s, st in self._states.items()
            }
            replies = [r for _, r in self._replies if not r.ok]
            klines = self._klines.results() if self._klines is not None else None
            counters = self._counters_locked()
            malformed = dict(self._malformed)
        return Status(
            state=state,
            detail=detail,
            messages_per_s=self._msg_rate,
            queue_depth=self._queue.qsize(),
            counters=counters,
            symbols=symbols,
            clock_ns=self.clock_ns(),
            errors=tuple(r.message for r in replies[-5:]),
            degraded=degraded,
            feed=feed,
            vendor=self.adapter.name,
            kline_check=klines,
            malformed_by_reason=malformed,
            store=self._store_status(),
            recorder=self.recorder.stats() if self.recorder is not None else None,
        )

    def _feed_status(self) -> FeedStatus | None:
        if self._feed is None:
            return None
        fs = self._feed.status()
        if isinstance(fs, dict):
            fs = FeedStatus(**{k: (tuple(v) if k == "symbols" else v) for k, v in fs.items()
                               if k in FeedStatus.__dataclass_fields__})
        return fs

    def health(self) -> dict:
        """Return the JSON body of ``GET /api/health`` (``feed.core.health.health_json``)."""
        return health_json(self.status())

    def _store_status(self) -> StoreStatus | None:
        store = self.store
        if store is None:
            return None
        last = self._last_store_flush
        try:
            stored = store.nbytes()
        except Exception:
            stored = None
        return StoreStatus(
            directory=getattr(store, "directory", None),
            bytes=stored,
            last_flush_age_s=None if last is None else round(time.monotonic() - last, 3),
            errors=self._store_errors,
            pruned_trades=self._pruned,
            retention_max_age_s=self.retention_max_age_s,
            retention_max_bytes=self.retention_max_bytes,
        )

    def wait_idle(self, timeout: float = 10.0, *, quiet_s: float = 0.0) -> bool:
        """Block until every queued item is processed; return False on timeout.

        With ``quiet_s`` > 0, also wait until no new message has arrived for ``quiet_s``
        seconds (messages still in flight on the socket after a replay source finished).
        """
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self._counters["messages"] + self._dropped
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
            items = [first]
            try:
                while len(items) < _BATCH:
                    items.append(q.get_nowait())
            except queue.Empty:
                pass
            try:
                self.process(items)
            except Exception:  # a bug must not kill the feed; count and go on
                log.exception("engine worker failed on a batch of %d items", len(items))
                self._counters["worker_errors"] += 1
            finally:
                for _ in items:
                    q.task_done()
            self._housekeeping()

    def process(self, items: list[tuple[str, int, Any]]) -> None:
        """Parse and apply queue items in order (the worker's step; also used for batch)."""
        parsed: list[tuple[str, int, Any]] = []
        parse = self.adapter.parse
        rec = self.recorder
        limit = self.max_message_bytes
        for kind, recv_ns, payload in items:  # parse (and record) outside the lock
            if kind == "ws":
                if rec is not None:
                    rec.write(recv_ns, payload)
                if len(payload) > limit:
                    parsed.append(("bad", recv_ns, ("too_large", f"{len(payload):,} bytes", payload[:120])))
                    continue
                try:
                    parsed.append(("ev", recv_ns, parse(payload, recv_ns)))
                except MalformedMessage as exc:
                    if exc.reason in PLANNED_DISCONNECT_REASONS:
                        parsed.append(("planned", recv_ns, exc.detail or exc.reason))
                    else:
                        parsed.append(("bad", recv_ns, (exc.reason, exc.detail, payload)))
                except Exception as exc:  # adapter bug on hostile input: still skip it
                    parsed.append(("bad", recv_ns, ("parse_error", repr(exc)[:200], payload)))
            elif kind == "rej":
                reason, sample = payload
                parsed.append(("bad", recv_ns, (reason, "frame not delivered by the feed client", sample)))
            else:
                if kind == "rest" and rec is not None:
                    rec.write_snapshot(recv_ns, *payload)
                parsed.append((kind, recv_ns, payload))
        planned = None
        with self._lock:
            for kind, recv_ns, payload in parsed:
                if kind == "ev":
                    self._counters["messages"] += 1
                    for ev in payload:
                        self._apply(ev, recv_ns)
                elif kind == "bad":
                    self._counters["messages"] += 1
                    self._count_malformed(*payload)
                elif kind == "rest":
                    self._apply_rest(recv_ns, *payload)
                elif kind == "ctl":
                    self._apply_control(recv_ns, *payload)
                elif kind == "planned":
                    self._counters["messages"] += 1
                    self._counters["server_shutdowns"] += 1
                    planned = payload
            self._close_by_clock()
            fatal, self._fatal_reply = self._fatal_reply, None
        if fatal is not None and self._feed is not None:
            # Outside the lock: the client closes its socket and stops retrying.
            log.error("vendor refused for good: %s", fatal)
            fail = getattr(self._feed, "fail", None)
            if fail is not None:
                fail(fatal)
        if planned is not None and self._feed is not None:
            # Outside the lock: the client closes its socket.
            log.info("vendor announced a disconnect (%s): reconnecting now", planned)
            reconnect = getattr(self._feed, "reconnect", None)
            if reconnect is not None:
                reconnect(f"vendor notice: {planned}", planned=True)

    def _apply(self, ev: Any, recv_ns: int) -> None:
        # Route one parsed event; a table would need bound methods per call, and there
        # are only four kinds on the hot path.
        t = type(ev)
        if t is Trade:
            self._on_trade(ev)
        elif t is BookDelta:
            state = self._states.get(ev.symbol)
            if state is None:
                self._count_malformed("unsubscribed_symbol", ev.symbol, None)
                return
            if ev.ts_ns > self._exchange_clock_ns:
                self._exchange_clock_ns = ev.ts_ns
            state.book.apply_delta(ev)
        elif t is BookSnapshot:
            state = self._states.get(ev.symbol)
            if state is not None:
                state.book.apply_snapshot(ev)
        elif t is VendorReply:
            self._replies.append((recv_ns, ev))
            if not ev.ok and self._is_fatal is not None and self._fatal_reply is None and self._is_fatal(ev):
                self._fatal_reply = ev.message
            if not ev.ok and self._rejected_of is not None:
                self._to_drop.update(self._rejected_of(ev))
        elif t is Kline:
            if self._klines is not None:
                self._klines.on_kline(ev)
        elif t is BookTicker:
            pass  # used by verification tools, not by the engine

    def _on_trade(self, trade: Trade) -> None:
        state = self._states.get(trade.symbol)
        if state is None:
            self._count_malformed("unsubscribed_symbol", trade.symbol, None)
            return
        tid = trade.trade_id
        if tid is not None and state.last_trade_id is not None and self._ids_consecutive:
            if tid <= state.last_trade_id:
                self._counters["duplicates"] += 1
                return
            if tid != state.last_trade_id + 1:
                missing = tid - state.last_trade_id - 1
                state.gaps += 1
                state.missing_trades += missing
                state.gap_marks.append((trade.ts_ns, missing))
                if self._klines is not None:
                    self._klines.mark_incomplete(trade.symbol, state.last_trade_ts_ns or trade.ts_ns, trade.ts_ns)
        if tid is not None:
            state.last_trade_id = tid
        self._counters["trades"] += 1
        state.n_trades += 1
        if state.last_trade_ts_ns is None or trade.ts_ns > state.last_trade_ts_ns:
            state.last_trade_ts_ns = trade.ts_ns
        if trade.ts_ns > self._exchange_clock_ns:
            self._exchange_clock_ns = trade.ts_ns
        if state.n_trades <= 2000 or state.n_trades % 1000 == 0:
            state.price_dp = max(state.price_dp, _decimals(trade.price))
            state.size_dp = max(state.size_dp, _decimals(trade.size))
        state.trades.append(trade)
        for agg in state.series.values():
            agg.on_trade(trade)
        if self._klines is not None:
            self._klines.on_trade(trade)
        if self.store is not None:
            self.store.append(trade)

    def _apply_rest(self, recv_ns: int, symbol: str, body: bytes) -> None:
        state = self._states.get(symbol)
        if state is None:
            return
        try:
            snap = self.adapter.parse_snapshot(symbol, body, recv_ns)
        except MalformedMessage as exc:
            self._count_malformed("bad_snapshot", exc.detail, body[:200])
            return
        state.book.apply_snapshot(snap)
        state.snapshot_requested_at = -math.inf if state.book.needs_snapshot else state.snapshot_requested_at

    def _apply_control(self, recv_ns: int, name: str, detail: dict) -> None:
        if name == "open":
            if detail.get("generation", 1) > 1:
                self._counters["reconnects"] += 1
                if self._klines is not None:
                    self._klines.on_reconnect()
                # Diffs were missed while disconnected: every book resyncs.
                for state in self._states.values():
                    state.book.reset()
                    state.snapshot_requested_at = -math.inf
        elif name == "snapshot_error":
            sym = detail.get("symbol")
            if sym in self._states:
                self._states[sym].snapshot_requested_at = time.monotonic() + 4.0
                if detail.get("status") == 400:
                    # The vendor does not know the symbol (Binance -1121 "Invalid symbol"):
                    # unsubscribe it instead of asking again every few seconds.
                    self._to_drop.add(sym)
            text = str(detail.get("error", ""))
            if sym:
                text = f"{sym}: depth snapshot failed: {text}" + (
                    "; unsubscribed" if detail.get("status") == 400 else "")
            self._replies.append((recv_ns, VendorReply(False, text, symbols=(sym,) if sym else ())))
        elif name == "error":
            if not detail.get("planned"):  # a planned reconnect is not an error to show
                self._replies.append((recv_ns, VendorReply(False, str(detail.get("message", "")))))
        elif name == "finished":
            self._source_done = True

    def _count_malformed(self, reason: str, detail: str, sample: Any) -> None:
        self._malformed[reason] += 1
        now = time.monotonic()
        if now - self._last_malformed_log > 5.0:  # rate-limited, with a short sample
            self._last_malformed_log = now
            text = sample[:120] if isinstance(sample, (bytes, str)) else sample
            if self._redact is not None:
                text = self._redact(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
                detail = self._redact(str(detail))
            log.warning("malformed message (%s: %s), %d so far; sample %r",
                        reason, str(detail)[:200], sum(self._malformed.values()), text)

    def _close_by_clock(self) -> None:
        now = self.clock_ns() - self._close_grace_ns
        for state in self._states.values():
            for agg in state.series.values():
                agg.on_clock(now)
        if self._klines is not None:
            self._klines.on_clock(now)

    def _housekeeping(self) -> None:
        # Clock-driven closes, snapshot requests, store/recorder flushes, retention, rates.
        mono = time.monotonic()
        flush = mono - self._last_flush >= self.flush_every_s
        meta: list[tuple[str, dict]] = []
        with self._lock:
            self._close_by_clock()
            if self._fetcher is not None:
                for state in self._states.values():
                    book = state.book
                    if book.needs_snapshot and mono - state.snapshot_requested_at > self.snapshot_spacing_s:
                        url = self.adapter.snapshot_url(state.symbol)
                        if url:
                            state.snapshot_requested_at = mono
                            self._fetcher.request(state.symbol, url)
            if flush and self.store is not None:
                meta = [(st.symbol, {"price_decimals": st.price_dp, "size_decimals": st.size_dp})
                        for st in self._states.values() if st.n_trades]
        if self._dropped != self._dropped_seen:
            self._dropped_seen = self._dropped
            self._last_drop_at = mono
        if flush:
            # Outside the lock: the worker is the store's only writer, and readers must
            # not wait for SQLite.
            self._last_flush = mono
            if self.store is not None:
                try:
                    for symbol, m in meta:
                        self.store.set_meta(symbol, m)
                    self.store.flush()
                    self._last_store_flush = mono
                except Exception:
                    self._store_errors += 1
                    if self._store_errors == 1 or self._store_errors % 60 == 0:
                        log.exception("trade store flush failed (%d times); trades stay buffered",
                                      self._store_errors)
            if self.recorder is not None:
                self.recorder.flush()
        if self._to_drop:
            drop, self._to_drop = self._to_drop, set()
            for symbol in sorted(drop):
                if symbol in self._states:
                    log.warning("%s: refused by the vendor, unsubscribed", symbol)
                    self.unsubscribe(symbol)
        if mono >= self._next_prune:
            self._next_prune = mono + self.prune_every_s
            self._prune()
        t0, n0 = self._rate_mark
        if mono - t0 >= 1.0:
            n = self._counters["messages"]
            self._msg_rate = (n - n0) / (mono - t0)
            self._rate_mark = (mono, n)

    def _prune(self) -> None:
        # One retention pass over the store (whole batches, oldest first).
        store = self.store
        if store is None or (self.retention_max_age_s is None and self.retention_max_bytes is None):
            return
        try:
            removed = store.prune(
                max_age_ns=None if self.retention_max_age_s is None else int(self.retention_max_age_s * 1e9),
                max_bytes=self.retention_max_bytes,
            )
        except Exception:
            self._store_errors += 1
            log.exception("trade store retention pass failed")
            return
        if removed:
            self._pruned += removed
            log.info("retention: pruned %d stored trades", removed)

    # -- state creation --------------------------------------------------------------

    def _new_state(self, symbol: str) -> _SymbolState:
        state = _SymbolState(symbol, self.max_trades)
        if self.store is not None:
            try:
                restored = self.store.load(symbol, limit=self.max_trades)
            except Exception:
                log.exception("could not restore stored trades of %s", symbol)
                restored = []
            for trade in restored:
                state.trades.append(trade)
                state.n_trades += 1
                state.last_trade_id = trade.trade_id if trade.trade_id is not None else state.last_trade_id
                state.last_trade_ts_ns = trade.ts_ns
            meta = self.store.get_meta(symbol) or {}
            state.price_dp = meta.get("price_decimals", 0)
            state.size_dp = meta.get("size_decimals", 0)
            for trade in list(state.trades)[-2000:]:
                state.price_dp = max(state.price_dp, _decimals(trade.price))
                state.size_dp = max(state.size_dp, _decimals(trade.size))
        return state

    def _series(self, state: _SymbolState, spec: BarSpec) -> BarAggregator:
        agg = state.series.get(spec)
        if agg is None:
            agg = make_aggregator(state.symbol, spec, max_bars=self.max_bars, **self.bar_options)
            agg.on_trades(state.trades)
            agg.on_clock(self.clock_ns())
            state.series[spec] = agg
        return agg


def _control_tuple(event: Any) -> tuple[str, int, dict]:
    # merge shim: map a typed ControlEvent to the (name, recv_ns, detail) the worker reads.
    if isinstance(event, FeedOpened):
        return "open", event.recv_ns, {"generation": event.generation}
    if isinstance(event, FeedClosed):
        return "close", event.recv_ns, {"generation": event.generation, "code": event.code,
                                        "reason": event.reason}
    if isinstance(event, FeedError):
        return "error", event.recv_ns, {
            "message": event.message, "planned": event.planned, "generation": event.generation,
            "verdict": "fatal" if event.fatal else "retry", "retry_in_s": event.retry_in_s,
            "stale": event.stale}
    if isinstance(event, SnapshotFailed):
        return "snapshot_error", event.recv_ns, {"symbol": event.symbol, "error": event.error,
                                                 "status": event.status}
    if isinstance(event, SourceFinished):
        return "finished", event.recv_ns, {}
    raise TypeError(f"not a control event: {event!r}")
