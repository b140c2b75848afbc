"""Send only what changed: a ``dash.Patch`` of the items of a component list that differ
from what the browser holds.

The status line is a list of small components (feed state, message rate, last-trade age,
queue, counters, ...) of which one or two change per update (the rate and the age). The
browser keeps a short signature per item (in the status store); an update replaces only
the items whose signature changed, about a tenth of the whole line. Pure (no engine, no
clock).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from dash import Patch
from plotly.io.json import to_json_plotly

__all__ = ["item_signatures", "children_delta"]


def item_signatures(children: Sequence[Any]) -> list[str]:
    """Return one 8-hex-digit CRC-32 per item of ``children``, of its JSON as Dash sends it."""
    return [f"{zlib.crc32(to_json_plotly(c).encode()):08x}" for c in children]


def children_delta(children: Any, drawn: Any) -> tuple[Any, list[str] | None]:
    """Return (what to send, signatures) to turn the list drawn with signatures ``drawn``
    into ``children``.

    What to send is ``children`` itself when it is not a list, the number of items changed
    or ``drawn`` is not a list of signatures (the first update, a page reload); None when
    no item changed; else a ``dash.Patch`` assigning only the changed items. The
    signatures are None for a ``children`` that is not a list.
    """
    if not isinstance(children, list):
        return children, None
    sigs = item_signatures(children)
    if not isinstance(drawn, list) or len(drawn) != len(sigs):
        return children, sigs
    if drawn == sigs:
        return None, sigs
    patch = Patch()
    for i, (before, now) in enumerate(zip(drawn, sigs)):
        if before != now:
            patch[i] = children[i]
    return patch, sigs
