"""Kline cross-check: compare the vendor's own candles with tickscope's bars, per interval.

Binance pushes ``<symbol>@kline_<interval>`` candles built from the same trades tickscope
receives on ``<symbol>@trade``. When a candle is final (``x: true``) and tickscope's bar
of the same interval is closed too, the two must agree on open, high, low, close, volume
(base units), turnover (quote), taker-buy volume and trade count. A disagreement means
lost trades, a parsing or side-mapping bug, or a vendor fault -- exactly what a trader
wants to know before trusting the bars. Binance futures klines leave out non-``MARKET``
trades (insurance fund, ADL); tickscope's bars do too (``Trade.in_bars``).

Pure, like ``feed.core.bars``: no threads, no I/O, no wall clock. The engine feeds trades
(:meth:`KlineChecker.on_trade`), vendor candles (:meth:`KlineChecker.on_kline`) and its
clock (:meth:`KlineChecker.on_clock`, minus its close grace) and reads
:meth:`KlineChecker.results`.

Only intervals tickscope watched from start to end are compared; the others are
*skipped*, never reported as mismatches:

* the interval in which a symbol's first trade arrived (trades before it were missed);
* intervals spanning a reconnect (from the last trade before it to the first after it);
* intervals with a trade-id gap (:meth:`KlineChecker.mark_incomplete`, from the engine).

A candle with ``n == 0`` (Binance's flat candle for an interval without trades) agrees with
tickscope having no bar there.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime, timezone

from .bars import TimeBarAggregator
from .models import Bar, BarSpec, Kline, Trade

__all__ = ["KlineChecker", "COMPARED_FIELDS", "MAX_MISMATCHES"]

#: (result name, Kline attribute, Bar attribute) compared, in the order shown.
COMPARED_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("open", "open", "open"),
    ("high", "high", "high"),
    ("low", "low", "low"),
    ("close", "close", "close"),
    ("volume", "volume", "volume"),
    ("turnover", "turnover", "turnover"),
    ("buy_volume", "buy_volume", "buy_volume"),
    ("trade_count", "trade_count", "trade_count"),
)
_PRICES = frozenset({"open", "high", "low", "close"})
#: Mismatches kept per symbol (the latest).
MAX_MISMATCHES = 20
#: Relative tolerance of float fields: sums of decimal sizes in a different order differ
#: in the last bits (Binance sums exactly in decimal; tickscope in float).
REL_TOL = 1e-9
#: Candles waiting for tickscope's bar to close, per symbol, before the oldest is dropped.
MAX_PENDING = 256
#: Closed bars of our own kept per symbol (an interval's candle arrives within seconds).
MAX_BARS = 512
#: Interval starts remembered as incomplete per symbol.
MAX_INCOMPLETE = 4096


def _iso(ts_ns: int) -> str:
    # Interval start as ISO-8601 UTC, seconds precision ("2024-08-08T23:55:00Z").
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _same(a: float | int | None, b: float | int | None) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def compare(kline: Kline, bar: Bar | None) -> dict[str, list]:
    """Return ``{field: [vendor, ours]}`` for every field where ``kline`` and ``bar`` differ.

    ``bar`` None means tickscope saw no trade in the interval: volumes and the count are then
    0 and prices None, so a candle with trades differs in every field, while a flat candle
    (``n == 0``, zero volume; its prices repeat the previous close) agrees.
    """
    diffs: dict[str, list] = {}
    for name, k_attr, b_attr in COMPARED_FIELDS:
        vendor = getattr(kline, k_attr)
        if bar is not None:
            ours = getattr(bar, b_attr)
        elif name in _PRICES:
            if kline.trade_count == 0:
                continue  # a flat candle's prices are the previous close: a convention
            ours = None
        else:
            ours = 0 if name == "trade_count" else 0.0
        if not _same(vendor, ours):
            diffs[name] = [vendor, ours]
    return diffs


class _SymbolCheck:
    # Everything the checker holds for one symbol.

    __slots__ = ("agg", "covered_from_ns", "final_upto_ns", "last_trade_ts_ns", "resync",
                 "incomplete", "pending", "checked", "agreed", "skipped", "mismatches", "last")

    def __init__(self, symbol: str, spec: BarSpec) -> None:
        self.agg = TimeBarAggregator(symbol, spec, max_bars=MAX_BARS)
        self.covered_from_ns: int | None = None  # first interval start watched in full
        self.final_upto_ns = 0  # our bars ending at or before this are final
        self.last_trade_ts_ns: int | None = None  # newest trade time seen
        self.resync = False  # a reconnect happened; the next trade marks the hole
        self.incomplete: set[int] = set()  # interval starts with trades missing
        self.pending: dict[int, Kline] = {}  # start_ns -> final candle awaiting our close
        self.checked = 0
        self.agreed = 0
        self.skipped = 0
        self.mismatches: deque[dict] = deque(maxlen=MAX_MISMATCHES)
        self.last: dict | None = None  # the latest result


class KlineChecker:
    """Compare final vendor candles with tickscope's bars of the same interval.

    Parameters
    ----------
    interval : str, default "1m"
        Candle interval as a bar spec (``"1m"``, ``"1s"``, ``"5m"``, ...); candles of other
        intervals are ignored.
    bar_options : dict, optional
        Options for the time-bar aggregator (``utc_offset`` for ``@kline_<i>@+08:00``).

    Raises
    ------
    ValueError
        If ``interval`` is not a time spec.
    """

    def __init__(self, interval: str = "1m", *, bar_options: dict | None = None) -> None:
        spec = BarSpec.from_str(interval)
        if not spec.is_time:
            raise ValueError(f"kline interval must be a time interval such as 1m, not {interval!r}")
        self.interval = str(spec)  # the interval compared
        self.spec = spec
        self.interval_ns = spec.interval_ns
        self._bar_options = dict(bar_options or {})
        self._symbols: dict[str, _SymbolCheck] = {}

    # -- symbols ---------------------------------------------------------------------

    def add_symbol(self, symbol: str) -> None:
        """Start checking ``symbol`` (idempotent); its first interval is skipped."""
        if symbol not in self._symbols:
            check = _SymbolCheck(symbol, self.spec)
            if self._bar_options:
                check.agg = TimeBarAggregator(symbol, self.spec, max_bars=MAX_BARS, **self._bar_options)
            self._symbols[symbol] = check

    def remove_symbol(self, symbol: str) -> None:
        """Stop checking ``symbol`` and forget its results."""
        self._symbols.pop(symbol, None)

    # -- inputs ----------------------------------------------------------------------

    def on_trade(self, trade: Trade) -> None:
        """Add one trade (in arrival order) to tickscope's side of the comparison."""
        check = self._symbols.get(trade.symbol)
        if check is None:
            return
        ts = trade.ts_ns
        start = check.agg.bucket_start(ts)
        if check.covered_from_ns is None:
            # Trades before this one in its interval were not seen: compare from the next.
            check.covered_from_ns = start + self.interval_ns
        elif check.resync and check.last_trade_ts_ns is not None:
            self._mark(check, check.last_trade_ts_ns, ts)
        check.resync = False
        if check.last_trade_ts_ns is None or ts > check.last_trade_ts_ns:
            check.last_trade_ts_ns = ts
        check.agg.on_trade(trade)
        cur = check.agg.current
        if cur is not None and cur.start_ns > check.final_upto_ns:
            # A trade of a later interval closed every bar before it.
            check.final_upto_ns = cur.start_ns
            self._resolve(check)

    def on_kline(self, kline: Kline) -> None:
        """Take a vendor candle; final ones are compared once tickscope's bar is final too."""
        check = self._symbols.get(kline.symbol)
        if check is None or not kline.closed or kline.interval != self.interval:
            return
        if len(check.pending) >= MAX_PENDING:
            check.pending.pop(min(check.pending))
            check.skipped += 1
        check.pending[kline.start_ns] = kline
        self._resolve(check)

    def on_clock(self, now_ns: int) -> None:
        """Advance tickscope's clock (UTC ns, already minus the engine's close grace)."""
        for check in self._symbols.values():
            check.agg.on_clock(now_ns)
            if now_ns > check.final_upto_ns:
                check.final_upto_ns = now_ns
                if check.pending:
                    self._resolve(check)

    def on_reconnect(self) -> None:
        """Note a reconnect: intervals between the last trade before it and the next are skipped."""
        for check in self._symbols.values():
            check.resync = True

    def mark_incomplete(self, symbol: str, from_ns: int, to_ns: int) -> None:
        """Skip every interval of ``symbol`` touching ``[from_ns, to_ns]`` (trades missing)."""
        check = self._symbols.get(symbol)
        if check is not None:
            self._mark(check, from_ns, to_ns)

    # -- output ----------------------------------------------------------------------

    def results(self) -> dict[str, dict]:
        """Return per symbol: ``interval``, ``checked``, ``agreed``, ``skipped``, ``pending``,
        ``last`` (``{"minute", "agreed"}`` or None) and ``mismatches`` (the latest
        ``MAX_MISMATCHES``, oldest first: ``{"minute": ISO, "fields": {name: [vendor, ours]}}``).
        ``checked`` counts compared intervals (agreed + mismatched), not skipped ones.
        """
        return {
            sym: {
                "interval": self.interval,
                "checked": c.checked,
                "agreed": c.agreed,
                "skipped": c.skipped,
                "pending": len(c.pending),
                "last": dict(c.last) if c.last else None,
                "mismatches": [{"minute": m["minute"], "fields": {k: list(v) for k, v in m["fields"].items()}}
                               for m in c.mismatches],
            }
            for sym, c in self._symbols.items()
        }

    # -- private ---------------------------------------------------------------------

    def _mark(self, check: _SymbolCheck, from_ns: int, to_ns: int) -> None:
        # Every interval start from the one holding from_ns to the one holding to_ns.
        start = check.agg.bucket_start(min(from_ns, to_ns))
        last = check.agg.bucket_start(max(from_ns, to_ns))
        while start <= last and len(check.incomplete) < MAX_INCOMPLETE:
            check.incomplete.add(start)
            start += self.interval_ns
        if len(check.incomplete) >= MAX_INCOMPLETE:  # keep the recent half
            keep = sorted(check.incomplete)[MAX_INCOMPLETE // 2:]
            check.incomplete = set(keep)

    def _resolve(self, check: _SymbolCheck) -> None:
        # Compare every pending candle whose interval tickscope has closed too.
        ready = [s for s, k in check.pending.items() if k.end_ns <= check.final_upto_ns]
        if not ready:
            return
        bars = {b.start_ns: b for b in check.agg.closed[-(len(ready) + 64):]}
        for start in sorted(ready):
            kline = check.pending.pop(start)
            covered = (check.covered_from_ns is not None and start >= check.covered_from_ns
                       and start not in check.incomplete)
            if not covered:
                check.skipped += 1
                continue
            bar = bars.get(start)
            if bar is None:
                bar = next((b for b in reversed(check.agg.closed) if b.start_ns == start), None)
            diffs = compare(kline, bar)
            check.checked += 1
            minute = _iso(start)
            if diffs:
                check.mismatches.append({"minute": minute, "fields": diffs})
                check.last = {"minute": minute, "agreed": False}
            else:
                check.agreed += 1
                check.last = {"minute": minute, "agreed": True}
        horizon = check.final_upto_ns - max(4 * self.interval_ns, 120 * 1_000_000_000)
        check.incomplete = {s for s in check.incomplete if s >= horizon}
