"""Texts on the page in a trader's words, never an exception's.

The feed's ``detail`` can carry an exception's text ("URLError: <urlopen error [Errno
111] Connection refused>"); the feed client logs it whole, the page says what it means for
the trader ("cannot connect to the exchange - retrying in 4 s"). Texts that are already
words (the vendor's HTTP advice, "the recorded session has played out") pass unchanged.
"""

from __future__ import annotations

import re

__all__ = ["LIVE_STATES", "plain", "detail_words", "feed_down_words", "stale_reason"]

#: Feed states in which the data on screen is current (a finished replay is complete).
LIVE_STATES = frozenset({"live", "replay-finished"})

# What an exception's text looks like: a class name, an errno, a repr.
_RAW = re.compile(r"\b\w*(Error|Exception)\b|Errno|<urlopen|Traceback|\bat 0x[0-9a-f]+")
# Failures to reach the exchange at all (refused, unknown host, no route, no answer).
_CONNECT = re.compile(r"refused|Errno (111|61|113|101|110)|resolve|Name or service|getaddrinfo"
                      r"|unreachable|timed out|timeout|connect", re.IGNORECASE)
_RETRY = re.compile(r"^next retry in ([0-9.]+) s(?: \((.*)\))?$")


def plain(text: str | None) -> str:
    """Return ``text`` when it reads as words, else what an exception's text means to a
    trader ("cannot connect to the exchange", "the connection to the exchange failed")."""
    text = str(text or "").strip()
    if not text or not _RAW.search(text):
        return text
    if text.lower() == "connection refused" or _CONNECT.search(text):
        return "cannot connect to the exchange"
    return "the connection to the exchange failed"


def detail_words(detail: str | None) -> str:
    """Return ``Engine.status().detail`` for the page.

    ``"next retry in 4.0 s (URLError: ...)"`` becomes ``"cannot connect to the exchange -
    retrying in 4 s"``; the notes joined by ``"; "`` (dropped messages, store errors) are
    each passed through :func:`plain`.
    """
    parts = [p for p in str(detail or "").split("; ") if p]
    out = []
    for part in parts:
        m = _RETRY.match(part)
        if m:
            why = plain(m.group(2)) or "connection to the exchange lost"
            if why == "connection refused":
                why = "cannot connect to the exchange"
            out.append(f"{why} - retrying in {float(m.group(1)):.0f} s")
        else:
            out.append(plain(part))
    return "; ".join(out)


def feed_down_words(state: str | None) -> str:
    """Return what an empty panel says while the feed is not live ("" when it is)."""
    if not state or state in LIVE_STATES:
        return ""
    if state in ("connecting", "authenticating"):
        return "connecting to the exchange"
    return "feed down"


def stale_reason(state: str | None, synced: bool) -> str:
    """Return why the book on screen may be out of date, or "" when it is current.

    ``state`` is ``Engine.status().state``; ``synced`` the book's (a book waits for a
    snapshot after a gap in the diff sequence).
    """
    if state and state not in LIVE_STATES:
        return f"stale: feed {state}"
    if not synced:
        return "stale: book out of sync"
    return ""
