"""What the order-flow callback returns on each tick: tape, DOM ladder, footprint, flow
chart and alerts, each only when it changed, incrementally where it fits.

Engine reads only (``trades``, ``depth``, ``bar_series``); the computation is
``feed.core.orderflow`` and ``feed.core.alerts``, the drawing ``dashboard.orderflow_figures``.
Nothing here reads a clock.

Updates, per view (the page's ``STATE`` store says what the browser holds):

* tape: the newest ``TAPE_ROWS`` trades of at least the minimum size, newest first. When
  only new trades arrived, a ``dash.Patch`` inserts their rows at the top and deletes as
  many at the bottom; a full table when the symbol or a filter changed.
* DOM ladder: the book's top ``levels`` per side around the mid, with the volume traded at
  each price in the bar in progress; re-sent only when its rows changed.
* footprint: the latest ``FOOTPRINT_BARS`` bars; while the bars and price rows stay, a
  ``dash.Patch`` of the bar in progress's column, else the whole figure.
* flow chart: the latest ``FLOW_BARS`` bars. A full figure when a bar closed or a setting
  changed; between closes a ``dash.Patch`` replaces only the in-progress bar's candle, its
  VWAP, EMA and CVD points and the volume profile. What the closed bars contribute (sums,
  EMA state, profile) is computed once per close and kept in a small server-side cache
  (``FlowModel`` per symbol, spec and EMA lengths; the layout charts use the same).
* alerts: rules checked against the trades and closed bars since the last tick.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dash import Patch, no_update

from feed.core.alerts import AlertRules, AlertState, check_alerts
from feed.core.models import BarSpec, iso_ms
from feed.core.orderflow import FlowSeries, dom_ladder, footprint, level_of, nice_step, value_area

from . import orderflow_figures as off
from .figures import MID, MUTED, placeholder_figure, plotly_dates, rgba
from .orderflow_data import MAX_LEVELS, FlowError, bar_options, decimals, parse_step

__all__ = [
    "TAPE_ROWS", "FOOTPRINT_BARS", "FLOW_BARS", "MAX_LADDER_LEVELS", "MAX_EMAS", "MAX_ALERTS_KEPT",
    "Settings", "parse_settings", "tape_update", "ladder_update", "footprint_update", "flow_update",
    "alerts_update", "FlowCache", "FlowModel",
]

#: Rows on the tape.
TAPE_ROWS = 40
#: Latest trades searched for the tape when a minimum size filters them.
TAPE_SEARCH = 20_000
#: Bars in the footprint view.
FOOTPRINT_BARS = 10
#: Price rows the footprint shows at most before grouping prices by a round step.
FOOTPRINT_ROWS = 24
#: Bars in the flow chart.
FLOW_BARS = 120
#: Bars read before the flow chart's first bar for a session-anchored VWAP or CVD.
SESSION_BARS = 3000
#: Most book levels per side on the ladder.
MAX_LADDER_LEVELS = 50
#: Most EMA lines, and the longest EMA (bars).
MAX_EMAS = 4
MAX_EMA_LENGTH = 1000
#: Alerts kept in the log (newest first).
MAX_ALERTS_KEPT = 200
#: Most trades read to draw one view (footprint, profile): the latest; older bars of a view
#: holding more get no cells or profile. Bounds the cost of one update (the engine's tape
#: read is slower than linear in the count today, see orderflow_data.MAX_FOOTPRINT_TRADES).
MAX_VIEW_TRADES = 50_000
#: Levels of the flow chart's volume profile (its step is rounded to 1-2-5).
PROFILE_LEVELS = 60


@dataclass(frozen=True)
class Settings:
    """Order-flow settings read from the page (every value checked)."""

    tape_min: float = 0.0
    tape_large: float | None = None
    ladder_levels: int = 10
    fp_step: float | None = None
    emas: tuple[int, ...] = (9, 21)
    cvd_session: bool = False
    vwap_bar: bool = False
    rules: AlertRules = field(default_factory=AlertRules)


def _nonneg(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FlowError(f"{name} must be a number") from None
    if not (math.isfinite(x) and x >= 0):
        raise FlowError(f"{name} must be a number >= 0")
    return x


def parse_settings(tape_min=None, tape_large=None, levels=None, step=None, emas=None, cvd="view",
                   vwap_mode="session", alert_price=None, alert_size=None, alert_surge=None,
                   alert_window=None) -> tuple[Settings, str]:
    """Return the settings from the page's inputs and an inline message ("" if all are
    valid); an invalid input keeps its default and is named in the message."""
    out: dict[str, Any] = {}
    problems: list[str] = []

    def take(key, fn):
        try:
            value = fn()
        except FlowError as exc:
            problems.append(str(exc))
            return
        if value is not None:
            out[key] = value

    take("tape_min", lambda: _nonneg(tape_min, "tape minimum size"))
    take("tape_large", lambda: _nonneg(tape_large, "large trade size"))

    def _levels():
        x = _nonneg(levels, "ladder levels")
        if x is None:
            return None
        if not (x.is_integer() and 1 <= x <= MAX_LADDER_LEVELS):
            raise FlowError(f"ladder levels must be a whole number from 1 to {MAX_LADDER_LEVELS}")
        return int(x)

    take("ladder_levels", _levels)
    take("fp_step", lambda: parse_step(None if step in (None, "") else str(step)))

    def _emas():
        if emas is None:  # not given: the default lengths (an emptied box means none)
            return None
        text = str(emas).strip()
        if not text:
            return ()
        parts = [p.strip() for p in text[:100].split(",") if p.strip()]
        if len(parts) > MAX_EMAS or not all(p.isdigit() and 1 <= int(p) <= MAX_EMA_LENGTH for p in parts):
            raise FlowError(f"EMA lengths: up to {MAX_EMAS} whole numbers from 1 to {MAX_EMA_LENGTH}, e.g. 9,21")
        return tuple(sorted({int(p) for p in parts}))

    take("emas", _emas)
    out["cvd_session"] = cvd == "session"
    out["vwap_bar"] = vwap_mode == "bar"
    rules: dict[str, Any] = {}
    try:
        rules["price_level"] = _nonneg(alert_price, "alert price")
    except FlowError as exc:
        problems.append(str(exc))
    try:
        rules["trade_size"] = _nonneg(alert_size, "alert trade size")
    except FlowError as exc:
        problems.append(str(exc))
    try:
        rules["surge_std"] = _nonneg(alert_surge, "surge std")
        w = _nonneg(alert_window, "surge window")
        if w is not None:
            if not (w.is_integer() and 2 <= w <= 500):
                raise FlowError("surge window must be a whole number of bars from 2 to 500")
            rules["surge_window"] = int(w)
    except FlowError as exc:
        problems.append(str(exc))
    out["rules"] = AlertRules(**{k: v for k, v in rules.items() if v is not None})
    return Settings(**out), "; ".join(problems)


# -- reads ------------------------------------------------------------------------------------


def _recent_bars(engine: Any, symbol: str, spec: BarSpec, k: int) -> tuple[Any, list]:
    # The series' last k closed bars and the bar in progress (Bar copies, oldest first).
    head = engine.bar_series(symbol, spec, 2**62)
    series = engine.bar_series(symbol, spec, max(head.n_closed - k, 0))
    return series, series.closed[-k:] + ([series.current] if series.current is not None else [])


def _trades_of(engine: Any, symbol: str, spec: BarSpec, bars: list) -> list:
    # The trades of ``bars`` (the latest bars of the series): for tick bars exactly the
    # latest sum(trade_count) trades in bars; otherwise every trade from the first start.
    if not bars:
        return []
    n = sum(b.trade_count for b in bars)
    want = min(int(n * 1.02) + 200, MAX_VIEW_TRADES)
    trades = engine.trades(symbol, want)
    if spec.kind == "tick":
        kept = [t for t in trades if t.in_bars]
        return kept[-n:] if n else []
    first = bars[0].start_ns
    return [t for t in trades if t.ts_ns >= first]


# -- tape -------------------------------------------------------------------------------------


def tape_update(engine: Any, symbol: str, s: Settings, state: dict | None) -> tuple[Any, dict]:
    """Return (tape table children, a Patch of them, or no_update; tape state)."""
    state = state or {}
    key = f"{symbol}|{s.tape_min}|{s.tape_large}"
    want = TAPE_ROWS if s.tape_min <= 0 else TAPE_SEARCH
    trades = engine.trades(symbol, max(want, 2000))
    shown = [t for t in trades if t.size >= s.tape_min][-TAPE_ROWS:]
    price_dp, size_dp = decimals(trades)
    last = [shown[-1].ts_ns, shown[-1].trade_id] if shown else None
    if state.get("key") == key and state.get("last") == last and state.get("dp") == [price_dp, size_dp]:
        return no_update, state
    new_state = {"key": key, "last": last, "n": len(shown), "dp": [price_dp, size_dp]}

    def row(t):
        return off.tape_row(t.ts_ns, t.price, t.size, t.side, price_dp=price_dp, size_dp=size_dp,
                            large=s.tape_large)

    if state.get("key") == key and state.get("last") and state.get("dp") == [price_dp, size_dp]:
        seen_ts, seen_id = state["last"]
        if seen_id is not None:
            fresh = [t for t in shown if t.trade_id is not None and t.trade_id > seen_id]
        else:
            fresh = [t for t in shown if t.ts_ns > seen_ts]
        if 0 < len(fresh) < len(shown):
            patch = Patch()
            for t in fresh:  # oldest first: each insert at the top pushes the previous down
                patch.insert(1, row(t))
            n_before = int(state.get("n", 0))
            for _ in range(max(n_before + len(fresh) - TAPE_ROWS, 0)):
                del patch[1 + TAPE_ROWS]
            return patch, new_state
    return [off.tape_header(), *[row(t) for t in reversed(shown)]], new_state


# -- ladder -----------------------------------------------------------------------------------


def ladder_update(engine: Any, symbol: str, spec: BarSpec, s: Settings, sig: str | None) -> tuple[Any, str]:
    """Return (ladder table children or no_update, signature).

    The children are a flat list of rows (``orderflow_figures.ladder_table``), the header
    alone while the book has no level (not yet synced, or no book): dash-renderer turns
    only the list's own items into components, so a list nested in it reaches React as
    plain objects and the whole page fails to render (React error #31).
    """
    view = engine.depth(symbol, s.ladder_levels)
    if view is None or not (view.bids or view.asks):
        new = f"none|{symbol}"
        return (no_update if new == sig else off.ladder_table(pd.DataFrame(
            {"price": [], "bid_size": [], "ask_size": [], "volume": []}), best_bid=None, best_ask=None,
            price_dp=2, size_dp=2), new)
    traded: dict[float, list] = {}
    series = engine.bar_series(symbol, spec, 2**62)
    cur = series.current
    if cur is not None and cur.trade_count:
        trades = engine.trades(symbol, min(cur.trade_count + 200, MAX_VIEW_TRADES))
        for t in trades:
            if t.in_bars and (t.ts_ns >= cur.start_ns if spec.is_time else t.ts_ns >= cur.first_trade_ns):
                cell = traded.setdefault(level_of(t.price, None), [0.0, 0.0, 0.0, 0])
                cell[2] += t.size
    ladder = dom_ladder(view, s.ladder_levels, traded)
    new = f"{symbol}|{hash((tuple(ladder['price']), tuple(ladder['bid_size']), tuple(ladder['ask_size']), tuple(ladder['volume'])))}"
    if new == sig:
        return no_update, sig
    prices = [p for p, _ in view.bids[:20] + view.asks[:20]]
    price_dp = max((_dp(p) for p in prices), default=2)
    size_dp = max((_dp(q) for _, q in view.bids[:20] + view.asks[:20]), default=2)
    return off.ladder_table(ladder, best_bid=view.best_bid, best_ask=view.best_ask,
                            price_dp=price_dp, size_dp=min(size_dp, 6)), new


def _dp(x: float) -> int:
    from feed.core.models import decimals_of

    return min(decimals_of(x), 8)


# -- footprint --------------------------------------------------------------------------------


def footprint_update(engine: Any, symbol: str, spec: BarSpec, s: Settings, state: dict | None) -> tuple[Any, dict]:
    """Return (footprint figure, a Patch of its last column, or no_update; footprint state).

    While the bars, their price rows and the closed bars' cells stay the same, only the bar
    in progress changes: its column (cells, delta, colour range) is sent as a ``dash.Patch``.
    """
    state = state if isinstance(state, dict) else {}
    sig, drawn = state.get("sig"), state.get("full")
    if spec.kind not in ("time", "tick"):
        new = f"kind|{symbol}|{spec}"
        return (no_update if new == sig else placeholder_figure(
            f"footprint needs time or tick bars, not {spec}"), {"sig": new})
    head = engine.bar_series(symbol, spec, 2**62)
    cur = head.current
    # The cells change only with the bars: skip the read while no trade reached them.
    new = (f"{symbol}|{spec}|{s.fp_step}|{head.generation}|{head.n_closed}|"
           f"{cur.trade_count if cur is not None else -1}|{cur.volume if cur is not None else -1}")
    if new == sig:
        return no_update, state
    _, bars = _recent_bars(engine, symbol, spec, FOOTPRINT_BARS - 1)
    trades = _trades_of(engine, symbol, spec, bars)
    if s.fp_step is not None and trades:
        span = max(t.price for t in trades) - min(t.price for t in trades)
        if span / s.fp_step + 1 > MAX_LEVELS:
            return placeholder_figure(f"step {s.fp_step:g} would make more than {MAX_LEVELS:,} "
                                      "price levels: choose a larger step"), {"sig": new}
    step = s.fp_step
    if step is None and trades:
        # Each traded price its own row is unreadable in a panel once there are more rows
        # than fit: group them by a round step (shown in the title) instead.
        prices = {t.price for t in trades}
        if len(prices) > FOOTPRINT_ROWS:
            step = nice_step(max(prices) - min(prices), FOOTPRINT_ROWS)
    fp = footprint(trades, spec, step, **bar_options(engine))
    if spec.kind == "tick" and not fp.empty:
        fp = fp[fp["bar"] >= fp["bar"].max() - (FOOTPRINT_BARS - 1)]
    price_dp, size_dp = decimals(trades, step)
    fig = off.footprint_figure(fp, symbol=symbol, spec=str(spec), price_dp=price_dp,
                               size_dp=min(size_dp, 4), step=step)
    if fp.empty:
        return fig, {"sig": new}
    # Everything but the last column must be as drawn for a patch of that column.
    heat = fig["data"][0]
    last = len(heat["x"]) - 1
    full = _crc((symbol, str(spec), step, head.generation, head.n_closed, heat["y"],
                 fig["layout"]["xaxis"]["ticktext"], [row[:last] for row in heat["text"]]))
    new_state = {"sig": new, "full": full}
    if full != drawn:
        return fig, new_state
    patch = Patch()
    for i, (zrow, trow) in enumerate(zip(heat["z"], heat["text"])):
        patch["data"][0]["z"][i][last] = zrow[last]
        patch["data"][0]["text"][i][last] = trow[last]
    patch["data"][0]["zmin"] = heat["zmin"]
    patch["data"][0]["zmax"] = heat["zmax"]
    patch["layout"]["annotations"][last] = fig["layout"]["annotations"][last]
    return patch, new_state


def _crc(value: Any) -> str:
    # Short stable signature of what a figure holds (the state round-trips the browser).
    return f"{zlib.crc32(repr(value).encode()):08x}"


# -- flow chart -------------------------------------------------------------------------------


_MODEL_SERIAL = itertools.count(1)


class FlowCache:
    """The flow models of the views asked for: at most ``size`` (least recently used
    dropped), so the cache stays small whatever the browsers ask for."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._d: OrderedDict = OrderedDict()

    def get(self, key):
        """Return the entry for ``key`` or None."""
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        """Store ``value`` under ``key``."""
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)


