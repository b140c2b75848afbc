"""The order-book depth chart: cumulative bid and ask size by price, with mid and spread.

Pure: lists of (price, size) levels in, a plotly figure (or a ``dash.Patch`` of one) out
(no engine or clock reads).

Steady updates (:func:`depth_delta`): the live update sends the whole figure only when its
frame changes (another symbol, the book going in or out of sync, the price decimals, the
mid/spread line appearing or going, the book emptying); otherwise a ``dash.Patch`` with
only what changed: the x/y of the side whose levels changed, the mid/spread text, the mid
line's position -- a few hundred bytes instead of ~11 KB (the figure's layout alone,
plotly's template included, is ~9 KB). A side's cumulative sizes change from the first
changed level on, so a side is replaced whole rather than level by level (per-level
operations would cost more than the array). The state kept between updates is a small dict
of signatures (:func:`depth_state`), stored in the browser.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from dash import Patch

from .figures import (ASK, BID, MID, MUTED, PANEL, axis_style, base_layout, format_price,
                      max_decimals, rgba)

__all__ = ["depth_figure", "depth_state", "depth_delta"]

#: Indexes of the bid and ask traces in the figure (``_depth_traces``).
_SIDES = (0, 1)


def depth_figure(
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    *,
    symbol: str,
    mid: float | None = None,
    spread: float | None = None,
    synced: bool = True,
    uirevision: str | None = None,
    stale: str = "",
) -> go.Figure:
    """Return the cumulative order-book depth figure.

    Parameters
    ----------
    bids, asks : sequence of (price, size)
        Levels best first (prices in quote currency, sizes in base units).
    symbol : str
    mid, spread : float, optional
        Quote currency; the mid is drawn as a vertical line, and both (the spread also in
        basis points of the mid) are written at the top of the plot.
    synced : bool
        False while the book waits for a snapshot: the figure says so.
    uirevision : str, optional
        Defaults to ``symbol``, so zoom survives updates until the symbol changes.
    stale : str
        Why the book may be out of date ("stale: feed reconnecting", "stale: book out of
        sync", ``dashboard.wording.stale_reason``), or a source's own words starting "no
        order book" (a trades-only recording): written in the title and on the mid/spread
        line (over an empty chart, in its middle), the curves dimmed. "" when it is current.

    Notes
    -----
    Each side is a step line filled to zero. At a price x between two levels the bid
    curve shows the size resting at prices >= x (what a sell down to x would meet) and
    the ask curve the size at prices <= x; hence ``vh`` steps for bids plotted in rising
    price order and ``hv`` for asks.
    """
    decimals = max_decimals([p for p, _ in list(bids[:20]) + list(asks[:20])])
    fig = go.Figure(_depth_traces(bids, asks))
    if stale:
        fig.update_traces(opacity=0.35)
    title = f"<b>{symbol}</b> depth"
    if stale:  # amber for a fault; muted for a source that keeps no book (nothing to fix)
        colour = "#7d8693" if stale.startswith("no order book") else "#e0b341"
        title += f" · <span style='color:{colour}'>{stale}</span>"
    elif not synced:
        title += " · <span style='color:#e0b341'>resyncing</span>"
    layout = base_layout(uirevision if uirevision is not None else symbol)
    layout["title"]["text"] = title
    annotations = _depth_annotations(bids, asks, mid, spread, synced, decimals, stale)
    fig.update_layout(
        **layout,
        hovermode="x",
        dragmode="pan",
        shapes=[dict(type="line", xref="x", yref="paper", x0=mid, x1=mid, y0=0, y1=1,
                     line=dict(color=MID, width=1, dash="dash"), visible=mid is not None)]
        if mid is not None else [],
        annotations=annotations,
        xaxis=axis_style(showspikes=False, tickformat=f",.{decimals}f"),
        yaxis=axis_style(side="right", showspikes=False, rangemode="tozero"),
    )
    return fig


def _side_xy(levels, is_bid: bool) -> tuple[list[float], list[float]]:
    # (prices, cumulative sizes) of one side in rising price order (depth_figure's Notes).
    # The sums are rounded to the sizes' decimals: float noise (0.30000000000000004) would
    # cost bytes on every update and mean nothing.
    if not levels:
        return [], []
    sizes = [s for _, s in levels]
    cum = np.round(np.cumsum(sizes), max_decimals(sizes)).tolist()
    px = [p for p, _ in levels]
    return (px[::-1], cum[::-1]) if is_bid else (px, cum)


def _depth_traces(bids, asks) -> list[go.Scatter]:
    # Cumulative size per side, bids in rising price order (see depth_figure's Notes).
    bid_px, bid_cum = _side_xy(bids, True)
    ask_px, ask_cum = _side_xy(asks, False)
    return [
        go.Scatter(
            x=bid_px, y=bid_cum, name="bids", mode="lines", line=dict(color=BID, width=1.5, shape="vh"),
            fill="tozeroy", fillcolor=rgba(BID, 0.18),
            hovertemplate="bid %{x}<br>cum %{y:,.6~f}<extra></extra>",
        ),
        go.Scatter(
            x=ask_px, y=ask_cum, name="asks", mode="lines", line=dict(color=ASK, width=1.5, shape="hv"),
            fill="tozeroy", fillcolor=rgba(ASK, 0.18),
            hovertemplate="ask %{x}<br>cum %{y:,.6~f}<extra></extra>",
        ),
    ]


def _depth_annotations(bids, asks, mid, spread, synced: bool, decimals: int, stale: str = "") -> list[dict]:
    # The mid/spread line at the top, and a waiting message over an empty book.
    annotations = []
    if mid is not None or spread is not None:
        parts = []
        if mid is not None:
            # The mid of two prices on the tick grid may need one decimal more.
            mid_dp = decimals if math.isclose(round(mid, decimals), mid, abs_tol=1e-12) else decimals + 1
            parts.append(f"mid {format_price(mid, mid_dp)}")
        if spread is not None:
            bps = f" ({spread / mid * 1e4:.3g} bps)" if mid else ""  # 3 significant digits
            parts.append(f"spread {format_price(spread, decimals)}{bps}")
        if stale:
            parts.append(stale)
        annotations.append(dict(
            text=" · ".join(parts), x=0.5, y=1, xref="paper", yref="paper", xanchor="center",
            yanchor="top", showarrow=False, font=dict(size=11, color=MUTED if stale else "#e6e9ee"),
            bgcolor=rgba(PANEL, 0.85), borderpad=3,
        ))
    if not bids and not asks:
        annotations.append(dict(
            text=(stale if stale.startswith("no order book")
                  else f"no order book: {stale.removeprefix('stale: ')}" if stale.startswith("stale: feed")
                  else "empty order book" if synced else "order book out of sync: fetching a fresh snapshot"),
            x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
            font=dict(size=13, color=MUTED),
        ))
    return annotations


def _crc(value) -> str:
    return f"{zlib.crc32(repr(value).encode()):08x}"


def depth_state(
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    *,
    symbol: str,
    mid: float | None = None,
    spread: float | None = None,
    synced: bool = True,
    stale: str = "",
) -> dict:
    """Return the signatures of what a depth figure of these arguments draws.

    A small JSON dict (kept in the browser between updates): ``frame`` (everything a
    :func:`depth_delta` patch cannot change), ``bids`` / ``asks`` (each side's levels),
    ``note`` (the mid/spread text) and ``mid`` (the mid line's price). A change of
    ``stale`` changes the title and the colours: part of the frame.
    """
    decimals = max_decimals([p for p, _ in list(bids[:20]) + list(asks[:20])])
    note = _depth_annotations(bids, asks, mid, spread, synced, decimals, stale)
    return {
        "frame": _crc((symbol, bool(synced), decimals, mid is None, len(note), bool(bids or asks), stale)),
        "bids": _crc(tuple(bids)), "asks": _crc(tuple(asks)),
        "note": _crc(note[0]["text"] if note else None), "mid": mid,
    }


def depth_delta(
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    drawn: dict | None,
    *,
    symbol: str,
    mid: float | None = None,
    spread: float | None = None,
    synced: bool = True,
    uirevision: str | None = None,
    stale: str = "",
) -> tuple[go.Figure | Patch | None, dict]:
    """Return (what to send, new state) to bring the figure drawn with state ``drawn`` to
    this book.

    What to send is None when nothing drawn would change, a ``dash.Patch`` of the changed
    sides, text and mid line when the frame is the same (see the module docstring), else
    the whole :func:`depth_figure`. Arguments as :func:`depth_figure`; ``drawn`` is the
    state returned with the figure the browser holds (None or anything unexpected: a whole
    figure is sent).
    """
    state = depth_state(bids, asks, symbol=symbol, mid=mid, spread=spread, synced=synced, stale=stale)
    if not isinstance(drawn, dict) or drawn.get("frame") != state["frame"]:
        return depth_figure(bids, asks, symbol=symbol, mid=mid, spread=spread, synced=synced,
                            uirevision=uirevision, stale=stale), state
    if drawn == state:
        return None, state
    patch = Patch()
    for i, (key, levels) in zip(_SIDES, (("bids", bids), ("asks", asks))):
        if drawn.get(key) != state[key]:
            x, y = _side_xy(levels, key == "bids")
            patch["data"][i]["x"] = x
            patch["data"][i]["y"] = y
    if drawn.get("note") != state["note"]:
        decimals = max_decimals([p for p, _ in list(bids[:20]) + list(asks[:20])])
        note = _depth_annotations(bids, asks, mid, spread, synced, decimals, stale)
        patch["layout"]["annotations"][0]["text"] = note[0]["text"]
    if mid is not None and drawn.get("mid") != mid:
        patch["layout"]["shapes"][0]["x0"] = mid
        patch["layout"]["shapes"][0]["x1"] = mid
    return patch, state
