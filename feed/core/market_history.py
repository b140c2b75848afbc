"""The market state's REST-history rules, split out of :mod:`feed.core.market` by
responsibility: trade-id gaps and their repair, the backfill and tail requests, pages of
history put in place, the vendor's REST klines asked for verification, and the vendor's
own candles (TickDB seed).

:class:`HistoryRules` is mixed into :class:`feed.core.market.MarketState` and is not used
alone: its methods read and write the market state's attributes (``_symbols``,
``config``, ``history``, ``verifier``, ``klines``, ``_history_on``, ...), set up in
``MarketState.__init__``. Pure, like the market state.
"""

from __future__ import annotations

from feed.core.events import Effects, HistoryFailed, HistoryPage, HistoryRequest, VendorCandles
from feed.core.history import MAX_REPAIR_IDS, not_held, trades_from_aggregates
from feed.core.models import Kline, Trade
from feed.core.symbol import SymbolState
from feed.core.verify import MINUTE_NS

__all__ = ["HistoryRules"]

_NS = 1_000_000_000
_INT64_MAX = (1 << 63) - 1
#: How far past the newest trade held a tail request looks (one REST time window), ns.
_TAIL_SPAN_NS = 3600 * _NS - 1_000_000


class HistoryRules:
    """REST history and vendor-candle steps of :class:`~feed.core.market.MarketState`
    (see the module docstring)."""

    def history_json(self) -> dict:
        """Return REST history progress and counters (``HistoryLedger.as_json``)."""
        return self.history.as_json()

    def _gap(self, st: SymbolState, trade: Trade, fx: Effects) -> None:
        before = st.last_trade_ts_ns
        lo = st.last_trade_id + 1
        st.record_gap(trade)
        if self.klines is not None:
            self.klines.mark_incomplete(trade.symbol, before or trade.ts_ns, trade.ts_ns)
        if self.verifier is not None:
            self.verifier.note_gap(trade.symbol, before or trade.ts_ns, trade.ts_ns, trade.trade_id - lo)
        if self._history_on and self.config.repair_gaps:
            req = HistoryRequest("repair", st.symbol, lo, trade.trade_id - 1, before or trade.ts_ns, trade.ts_ns)
            span_s = (req.end_ns - req.start_ns) / _NS
            too_big = trade.trade_id - lo >= MAX_REPAIR_IDS or (self.config.backfill_s and span_s > self.config.backfill_s)
            if too_big:  # e.g. a restart after hours: more than --backfill would fetch
                self.history.note_failed(self.history.open(req), HistoryFailed(
                    0, req, f"not fetched: the gap spans {span_s:,.0f} s / {trade.trade_id - lo:,} ids, more "
                            "than --backfill allows"))
            else:
                self._ask_history(fx, req)

    def _ask_tails(self, fx: Effects) -> None:
        # The source has played out: trades it published while the connection was down at
        # its end are followed by no live trade whose id jump would reveal them. Ask for
        # whatever the vendor holds after the newest trade of each symbol (an hour at most).
        if not (self._history_on and self.config.repair_gaps):
            return
        for st in self._symbols.values():
            if st.last_trade_id is not None and st.last_trade_ts_ns is not None:
                self._ask_history(fx, HistoryRequest("tail", st.symbol, st.last_trade_id + 1, _INT64_MAX,
                                                     st.last_trade_ts_ns, st.last_trade_ts_ns + _TAIL_SPAN_NS))

    def _ask_history(self, fx: Effects, request: HistoryRequest) -> None:
        self.history.open(request)
        fx.history.append(request)

    def _apply_history(self, item: HistoryPage | HistoryFailed, now_ns: int, fx: Effects) -> None:
        # A page of aggregate trades (or a request given up): put the trades in place,
        # count them, and rebuild the symbol's series from the tape.
        req = item.request
        st = self._symbols.get(req.symbol)
        progress = self.history.find(req)
        if st is None or progress is None:
            return
        if type(item) is HistoryFailed:
            self.history.note_failed(progress, item)
            return
        held = st.trades.snapshot().columns()
        new, _ = trades_from_aggregates(
            req.symbol, item.rows, req.lo_id, req.hi_id, req.start_ns if req.kind == "backfill" else None,
            held["id"], held["size"], progress.last_agg_ids, held_counts=held["count"])
        new = not_held(new, held["id"])  # e.g. a tail page racing a live trade: never twice
        kept = st.insert_trades(new)
        fx.inserted.extend(kept)
        ids = sum(t.count for t in kept)
        self.history.note_page(progress, item, kept, ids)
        if req.kind == "repair" and ids:
            st.note_repaired(req.end_ns, ids)
            if self.verifier is not None:
                self.verifier.note_repaired(req.symbol, req.end_ns, ids)
        elif req.kind == "tail" and kept:
            st.note_tail(kept, ids)
            # The replay clock follows the newest exchange time: the tail moves it on, so
            # the minutes it completed close.
            self._exchange_clock_ns = max(self._exchange_clock_ns, st.last_trade_ts_ns)
        if kept:
            self._rebuild_stale.add(req.symbol)
        last = self._rebuild_due.get(req.symbol)
        # Rebuilding every series per page would redraw the chart per page: while a
        # backfill runs, at most once a second; always when a request is done.
        if req.symbol in self._rebuild_stale and (item.done or req.kind != "backfill" or last is None
                                                  or now_ns - last >= _NS):
            self._rebuild_stale.discard(req.symbol)
            self._rebuild_due[req.symbol] = now_ns
            self.rebuild_series(st, now_ns)
        if item.done and self.verifier is not None and progress.oldest_ns is not None:
            # The vendor's klines of the minutes the history filled, for verification.
            fx.history.append(HistoryRequest("klines", req.symbol, None, 0, progress.oldest_ns - progress.oldest_ns
                                             % MINUTE_NS, req.end_ns))

    def _on_vendor_candles(self, item: VendorCandles) -> None:
        # Hold the vendor's candles of a held symbol (newest 20,000), or why there are none.
        if item.symbol not in self._symbols:
            return
        if item.error:
            self._vendor_errors[item.symbol] = item.error
            self._replies.append(VendorReply(False, f"{item.symbol}: vendor candles: {item.error}",
                                             symbols=(item.symbol,)))
            return
        held = self._vendor_candles.setdefault(item.symbol, {})
        for k in item.klines:
            held[k.start_ns] = k
        while len(held) > 20_000:
            del held[min(held)]

    def vendor_candles(self, symbol: str) -> list[Kline]:
        """Return the vendor's own 1m candles held for ``symbol``, oldest first ([] if none)."""
        held = self._vendor_candles.get(symbol) or {}
        return [held[s] for s in sorted(held)]

    def _ask_klines(self, now_ns: int, fx: Effects) -> None:
        # Without a live kline stream, ask the vendor's REST klines of the minutes closed
        # (5 s ago, so the vendor has finalised them), once per minute per symbol.
        if self.verifier is None or not self._history_on or self.config.kline_check == "1m":
            return
        upto = self.clock_ns(now_ns) - 5 * _NS
        upto -= upto % MINUTE_NS  # start of the minute in progress 5 s ago
        for st in self._symbols.values():
            if st.last_trade_ts_ns is None:
                continue
            asked = self._klines_asked.get(st.symbol)
            if asked is None:
                self._klines_asked[st.symbol] = upto  # live minutes from here on
                continue
            if upto > asked:
                self._klines_asked[st.symbol] = upto
                fx.history.append(HistoryRequest("klines", st.symbol, None, 0, asked, upto))
