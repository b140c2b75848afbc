"""The tick gate: one full candle figure per symbol or bar switch.

Dash runs one request per callback at a time from the page's point of view: when a callback
is triggered again while its request is in flight, the browser discards the older
request's answer and keeps the newer one. The live update is one callback triggered by the
timer (4 times a second) and by the symbol and bar choices. On a switch the first request
builds the whole new figure (tens of ms to seconds, with the figure ~12-100 KB); timer
ticks during it re-trigger the callback with the candle store still describing the old
chart, so each builds the whole figure again and only the last one is used: the same
figure went over the wire two or three times.

The gate is a clientside callback between the timer and the live update: it passes a tick
on (as the ``PULSE`` store's data) unless the chart drawn (the candle store's ``view``,
``SYMBOL|SPEC`` and maybe ``|ZONE``, compared by its first two parts) is not the one selected, i.e. a full draw of the new choice is on its
way; then ticks are held, one let through every ``HOLD_MS``, so a lost answer (a server
error) is redrawn, and a draw slower than the timer under load is no longer superseded
by every tick (which could leave the chart redrawing the whole figure on every tick and
never showing it). The bar spec values of the controls are canonical
(``str(BarSpec)``), so the comparison is a string comparison.
"""

from __future__ import annotations

__all__ = ["HOLD_MS", "GATE_JS"]

#: Longest time ticks are held while the new choice is drawn, ms.
HOLD_MS = 3000

GATE_JS = """
function(n, store, symbol, spec) {
    var want = (symbol || '') + '|' + (spec || '');
    // The view may carry a time zone after SYMBOL|SPEC: only the chart's choice counts.
    var drawn = store ? String(store.view || store.key || '').split('|').slice(0, 2).join('|') : null;
    var gate = window.__tickscopeGate || (window.__tickscopeGate = {want: null, since: 0});
    if (symbol && spec && drawn !== want) {
        if (gate.want !== want) { gate.want = want; gate.since = Date.now(); }
        if (Date.now() - gate.since < %d) { return window.dash_clientside.no_update; }
        gate.since = Date.now();  // one tick through, then hold again: never a tick storm
    } else {
        gate.want = null;
    }
    return n;
}
""" % HOLD_MS
