"""Order flow from trades and the book: tape, footprint, volume profile, CVD, VWAP, EMA, DOM ladder.

Pure, like the rest of ``feed.core``: trades and book views come in, plain values and
DataFrames come out; no clock, no I/O.

Conventions
-----------
* Taker side as in ``feed.core.models``: ``BUY`` (+1) volume is bought at the ask (a taker
  lifted the offer), ``SELL`` (-1) volume is sold at the bid. A footprint cell prints as
  "bid x ask": ``sell_volume x buy_volume``. Trades with an unknown side (iTick) count in
  ``trade_count`` and ``volume`` but in neither side.
* ``delta`` = ``buy_volume - sell_volume`` (base units); cumulative volume delta (CVD) is its
  running sum over bars.
* A price level is the traded price itself, or with ``step`` the lower edge of the
  ``step``-wide bin holding it: ``floor(price / step) * step`` (a relative slack of 1e-9
  keeps 0.3 / 0.1 in bin 3), rounded to ``step``'s decimals so levels print without
  float noise.
* A footprint belongs to the bars of ``feed.core.bars`` for the same spec and options: a
  time-bar footprint cell holds exactly the trades of that bar (including late trades that
  revise it, excluding those the bar leaves out); a tick-bar footprint splits the trades in
  runs of N. Volume and value bars split trades across bars, and are not supported here
  (``ValueError``).
* Sums accumulate left to right in arrival order from 0.0 in both the streaming and the
  batch form, so both give bit-identical floats (``np.bincount`` adds in input order).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bars import make_aggregator
from .batch import _trades_to_arrays
from .models import BUY, SELL, BarSpec, Trade, decimals_of
from .timegrid import make_grid
from .views import DepthView

__all__ = [
    "FOOTPRINT_COLUMNS",
    "TAPE_COLUMNS",
    "FootprintAggregator",
    "Tape",
    "ValueArea",
    "cumulative_delta",
    "dom_ladder",
    "ema",
    "footprint",
    "level_of",
    "nice_step",
    "trade_profile",
    "bar_delta",
    "levels_of",
    "tape",
    "value_area",
    "volume_profile",
    "vwap",
]

#: Columns of a footprint frame: one row per bar and price level.
FOOTPRINT_COLUMNS = ("start", "price", "buy_volume", "sell_volume", "volume", "trade_count")
#: Columns of a tape frame: one row per trade, oldest first.
TAPE_COLUMNS = ("trade_id", "ts_ns", "price", "size", "side")

_LEVEL_SLACK = 1e-9


def _check_step(step: float | None) -> None:
    if step is not None and not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"price step must be a positive number, not {step!r}")


def level_of(price: float, step: float | None) -> float:
    """Return the price level of ``price``: itself, or the lower edge of its ``step`` bin.

    Raises
    ------
    ValueError
        If ``step`` is given and not a positive finite number.
    """
    if step is None:
        return price
    _check_step(step)
    return round(math.floor(price / step + _LEVEL_SLACK) * step, decimals_of(step))


def levels_of(price: np.ndarray, step: float | None) -> np.ndarray:
    """Vectorised :func:`level_of` (the same floats for the same prices)."""
    if step is None:
        return price.astype(np.float64, copy=False)
    _check_step(step)
    return np.round(np.floor(price / step + _LEVEL_SLACK) * step, decimals_of(step))


# -- tape ------------------------------------------------------------------------------------


def tape(trades: Sequence[Trade], limit: int, min_size: float = 0.0) -> pd.DataFrame:
    """Return the latest ``limit`` trades with ``size >= min_size``, oldest first.

    Parameters
    ----------
    trades : sequence of Trade
        In arrival order (the engine's tape).
    limit : int
        At most this many rows (>= 0).
    min_size : float
        Smallest size shown, base units (0 shows every trade).

    Returns
    -------
    pandas.DataFrame
        Columns ``TAPE_COLUMNS``: ``trade_id`` (Int64, NA when the vendor has none),
        ``ts_ns`` (exchange time, UTC ns), ``price``, ``size``, ``side`` (+1/-1/0).
    """
    out: deque[Trade] = deque(maxlen=max(int(limit), 0))
    for t in trades:
        if t.size >= min_size:
            out.append(t)
    return _tape_frame(out)


def _tape_frame(rows: Iterable[Trade]) -> pd.DataFrame:
    rows = list(rows)
    return pd.DataFrame({
        "trade_id": pd.array([t.trade_id for t in rows], dtype="Int64"),
        "ts_ns": np.array([t.ts_ns for t in rows], np.int64),
        "price": np.array([t.price for t in rows], np.float64),
        "size": np.array([t.size for t in rows], np.float64),
        "side": np.array([t.side for t in rows], np.int8),
    })


class Tape:
    """Streaming tape: the latest ``limit`` trades of at least ``min_size``.

    ``Tape(limit, min_size).on_trades(trades).frame()`` equals ``tape(trades, limit,
    min_size)`` for any split of ``trades`` into calls.
    """

    def __init__(self, limit: int, min_size: float = 0.0) -> None:
        self.min_size = float(min_size)
        self.rows: deque[Trade] = deque(maxlen=max(int(limit), 0))

    def on_trades(self, trades: Iterable[Trade]) -> "Tape":
        """Take trades in arrival order; return self."""
        m = self.min_size
        self.rows.extend(t for t in trades if t.size >= m)
        return self

    def frame(self) -> pd.DataFrame:
        """Return the rows held as :func:`tape` does."""
        return _tape_frame(self.rows)


# -- footprint ---------------------------------------------------------------------------


def _footprint_spec(spec: BarSpec | str) -> BarSpec:
    spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
    if spec.kind not in ("time", "tick"):
        raise ValueError(
            f"footprint needs a time or tick bar spec, not {spec}: volume and value bars split "
            "trades across bars")
    return spec


def _empty_footprint() -> pd.DataFrame:
    return pd.DataFrame({
        "start": pd.Series(dtype="int64"), "price": pd.Series(dtype="float64"),
        "buy_volume": pd.Series(dtype="float64"), "sell_volume": pd.Series(dtype="float64"),
        "volume": pd.Series(dtype="float64"), "trade_count": pd.Series(dtype="int64"),
    })


def footprint(
    trades: Sequence[Trade] | pd.DataFrame,
    spec: BarSpec | str,
    step: float | None = None,
    *,
    utc_offset: str | int | None = None,
    session_tz: str | None = None,
    session_open: str = "00:00",
    late_tolerance_ns: int = 2_000_000_000,
    **_ignored,
) -> pd.DataFrame:
    """Return the footprint of ``trades`` for bars of ``spec`` (batch, vectorised).

    Parameters
    ----------
    trades : sequence of Trade, or DataFrame
        In arrival order; DataFrame columns as for ``feed.core.batch.aggregate``.
    spec : BarSpec or str
        A time or tick spec. Time bars are aligned as ``feed.core.bars`` aligns them (the
        alignment options below), late trades revise their bar within
        ``late_tolerance_ns`` and are left out beyond it or when their interval has no bar.
    step : float, optional
        Price bin width (quote currency); None keeps each traded price as its own level.
    **_ignored
        Other bar options (``empty``, ``session_reset``) that do not change which trades
        a bar holds (``session_reset`` is not supported: tick runs ignore sessions).

    Returns
    -------
    pandas.DataFrame
        Columns ``FOOTPRINT_COLUMNS``, sorted by bar (``start``: the bar's start, UTC ns;
        for tick bars its first trade's time) then ``price`` ascending, after a column
        ``bar`` numbering the bars from 0 (tick bars: the run index), since tick bars may
        share a start. Sizes in base units.

    Raises
    ------
    ValueError
        For a volume or value spec, or a bad ``step``.
    """
    spec = _footprint_spec(spec)
    _check_step(step)
    a = _trades_to_arrays(trades)
    keep = a["in_bars"]
    ts, price, size, side = a["ts"][keep], a["price"][keep], a["size"][keep], a["side"][keep]
    if len(ts) == 0:
        out = _empty_footprint()
        out.insert(0, "bar", pd.Series(dtype="int64"))
        return out
    if spec.kind == "tick":
        n_step = int(spec.step)
        bar = np.arange(len(ts), dtype=np.int64) // n_step
        bar_start = ts[::n_step]  # bar k starts at trade k * n_step
    else:
        grid = make_grid(spec.interval_ns, utc_offset=utc_offset, session_tz=session_tz,
                         session_open=session_open)
        start = grid.buckets(ts)[0]
        use = _time_bar_members(ts, start, late_tolerance_ns)
        if not use.all():
            ts, price, size, side, start = ts[use], price[use], size[use], side[use], start[use]
        bar_start, bar = np.unique(start, return_inverse=True)
    level = levels_of(price, step)
    # One group per (bar, level), numbered in (bar, level) order; np.bincount then sums each
    # group's trades in arrival order, as the streaming form adds them.
    levels_u, level_idx = np.unique(level, return_inverse=True)
    keys, codes = np.unique(bar.astype(np.int64) * len(levels_u) + level_idx, return_inverse=True)
    n = len(keys)
    out = pd.DataFrame({
        "bar": keys // len(levels_u),
        "start": bar_start[keys // len(levels_u)],
        "price": levels_u[keys % len(levels_u)],
        "buy_volume": np.bincount(codes, weights=np.where(side == BUY, size, 0.0), minlength=n),
        "sell_volume": np.bincount(codes, weights=np.where(side == SELL, size, 0.0), minlength=n),
        "volume": np.bincount(codes, weights=size, minlength=n),
        "trade_count": np.bincount(codes, minlength=n).astype(np.int64),
    })
    return out


def _time_bar_members(ts: np.ndarray, start: np.ndarray, tolerance: int) -> np.ndarray:
    # Which trades a time bar holds, by the streaming aggregator's late-trade rule (the
    # same rule as feed.core.batch._time_bars, ignoring the clock).
    if len(ts) < 2 or not (start[1:] < start[:-1]).any():
        return np.ones(len(ts), bool)
    prev_max = np.r_[start[0], np.maximum.accumulate(start)[:-1]]
    late = start < prev_max
    prev_ts = np.r_[ts[0], np.maximum.accumulate(ts)[:-1]]
    exists = np.isin(start, start[~late])
    return ~late | (late & (prev_ts - ts <= tolerance) & exists)


class FootprintAggregator:
    """Streaming footprint: the same cells as :func:`footprint`, one trade at a time.

    It runs the bar aggregator of the same spec and options beside its cells, so which
    trades a bar holds (late trades, tolerance) is decided by ``feed.core.bars`` itself.

    Parameters
    ----------
    symbol : str
    spec : BarSpec or str
        A time or tick spec.
    step : float, optional
        Price bin width, as for :func:`footprint`.
    max_bars : int, optional
        Keep the cells of at most this many bars (oldest dropped first); None keeps all.
    **options
        Bar options for ``feed.core.bars.make_aggregator`` (alignment, late tolerance).

    Raises
    ------
    ValueError
        For a volume or value spec, a bad ``step`` or a bad option.
    """

    def __init__(self, symbol: str, spec: BarSpec | str, step: float | None = None, *,
                 max_bars: int | None = None, **options) -> None:
        self.spec = _footprint_spec(spec)
        _check_step(step)
        self.step = step
        options = {k: v for k, v in options.items() if k != "empty"}  # flat bars hold no trades
        self._agg = make_aggregator(symbol, self.spec, **options)
        self.max_bars = max_bars
        # bar key -> {level: [buy, sell, volume, count]}, bars in order of their index
        self.cells: dict[int, dict[float, list]] = {}
        self.starts: dict[int, int] = {}
        self._tick_index = 0

    def on_trade(self, trade: Trade) -> None:
        """Take one trade (arrival order)."""
        if not trade.in_bars:
            return
        agg = self._agg
        late_before = agg.late
        agg.on_trade(trade)
        if agg.late != late_before:
            return  # left out of its bar, as the bar aggregator does
        if self.spec.kind == "tick":
            key = self._tick_index // int(self.spec.step)
            self._tick_index += 1
            start = self.starts.get(key, trade.ts_ns)
        else:
            key = start = agg.bucket_start(trade.ts_ns)
        bar = self.cells.get(key)
        if bar is None:
            bar = self.cells[key] = {}
            self.starts[key] = start
            if self.spec.kind == "time" and len(self.cells) > 1 and key < next(reversed(self.cells)):
                self._reorder()
            self._trim()
        level = level_of(trade.price, self.step)
        cell = bar.get(level)
        if cell is None:
            cell = bar[level] = [0.0, 0.0, 0.0, 0]
        if trade.side == BUY:
            cell[0] += trade.size
        elif trade.side == SELL:
            cell[1] += trade.size
        cell[2] += trade.size
        cell[3] += 1

    def on_trades(self, trades: Iterable[Trade]) -> "FootprintAggregator":
        """Take trades in arrival order; return self."""
        for t in trades:
            self.on_trade(t)
        return self

    def _reorder(self) -> None:
        self.cells = dict(sorted(self.cells.items()))

    def _trim(self) -> None:
        if self.max_bars is not None:
            while len(self.cells) > self.max_bars:
                key = next(iter(self.cells))
                del self.cells[key]
                del self.starts[key]

    def bar_levels(self, key: int | None = None) -> dict[float, list]:
        """Return ``{level: [buy_volume, sell_volume, volume, trade_count]}`` of one bar
        (the newest when ``key`` is None; {} before any trade). The lists are live: copy
        them before handing them to another thread."""
        if not self.cells:
            return {}
        return self.cells[next(reversed(self.cells)) if key is None else key]

    def frame(self) -> pd.DataFrame:
        """Return the cells held as :func:`footprint` returns them (``bar`` numbered from 0
        for time bars, the tick run index for tick bars)."""
        rows = []
        for i, (key, levels) in enumerate(self.cells.items()):
            bar_no = key if self.spec.kind == "tick" else i
            start = self.starts[key]
            for level in sorted(levels):
                b, s, v, c = levels[level]
                rows.append((bar_no, start, level, b, s, v, c))
        if not rows:
            out = _empty_footprint()
            out.insert(0, "bar", pd.Series(dtype="int64"))
            return out
        return pd.DataFrame(rows, columns=["bar", *FOOTPRINT_COLUMNS]).astype(
            {"bar": "int64", "start": "int64", "trade_count": "int64"})


def bar_delta(fp: pd.DataFrame) -> pd.DataFrame:
    """Return ``start, buy_volume, sell_volume, volume, delta`` per bar of a footprint frame."""
    g = fp.groupby("bar", sort=True)
    out = g.agg(start=("start", "first"), buy_volume=("buy_volume", "sum"),
                sell_volume=("sell_volume", "sum"), volume=("volume", "sum"))
    out["delta"] = out["buy_volume"] - out["sell_volume"]
    return out.reset_index()


# -- volume profile ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValueArea:
    """POC and value area of a volume profile.

    Parameters
    ----------
    poc : float
        Point of control: the level with the most volume (ties: the one nearest the middle
        of the profile's range, then the lower).
    vah, val : float
        Value-area high and low levels (inclusive).
    volume : float
        Volume inside the value area, base units.
    total : float
        Volume of the whole profile.
    """

    poc: float
    vah: float
    val: float
    volume: float
    total: float


def volume_profile(fp: pd.DataFrame) -> pd.DataFrame:
    """Return volume at price over every bar of a footprint frame.

    Returns
    -------
    pandas.DataFrame
        ``price`` ascending, ``buy_volume``, ``sell_volume``, ``volume``, ``trade_count``.
    """
    if fp.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in
                             ("price", "buy_volume", "sell_volume", "volume")}).assign(
            trade_count=pd.Series(dtype="int64"))
    out = fp.groupby("price", sort=True)[["buy_volume", "sell_volume", "volume", "trade_count"]].sum()
    return out.reset_index()


def value_area(profile: pd.DataFrame, fraction: float = 0.70, rows: int = 2) -> ValueArea | None:
    """Return POC, VAH and VAL of a volume profile (None for an empty one).

    The value area is grown from the POC, the standard Market Profile procedure: compare
    the volume of the next ``rows`` levels above with the next ``rows`` below and take the
    larger side (a tie takes both), until the area holds at least ``fraction`` of the
    volume. ``rows=2`` (the default) is the two-level rule of the CBOT Market Profile
    handbook (Chicago Board of Trade, "CBOT Market Profile", the value-area calculation:
    compare the two prices above and below, add the larger pair); ``rows=1`` is the
    one-level variant some platforms use.

    Parameters
    ----------
    profile : DataFrame
        From :func:`volume_profile`: ``price`` ascending and ``volume``.
    fraction : float
        Share of the total volume in the value area, 0 < fraction <= 1.
    rows : int
        Levels compared on each side per step (1 or 2).

    Raises
    ------
    ValueError
        For ``fraction`` outside (0, 1] or ``rows`` not 1 or 2.
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"value area fraction must be in (0, 1], not {fraction!r}")
    if rows not in (1, 2):
        raise ValueError(f"value area rows must be 1 or 2, not {rows!r}")
    if profile.empty:
        return None
    price = profile["price"].to_numpy(np.float64)
    vol = profile["volume"].to_numpy(np.float64)
    total = float(vol.sum())
    top = vol.max()
    cands = np.flatnonzero(vol == top)
    mid = (price[0] + price[-1]) / 2.0
    poc = int(cands[np.argmin(np.abs(price[cands] - mid))])  # argmin: the lower on a tie
    lo = hi = poc
    inside = float(vol[poc])
    target = fraction * total
    n = len(vol)
    while inside < target and (lo > 0 or hi < n - 1):
        up = float(vol[hi + 1:hi + 1 + rows].sum())
        down = float(vol[max(lo - rows, 0):lo].sum())
        take_up = hi < n - 1 and (up >= down or lo == 0)
        take_down = lo > 0 and (down >= up or hi == n - 1)
        if take_up:
            hi = min(hi + rows, n - 1)
            inside += up
        if take_down:
            lo = max(lo - rows, 0)
            inside += down
    return ValueArea(poc=float(price[poc]), vah=float(price[hi]), val=float(price[lo]),
                     volume=inside, total=total)


# -- indicators over bars ------------------------------------------------------------------


def cumulative_delta(bars: pd.DataFrame, *, per_session: bool = False,
                     utc_offset: str | int | None = None, session_tz: str | None = None,
                     session_open: str = "00:00") -> np.ndarray:
    """Return the cumulative volume delta at the end of each bar (base units).

    Parameters
    ----------
    bars : DataFrame
        Bars in order with ``buy_volume``, ``sell_volume`` and ``start`` (UTC ns).
    per_session : bool
        Restart at each session (the day grid of the alignment options: UTC midnight by
        default); otherwise accumulate from the first bar given (the first bar shown).
    """
    delta = (bars["buy_volume"] - bars["sell_volume"]).to_numpy(np.float64)
    if not per_session or len(delta) == 0:
        return np.cumsum(delta)
    session = _sessions(bars, utc_offset, session_tz, session_open)
    return _cumsum_by(delta, session)


def _cumsum_by(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    # Running sum restarting where ``groups`` changes, added left to right from 0.0 as the
    # streaming FlowSeries adds (pandas' groupby cumsum is compensated: other last bits).
    out = np.empty(len(values), np.float64)
    acc, prev = 0.0, None
    for i, (v, g) in enumerate(zip(values.tolist(), groups.tolist())):
        acc = v if g != prev else acc + v
        prev = g
        out[i] = acc
    return out


def _sessions(bars: pd.DataFrame, utc_offset, session_tz, session_open) -> np.ndarray:
    grid = make_grid(86_400_000_000_000, utc_offset=utc_offset, session_tz=session_tz,
                     session_open=session_open)
    return grid.buckets(bars["start"].to_numpy(np.int64))[0]


def vwap(bars: pd.DataFrame, *, anchor: int | None = None, utc_offset: str | int | None = None,
         session_tz: str | None = None, session_open: str = "00:00") -> np.ndarray:
    """Return the VWAP (quote currency) at the end of each bar: Σ turnover / Σ volume.

    Parameters
    ----------
    bars : DataFrame
        Bars in order with ``turnover``, ``volume`` and ``start`` (UTC ns).
    anchor : int, optional
        Position of the bar the VWAP starts at (NaN before it); None anchors at each
        session open (the day grid of the alignment options, UTC midnight by default).

    Returns
    -------
    numpy.ndarray
        NaN where no volume has traded since the anchor.
    """
    turnover = bars["turnover"].to_numpy(np.float64)
    volume = bars["volume"].to_numpy(np.float64)
    if anchor is None:
        session = _sessions(bars, utc_offset, session_tz, session_open) if len(bars) else np.array([])
        cum_t = _cumsum_by(turnover, session)
        cum_v = _cumsum_by(volume, session)
    else:
        k = max(int(anchor), 0)
        cum_t = np.full(len(turnover), np.nan)
        cum_v = np.full(len(volume), np.nan)
        cum_t[k:] = np.cumsum(turnover[k:])
        cum_v[k:] = np.cumsum(volume[k:])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cum_v > 0, cum_t / np.where(cum_v > 0, cum_v, 1.0), np.nan)


def ema(close: Sequence[float] | np.ndarray, length: int) -> np.ndarray:
    """Return the exponential moving average of ``close`` over ``length`` bars.

    ``alpha = 2 / (length + 1)``, seeded with the first close (pandas
    ``ewm(span=length, adjust=False)``; TradingView seeds with an SMA instead, so the
    first few values differ from its chart).

    Raises
    ------
    ValueError
        If ``length`` is not an int >= 1.
    """
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"EMA length must be a whole number >= 1, not {length!r}")
    x = np.asarray(close, np.float64)
    out = np.empty_like(x)
    alpha = 2.0 / (length + 1.0)
    acc = math.nan
    for i, v in enumerate(x.tolist()):
        acc = v if i == 0 else acc + alpha * (v - acc)
        out[i] = acc
    return out


# -- DOM ladder ------------------------------------------------------------------------------


def dom_ladder(depth: DepthView, levels: int, traded: dict[float, list] | None = None,
               step: float | None = None) -> pd.DataFrame:
    """Return DOM ladder rows around the mid: asks above, bids below, best prices in the middle.

    Parameters
    ----------
    depth : DepthView
        The book's top (``bids``/``asks`` best first).
    levels : int
        Book levels per side (>= 1).
    traded : dict, optional
        ``{level: [buy_volume, sell_volume, volume, trade_count]}`` of the bar in progress
        (:meth:`FootprintAggregator.bar_levels`); book prices are matched to it by
        :func:`level_of` with ``step``.

    Returns
    -------
    pandas.DataFrame
        ``price`` descending, ``bid_size``, ``ask_size`` (0 where the side has no order at
        that price), ``volume`` traded at the price in the bar (0 if none).

    Raises
    ------
    ValueError
        If ``levels`` < 1.
    """
    if levels < 1:
        raise ValueError(f"ladder levels must be >= 1, not {levels!r}")
    rows: dict[float, list] = {}
    for price, size in depth.asks[:levels]:
        rows.setdefault(price, [0.0, 0.0])[1] = size
    for price, size in depth.bids[:levels]:
        rows.setdefault(price, [0.0, 0.0])[0] = size
    traded = traded or {}
    prices = sorted(rows, reverse=True)
    vol = [float(traded.get(level_of(p, step), (0.0, 0.0, 0.0))[2]) for p in prices]
    return pd.DataFrame({
        "price": np.array(prices, np.float64),
        "bid_size": np.array([rows[p][0] for p in prices], np.float64),
        "ask_size": np.array([rows[p][1] for p in prices], np.float64),
        "volume": np.array(vol, np.float64),
    })


def trade_profile(trades: Sequence[Trade], step: float | None = None) -> pd.DataFrame:
    """Return the volume profile (volume at price) of ``trades`` (``in_bars`` trades only),
    as :func:`volume_profile` returns it, levels by :func:`level_of` with ``step``."""
    kept = [t for t in trades if t.in_bars]
    if not kept:
        return volume_profile(_empty_footprint())
    return volume_profile(footprint(kept, f"{len(kept)}t", step))  # one run holding every trade


def nice_step(span: float, levels: int) -> float:
    """Return a round price step (1, 2 or 5 times a power of ten) that cuts ``span``
    (quote currency) into at most about ``levels`` levels; 1.0 for an empty span."""
    if not (span > 0 and math.isfinite(span)) or levels < 1:
        return 1.0
    raw = span / levels
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * power >= raw:
            return float(f"{m * power:.12g}")
    return float(f"{10 * power:.12g}")


class FlowSeries:
    """Streaming CVD, VWAP and EMAs over closed bars: the same values as
    :func:`cumulative_delta`, :func:`vwap` and :func:`ema` over the same bars, one bar at a
    time, keeping only the latest ``keep`` bars' values.

    Per bar it keeps running sums from the first bar taken (global) and from the bar's
    session open (the day grid of the alignment options), so any anchor among the bars
    kept is a difference of two sums, and the bar in progress is one more step
    (:meth:`peek`).

    Parameters
    ----------
    emas : sequence of int
        EMA lengths (bars).
    keep : int
        Bars whose values are kept (oldest dropped first).
    utc_offset, session_tz, session_open
        Session alignment, as for ``feed.core.bars``.
    """

    _FIELDS = ("start", "turnover", "volume", "delta", "g_turnover", "g_volume", "g_delta",
               "s_turnover", "s_volume", "s_delta", "close")

    def __init__(self, emas: Sequence[int] = (), keep: int = 1000, *, utc_offset=None,
                 session_tz=None, session_open: str = "00:00") -> None:
        for n in emas:
            ema([0.0], n)  # validates the length
        self.emas = tuple(sorted(set(int(n) for n in emas)))
        self.rows: deque[dict] = deque(maxlen=max(int(keep), 1))
        self._grid = make_grid(86_400_000_000_000, utc_offset=utc_offset, session_tz=session_tz,
                               session_open=session_open)
        self._last: dict | None = None
        self._session: tuple[int, int] | None = None

    def _step(self, start: int, close: float, turnover: float, volume: float, buy: float,
              sell: float) -> dict:
        prev = self._last
        delta = buy - sell
        session = self._grid.bucket(start)
        same = prev is not None and session == self._session
        row = {
            "start": start, "close": close, "turnover": turnover, "volume": volume, "delta": delta,
            "g_turnover": (prev["g_turnover"] if prev else 0.0) + turnover,
            "g_volume": (prev["g_volume"] if prev else 0.0) + volume,
            "g_delta": (prev["g_delta"] if prev else 0.0) + delta,
            "s_turnover": (prev["s_turnover"] if same else 0.0) + turnover,
            "s_volume": (prev["s_volume"] if same else 0.0) + volume,
            "s_delta": (prev["s_delta"] if same else 0.0) + delta,
            "session": session,
        }
        for n in self.emas:
            key = f"ema{n}"
            row[key] = close if prev is None else prev[key] + 2.0 / (n + 1.0) * (close - prev[key])
        return row

    def on_bar(self, start: int, close: float, turnover: float, volume: float, buy_volume: float,
               sell_volume: float) -> None:
        """Take the next closed bar (start UTC ns, quote-currency turnover, base-unit volumes)."""
        row = self._step(start, close, turnover, volume, buy_volume, sell_volume)
        self._last = row
        self._session = row["session"]
        self.rows.append(row)

    def peek(self, start: int, close: float, turnover: float, volume: float, buy_volume: float,
             sell_volume: float) -> dict:
        """Return the values a bar in progress would have, without taking it."""
        return self._step(start, close, turnover, volume, buy_volume, sell_volume)

    @staticmethod
    def values(rows: Sequence[dict], *, cvd_session: bool, anchor: int | None) -> dict:
        """Return ``{"cvd", "vwap", "ema<n>"...}`` lists for ``rows`` (kept rows, possibly a
        peeked one after them).

        ``cvd_session`` restarts CVD at each session, else it runs from ``rows[0]``;
        ``anchor`` is the row the VWAP starts at (NaN before it), None for the session.
        """
        out: dict[str, list] = {"cvd": [], "vwap": []}
        if not rows:
            return out
        base = rows[0]
        d0 = base["g_delta"] - base["delta"]
        if anchor is not None:
            a = rows[anchor]
            t0, v0 = a["g_turnover"] - a["turnover"], a["g_volume"] - a["volume"]
        for i, r in enumerate(rows):
            out["cvd"].append(r["s_delta"] if cvd_session else r["g_delta"] - d0)
            if anchor is None:
                t, v = r["s_turnover"], r["s_volume"]
            elif i < anchor:
                out["vwap"].append(math.nan)
                continue
            else:
                t, v = r["g_turnover"] - t0, r["g_volume"] - v0
            out["vwap"].append(t / v if v > 0 else math.nan)
        for key in (k for k in rows[0] if k.startswith("ema")):
            out[key] = [r[key] for r in rows]
        return out
