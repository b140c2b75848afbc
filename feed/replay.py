"""Readers for recorded market data.

Recorded sessions (the replay format)
-------------------------------------
Text, plain or gzip, one message a line: ``<receive time> <JSON message as sent>``. The
receive time is an integer epoch in nanoseconds or microseconds (detected per line by
magnitude). A Binance REST depth snapshot appears as a bare JSON object
(``{"lastUpdateId": ..., "bids": ..., "asks": ...}``) instead of a stream wrapper. This is
exactly the format of the raw captures recorded by hftbacktest's collector and of
``tickscope --record``.
"""

from __future__ import annotations

import gzip
import heapq
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["RecordingError", "open_text", "read_recording", "merge_recordings", "to_ns"]

# Epochs after 2001-09-09 in ns are > 1e18, in µs > 1e15, in ms > 1e12.
_NS_MIN = 10**17
_US_MIN = 10**14
_MS_MIN = 10**11


class RecordingError(ValueError):
    """A recorded file cannot be read; the message names the file and line."""


def to_ns(epoch: int) -> int:
    """Return an epoch timestamp in s, ms, µs or ns as UTC ns (unit detected by magnitude).

    Raises
    ------
    ValueError
        If ``epoch`` is negative.
    """
    if epoch < 0:
        raise ValueError(f"negative timestamp {epoch}")
    if epoch >= _NS_MIN:
        return epoch
    if epoch >= _US_MIN:
        return epoch * 1_000
    if epoch >= _MS_MIN:
        return epoch * 1_000_000
    return epoch * 1_000_000_000


def open_text(path: str | os.PathLike) -> "Iterable[str]":
    """Open ``path`` for text reading, transparently gunzipping (by magic bytes).

    Raises
    ------
    RecordingError
        If the file does not exist or cannot be opened.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(p, "rt", encoding="utf-8", newline="\n")
        return open(p, "rt", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise RecordingError(f"{p}: cannot open: {exc.strerror or exc}") from exc


def read_recording(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(recv_ns, raw_json_text)`` for every line of a recorded session.

    Blank lines are skipped. The JSON text is returned as recorded (not parsed).

    Raises
    ------
    RecordingError
        If a line has no ``<int> <json>`` shape or the file is not readable text; the
        message names the file and the 1-based line number.
    """
    fh = open_text(path)
    lineno = 0
    try:
        with fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                ts_text, sep, raw = line.partition(" ")
                if not sep or not ts_text.isdigit() or not raw.lstrip().startswith(("{", "[")):
                    raise RecordingError(
                        f"{path}:{lineno}: expected '<receive time> <JSON message>', got "
                        f"{line[:60]!r}"
                    )
                yield to_ns(int(ts_text)), raw
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}:{lineno + 1}: unreadable: {exc}") from exc


def merge_recordings(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[int, int, str]]:
    """Yield ``(recv_ns, file_index, raw)`` from several recordings in receive-time order.

    Files are merged lazily (a heap over one iterator per file); ties keep file order and,
    within a file, line order.
    """
    iters = [
        ((ts, i, raw) for ts, raw in read_recording(p)) for i, p in enumerate(paths)
    ]
    yield from heapq.merge(*iters, key=lambda item: (item[0], item[1]))