class FlowModel:
    """What the flow chart shows of the closed bars, kept up to date one bar close at a
    time: OHLC and x of the latest ``FLOW_BARS`` closed bars, their CVD/VWAP/EMA state
    (``feed.core.orderflow.FlowSeries``) and each one's volume at price (levels of
    ``step``). Built from the engine once per symbol, spec and EMA choice (and again when
    the series' generation changes: a late trade revised closed bars)."""

    def __init__(self, engine: Any, symbol: str, spec: BarSpec, emas: tuple[int, ...]) -> None:
        self.symbol, self.spec, self.emas = symbol, spec, emas
        # Names this model in the page's flow state: the page patches only a figure drawn
        # from this very model. Unique across worker processes too (``id()`` is not: forked
        # workers allocate at the same addresses), so a request served by another worker
        # of ``tickscope serve`` redraws instead of patching a figure it did not draw.
        self.token = f"{os.getpid()}-{next(_MODEL_SERIAL)}"
        alignment = {k: v for k, v in bar_options(engine).items()
                     if k in ("utc_offset", "session_tz", "session_open")}
        self.series = FlowSeries(emas, keep=FLOW_BARS, **alignment)
        self.bars: deque = deque(maxlen=FLOW_BARS)  # (start, x, open, high, low, close, end)
        self.profiles: deque = deque(maxlen=FLOW_BARS)  # {level: volume} per bar
        head = engine.bar_series(symbol, spec, 2**62)
        self.generation = head.generation
        read = engine.bar_series(symbol, spec, max(head.n_closed - FLOW_BARS - SESSION_BARS, 0))
        closed = read.closed
        self.price_dp = 2
        shown = closed[-FLOW_BARS:]
        if shown:
            lo = min(b.low for b in shown)
            hi = max(b.high for b in shown)
            self.step = nice_step(hi - lo, PROFILE_LEVELS)
        else:
            self.step = None
        self.seen = read.first_index
        self._take(engine, closed, read.first_index)

    def _take(self, engine: Any, closed: list, first_index: int) -> None:
        # Closed bars with index first_index.. (in order); only the last FLOW_BARS are drawn.
        if not closed:
            return
        drawn = closed[-FLOW_BARS:]
        trades = self._trades_for(engine, drawn)
        starts = [b.start_ns for b in drawn]
        profiles = [dict() for _ in drawn]
        if self.step is None:
            self.step = nice_step(max(b.high for b in drawn) - min(b.low for b in drawn), PROFILE_LEVELS)
        for t in trades:
            if not t.in_bars:
                continue
            i = bisect.bisect_right(starts, t.ts_ns) - 1
            if i < 0 or t.ts_ns > drawn[i].end_ns or (self.spec.is_time and t.ts_ns >= drawn[i].end_ns):
                continue
            lv = level_of(t.price, self.step)
            profiles[i][lv] = profiles[i].get(lv, 0.0) + t.size
        off_ = len(closed) - len(drawn)
        for k, b in enumerate(closed):
            self.series.on_bar(b.start_ns, b.close, b.turnover, b.volume, b.buy_volume, b.sell_volume)
            if k >= off_:
                x = first_index + k
                self.bars.append((b.start_ns, x, b.open, b.high, b.low, b.close, b.end_ns))
                self.profiles.append(profiles[k - off_])
        if trades:
            self.price_dp = max(self.price_dp, decimals(trades)[0])
        self.seen = first_index + len(closed)

    def _trades_for(self, engine: Any, bars: list) -> list:
        n = sum(b.trade_count for b in bars)
        got = engine.trades(self.symbol, min(int(n * 1.02) + 500, MAX_VIEW_TRADES))
        first = bars[0].start_ns
        return [t for t in got if t.ts_ns >= first]

    def catch_up(self, engine: Any) -> bool:
        """Take the bars closed since the last call; return False when the model must be
        rebuilt (the series' generation changed, or bars were missed)."""
        head = engine.bar_series(self.symbol, self.spec, 2**62)
        if head.generation != self.generation or head.n_closed < self.seen:
            return False
        if head.n_closed > self.seen:
            new = engine.bar_series(self.symbol, self.spec, self.seen)
            if new.first_index > self.seen:
                return False
            self._take(engine, new.closed, self.seen)
        return True

    def current_profile(self, engine: Any, cur) -> dict:
        """Return {level: volume} of the bar in progress."""
        out: dict = {}
        if cur is None or not cur.trade_count or self.step is None:
            return out
        got = engine.trades(self.symbol, min(cur.trade_count + 200, MAX_VIEW_TRADES))
        lo = cur.start_ns if self.spec.is_time else cur.first_trade_ns
        for t in got:
            if t.in_bars and t.ts_ns >= lo:
                lv = level_of(t.price, self.step)
                out[lv] = out.get(lv, 0.0) + t.size
        return out


