"""Pure builders of the order-flow views: the time & sales tape and the DOM ladder (HTML
tables), the footprint (plotly heatmap with text) and the flow chart (candles with VWAP and
EMA overlays, the volume profile beside the price axis with POC/VAH/VAL, and the CVD pane
under the candles).

Frames in (``feed.core.orderflow`` results), components and figures out; no engine, no
clock, so each is unit-tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from dash import html

from feed.core.orderflow import ValueArea

from .figures import DOWN, MID, MUTED, TEXT, UP, axis_style, base_layout, plotly_dates, rgba

__all__ = [
    "EMA_COLOURS", "VWAP_COLOUR", "tape_row", "tape_rows", "tape_header", "ladder_table",
    "footprint_figure", "flow_figure",
]

VWAP_COLOUR = "#4c8dff"
EMA_COLOURS = ("#e0b341", "#c792ea", "#7fdbca", "#f78c6c")
POC_COLOUR = "#e0b341"


def _time_ms(ts_ns: int) -> str:
    # HH:MM:SS.mmm UTC, the tape's time column.
    s = (ts_ns // 1_000_000_000) % 86_400
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}.{(ts_ns // 1_000_000) % 1000:03d}"


def _short(x: float, dp: int) -> str:
    # A cell size without trailing zeros ("0.25", "0"): footprint cells are narrow.
    t = f"{x:.{dp}f}"
    return t.rstrip("0").rstrip(".") if "." in t else t


# -- tape -------------------------------------------------------------------------------------


def tape_header() -> html.Tr:
    """Return the tape's header row."""
    return html.Tr([html.Th("time (UTC)"), html.Th("price"), html.Th("size"), html.Th("side")])


def tape_row(ts_ns: int, price: float, size: float, side: int, *, price_dp: int, size_dp: int,
             large: float | None) -> html.Tr:
    """Return one tape row: time with ms, price, size, taker side; coloured by side
    (``tape-buy``/``tape-sell``) and emphasised (``tape-large``) when ``size >= large``."""
    cls = {1: "tape-buy", -1: "tape-sell"}.get(int(side), "tape-unknown")
    if large is not None and size >= large:
        cls += " tape-large"
    return html.Tr([
        html.Td(_time_ms(int(ts_ns))), html.Td(f"{price:,.{price_dp}f}"),
        html.Td(f"{size:,.{size_dp}f}"), html.Td({1: "buy", -1: "sell"}.get(int(side), "–")),
    ], className=cls)


def tape_rows(tape: pd.DataFrame, *, price_dp: int, size_dp: int, large: float | None) -> list[html.Tr]:
    """Return tape rows newest first (``tape`` is oldest first, as ``feed.core.orderflow.tape``)."""
    return [tape_row(ts, p, s, sd, price_dp=price_dp, size_dp=size_dp, large=large)
            for ts, p, s, sd in zip(tape["ts_ns"].tolist()[::-1], tape["price"].tolist()[::-1],
                                    tape["size"].tolist()[::-1], tape["side"].tolist()[::-1])]


# -- DOM ladder -------------------------------------------------------------------------------


def ladder_table(ladder: pd.DataFrame, *, best_bid: float | None, best_ask: float | None,
                 price_dp: int, size_dp: int) -> list:
    """Return the DOM ladder's table rows: ``bid size | price | ask size | traded``, asks
    above the spread and bids below, the best bid and ask marked, each size with a bar in
    the background proportional to the largest size shown."""
    head = html.Tr([html.Th("bid"), html.Th("price"), html.Th("ask"), html.Th("traded")])
    top = float(max(ladder["bid_size"].max() if len(ladder) else 0, ladder["ask_size"].max() if len(ladder) else 0)) or 1.0
    rows = [head]
    for price, bid, ask, vol in ladder[["price", "bid_size", "ask_size", "volume"]].itertuples(index=False):
        cls = "ladder-ask" if ask > 0 else "ladder-bid"
        if price == best_bid or price == best_ask:
            cls += " ladder-best"
        rows.append(html.Tr([
            # the size bar's width as a CSS variable (assets/orderflow.css draws it): a few
            # bytes per cell instead of a gradient string on every update
            html.Td(f"{bid:,.{size_dp}f}" if bid else "", style={"--w": f"{100 * bid / top:.0f}%"}),
            html.Td(f"{price:,.{price_dp}f}"),
            html.Td(f"{ask:,.{size_dp}f}" if ask else "", style={"--w": f"{100 * ask / top:.0f}%"}),
            html.Td(f"{vol:,.{size_dp}f}" if vol else ""),
        ], className=cls))
    return rows


