"""Market state: every symbol's book, tape and bar series, and the rules that keep them true.

:class:`MarketState` is pure: inputs come in through :meth:`MarketState.apply` with the
time as arguments, and what needs I/O (a REST depth snapshot, a reconnect, giving up, an
unsubscribe, persisting trades, a log line) comes back as :class:`feed.core.events.Effects`
for the engine to carry out. It holds no lock; the engine serialises access to it.

Rules it owns
-------------
* Trade ids (vendors with consecutive ids, ``adapter.consecutive_trade_ids``): a jump
  adds the trades missing to ``gaps`` and a ``(ts_ns, missing)`` mark (numbered, so a
  reader can fetch only new ones with :meth:`MarketState.gap_marks_since`); no bar is
  invented for them. An id at or below the last one seen is a duplicate and is skipped.
* Books: a broken diff-depth sequence or a crossed book resyncs that symbol's book alone
  (``feed.core.book``); a REST snapshot is asked for, at most once per
  ``snapshot_spacing_s`` per symbol (and 4 s later after a failed fetch). A reconnect
  resyncs every book. A snapshot fetch answered HTTP 400 (the vendor does not know the
  symbol) unsubscribes it. In replay (exchange clock), one answered HTTP 404 means the
  recording holds the symbol's trades but no book (``feed.exchange.replay_source``): the
  book is marked absent (``SymbolStatus.book_absent``), no snapshot is asked for again
  and health is not degraded; depth arriving after all lifts the mark. Live, a 404 stays
  a failed fetch (a wrong URL), retried.
* Clock: the engine clock is the wall clock (live) or the newest exchange time on any
  stream (replay). Time bars whose interval ended ``close_grace_s`` before the engine
  clock are closed on every apply and on every :meth:`MarketState.on_clock`.
* Vendor replies: a fatal one (``adapter.is_fatal_reply``) asks the feed to fail; symbols
  a refusal names (``adapter.rejected_symbols``) are unsubscribed again. The latest
  replies are kept for the page.
* Malformed input is counted by reason; a sample, redacted by the adapter, is handed out
  for the log at most every 5 s.
* Kline cross-check (``kline_check``): vendor candles are compared with tickscope's own
  bars of that interval (``feed.core.klinecheck``).
* REST history (adapters with ``serves_history`` and consecutive ids): the first live
  trade of a symbol with an empty tape asks for ``backfill_s`` of trades before it; a
  trade-id jump asks for the missing ids (``repair_gaps``). Pages of aggregate trades are
  put in place (``feed.core.history``) and every series of the symbol is rebuilt; a
  repaired gap's mark and ``gaps`` count drop by the trades recovered. When a replay
  source has played out, the trades after each symbol's newest are asked for (a tail:
  lost while the connection was down at the end, no later id jump reveals them); they
  move the replay clock on. Trades put in place go out in ``Effects.inserted`` (stored,
  published) besides ``Effects.persist`` (live trades). These rules live in
  ``feed.core.market_history``, mixed into :class:`MarketState`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import replace

from feed.core.bars import BarAggregator, make_aggregator
from feed.core.config import MarketConfig
from feed.core.events import (
    Effects, FeedError, FeedOpened, Malformed, MarketInput, Parsed,
    HistoryFailed, HistoryKlines, HistoryPage, HistoryRequest, PlannedDisconnect, VendorCandles, SnapshotBody, SnapshotFailed,
    SourceFinished,
)
from feed.core.history import HistoryLedger, in_id_order
from feed.core.verify import MINUTE_NS, Verifier
from feed.core.health import BOOK_NOT_RECORDED, SymbolStatus
from feed.core.klinecheck import KlineChecker
from feed.core.market_history import HistoryRules
from feed.core.models import BarSpec, BookDelta, BookSnapshot, Kline, MalformedMessage, Trade, VendorReply
from feed.core.symbol import SymbolState, marks_since
from feed.core.tradebuffer import TradeView, estimate_held
from feed.core.views import BarSeries, DepthView, SeriesSeed

__all__ = ["MarketState", "MAX_ID_JUMP"]

_NS = 1_000_000_000
#: Least nanoseconds between two malformed-message samples handed out for the log.
_MALFORMED_LOG_EVERY_NS = 5 * _NS
#: Extra wait after a failed snapshot fetch before the symbol is asked for again, ns.
_SNAPSHOT_FAILED_WAIT_NS = 4 * _NS
#: Replies kept for the page (refusals in words).
_REPLIES_KEPT = 50
#: A forward jump of more trade ids than this is suspect until the next trade confirms it.
MAX_ID_JUMP = 100_000
_INT64_MAX = (1 << 63) - 1


class MarketState(HistoryRules):
    """Per-symbol books, tapes and bar series; ``apply`` inputs, get effects back.

    Parameters
    ----------
    config : MarketConfig
        Clock, bar options and limits.
    adapter : feed.vendors.base.VendorAdapter
        Used for its pure parts only: ``parse_snapshot``, ``snapshot_url``,
        ``is_fatal_reply``, ``rejected_symbols``, ``redact``, ``consecutive_trade_ids``.

    Notes
    -----
    ``now_ns`` arguments are wall-clock UTC ns (the engine clock when ``clock="wall"``);
    ``mono_ns`` arguments are monotonic ns (spacing of snapshot requests and log samples).
    """

    def __init__(self, config: MarketConfig, adapter) -> None:
        self.config = config
        self.adapter = adapter
        self._symbols: dict[str, SymbolState] = {}
        self._counts: Counter[str] = Counter()  # messages, trades, reconnects, duplicates, ...
        self.malformed: Counter[str] = Counter()  # by reason
        # symbol -> monotonic ns since its book has buffered depth without a usable snapshot
        self._unsynced_since: dict[str, int] = {}
        self._replies: deque[VendorReply] = deque(maxlen=_REPLIES_KEPT)
        self._exchange_clock_ns = 0
        self._grace_ns = int(config.close_grace_s * _NS)
        self._ids_consecutive = bool(adapter.consecutive_trade_ids)
        self._next_malformed_log_ns: int | None = None
        self._fatal_sent = False  # a fatal reply was already handed out
        self.source_finished = False
        self.klines = KlineChecker(config.kline_check) if config.kline_check else None
        # REST history: backfill and gap repair (progress and counters in the ledger).
        self.history = HistoryLedger()
        self._history_on = (bool(getattr(adapter, "serves_history", False)) and self._ids_consecutive
                            and (config.backfill_s > 0 or config.repair_gaps))
        # Per-bar verification against the vendor's 1m klines (live stream and REST).
        self.verifier = Verifier() if (self._history_on or config.kline_check == "1m") else None
        self._klines_asked: dict[str, int] = {}  # symbol -> minute start up to which REST klines were asked
        # The vendor's own candles (TickDB seed), kept apart from tickscope's bars.
        self._vendor_candles: dict[str, dict[int, Kline]] = {}
        self._vendor_errors: dict[str, str] = {}
        self._rebuild_due: dict[str, int] = {}  # symbol -> wall ns of the last history rebuild
        self._rebuild_stale: set[str] = set()  # symbols with history applied but not yet rebuilt

    # -- subscriptions ----------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Return the symbols held, in subscription order."""
        return list(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    def add_symbol(self, symbol: str, restored: Sequence[Trade] = (), meta: dict | None = None) -> bool:
        """Hold ``symbol`` (normalised), with trades restored from the store; False if held.

        Parameters
        ----------
        restored : sequence of Trade
            Stored trades, oldest first (the newest ``max_trades`` are kept).
        meta : dict, optional
            Stored ``price_decimals`` / ``size_decimals``.
        """
        if symbol in self._symbols:
            return False
        st = SymbolState(symbol, self.config.max_trades)
        if self._ids_consecutive:
            restored = in_id_order(restored)
        st.restore(restored, meta)
        self._symbols[symbol] = st
        if self.klines is not None:
            self.klines.add_symbol(symbol)
        if self.verifier is not None:
            self.verifier.add_symbol(symbol)
        if self.config.clock == "exchange" and st.last_trade_ts_ns:
            self._exchange_clock_ns = max(self._exchange_clock_ns, st.last_trade_ts_ns)
        return True

    def remove_symbol(self, symbol: str) -> bool:
        """Forget ``symbol``; return False if it was not held."""
        self._unsynced_since.pop(symbol, None)
        if self._symbols.pop(symbol, None) is None:
            return False
        if self.klines is not None:
            self.klines.remove_symbol(symbol)
        if self.verifier is not None:
            self.verifier.remove_symbol(symbol)
        self._klines_asked.pop(symbol, None)
        return True

    def state_of(self, symbol: str) -> SymbolState:
        """Return ``symbol``'s state itself, not a copy (for :meth:`take` and
        :meth:`rebuild_series`; ``feed.core.replica`` uses it).

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        return self._symbols[symbol]

    # -- clock --------------------------------------------------------------------------

    def clock_ns(self, now_ns: int) -> int:
        """Return the engine clock, UTC ns: ``now_ns`` live, the newest exchange time in replay."""
        return now_ns if self.config.clock == "wall" else self._exchange_clock_ns

    # -- the writer's side ------------------------------------------------------------

    def apply(self, inputs: Iterable[MarketInput], now_ns: int, mono_ns: int) -> Effects:
        """Apply inputs in order, close time bars by the clock; return the effects asked for.

        Parameters
        ----------
        inputs : iterable of MarketInput
            Parsed messages, malformed ones, snapshot bodies and life-cycle events.
        now_ns : int
            Wall clock, UTC ns.
        mono_ns : int
            Monotonic clock, ns.
        """
        fx = Effects()
        for item in inputs:
            kind = type(item)
            if kind is Parsed:
                self._counts["messages"] += 1
                for ev in item.events:
                    self._apply_event(ev, fx, mono_ns)
            elif kind is Malformed:
                self._counts["messages"] += 1
                self._malformed(item.reason, item.detail, item.sample, fx, mono_ns)
            elif kind is PlannedDisconnect:
                self._counts["messages"] += 1
                self._counts["server_shutdowns"] += 1
                fx.reconnect = f"vendor notice: {item.detail}"
            elif kind is SnapshotBody:
                self._apply_snapshot_body(item, fx, mono_ns)
            elif kind is HistoryPage or kind is HistoryFailed:
                self._apply_history(item, now_ns, fx)
            elif kind is VendorCandles:
                self._on_vendor_candles(item)
            elif kind is HistoryKlines:
                if self.verifier is not None:
                    for k in item.klines:
                        self.verifier.on_kline(k)
            else:
                self._apply_control(item, fx, mono_ns)
        self.close_bars(now_ns)
        self._ask_klines(now_ns, fx)
        return fx

    def on_clock(self, now_ns: int, mono_ns: int) -> Effects:
        """Close time bars whose interval has passed and ask for the snapshots books need."""
        self.close_bars(now_ns)
        fx = Effects()
        spacing_ns = int(self.config.snapshot_spacing_s * _NS)
        for st in self._symbols.values():
            if not st.book.needs_snapshot:
                self._unsynced_since.pop(st.symbol, None)
                continue
            if st.book_absent is not None:
                if not st.book.buffered:  # the source has no book: nothing to ask for
                    continue
                st.book_absent = None  # depth arrived after all: sync it as any book
            if st.book.buffered:  # depth is arriving but cannot be applied: count the wait
                self._unsynced_since.setdefault(st.symbol, mono_ns)
            if st.snapshot_due_ns is not None and mono_ns < st.snapshot_due_ns:
                continue
            url = self.adapter.snapshot_url(st.symbol)
            if url:
                st.snapshot_due_ns = mono_ns + spacing_ns
                fx.snapshots.append((st.symbol, url))
        return fx

    def _apply_event(self, ev, fx: Effects, mono_ns: int) -> None:
        # Four kinds are on the hot path; a type switch beats a table of bound methods.
        t = type(ev)
        if t is Trade:
            self._on_trade(ev, fx, mono_ns)
        elif t is BookDelta:
            st = self._symbols.get(ev.symbol)
            if st is None:
                self._malformed("unsubscribed_symbol", ev.symbol, None, fx, mono_ns)
                return
            st.book.apply_delta(ev)  # the replay clock follows trade times only
        elif t is BookSnapshot:
            st = self._symbols.get(ev.symbol)
            if st is not None:
                st.book.apply_snapshot(ev)
        elif t is VendorReply:
            self._on_reply(ev, fx)
        elif t is Kline:
            if self.klines is not None:
                self.klines.on_kline(ev)
            if self.verifier is not None:
                self.verifier.on_kline(ev)
        # BookTicker: for verification tools, not for the market state.

    def _on_trade(self, trade: Trade, fx: Effects, mono_ns: int) -> None:
        st = self._symbols.get(trade.symbol)
        if st is None:
            self._malformed("unsubscribed_symbol", trade.symbol, None, fx, mono_ns)
            return
        problem = st.time_problem(trade, int(self.config.time_window_s * _NS), self.config.clock == "wall")
        if problem:
            self._malformed("time_out_of_window", problem, None, fx, mono_ns)
            return
        tid = trade.trade_id
        if tid is not None and not 0 <= tid <= _INT64_MAX:
            self._malformed("bad_trade_id", f"{trade.symbol} id {tid}", None, fx, mono_ns)
            return
        if tid is None or st.last_trade_id is None or not self._ids_consecutive:
            if tid is not None and not st.trades and self._history_on and self.config.backfill_s > 0:
                self._ask_history(fx, HistoryRequest("backfill", st.symbol, None, tid - 1,
                                                     trade.ts_ns - int(self.config.backfill_s * _NS), trade.ts_ns))
            self.take(st, trade, fx)
            return
        if tid <= st.last_trade_id:
            self._counts["duplicates"] += 1
            return
        if st.suspect is not None:
            self._settle_suspect(st, trade, fx, mono_ns)
        elif tid - st.last_trade_id > MAX_ID_JUMP:
            st.suspect = trade  # one bogus id must not become the baseline: wait for the next
            return
        if tid > st.last_trade_id + 1:
            self._gap(st, trade, fx)
        self.take(st, trade, fx)

    def _settle_suspect(self, st: SymbolState, trade: Trade, fx: Effects, mono_ns: int) -> None:
        # The trade after a far jump decides: one that follows it confirms the jump (a real
        # gap), one that follows the old sequence shows the jumped id was bogus.
        suspect, st.suspect = st.suspect, None
        if trade.trade_id == suspect.trade_id + 1:
            self._gap(st, suspect, fx)
            self.take(st, suspect, fx)
        else:
            self._malformed("suspect_trade_id", f"{suspect.symbol} id {suspect.trade_id} after "
                            f"{st.last_trade_id}", None, fx, mono_ns)

    def rebuild_series(self, st: SymbolState, now_ns: int) -> None:
        """Rebuild every bar series of ``st`` from its tape, after trades were put in place
        inside it (history); ``now_ns`` is wall-clock UTC ns (see :meth:`clock_ns`).

        Each rebuilt series gets the next generation, so readers redraw; a series the tape
        now makes too big for ``max_rebuild_bars`` is dropped. Also used by
        ``feed.core.replica``.
        """
        trades = st.trades.snapshot()
        for spec, old in list(st.series.items()):
            try:
                agg = self.build_series(SeriesSeed(st.symbol, spec, trades, st.n_trades, self.clock_ns(now_ns)))
            except ValueError:
                del st.series[spec]
                continue
            agg.generation = old.generation + 1
            st.series[spec] = agg

    def take(self, st: SymbolState, trade: Trade, fx: Effects) -> None:
        """Apply a trade that passed every check to ``st`` (from :meth:`state_of`): its
        tape, series, decimals and counts, the engine clock, the kline check and
        verification; it goes out in ``fx.persist``.

        No check is made here: the writer's rules (:meth:`apply`) or, in a replica, the
        collector (``feed.core.replica``) decided the trade belongs on the tape.
        """
        if trade.trade_id is not None:
            st.last_trade_id = trade.trade_id
        self._counts["trades"] += 1
        st.n_trades += 1
        if st.last_trade_ts_ns is None or trade.ts_ns > st.last_trade_ts_ns:
            st.last_trade_ts_ns = trade.ts_ns
        if trade.ts_ns > self._exchange_clock_ns:
            self._exchange_clock_ns = trade.ts_ns
        # Decimals settle within the first trades; sampling later keeps the hot path cheap.
        if st.n_trades <= 2000 or st.n_trades % 1000 == 0:
            st.note_decimals(trade)
        st.trades.append(trade)
        for agg in st.series.values():
            agg.on_trade(trade)
        if self.klines is not None:
            self.klines.on_trade(trade)
        if self.verifier is not None:
            self.verifier.on_trade(trade.symbol, trade.ts_ns, trade.in_bars)
        fx.persist.append(trade)

    def _on_reply(self, reply: VendorReply, fx: Effects) -> None:
        self._replies.append(reply)
        if reply.ok:
            return
        if not self._fatal_sent and self.adapter.is_fatal_reply(reply):
            self._fatal_sent = True
            fx.fail = reply.message
        for symbol in self.adapter.rejected_symbols(reply):
            if symbol in self._symbols:
                fx.unsubscribe.append((symbol, reply.message))

    def _apply_snapshot_body(self, item: SnapshotBody, fx: Effects, mono_ns: int) -> None:
        st = self._symbols.get(item.symbol)
        if st is None:
            return
        try:
            snap = self.adapter.parse_snapshot(item.symbol, item.body, item.recv_ns)
        except MalformedMessage as exc:
            self._malformed("bad_snapshot", exc.detail, item.body[:200], fx, mono_ns)
            fx.snapshot_outcomes.append((item.symbol, False))
            return
        st.book.apply_snapshot(snap)
        fx.snapshot_outcomes.append((item.symbol, not st.book.needs_snapshot))
        if st.book.needs_snapshot:  # the snapshot did not bridge the buffered diffs: ask again
            st.snapshot_due_ns = None

    def _apply_control(self, item, fx: Effects, mono_ns: int) -> None:
        t = type(item)
        if t is FeedOpened:
            if item.generation > 1:
                self._counts["reconnects"] += 1
                if self.klines is not None:
                    self.klines.on_reconnect()
                # Diffs were missed while disconnected: every book resyncs.
                for st in self._symbols.values():
                    st.book.reset()
                    st.snapshot_due_ns = None
        elif t is SnapshotFailed:
            self._on_snapshot_failed(item, fx, mono_ns)
        elif t is FeedError:
            if not item.planned:  # a planned reconnect is not an error to show
                self._replies.append(VendorReply(False, item.message))
        elif t is SourceFinished:
            self.source_finished = True
            self._ask_tails(fx)
        # FeedClosed: the following FeedOpened (or FeedError) says what matters.

    def _on_snapshot_failed(self, item: SnapshotFailed, fx: Effects, mono_ns: int) -> None:
        st = self._symbols.get(item.symbol)
        if item.status == 404 and self.config.clock == "exchange" and st is not None:
            # The replay exchange's word for "this recording holds no book of the symbol"
            # (feed.exchange.dialect.not_recorded): a fact of the recording, not a failure.
            st.book_absent = BOOK_NOT_RECORDED
            self._unsynced_since.pop(item.symbol, None)
            return
        refused = item.status == 400  # Binance -1121 "Invalid symbol": the vendor does not list it
        if st is not None:
            st.snapshot_due_ns = mono_ns + _SNAPSHOT_FAILED_WAIT_NS + int(self.config.snapshot_spacing_s * _NS)
        text = f"{item.symbol}: depth snapshot failed: {item.error}" + ("; unsubscribed" if refused else "")
        self._replies.append(VendorReply(False, text, symbols=(item.symbol,)))
        if refused and st is not None:
            fx.unsubscribe.append((item.symbol, "the vendor does not list it (depth snapshot HTTP 400)"))

    def _malformed(self, reason: str, detail: str, sample, fx: Effects, mono_ns: int) -> None:
        self.malformed[reason] += 1
        due = self._next_malformed_log_ns
        if due is not None and mono_ns < due:
            return
        self._next_malformed_log_ns = mono_ns + _MALFORMED_LOG_EVERY_NS
        text = sample[:120] if isinstance(sample, (bytes, str)) else sample
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        redact = self.adapter.redact
        fx.malformed_logs.append((reason, redact(str(detail))[:200], redact(text)))

    def close_bars(self, now_ns: int) -> None:
        """Close every time bar whose interval ended ``close_grace_s`` before the engine
        clock (:meth:`clock_ns` of ``now_ns``, wall-clock UTC ns); :meth:`apply` and
        :meth:`on_clock` do it too."""
        now = self.clock_ns(now_ns) - self._grace_ns
        for st in self._symbols.values():
            for agg in st.series.values():
                agg.on_clock(now)
        if self.klines is not None:
            self.klines.on_clock(now)

    # -- bar series -----------------------------------------------------------------------

    def series_seed(self, symbol: str, spec: BarSpec, now_ns: int) -> SeriesSeed | None:
        """Return what a new series of ``spec`` is built from, or None if it exists.

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        st = self._symbols[symbol]
        if spec in st.series:
            return None
        return SeriesSeed(symbol, spec, st.trades.snapshot(), st.n_trades, self.clock_ns(now_ns), st.inserts)

    def build_series(self, seed: SeriesSeed) -> BarAggregator:
        """Return a new aggregator fed with ``seed``'s trades (no state touched: lock-free).

        Raises
        ------
        ValueError
            When the spec would make more than ``max_rebuild_bars`` bars from the trades
            (the message says how many and what to do).
        """
        estimate = estimate_held(seed.spec, seed.trades, self.config.bar_options.get("empty", "gap"))
        if estimate > self.config.max_rebuild_bars:
            raise ValueError(
                f"bar spec {seed.spec} would make about {estimate:,.0f} bars from the "
                f"{len(seed.trades):,} trades held (at most {self.config.max_rebuild_bars:,}): "
                "choose a larger step")
        agg = make_aggregator(seed.symbol, seed.spec, max_bars=self.config.max_bars, **self.config.bar_options)
        agg.on_trades(seed.trades)
        agg.on_clock(seed.clock_ns - self._grace_ns)
        return agg

    def install_series(self, seed: SeriesSeed, agg: BarAggregator, now_ns: int) -> None:
        """Swap a series built from ``seed`` in, after feeding it the trades applied since.

        A series installed meanwhile by another reader is kept (both are equal).
        """
        st = self._symbols.get(seed.symbol)
        if st is None or seed.spec in st.series:
            return
        behind = st.n_trades - seed.n_trades
        # Rebuilt from what is held when the tape rolled past the seed, or when history was
        # put in place inside it since (catching up with the newest trades would miss it).
        if behind > len(st.trades) or st.inserts != seed.inserts:
            agg = self.build_series(SeriesSeed(seed.symbol, seed.spec, st.trades.snapshot(), st.n_trades,
                                               self.clock_ns(now_ns)))
        elif behind > 0:
            agg.on_trades(st.trades.last(behind))
        agg.on_clock(self.clock_ns(now_ns) - self._grace_ns)
        while len(st.series) >= self.config.max_series:  # evict the least recently read
            del st.series[next(iter(st.series))]
        st.series[seed.spec] = agg

    def bar_series(self, symbol: str, spec: BarSpec, since: int = 0) -> BarSeries | None:
        """Return copies of the closed bars with index >= ``since`` and the bar in progress,
        or None when no series of ``spec`` exists yet (build one from :meth:`series_seed`).

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        return self._symbols[symbol].series_copy(spec, since)

    def trade_view(self, symbol: str) -> TradeView:
        """Return a lock-free snapshot of ``symbol``'s held trades (older bars are built
        from it outside the engine lock).

        Raises
        ------
        KeyError
            If ``symbol`` is not held.
        """
        return self._symbols[symbol].trades.snapshot()

    # -- readers (copies) -----------------------------------------------------------------

    def depth(self, symbol: str, levels: int = 50) -> DepthView | None:
        """Return the top ``levels`` of ``symbol``'s book, or None if not held."""
        st = self._symbols.get(symbol)
        return st.depth(levels) if st is not None else None

    def trades(self, symbol: str, limit: int = 100) -> list[Trade]:
        """Return the last ``limit`` trades of ``symbol``, oldest first ([] if not held)."""
        st = self._symbols.get(symbol)
        return st.recent(limit) if st is not None else []

    def gap_marks_since(self, symbol: str, since: int = 0) -> tuple[int, list[tuple[int, int]]]:
        """Return ``(total, marks)``: how many trade-id gap marks ``symbol`` has had, and
        ``(ts_ns, missing_trades)`` of those with sequence index >= ``since`` still held.

        Marks are numbered 0, 1, 2, ... in the order seen; the latest 1000 are held. A
        reader that drew marks ``0..since-1`` passes ``since`` and gets exactly the new
        ones: it missed some (and must redraw) when ``total - len(marks) != since``.
        An unknown symbol gives ``(0, [])``.

        Raises
        ------
        ValueError
            If ``since`` is negative.
        """
        st = self._symbols.get(symbol)
        return st.gap_marks_since(since) if st is not None else marks_since(0, (), since)

    def count(self, name: str) -> int:
        """Return one counter: messages, trades, reconnects, duplicates, server_shutdowns."""
        return self._counts[name]

    def verify_report(self, symbol: str, bars: list) -> dict | None:
        """Return the per-bar verification of ``symbol``'s 1m ``bars`` (``Verifier.report``),
        or None when verification is off or the symbol is not held. The first fully covered
        minute is the one after the oldest trade held (that one was cut by the start)."""
        st = self._symbols.get(symbol)
        if self.verifier is None or st is None:
            return None
        covered = None
        first, last = st.trades.oldest(), st.trades.newest()
        if first is not None and last is not None:
            oldest = min(first.ts_ns, last.ts_ns)
            covered = oldest - oldest % MINUTE_NS + MINUTE_NS
        return self.verifier.report(symbol, bars, covered)

    def missing_trades(self) -> int:
        """Return trades missing across trade-id jumps, over every symbol held."""
        return sum(st.missing_trades for st in self._symbols.values())

    def late_trades(self) -> int:
        """Return trades too late for their time bar: each symbol's worst series, summed
        (a trade late for one series is late for every finer one too)."""
        return sum(st.late() for st in self._symbols.values())

    def symbol_status(self, mono_ns: int | None = None) -> dict[str, SymbolStatus]:
        """Return each held symbol's figures, in subscription order.

        With ``mono_ns`` (monotonic ns), ``book_unsynced_s`` says how long a book has been
        buffering depth without a usable snapshot (as of the last ``on_clock``).
        """
        out = {}
        for s, st in self._symbols.items():
            status = st.status()
            since = self._unsynced_since.get(s)
            if mono_ns is not None and since is not None and not status.book_synced:
                status = replace(status, book_unsynced_s=round(max(0, mono_ns - since) / _NS, 1))
            out[s] = status
        return out

    def refusals(self, last: int = 5) -> tuple[str, ...]:
        """Return the vendor's latest ``last`` refusals in words, newest last."""
        refused = [r.message for r in self._replies if not r.ok]
        return tuple(refused[-last:])

    def decimals(self) -> list[tuple[str, dict]]:
        """Return ``(symbol, {"price_decimals", "size_decimals"})`` of symbols with trades."""
        return [(st.symbol, {"price_decimals": st.price_dp, "size_decimals": st.size_dp})
                for st in self._symbols.values() if st.n_trades]