def _profile_frame(parts) -> pd.DataFrame:
    total: dict = {}
    for d in parts:
        for lv, v in d.items():
            total[lv] = total.get(lv, 0.0) + v
    levels = sorted(total)
    return pd.DataFrame({"price": np.array(levels, np.float64),
                         "volume": np.array([total[lv] for lv in levels], np.float64)})


def flow_update(engine: Any, symbol: str, spec: BarSpec, s: Settings, anchor: Any, state: dict | None,
                cache: FlowCache) -> tuple[Any, dict]:
    """Return (flow figure, a Patch of its in-progress bar, or no_update; flow state)."""
    state = state or {}
    key = (symbol, str(spec), s.emas)
    model = cache.get(key)
    if model is None or not model.catch_up(engine):
        model = FlowModel(engine, symbol, spec, s.emas)
        cache.put(key, model)
    head = engine.bar_series(symbol, spec, 2**62)
    cur = head.current
    cur_sig = None if cur is None else [cur.close, cur.high, cur.low, cur.volume, cur.trade_count]
    view = [symbol, str(spec), list(s.emas), s.cvd_session, s.vwap_bar, anchor if s.vwap_bar else None,
            model.seen, model.token]
    if state.get("view") == view and state.get("cur") == cur_sig:
        return no_update, state
    rows = list(model.series.rows)[-len(model.bars):] if model.bars else []
    bars = list(model.bars)
    if cur is not None:
        rows.append(model.series.peek(cur.start_ns, cur.close, cur.turnover, cur.volume,
                                      cur.buy_volume, cur.sell_volume))
        bars.append((cur.start_ns, model.seen, cur.open, cur.high, cur.low, cur.close, cur.end_ns))
    if not bars:
        return placeholder_figure(f"no {spec} bars for {symbol} yet"), {"view": view, "cur": cur_sig}
    pos = None
    if s.vwap_bar:
        pos = _anchor_row(anchor, bars, spec)
    values = FlowSeries.values(rows, cvd_session=s.cvd_session, anchor=pos)
    profile = _profile_frame([*model.profiles, model.current_profile(engine, cur)])
    area = value_area(profile)
    patchable = (state.get("view") == view and state.get("n") == len(bars) and cur is not None
                 and state.get("has_profile") == (not profile.empty))
    new_state = {"view": view, "cur": cur_sig, "n": len(bars), "has_profile": not profile.empty}
    if patchable:
        return _flow_patch(cur, values, s, profile, area, model.price_dp, len(bars) - 1), new_state
    frame = pd.DataFrame(bars, columns=["start", "x", "open", "high", "low", "close", "end"])
    x = plotly_dates(frame["start"]).tolist() if spec.is_time else frame["x"].tolist()
    fig = off.flow_figure(frame, symbol=symbol, spec=str(spec), x=x, vwap=np.array(values["vwap"], float),
                          emas={n: np.array(values[f"ema{n}"], float) for n in s.emas},
                          cvd=np.array(values["cvd"], float), profile=profile, area=area,
                          price_dp=model.price_dp)
    return fig, new_state