# -- footprint --------------------------------------------------------------------------------


def footprint_figure(fp: pd.DataFrame, *, symbol: str, spec: str, price_dp: int, size_dp: int,
                     step: float | None = None, uirevision: str | None = None) -> dict:
    """Return the footprint heatmap (a plotly figure dict): one column per bar, one row
    per price level; each cell reads ``sell x buy`` (bid x ask: taker sells hit the bid,
    taker buys lift the ask) and is coloured by its delta (green buy, red sell); each bar's
    delta is written under it.

    Plain dicts, not ``go.Figure``: plotly's validation would cost more than the rest of
    the update (about 0.1 s per figure on the development machine).

    Parameters
    ----------
    fp : DataFrame
        ``feed.core.orderflow.footprint`` rows (``bar``, ``start``, ``price``, volumes).
    """
    layout = base_layout(uirevision if uirevision is not None else f"{symbol}|{spec}")
    layout["title"]["text"] = (f"<b>{symbol}</b> footprint · {spec} · "
                               + (f"step {step:g}" if step is not None else "each price") + " · bid x ask")
    if fp.empty:
        return {"data": [], "layout": layout}
    bar_ids, bar_pos = np.unique(fp["bar"].to_numpy(), return_inverse=True)
    starts = np.zeros(len(bar_ids), np.int64)
    starts[bar_pos] = fp["start"].to_numpy(np.int64)
    buy_v = fp["buy_volume"].to_numpy(np.float64)
    sell_v = fp["sell_volume"].to_numpy(np.float64)
    deltas = np.bincount(bar_pos, weights=buy_v - sell_v, minlength=len(bar_ids))
    x_labels = plotly_dates(pd.Series(starts)).str[11:19].tolist()
    levels, y_pos = np.unique(fp["price"].to_numpy(np.float64), return_inverse=True)
    z: list[list] = [[None] * len(bar_ids) for _ in levels]
    text: list[list] = [[""] * len(bar_ids) for _ in levels]
    lim = 0.0
    for i, j, buy, sell in zip(y_pos.tolist(), bar_pos.tolist(), buy_v.tolist(), sell_v.tolist()):
        d = buy - sell
        z[i][j] = round(d, 12)
        lim = max(lim, abs(d))
        text[i][j] = f"{_short(sell, size_dp)} x {_short(buy, size_dp)}"
    lim = lim or 1.0
    heat = dict(
        type="heatmap", x=list(range(len(bar_ids))), y=[f"{p:.{price_dp}f}" for p in levels], z=z, text=text,
        texttemplate="%{text}", textfont=dict(size=9, color="#c9d1d9"), zmin=-lim, zmax=lim, zmid=0,
        colorscale=[[0, rgba(DOWN, 0.85)], [0.5, rgba(MUTED, 0.15)], [1, rgba(UP, 0.85)]],
        showscale=False, xgap=2, ygap=1, name="footprint",
        hovertemplate="%{y}<br>bid x ask %{text}<br>delta %{z}<extra></extra>",
    )
    annotations = [dict(x=j, y=-0.01, xref="x", yref="paper", yanchor="top", showarrow=False,
                        text=f"Δ {d:+.{size_dp}f}", font=dict(size=10, color=UP if d >= 0 else DOWN))
                   for j, d in enumerate(deltas.tolist())]
    layout.update(
        annotations=annotations, margin=dict(l=8, r=8, t=48, b=28),
        xaxis=axis_style(tickmode="array", tickvals=list(range(len(bar_ids))), ticktext=x_labels,
                         side="top", tickangle=0, showspikes=False),
        yaxis=axis_style(type="category", side="right", showspikes=False),
    )
    return {"data": [heat], "layout": layout}


# -- flow chart: candles, overlays, profile, CVD ------------------------------------------------

#: Trace positions in the flow figure (patches address them): candles, VWAP, then one line
#: per EMA, then CVD, then the volume profile.
TRACE_CANDLES, TRACE_VWAP, TRACE_EMA0 = 0, 1, 2


def _clean(values) -> list:
    # JSON-safe list: NaN -> None.
    return [None if (v is None or v != v) else float(v) for v in np.asarray(values, np.float64).tolist()]


