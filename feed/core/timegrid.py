"""Where time bars start and end: epoch-aligned and session-anchored grids.

Pure: a grid maps an exchange time (UTC ns) to the interval holding it. Two kinds:

* :class:`EpochGrid` — intervals of fixed length aligned to the Unix epoch plus an offset:
  UTC alignment (offset 0) or a fixed UTC offset such as +08:00 (the alignment of Binance's
  ``@kline_<i>@+08:00`` streams).
* :class:`SessionGrid` — intervals anchored to a daily session open in an IANA time zone
  (e.g. America/New_York 09:30 for US equities, so 5m bars start 09:30, 09:35, ...). Each
  session runs from one local open to the next, so across a daylight-saving change a
  session lasts 23 or 25 hours; the last interval of a session is cut at the next open.

Both answer ``bucket(ts_ns) -> (start_ns, end_ns)`` for one time (streaming) and
``buckets(ts_array) -> (starts, ends)`` for many (batch), with identical results.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

__all__ = ["EpochGrid", "SessionGrid", "make_grid", "parse_offset", "flat_starts", "MAX_FLAT_FILL"]

_NS = 1_000_000_000
_OFFSET_RE = re.compile(r"^([+-])(\d{1,2}):?(\d{2})$")


def parse_offset(text: str) -> int:
    """Return a UTC offset such as ``"+08:00"`` or ``"-0530"`` in ns (east positive).

    Raises
    ------
    ValueError
        If ``text`` is not ``±HH:MM`` with hours <= 14 and minutes < 60.
    """
    m = _OFFSET_RE.match(text.strip())
    if not m or int(m.group(2)) > 14 or int(m.group(3)) >= 60:
        raise ValueError(f"bad UTC offset {text!r}: expected ±HH:MM, e.g. +08:00")
    sign = 1 if m.group(1) == "+" else -1
    return sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60) * _NS


class EpochGrid:
    """Fixed intervals aligned to the epoch plus ``offset_ns``.

    Parameters
    ----------
    interval_ns : int
        Bar length, ns (> 0).
    utc_offset_ns : int, default 0
        The time zone offset whose local midnight bars align to (east positive, ns):
        ``+08:00`` makes 1d bars start at 16:00 UTC.
    """

    def __init__(self, interval_ns: int, utc_offset_ns: int = 0) -> None:
        if interval_ns <= 0:
            raise ValueError("interval_ns must be > 0")
        self.interval_ns = interval_ns
        # Bucket starts are at -utc_offset + k * interval (UTC ns).
        self.origin_ns = (-utc_offset_ns) % interval_ns

    def bucket(self, ts_ns: int) -> tuple[int, int]:
        """Return ``(start_ns, end_ns)`` of the interval holding ``ts_ns``."""
        start = ts_ns - (ts_ns - self.origin_ns) % self.interval_ns
        return start, start + self.interval_ns

    def buckets(self, ts_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`bucket` over an int64 array of UTC ns."""
        starts = ts_ns - (ts_ns - self.origin_ns) % self.interval_ns
        return starts, starts + self.interval_ns


