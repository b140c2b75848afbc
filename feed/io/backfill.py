"""REST history fetcher: backfill on start and trade-id gap repair, on a daemon thread.

The market state asks for history with :class:`~feed.core.events.HistoryRequest` effects;
the engine hands them to :class:`HistoryFetcher`, which pages through the vendor's
aggregate trades (Binance ``GET /api/v3/aggTrades`` / ``/fapi/v1/aggTrades``) and hands
each page to the sink as a :class:`~feed.core.events.HistoryPage` (a
:class:`~feed.core.events.HistoryFailed` when it gives up). It never touches the market
state: the core puts the trades in place (``feed.core.history``).

Paging (shared/vendor-protocols.md "REST history"):

* Backfill, newest first so the chart fills from the right: find the newest aggregate
  holding an id before the first live trade with short ``startTime``/``endTime`` windows
  ending at that trade's time (widened backwards, each under one hour), then walk back
  by ``fromId`` in pages of ``page_limit`` (at most 1000) until an aggregate older than
  the backfill start.
* Repair, oldest first: a window from the trade before the gap (under one hour), then
  forward by ``fromId`` until an aggregate past the gap's last id. A tail (ids after the
  newest trade held, open-ended) pages the same way until a short page: the vendor's
  newest; an empty window means there is nothing after it.

Rate limits: the ``X-MBX-USED-WEIGHT-1M`` header is read after every call; past
``weight_budget`` the fetcher waits for the next minute. HTTP 429 and 418 wait as
``Retry-After`` says (418 is Binance's ban: a wait beyond ``max_wait_s`` gives up with the
reason). Other failures retry with backoff ``max_attempts`` times, then give up.

Facts, with their source, and what is uncertain
-----------------------------------------------
(shared/vendor-protocols.md "REST history"; Binance's pages read through the search tool
on 2026-12-03; "uncertain" marks what a page does not settle.)

* Page limit: ``limit`` default 500, at most 1000, for spot and USD-M aggTrades
  (developers.binance.com, USD-M "Compressed-Aggregate-Trades-List"; spot "market" page).
* Time window: with both ``startTime`` and ``endTime`` the span must be under one hour
  (else -1127), so every window here is at most ``HOUR_MS - 1``. Sending ``fromId`` with
  a time window "might cause response timeout" (USD-M page): never combined here.
* Weights: USD-M aggTrades 20 (USD-M page). Spot aggTrades is uncertain: 2 (2018
  changelog), 1 (binance_spot_connector_rust docs), 4 (third-party tools quoting the 2024
  docs); the current spot page only says "consumes IP-based request weight". So the
  fetcher trusts the header, never a table. Per-minute limits: spot 6000 (1200 in older
  docs), USD-M 2400 -- also uncertain, hence ``weight_budget`` well below either.
* The weight window: the header is "the current used weight for the IP for all request
  rate limiters" over ``1M``; whether that minute is a calendar minute or rolling is
  uncertain. Waiting for the next calendar minute is right for the former and safe for
  the latter only with the 429 handling behind it.
* ``Retry-After`` (seconds) comes with 429 and 418: for a 429 the wait that prevents a
  ban, for a 418 the time until the ban ends; bans grow from 2 minutes to 3 days for
  repeat offenders (Binance spot "Limits", quoted in dev.binance.vision threads). A 403
  is the web application firewall (``feed.io.policy`` counts it fatal: the request is
  given up at once with the reason, never hammered).
* How far back: COIN-M's page says futures trade history "not older than one year"; a
  third-party USD-M client says time windows reach back only about 48 hours (unverified).
  Anchors are always near the first live trade, and a repair older than ``--backfill`` is
  not attempted.
* Aggregation rule: spot aggregates "fill at the time, from the same taker order, with the
  same price"; the USD-M page says "market trades that fill in 100ms with the same price
  and the same taking side", and only MARKET trades (no insurance-fund or ADL fills). Both
  hold consecutive trade ids ``f..l``, which is all ``feed.core.history`` relies on: bars
  from them equal bars from the trades either way.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.parse
from collections.abc import Mapping
from typing import Any

from feed.core.events import HistoryFailed, HistoryKlines, HistoryPage, HistoryRequest
from feed.core.models import AggTrade, MalformedMessage
from feed.io.policy import Retry, classify_error, explain_error, http_status, retry_after_s
from feed.io.rest import HistoryError, RestWorker
from feed.vendors.binance_wire import parse_agg_trades_body, parse_klines_body

__all__ = ["HistoryFetcher", "HistoryError", "HOUR_MS"]

log = logging.getLogger("tickscope.feed")

HOUR_MS = 3_600_000
_MS = 1_000_000


class HistoryFetcher(RestWorker):
    """Fetch REST aggregate trades for history requests on one daemon thread
    (``feed.io.rest.RestWorker``).

    Parameters
    ----------
    sink
        The engine (``submit_control``).
    agg_trades_url : str
        The aggregate-trades endpoint (``adapter.history_url("aggTrades")``).
    page_limit : int
        Rows per call, 1..1000 (Binance's maximum).
    weight_budget : int
        Weight per minute the fetcher stays under (read from ``X-MBX-USED-WEIGHT-1M``);
        Binance USD-M allows 2400 a minute per IP, spot 6000, and the live feed's depth
        snapshots share it.
    timeout_s : float
        Socket timeout per call, seconds.
    max_attempts : int
        Tries per call on errors worth retrying.
    max_wait_s : float
        Longest wait the fetcher accepts (a 418 ban can last days), seconds.
    clock : callable
        Wall clock in seconds (the minute window); tests may replace it.

    Attributes
    ----------
    calls, weight_max : int
        REST calls made, and the highest used weight the vendor reported.
    """

    def __init__(self, sink: Any, agg_trades_url: str, *, klines_url: str | None = None, page_limit: int = 1000, weight_budget: int = 1200,
                 timeout_s: float = 10.0, max_attempts: int = 4, max_wait_s: float = 120.0,
                 clock=time.time) -> None:
        if not 1 <= page_limit <= 1000:
            raise ValueError(f"page_limit must be 1..1000, not {page_limit!r}")
        if weight_budget < 1 or max_attempts < 1:
            raise ValueError("weight_budget and max_attempts must be >= 1")
        super().__init__("history", timeout_s=timeout_s, max_attempts=max_attempts, max_wait_s=max_wait_s)
        self._sink = sink
        self._url = agg_trades_url
        # Vendor 1m klines endpoint (verification); default: beside the aggregate trades.
        self._klines_url = klines_url or agg_trades_url.rsplit("/", 1)[0] + "/klines"
        self._limit = page_limit
        self._budget = weight_budget
        self._clock = clock
        self.calls = 0
        self.weight_max = 0
        self._used = 0  # weight the vendor last reported
        self._used_at = 0.0  # when, clock seconds

    def request(self, request: HistoryRequest) -> None:
        """Queue ``request`` (served in order, one at a time)."""
        self._put(request)

    # -- worker ------------------------------------------------------------------------

    def _serve(self, req: HistoryRequest) -> None:
        if req.kind == "backfill":
            self._backfill(req)
        elif req.kind == "klines":
            self._klines(req)
        else:
            self._repair(req)

    def _give_up(self, req: HistoryRequest, exc: Exception) -> None:
        if isinstance(exc, HistoryError):
            log.warning("history: %s %s given up: %s", req.kind, req.symbol, exc)
            if req.kind == "klines":
                return  # those minutes stay unverified
            self._sink.submit_control(HistoryFailed(time.time_ns(), req, str(exc)))
        else:  # a bug must not kill the thread
            log.error("history: %s %s failed unexpectedly", req.kind, req.symbol, exc_info=exc)
            self._sink.submit_control(HistoryFailed(time.time_ns(), req, f"internal error: {exc!r}"))

    def _page(self, req: HistoryRequest, rows: list[AggTrade], calls: int, done: bool) -> None:
        self._sink.submit_control(HistoryPage(time.time_ns(), req, tuple(rows), done, calls, self._used))

    def _backfill(self, req: HistoryRequest) -> None:
        # Newest first: anchor on the newest aggregate holding an id <= hi, then walk back.
        cut_ms = -(-req.start_ns // _MS)
        end_ms = req.end_ns // _MS
        calls = 0
        anchor: list[AggTrade] = []
        width = 2_000
        hi_ms = end_ms
        while not anchor:
            lo_ms = max(cut_ms, hi_ms - width + 1)
            if lo_ms > hi_ms:
                self._page(req, [], calls, True)  # no trade in the whole backfill span
                return
            rows = self._get(req.symbol, startTime=lo_ms, endTime=hi_ms)
            calls += 1
            while rows and len(rows) == self._limit and rows[-1].first_id <= req.hi_id:
                more = self._get(req.symbol, fromId=rows[-1].agg_id + 1)  # a busy window: forward
                calls += 1
                if not more:
                    break
                rows = rows + more
            anchor = [r for r in rows if r.first_id <= req.hi_id and r.ts_ns // _MS >= cut_ms]
            hi_ms = lo_ms - 1
            width = min(width * 8, HOUR_MS - 1)
        if self._stop.is_set():
            return
        oldest = anchor[0].agg_id
        # Newest first: the anchor rows go out in chunks from the right.
        for i in range(len(anchor), 0, -self._limit):
            chunk = anchor[max(0, i - self._limit):i]
            self._page(req, chunk, calls, False)
            calls = 0
        while oldest > 0 and not self._stop.is_set():
            from_id = max(0, oldest - self._limit)
            rows = [r for r in self._get(req.symbol, fromId=from_id, limit=oldest - from_id) if r.agg_id < oldest]
            calls += 1
            if not rows:
                break
            oldest = rows[0].agg_id
            past_cut = rows[0].ts_ns // _MS < cut_ms
            self._page(req, [r for r in rows if r.ts_ns // _MS >= cut_ms], calls, past_cut)
            calls = 0
            if past_cut:
                return
        self._page(req, [], calls, True)

    def _repair(self, req: HistoryRequest) -> None:
        # Oldest first: a window from the trade before the gap, then forward by fromId.
        start_ms = req.start_ns // _MS
        end_ms = max(start_ms, req.end_ns // _MS)
        calls = 0
        rows: list[AggTrade] = []
        full = False
        lo_ms = start_ms
        while not rows:
            if lo_ms > end_ms and req.kind == "tail":
                self._page(req, [], calls, True)  # nothing after the newest trade held
                return
            if lo_ms > end_ms:
                raise HistoryError(f"the vendor's history holds no trade between the gap's ends "
                                   f"(ids {req.lo_id}..{req.hi_id})")
            hi_ms = min(end_ms, lo_ms + HOUR_MS - 1)
            raw = self._get(req.symbol, startTime=lo_ms, endTime=hi_ms)
            calls += 1
            full = len(raw) == self._limit
            rows = [r for r in raw if r.last_id >= req.lo_id]
            if not rows and full:  # a busy window before the gap: go on by id
                rows = [r for r in self._get(req.symbol, fromId=raw[-1].agg_id + 1) if r.last_id >= req.lo_id]
                calls += 1
            lo_ms = hi_ms + 1
        while not self._stop.is_set():
            wanted = [r for r in rows if r.first_id <= req.hi_id]
            done = len(wanted) < len(rows) or not full
            self._page(req, wanted, calls, done)
            calls = 0
            if done:
                return
            rows = self._get(req.symbol, fromId=rows[-1].agg_id + 1)
            calls += 1
            full = len(rows) == self._limit
            if not rows:
                self._page(req, [], calls, True)
                return

    def _klines(self, req: HistoryRequest) -> None:
        # The vendor's final 1m klines of [start_ns, end_ns), 1000 a call; only minutes
        # already closed are asked for (the market state's rule), so each is final.
        start_ms = req.start_ns // _MS
        end_ms = req.end_ns // _MS
        while start_ms < end_ms and not self._stop.is_set():
            body = self._call(self._klines_url, req.symbol,
                              {"interval": "1m", "startTime": start_ms, "endTime": end_ms - 1, "limit": 1000})
            try:
                klines = [k for k in parse_klines_body(req.symbol, body) if k.end_ns <= req.end_ns]
            except MalformedMessage as exc:
                raise HistoryError(f"unusable klines answer: {exc.detail}") from None
            if klines:
                self._sink.submit_control(HistoryKlines(time.time_ns(), req.symbol, tuple(klines)))
            if len(klines) < 1000:
                return
            start_ms = klines[-1].start_ns // _MS + 60_000

    # -- one call --------------------------------------------------------------------

    def _get(self, symbol: str, **params: int) -> list[AggTrade]:
        body = self._call(self._url, symbol, {"limit": self._limit, **params})
        try:
            return list(parse_agg_trades_body(body))
        except MalformedMessage as exc:
            raise HistoryError(f"unusable answer: {exc.detail}") from None

    def _call(self, base: str, symbol: str, params: dict) -> bytes:
        # One GET with retries, rate limits and the weight header; returns the body.
        query = {"symbol": symbol, **{k: str(v) for k, v in params.items()}}
        return self.get(f"{base}?{urllib.parse.urlencode(query)}", {}, self._judge, f"history: {symbol}",
                        before=self._respect_budget)

    def _judge(self, body: bytes | None, headers: Mapping[str, str] | None,
               exc: BaseException | None) -> bytes | Retry:
        # Binance: note the used weight either way; a 400 or a fatal error is given up at
        # once with the vendor's words, anything else retried (429/418 after Retry-After).
        if exc is None:
            self._note_weight(headers.get("X-MBX-USED-WEIGHT-1M"))
            self.calls += 1
            return body
        exc_headers = getattr(exc, "headers", None)
        if exc_headers is not None:
            self._note_weight(exc_headers.get("X-MBX-USED-WEIGHT-1M"))
        message = explain_error(exc)
        if http_status(exc) == 400 or classify_error(exc) == "fatal":
            raise HistoryError(f"the vendor refused the request: {message}{_body_words(exc)}")
        return Retry(message, retry_after_s(exc), prefix="endpoint unavailable: ")

    def _note_weight(self, header: str | None) -> None:
        try:
            used = int(header) if header is not None else None
        except ValueError:
            used = None
        if used is not None and used >= 0:
            self._used, self._used_at = used, self._clock()
            self.weight_max = max(self.weight_max, used)

    def _respect_budget(self) -> None:
        # Past the budget in this minute: wait for the next one (the header resets then).
        if self._used < self._budget:
            return
        now = self._clock()
        if int(now // 60) != int(self._used_at // 60):
            return
        wait = 60 - now % 60 + 0.05
        log.info("history: used weight %d >= budget %d; waiting %.1f s", self._used, self._budget, wait)
        self._stop.wait(wait)
        self._used = 0


def _body_words(exc: BaseException) -> str:
    # Binance's {"code":..,"msg":..} of a refusal, briefly ("" when absent or unreadable).
    if not isinstance(exc, urllib.error.HTTPError):
        return ""
    try:
        text = exc.read(300).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - best effort
        return ""
    return f" ({text})" if text else ""
