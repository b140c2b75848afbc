"""Per-bar verification: each closed 1m bar against the vendor's own kline, with a verdict
and, when they differ, which fields, by how much and why.

Vendor klines come from the live ``@kline_1m`` stream (final candles, as the kline
cross-check of ``feed.core.klinecheck`` takes them) and from REST ``klines`` fetched for
backfilled, repaired and (without a live kline stream) every closed minute. The fields and
the tolerance are the cross-check's (``klinecheck.compare``): open, high, low, close,
volume, taker-buy volume, trade count (turnover is left out: Binance sums it in decimal).

Verdicts per bar:

* ``exact`` — every field equal;
* ``differs`` — with ``{field: {"vendor", "ours", "diff"}}`` and a reason code:
  ``vendor_revised`` (the vendor sent two different final klines for the minute),
  ``ids_missing`` (trade ids of the minute are still missing: an unrepaired gap),
  ``non_market_excluded`` (the vendor counts exactly the non-MARKET trades tickscope left
  out), ``late_trade`` (a trade revised the bar after the vendor's kline had arrived),
  ``unknown``;
* ``unverified`` — no vendor kline yet, the bar is in progress, or the minute is not fully
  covered by tickscope's trades (the minute of the oldest trade held: the backfill's or the
  feed's start cut it).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from feed.core.klinecheck import compare
from feed.core.models import Bar, Kline, iso_ms

__all__ = ["Verifier", "REASONS", "VERIFIED_FIELDS", "verdict_of", "MINUTE_NS"]

MINUTE_NS = 60_000_000_000
#: Fields compared (names as in ``klinecheck.COMPARED_FIELDS``).
VERIFIED_FIELDS = ("open", "high", "low", "close", "volume", "trade_count", "buy_volume")
REASONS = ("ids_missing", "late_trade", "vendor_revised", "non_market_excluded", "unknown")
#: Minutes of vendor klines kept per symbol (the oldest forgotten first).
MAX_MINUTES = 20_000


@dataclass
class _SymbolFacts:
    gaps: dict[int, list[int]] = field(default_factory=dict)  # gap end ns -> [from ns, to ns, missing]
    klines: dict[int, Kline] = field(default_factory=dict)  # minute start ns -> latest final kline
    revised: set[int] = field(default_factory=set)  # minutes whose final kline changed
    late: set[int] = field(default_factory=set)  # minutes revised after their kline arrived
    excluded: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # minute -> non-MARKET trades


def _minute(ts_ns: int) -> int:
    return ts_ns - ts_ns % MINUTE_NS


def verdict_of(bar: Bar, kline: Kline | None, *, covered: bool, missing: bool, excluded: int,
               revised: bool, late: bool) -> dict:
    """Return one bar's verdict.

    Shape: ``{"minute": ISO, "verdict": "exact" | "differs" | "unverified", "fields":
    {name: {"vendor", "ours", "diff"}}, "reason": code or ""}``.
    """
    out = {"minute": iso_ms(bar.start_ns), "verdict": "unverified", "fields": {}, "reason": ""}
    if kline is None or not bar.closed or not covered:
        return out
    diffs = {k: v for k, v in compare(kline, bar).items() if k in VERIFIED_FIELDS}
    if not diffs:
        out["verdict"] = "exact"
        return out
    out["verdict"] = "differs"
    out["fields"] = {k: {"vendor": v, "ours": o, "diff": (v - o) if v is not None and o is not None else None}
                     for k, (v, o) in diffs.items()}
    count_diff = kline.trade_count - bar.trade_count
    if revised:
        out["reason"] = "vendor_revised"
    elif missing:
        out["reason"] = "ids_missing"
    elif excluded and count_diff == excluded:
        out["reason"] = "non_market_excluded"
    elif late:
        out["reason"] = "late_trade"
    else:
        out["reason"] = "unknown"
    return out


class Verifier:
    """Vendor 1m klines and the facts that explain differences, per symbol.

    The market state feeds it (:meth:`on_kline`, :meth:`on_trade`); readers ask
    :meth:`report` with the bars of the 1m series, the start of the first fully covered
    minute and the time spans of unrepaired gaps.
    """

    def __init__(self) -> None:
        self._symbols: dict[str, _SymbolFacts] = {}

    def add_symbol(self, symbol: str) -> None:
        """Start collecting for ``symbol`` (idempotent)."""
        self._symbols.setdefault(symbol, _SymbolFacts())

    def remove_symbol(self, symbol: str) -> None:
        """Forget ``symbol``."""
        self._symbols.pop(symbol, None)

    def has_kline(self, symbol: str, start_ns: int) -> bool:
        """Return True if a vendor kline of the minute starting at ``start_ns`` is held."""
        f = self._symbols.get(symbol)
        return f is not None and start_ns in f.klines

    def on_kline(self, kline: Kline) -> None:
        """Take a vendor 1m kline (live final, or REST for a closed minute); others are ignored.
        A second, different final kline for the same minute marks it revised."""
        f = self._symbols.get(kline.symbol)
        if f is None or kline.interval != "1m" or not kline.closed:
            return
        old = f.klines.get(kline.start_ns)
        if old is not None and compare(old, _as_bar(kline)):
            f.revised.add(kline.start_ns)
        f.klines[kline.start_ns] = kline
        if len(f.klines) > MAX_MINUTES:
            for start in sorted(f.klines)[: MAX_MINUTES // 10]:
                del f.klines[start]
                f.revised.discard(start)
                f.late.discard(start)
                f.excluded.pop(start, None)

    def on_trade(self, symbol: str, ts_ns: int, in_bars: bool) -> None:
        """Note a live trade: one kept out of bars (non-MARKET), or one arriving after the
        vendor's kline of its minute (it revises the bar the vendor closed)."""
        f = self._symbols.get(symbol)
        if f is None:
            return
        m = _minute(ts_ns)
        if not in_bars:
            f.excluded[m] += 1
        elif m in f.klines:
            f.late.add(m)

    def note_gap(self, symbol: str, from_ns: int, to_ns: int, missing: int) -> None:
        """Note a trade-id gap between two trade times (UTC ns) with ``missing`` trades."""
        f = self._symbols.get(symbol)
        if f is not None:
            f.gaps[to_ns] = [from_ns, to_ns, missing]
            if len(f.gaps) > 10_000:
                del f.gaps[min(f.gaps)]

    def note_repaired(self, symbol: str, to_ns: int, recovered: int) -> None:
        """Note ``recovered`` trades of the gap ending at ``to_ns`` fetched back."""
        f = self._symbols.get(symbol)
        gap = f.gaps.get(to_ns) if f is not None else None
        if gap is not None:
            gap[2] -= recovered
            if gap[2] <= 0:
                del f.gaps[to_ns]

    def missing_spans(self, symbol: str) -> list[tuple[int, int]]:
        """Return ``(from_ns, to_ns)`` of ``symbol``'s gaps with trades still missing."""
        f = self._symbols.get(symbol)
        return [(g[0], g[1]) for g in f.gaps.values()] if f is not None else []

    def report(self, symbol: str, bars: list[Bar], covered_from_ns: int | None,
               missing_spans: list[tuple[int, int]] | None = None) -> dict:
        """Return the verification of ``bars`` (a 1m series, oldest first).

        Parameters
        ----------
        covered_from_ns : int or None
            Start of the first minute fully covered by trades held (None: none is).
        missing_spans : list of (from_ns, to_ns), optional
            Times of gaps with trades still missing; default: those noted
            (:meth:`note_gap`, :meth:`note_repaired`).

        Returns
        -------
        dict
            ``{"symbol", "interval": "1m", "counts": {"exact", "differs", "unverified"},
            "reasons": {code: n}, "differs": [verdicts of the differing bars],
            "verdicts": {bar start ns: "exact" | "differs:<fields>" | ""}}``.
        """
        f = self._symbols.get(symbol) or _SymbolFacts()
        missing_minutes: set[int] = set()
        spans = self.missing_spans(symbol) if missing_spans is None else missing_spans
        for lo, hi in spans:
            m = _minute(lo)
            while m <= hi and len(missing_minutes) < 100_000:
                missing_minutes.add(m)
                m += MINUTE_NS
        counts = {"exact": 0, "differs": 0, "unverified": 0}
        reasons: dict[str, int] = {}
        differs, verdicts = [], {}
        for bar in bars:
            m = bar.start_ns
            v = verdict_of(bar, f.klines.get(m), covered=covered_from_ns is not None and m >= covered_from_ns,
                           missing=m in missing_minutes, excluded=f.excluded.get(m, 0),
                           revised=m in f.revised, late=m in f.late)
            counts[v["verdict"]] += 1
            if v["verdict"] == "differs":
                differs.append(v)
                reasons[v["reason"]] = reasons.get(v["reason"], 0) + 1
                verdicts[m] = "differs:" + "+".join(v["fields"])
            else:
                verdicts[m] = "exact" if v["verdict"] == "exact" else ""
        return {"symbol": symbol, "interval": "1m", "counts": counts, "reasons": reasons,
                "differs": differs, "verdicts": verdicts}


def _as_bar(k: Kline) -> Bar:
    # A kline's values in a Bar, to compare two klines with klinecheck.compare.
    return Bar(k.symbol, None, k.start_ns, k.end_ns, k.open, k.high, k.low, k.close, k.volume, k.turnover,
               k.trade_count, k.buy_volume, k.volume - k.buy_volume, True)