class SessionGrid:
    """Intervals anchored to a daily session open in an IANA time zone.

    Parameters
    ----------
    interval_ns : int
        Bar length, ns. Intervals start at the session open and every ``interval_ns``
        after it; the interval that would cross the next session open ends there.
    tz : str
        IANA time zone name, e.g. ``"America/New_York"``.
    open_time : str, default "00:00"
        Local session open ``HH:MM`` (``"09:30"`` for NYSE/Nasdaq regular hours).

    Raises
    ------
    ValueError
        For an unknown time zone or a malformed open time.
    """

    def __init__(self, interval_ns: int, tz: str, open_time: str = "00:00") -> None:
        if interval_ns <= 0:
            raise ValueError("interval_ns must be > 0")
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (use an IANA name such as America/New_York)") from None
        try:
            hh, mm = open_time.split(":")
            self.open_time = time(int(hh), int(mm))
        except ValueError:
            raise ValueError(f"bad session open {open_time!r}: expected HH:MM, e.g. 09:30") from None
        self.tz_name = tz
        self.interval_ns = interval_ns
        self._open_offset = timedelta(hours=self.open_time.hour, minutes=self.open_time.minute)
        self._cache: tuple[int, int] = (0, 0)  # (open_ns, next_open_ns) of the last session

    def session_open_ns(self, day: date) -> int:
        """Return the UTC ns of the session open on local date ``day``."""
        local = datetime.combine(day, self.open_time, tzinfo=self.tz)
        return int(local.timestamp()) * _NS

    def session(self, ts_ns: int) -> tuple[int, int]:
        """Return ``(open_ns, next_open_ns)`` of the session holding ``ts_ns``."""
        lo, hi = self._cache
        if lo <= ts_ns < hi:
            return lo, hi
        wall = datetime.fromtimestamp(ts_ns // _NS, tz=timezone.utc).astimezone(self.tz)
        day = (wall.replace(tzinfo=None) - self._open_offset).date()
        lo, hi = self.session_open_ns(day), self.session_open_ns(day + timedelta(days=1))
        self._cache = (lo, hi)
        return lo, hi

    def bucket(self, ts_ns: int) -> tuple[int, int]:
        """Return ``(start_ns, end_ns)`` of the interval holding ``ts_ns``."""
        lo, hi = self.session(ts_ns)
        start = lo + (ts_ns - lo) // self.interval_ns * self.interval_ns
        return start, min(start + self.interval_ns, hi)

    def buckets(self, ts_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`bucket` over an int64 array of UTC ns."""
        if len(ts_ns) == 0:
            return ts_ns.copy(), ts_ns.copy()
        wall = pd.DatetimeIndex(pd.to_datetime(ts_ns, unit="ns", utc=True)).tz_convert(self.tz).tz_localize(None)
        days = (wall - self._open_offset).normalize()
        uniq, inverse = np.unique(days.values, return_inverse=True)
        opens = np.array([self.session_open_ns(pd.Timestamp(d).date()) for d in uniq], np.int64)
        nexts = np.array(
            [self.session_open_ns(pd.Timestamp(d).date() + timedelta(days=1)) for d in uniq], np.int64)
        lo, hi = opens[inverse], nexts[inverse]
        starts = lo + (ts_ns - lo) // self.interval_ns * self.interval_ns
        return starts, np.minimum(starts + self.interval_ns, hi)


def make_grid(
    interval_ns: int,
    *,
    utc_offset: str | int | None = None,
    session_tz: str | None = None,
    session_open: str = "00:00",
) -> EpochGrid | SessionGrid:
    """Return the grid for a time-bar alignment option.

    Parameters
    ----------
    interval_ns : int
        Bar length, ns.
    utc_offset : str or int, optional
        Fixed offset (``"+08:00"`` or ns); epoch/UTC alignment when None.
    session_tz : str, optional
        IANA time zone for session anchoring (with ``session_open``); takes precedence.
    session_open : str, default "00:00"
        Local session open ``HH:MM``.

    Raises
    ------
    ValueError
        For a bad offset, time zone or open time.
    """
    if session_tz:
        return SessionGrid(interval_ns, session_tz, session_open)
    if isinstance(utc_offset, str):
        utc_offset = parse_offset(utc_offset)
    return EpochGrid(interval_ns, utc_offset or 0)


#: Most empty intervals filled with flat bars at once; a longer gap stays a gap.
MAX_FLAT_FILL = 100_000


def flat_starts(grid: EpochGrid | SessionGrid, from_ns: int, upto_start: int) -> list[tuple[int, int]]:
    """Return ``(start, end)`` of each interval from ``from_ns`` up to ``upto_start``
    (exclusive), UTC ns; [] when there are more than ``MAX_FLAT_FILL`` of them."""
    out: list[tuple[int, int]] = []
    t = from_ns
    while t < upto_start:
        if len(out) >= MAX_FLAT_FILL:
            return []
        start, end = grid.bucket(t)
        out.append((start, end))
        t = end
    return out
