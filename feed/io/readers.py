"""Recorded sessions: open, read and merge ``<receive time> <JSON>`` captures.

Recorded sessions (the replay format)
-------------------------------------
Text, plain or gzip, one message a line: ``<receive time> <JSON message as sent>``. The
receive time is an integer epoch in nanoseconds or microseconds (detected per line by
magnitude). A Binance REST depth snapshot appears as a bare JSON object
(``{"lastUpdateId": ..., "bids": ..., "asks": ...}``) instead of a stream wrapper. This is
exactly the format of the raw captures recorded by hftbacktest's collector and of
``tickscope --record``.

Also the file plumbing the trade-file readers share (:mod:`feed.io.tradefiles`): opening
plain, gzip and single-member zip files with byte counts for progress bars, and errors
that name the file and line.
"""

from __future__ import annotations

import gzip
import heapq
import io
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "RecordingError", "open_text", "read_recording", "merge_recordings", "to_ns",
    "open_binary", "recording_lines", "fail_at", "NS_MIN", "US_MIN", "MS_MIN",
]

# Epochs after 2001-09-09 in ns are > 1e18, in µs > 1e15, in ms > 1e12.
NS_MIN = 10**17
US_MIN = 10**14
MS_MIN = 10**11


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
    if epoch >= NS_MIN:
        return epoch
    if epoch >= US_MIN:
        return epoch * 1_000
    if epoch >= MS_MIN:
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
    for _, recv_ns, raw in recording_lines(path, fh):
        yield recv_ns, raw


def merge_recordings(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[int, int, str]]:
    """Yield ``(recv_ns, file_index, raw)`` from several recordings in receive-time order.

    Files are merged lazily (a heap over one iterator per file); ties keep file order and,
    within a file, line order.
    """
    paths = list(paths)
    if len(paths) == 1:  # nothing to merge: no heap, no key per line
        return _tagged(paths[0], 0)
    return _merged(paths)


def _merged(paths: list) -> Iterator[tuple[int, int, str]]:
    # A generator function binds each file's index; a generator expression in the list
    # comprehension would see only the last index (late binding).
    iters = [_tagged(p, i) for i, p in enumerate(paths)]
    yield from heapq.merge(*iters, key=lambda item: (item[0], item[1]))


def _tagged(path: str | os.PathLike, index: int) -> Iterator[tuple[int, int, str]]:
    for ts, raw in read_recording(path):
        yield ts, index, raw


# -- files and lines ----------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    # A binary file that reports how many bytes were read from it, for progress bars.

    def __init__(self, fh, report: Callable[[int], object]) -> None:
        self._fh = fh
        self._report = report

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._fh.readinto(buf)
        if n:
            self._report(n)
        return n

    def seekable(self) -> bool:
        return self._fh.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_binary(path: Path, report: Callable[[int], object] = lambda n: None) -> IO[bytes]:
    """Return the decompressed binary stream of a plain, gzip or single-member zip file.

    Parameters
    ----------
    path : Path
    report : callable, optional
        Called with the number of compressed bytes read, for progress bars.

    Raises
    ------
    RecordingError
        If the file cannot be opened, or is a zip without exactly one member.
    """
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    magic = raw.read(4)
    raw.seek(0)
    counted = io.BufferedReader(_CountingReader(raw, report), 1 << 20)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=counted, mode="rb")
    if magic == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(counted)
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise RecordingError(f"{path}: zip holds {len(members)} files; expected exactly one")
            return zf.open(members[0])
        except zipfile.BadZipFile as exc:
            raise RecordingError(f"{path}: bad zip file: {exc}") from None
    return counted


def recording_lines(path: str | os.PathLike, fh: IO[str]) -> Iterator[tuple[int, int, str]]:
    """Yield ``(line number, recv_ns, raw JSON)`` per non-blank line of the open text ``fh``.

    ``fh`` is closed when done. ``recv_ns`` is UTC ns (unit detected by :func:`to_ns`).

    Raises
    ------
    RecordingError
        For a line without the ``<int> <json>`` shape or unreadable text; names ``path``
        and the 1-based line.
    """
    lineno = 0
    try:
        with fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                ts_text, sep, raw = line.partition(" ")
                if not sep or not ts_text.isdigit() or not raw.lstrip().startswith(("{", "[")):
                    fail_at(path, lineno, f"expected '<receive time> <JSON message>', got {line[:60]!r}")
                yield lineno, to_ns(int(ts_text)), raw
    except (OSError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"{path}:{lineno + 1}: unreadable: {exc}") from exc


def fail_at(path: Path, where: int | str | None, problem: str) -> None:
    """Raise a :class:`RecordingError` naming ``path``, ``where`` (a line or row) and ``problem``.

    Raises
    ------
    RecordingError
        Always.
    """
    raise RecordingError(f"{path}:{where}: {problem}" if where is not None else f"{path}: {problem}")