def _anchor_row(anchor: Any, bars: list, spec: BarSpec) -> int:
    # Row of the bar the VWAP is anchored at: the bar clicked (its x), else the first shown.
    if anchor is None:
        return 0
    try:
        if spec.is_time:
            ns = pd.Timestamp(str(anchor)).value
            pos = bisect.bisect_left([b[0] for b in bars], ns)
        else:
            pos = bisect.bisect_left([b[1] for b in bars], int(float(anchor)))
    except (ValueError, TypeError, OverflowError):
        return 0
    return min(max(pos, 0), len(bars) - 1)


def _num_or_none(v: float) -> float | None:
    return None if v is None or v != v else float(v)


def _flow_patch(cur, values: dict, s: Settings, profile: pd.DataFrame, area, price_dp: int, i: int) -> Patch:
    # Only the bar in progress changed: its candle, VWAP, EMA and CVD points, and the profile.
    p = Patch()
    for name in ("open", "high", "low", "close"):
        p["data"][off.TRACE_CANDLES][name][i] = getattr(cur, name)
    p["data"][off.TRACE_VWAP]["y"][i] = _num_or_none(values["vwap"][i])
    for k, n in enumerate(s.emas):
        p["data"][off.TRACE_EMA0 + k]["y"][i] = _num_or_none(values[f"ema{n}"][i])
    cvd_trace = off.TRACE_EMA0 + len(s.emas)
    p["data"][cvd_trace]["y"][i] = _num_or_none(values["cvd"][i])
    if not profile.empty:
        prof = cvd_trace + 1
        p["data"][prof]["y"] = profile["price"].tolist()
        p["data"][prof]["x"] = profile["volume"].tolist()
        if area is not None:
            inside = (profile["price"] >= area.val) & (profile["price"] <= area.vah)
            p["data"][prof]["marker"]["color"] = np.where(inside, rgba(MID, 0.55), rgba(MUTED, 0.45)).tolist()
            for j, (name, level) in enumerate((("POC", area.poc), ("VAH", area.vah), ("VAL", area.val))):
                p["layout"]["shapes"][j]["y0"] = level
                p["layout"]["shapes"][j]["y1"] = level
                p["layout"]["annotations"][j]["y"] = level
                p["layout"]["annotations"][j]["text"] = f"{name} {level:,.{price_dp}f}"
    return p


