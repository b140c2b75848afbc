"""The chart's time zone: a choice for the axis and hover, never for files.

Bars and every file or JSON time stay UTC ns; only the date strings drawn
(``figures.plotly_dates``) are written in the zone chosen on the page, and a plotly range
read back (``export.axis_value_ns``) is taken in it. The zone is set for the duration of
one callback with :func:`display_tz` (a context variable: Dash runs each callback in its
own context copy, so two pages with two zones never mix).

The choices: ``UTC``, ``browser`` (the zone the browser reports,
``Intl.DateTimeFormat().resolvedOptions().timeZone``), the exchange's session zone
(``--session-tz``) when the run has one, and every IANA name ``zoneinfo`` knows (the
dropdown is searchable: type any name).
"""

from __future__ import annotations

import contextlib
import contextvars
import zoneinfo
from collections.abc import Iterator
from functools import lru_cache

__all__ = ["UTC", "BROWSER", "DISPLAY_TZ", "display_tz", "valid_zone", "resolve", "zone_options"]

UTC = "UTC"
BROWSER = "browser"
#: The zone the chart's dates are written in (an IANA name); UTC outside :func:`display_tz`.
DISPLAY_TZ: contextvars.ContextVar[str] = contextvars.ContextVar("DISPLAY_TZ", default=UTC)


@lru_cache(maxsize=1)
def _names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def valid_zone(name: object) -> str | None:
    """Return ``name`` if it is an IANA zone ``zoneinfo`` knows, else None (never raises)."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    if name == UTC or name in _names():
        return name
    return None


def resolve(choice: object, browser_zone: object = None) -> str:
    """Return the IANA zone for a dropdown ``choice`` (``browser`` -> ``browser_zone``);
    UTC for anything not a known zone."""
    if choice == BROWSER:
        return valid_zone(browser_zone) or UTC
    return valid_zone(choice) or UTC


@contextlib.contextmanager
def display_tz(zone: str) -> Iterator[None]:
    """Write the chart's dates in ``zone`` (an IANA name) inside the block."""
    token = DISPLAY_TZ.set(valid_zone(zone) or UTC)
    try:
        yield
    finally:
        DISPLAY_TZ.reset(token)


def zone_options(session_tz: str | None = None) -> list[dict]:
    """Return the dropdown options: UTC, browser, the session zone, then every IANA name."""
    options = [{"label": "UTC", "value": UTC}, {"label": "browser's zone", "value": BROWSER}]
    session = valid_zone(session_tz)
    if session and session != UTC:
        options.append({"label": f"session ({session})", "value": session})
    options += [{"label": n, "value": n} for n in sorted(_names()) if n not in (UTC, session)]
    return options
