"""Checks of the values a Dash callback receives from the browser.

A callback body can be forged (``dashboard.guard`` checks its shape only), so every
value is taken as hostile: each function here returns the value when it has the type and
size the page itself sends, else a neutral value (None: "nothing selected", "nothing
drawn yet") that makes the callback draw from scratch or answer an inline message. None
of them raises.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MAX_TEXT", "text", "choice", "number", "mapping", "candles_store", "status_store",
    "subscribe_store", "symbol_options", "export_request",
]

#: Longest symbol or bar spec a user can mean (vendor symbols are at most ~30 characters).
MAX_TEXT = 64

_INT_FIELDS = ("n_closed", "gap_total", "n_points", "first_index", "generation")


def text(value: Any, max_len: int = MAX_TEXT) -> str | None:
    """Return ``value`` stripped when it is a string of at most ``max_len`` characters."""
    if isinstance(value, str) and len(value) <= max_len:
        return value.strip()
    return None


def choice(value: Any, allowed: tuple | list, default: Any = None) -> Any:
    """Return ``value`` if it is one of ``allowed`` (hashable strings), else ``default``."""
    return value if isinstance(value, str) and value in allowed else default


def number(value: Any) -> float | None:
    """Return ``value`` as a float when it is a finite int/float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def mapping(value: Any) -> dict | None:
    """Return ``value`` if it is a dict, else None."""
    return value if isinstance(value, dict) else None


def candles_store(value: Any) -> dict | None:
    """Return the candle store if its fields have the types ``dashboard.updates`` writes.

    ``key``/``view`` strings, the counters ints (``_INT_FIELDS``), ``decimals`` an int or
    None, ``current`` a string or None. Anything else: None (the chart is redrawn).
    """
    if not isinstance(value, dict):
        return None
    for field in ("key", "view"):
        if field in value and not isinstance(value[field], str):
            return None
    for field in _INT_FIELDS:
        if field in value and not _is_int(value[field]):
            return None
    if value.get("decimals") is not None and not _is_int(value["decimals"]):
        return None
    if value.get("current") is not None and not isinstance(value["current"], str):
        return None
    return value


def depth_store(value: Any) -> dict | str | None:
    """Return the depth store if it is what ``depth.depth_state`` writes (``frame``,
    ``bids``, ``asks``, ``note`` short strings or None, ``mid`` a number or None) or the
    placeholder's short signature string; anything else: None (the chart is redrawn)."""
    if isinstance(value, str):
        return text(value, 200)
    if not isinstance(value, dict) or len(value) > 8:
        return None
    for field in ("frame", "bids", "asks", "note"):
        if value.get(field) is not None and not (isinstance(value[field], str) and len(value[field]) <= 64):
            return None
    if value.get("mid") is not None and number(value["mid"]) is None:
        return None
    return value


def status_store(value: Any) -> dict | None:
    """Return the status store if ``dropped`` is an int and ``drop_seen`` a number or None."""
    if not isinstance(value, dict):
        return None
    if "dropped" in value and not _is_int(value["dropped"]):
        return None
    if value.get("drop_seen") is not None and number(value["drop_seen"]) is None:
        return None
    if value.get("sig") is not None and not isinstance(value["sig"], str):
        return None
    return value


def subscribe_store(value: Any) -> dict | None:
    """Return the subscribe store if its fields have the types the subscribe box writes.

    ``n``/``symbol``/``previous`` strings (or None), ``at`` a number, ``errors`` a list of
    strings.
    """
    if not isinstance(value, dict):
        return None
    for field in ("n", "symbol", "previous"):
        if value.get(field) is not None and not isinstance(value[field], str):
            return None
    if value.get("at") is not None and number(value["at"]) is None:
        return None
    errors = value.get("errors")
    if errors is not None and not (isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
        return None
    return value


def symbol_options(value: Any) -> list | None:
    """Return the dropdown options that are strings or ``{"label", "value": str}`` dicts;
    None when ``value`` is not a list."""
    if not isinstance(value, list):
        return None
    return [o for o in value
            if isinstance(o, str) or (isinstance(o, dict) and isinstance(o.get("value"), str))]


def export_request(value: Any) -> dict | None:
    """Return the export request if ``range`` is None or a pair of strings/numbers and
    ``type`` a string."""
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return None
    x_range = value.get("range")
    if x_range is not None and not (
            isinstance(x_range, list) and len(x_range) == 2
            and all(isinstance(v, str) or number(v) is not None for v in x_range)):
        return None
    return value
