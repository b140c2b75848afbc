"""Component ids of the dashboard, one named constant each.

A typo in an id then fails at import instead of silently in the browser (the pattern of
AnnMarieW/dash-multi-page-app-demos ``ids.py``). Browser tests select elements with
``f"#{ids.CANDLES}"``, so renaming an id here is the only change needed.
"""

from __future__ import annotations

__all__ = [
    "STATUS",
    "STATUS_BANNER",
    "SYMBOL",
    "SUBSCRIBE_INPUT",
    "SUBSCRIBE_BUTTON",
    "SUBSCRIBE_MESSAGE",
    "UNSUBSCRIBE_BUTTON",
    "BAR_KIND",
    "BAR_SIZE",
    "BAR_LABEL",
    "BAR_CUSTOM",
    "BAR_CUSTOM_BUTTON",
    "BAR_MESSAGE",
    "EXPORT_BUTTON",
    "TIMEZONE",
    "BROWSER_TZ",
    "EXPORT_MESSAGE",
    "DOWNLOAD",
    "CANDLES",
    "DEPTH",
    "TICK",
    "CANDLES_STORE",
    "DEPTH_STORE",
    "STATUS_STORE",
    "EXPORT_REQUEST",
    "SUBSCRIBE_STORE",
    "HISTORY_STORE",
    "HISTORY_BASE",
    "HISTORY_RANGE",
]

# -- header ---------------------------------------------------------------------------
STATUS = "status"  # status line: connection dot, messages/s, last-trade age, queue depth,
#                    problem counters, kline cross-check badge, and why while reconnecting
STATUS_BANNER = "status-banner"  # red banner under the header: the whole reason the feed failed

# -- controls row ---------------------------------------------------------------------
SYMBOL = "symbol"  # dcc.Dropdown of subscribed symbols
SUBSCRIBE_INPUT = "subscribe-input"  # free text: a symbol to subscribe
SUBSCRIBE_BUTTON = "subscribe-button"
UNSUBSCRIBE_BUTTON = "unsubscribe-button"  # removes the selected symbol (unsubscribes it)
SUBSCRIBE_MESSAGE = "subscribe-message"  # inline error next to the button (also a vendor's
#                                          refusal of the symbol, arriving just after)
BAR_KIND = "bar-kind"  # time / tick / volume / value
BAR_SIZE = "bar-size"  # preset specs of the kind; its value is the spec shown
BAR_LABEL = "bar-label"  # time bars placed at their interval "start" or "end"
BAR_CUSTOM = "bar-custom"  # free text: any valid spec string ("3m", "250t")
BAR_CUSTOM_BUTTON = "bar-custom-button"
BAR_MESSAGE = "bar-message"  # inline error for an invalid spec
TIMEZONE = "timezone"  # dcc.Dropdown: the chart's time zone (UTC, browser, session, any IANA)
BROWSER_TZ = "browser-tz"  # the zone the browser reports (written clientside at load)
EXPORT_BUTTON = "export-button"
EXPORT_MESSAGE = "export-message"  # inline note when nothing is in view
DOWNLOAD = "download"  # dcc.Download receiving the CSV

# -- charts ---------------------------------------------------------------------------
CANDLES = "candles"  # dcc.Graph: candlesticks over volume
DEPTH = "depth"  # dcc.Graph: cumulative order-book depth

# -- timers and state -----------------------------------------------------------------
TICK = "tick"  # the one dcc.Interval driving every live update
PULSE = "tick-pulse"  # the timer's ticks passed on to the live update (dashboard.tickgate)
CANDLES_STORE = "candles-store"  # what the candle figure holds (see candles.plan_candles)
DEPTH_STORE = "depth-store"  # signature of the depth view drawn last
STATUS_STORE = "status-store"  # dropped-message count seen last (the "dropping" flag)
EXPORT_REQUEST = "export-request"  # visible x-range read in the browser on Export
SUBSCRIBE_STORE = "subscribe-store"  # the last subscribe from the box: symbol, when, vendor
#                                      errors seen before it, symbol selected before it
HISTORY_STORE = "history-store"  # older bars loaded by panning left (dashboard.history)
HISTORY_BASE = "history-base"  # the candle store reduced to what changes with a full redraw
HISTORY_RANGE = "history-range"  # the candle chart's x-range, read in the browser on relayout