def flow_figure(bars: pd.DataFrame, *, symbol: str, spec: str, x: Sequence, vwap: np.ndarray,
                emas: dict[int, np.ndarray], cvd: np.ndarray, profile: pd.DataFrame,
                area: ValueArea | None, price_dp: int, uirevision: str | None = None) -> dict:
    """Return candles with VWAP and EMA lines, the volume profile beside the price axis
    (POC, VAH and VAL marked) and the cumulative volume delta pane under the candles, as a
    plotly figure dict. Traces: candles, VWAP, one per EMA (ascending length), CVD, profile.

    Parameters
    ----------
    bars : DataFrame
        Bars in order (``open high low close``); ``x`` their positions on the x-axis.
    vwap, cvd : ndarray
        One value per bar (``feed.core.orderflow.vwap`` / ``cumulative_delta``).
    emas : dict
        EMA length -> one value per bar.
    profile : DataFrame
        ``feed.core.orderflow.volume_profile`` of the bars shown; ``area`` its value area.
    """
    x = list(x)
    data = [dict(type="candlestick", x=x, open=_clean(bars["open"]), high=_clean(bars["high"]),
                 low=_clean(bars["low"]), close=_clean(bars["close"]), name="price", xaxis="x", yaxis="y",
                 increasing=dict(line=dict(color=UP, width=1), fillcolor=UP),
                 decreasing=dict(line=dict(color=DOWN, width=1), fillcolor=DOWN)),
            dict(type="scatter", mode="lines", x=x, y=_clean(vwap), name="VWAP", xaxis="x", yaxis="y",
                 line=dict(color=VWAP_COLOUR, width=1.5))]
    for k, n in enumerate(sorted(emas)):
        data.append(dict(type="scatter", mode="lines", x=x, y=_clean(emas[n]), name=f"EMA {n}", xaxis="x",
                         yaxis="y", line=dict(color=EMA_COLOURS[k % len(EMA_COLOURS)], width=1)))
    steps = np.diff(np.r_[0.0, np.asarray(cvd, np.float64)])
    data.append(dict(type="bar", x=x, y=_clean(cvd), name="CVD", xaxis="x", yaxis="y2",
                     marker=dict(color=[UP if v >= 0 else DOWN for v in steps.tolist()], line=dict(width=0))))
    shapes, notes = [], []
    if not profile.empty:
        inside = ((profile["price"] >= area.val) & (profile["price"] <= area.vah)) if area else \
            np.zeros(len(profile), bool)
        data.append(dict(type="bar", orientation="h", y=_clean(profile["price"]), x=_clean(profile["volume"]),
                         name="volume at price", xaxis="x3", yaxis="y",
                         marker=dict(color=np.where(inside, rgba(MID, 0.55), rgba(MUTED, 0.45)).tolist(),
                                     line=dict(width=0)),
                         hovertemplate="%{y}<br>volume %{x}<extra></extra>"))
        if area is not None:
            for name, level, dash in (("POC", area.poc, "solid"), ("VAH", area.vah, "dot"), ("VAL", area.val, "dot")):
                shapes.append(dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=level, y1=level,
                                   line=dict(color=POC_COLOUR, width=1, dash=dash)))
                notes.append(dict(xref="paper", x=1, xanchor="right", yref="y", y=level, yanchor="bottom",
                                  showarrow=False, text=f"{name} {level:,.{price_dp}f}",
                                  font=dict(size=10, color=POC_COLOUR)))
    layout = base_layout(uirevision if uirevision is not None else f"{symbol}|{spec}")
    names = " · ".join(["VWAP", *(f"EMA {n}" for n in sorted(emas))])
    layout["title"]["text"] = f"<b>{symbol}</b> order flow · {spec} · {names} · CVD"
    spikes = dict(showspikes=True, spikemode="across", spikesnap="cursor", spikethickness=1,
                  spikecolor=TEXT, spikedash="dot")
    layout.update(
        shapes=shapes, annotations=notes, bargap=0.1, hovermode="x", dragmode="pan",
        xaxis=axis_style(domain=[0, 0.84], anchor="y2", rangeslider=dict(visible=False), **spikes),
        yaxis=axis_style(domain=[0.3, 1], side="right", tickformat=f",.{price_dp}f", showspikes=False),
        yaxis2=axis_style(domain=[0, 0.27], side="right", title=dict(text="CVD", font=dict(size=10, color=MUTED)),
                          showspikes=False),
        xaxis3=axis_style(domain=[0.885, 1], anchor="y", showticklabels=False, showspikes=False),
    )
    return {"data": data, "layout": layout}