# -- alerts -----------------------------------------------------------------------------------


def alerts_update(engine: Any, symbol: str, spec: BarSpec, rules: AlertRules, state: dict | None,
                  log: list | None) -> tuple[Any, dict]:
    """Return (the alert log with new alerts first, or no_update; alert state).

    The state is kept per symbol; switching symbols starts a new baseline (no alert for
    history).
    """
    state = state or {}
    st = AlertState(**state["s"]) if state.get("symbol") == symbol and state.get("s") else AlertState()
    trades = engine.trades(symbol, 2000)
    closed: list[tuple[int, float]] = []
    if rules.surge_std is not None:
        head = engine.bar_series(symbol, spec, 2**62)
        series = engine.bar_series(symbol, spec, max(head.n_closed - rules.surge_window - 1, 0))
        closed = [(b.start_ns, b.volume) for b in series.closed[-(rules.surge_window + 1):]]
    price_dp, _ = decimals(trades)
    fired, st = check_alerts(rules, st, trades, closed, symbol=symbol, price_fmt=f"{{:,.{price_dp}f}}")
    new_state = {"symbol": symbol, "s": {"last_ts_ns": st.last_ts_ns, "last_trade_id": st.last_trade_id,
                                         "last_price": st.last_price, "surge_bar_start": st.surge_bar_start}}
    if not fired:
        return no_update, new_state
    entries = [{"time": iso_ms(a.ts_ns), "kind": a.kind, "text": a.text} for a in reversed(fired)]
    return (entries + list(log or []))[:MAX_ALERTS_KEPT], new_state
