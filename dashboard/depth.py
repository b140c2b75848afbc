"""The order-book depth chart: cumulative bid and ask size by price, with mid and spread.

Pure: lists of (price, size) levels in, a plotly figure out (no engine or clock reads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .figures import (ASK, BID, MID, MUTED, PANEL, axis_style, base_layout, format_price,
                      max_decimals, rgba)

__all__ = ["depth_figure", "depth_signature"]


def depth_signature(
    bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]], synced: bool
) -> str:
    """Return a short string that changes whenever the drawn depth would change."""
    return f"{hash((tuple(bids), tuple(asks), synced)):x}"


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
        sync", ``dashboard.wording.stale_reason``): written in the title and on the
        mid/spread line, the curves dimmed. "" when it is current.

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
    if stale:
        title += f" · <span style='color:#e0b341'>{stale}</span>"
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


def _depth_traces(bids, asks) -> list[go.Scatter]:
    # Cumulative size per side, bids in rising price order (see depth_figure's Notes).
    bid_px = [p for p, _ in bids][::-1]
    bid_cum = np.cumsum([s for _, s in bids])[::-1].tolist() if bids else []
    ask_px = [p for p, _ in asks]
    ask_cum = np.cumsum([s for _, s in asks]).tolist() if asks else []
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
            text=(f"no order book: {stale.removeprefix('stale: ')}" if stale.startswith("stale: feed")
                  else "empty order book" if synced else "order book out of sync: fetching a fresh snapshot"),
            x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
            font=dict(size=13, color=MUTED),
        ))
    return annotations
