"""Record a live session in the replay format, so that it replays bit for bit.

``tickscope --record FILE`` hands a :class:`Recorder` to the engine; the engine worker (never
the socket thread) calls :meth:`Recorder.write` for every message it takes off its queue
and :meth:`Recorder.write_snapshot` for every REST depth snapshot, and flushes the recorder
about once a second and on stop.

Format (``feed.io.readers``, the hftbacktest collector's)
-----------------------------------------------------
One message a line: ``<receive time, UTC ns> <message as received>``; a REST depth
snapshot is a bare JSON line. A spot snapshot names no symbol, so on a multi-symbol
recording the recorder adds one right after ``lastUpdateId``
(``{"lastUpdateId":123,"symbol":"BTCUSDT","bids":...``) -- the embedded exchange's replay
attributes a snapshot by that key -- and leaves the rest of the body byte for byte (COIN-M
snapshots already carry ``"symbol"`` and are written unchanged).

What is left out, so that every line written is one the replay reader accepts: messages
that are not UTF-8 or do not start with ``{`` or ``[`` (counted in ``skipped``), and
snapshot bodies that are not a JSON object with ``lastUpdateId`` (vendor error bodies).
A line break inside a message (only possible as JSON whitespace) becomes a space. Frames
the feed client refused (binary, oversized) and messages dropped on a full queue never
reach the worker and are not recorded either.

Secrets
-------
The recording holds what the vendor sent, and some vendors echo the API key (iTick's auth
reply does). Every line passes through the adapter's ``redact`` (``VendorBase.redact``)
before it is buffered, so the key is masked as ``***``; and the file is created readable by
its owner only (mode 0600), gzip or not.

Crash safety
------------
Lines are buffered in memory and written once a second in one ``write`` call. A ``.gz``
FILE gets one complete gzip member per flush (gzip readers read concatenated members as
one stream), so a kill -9 loses at most the last second and never leaves a torn gzip
stream behind. The file is created fresh (an existing file is refused, not overwritten).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Recorder"]

log = logging.getLogger("tickscope.recorder")

# A snapshot body as Binance writes it: the id first.
_SNAPSHOT_HEAD = re.compile(rb'^\s*\{\s*"lastUpdateId"\s*:\s*-?\d+')


class Recorder:
    """Append received messages to a recording file (plain text, or gzip for ``.gz``).

    Thread-safe; meant to be written by one thread (the engine worker).

    Parameters
    ----------
    path : str or os.PathLike
        File to create; gzip-compressed when the name ends in ``.gz``.
    max_buffer_bytes : int
        Buffered bytes that force an early flush (bounds memory under a burst).
    redact : callable, optional
        ``redact(text) -> text`` masking the vendor's secrets (the adapter's
        ``redact``); applied to every message and snapshot before it is buffered.
        Default: none (for vendors without secrets).

    Raises
    ------
    FileExistsError
        If ``path`` exists (a recording is never overwritten).
    OSError
        If the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike, *, max_buffer_bytes: int = 8 << 20,
                 redact: Callable[[str], str] | None = None) -> None:
        self.path = Path(path)
        self.gzip = self.path.name.endswith(".gz")
        self.max_buffer_bytes = max_buffer_bytes
        self._redact = redact  # masks secrets in each line; None: nothing to mask
        # Exclusive create: an earlier session's recording is never clobbered; owner-only,
        # since a vendor reply may hold more than the redaction knows about.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        self._lock = threading.Lock()  # guards everything below
        self._buffer: list[bytes] = []  # lines not yet written
        self._buffered = 0  # bytes in _buffer
        self._closed = False
        self.lines = 0  # lines accepted (written or buffered)
        self.bytes_written = 0  # bytes written to the file (compressed for .gz)
        self.skipped = 0  # messages left out (not UTF-8 / not JSON-looking / bad snapshot)
        self.errors = 0  # failed writes

    # -- writing ---------------------------------------------------------------------

    def write(self, recv_ns: int, raw: bytes | str) -> None:
        """Buffer one received message with its receive time (UTC ns)."""
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        if not self._acceptable(data):
            self.skipped += 1
            return
        self._add(recv_ns, data)

    def write_snapshot(self, recv_ns: int, symbol: str, body: bytes | str) -> None:
        """Buffer a REST depth snapshot of ``symbol`` as a bare JSON line.

        A body without a ``"symbol"`` key gets ``"symbol":"<SYMBOL>"`` after its
        ``lastUpdateId``; anything else in it is kept byte for byte.
        """
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict) or "lastUpdateId" not in obj:
            self.skipped += 1
            return
        if "symbol" not in obj:
            head = _SNAPSHOT_HEAD.match(data)
            tag = b',"symbol":' + json.dumps(str(symbol).upper()).encode()
            if head is not None:
                data = data[: head.end()] + tag + data[head.end():]
            else:  # unusual key order: write it again with the id first
                data = json.dumps({"lastUpdateId": obj["lastUpdateId"], "symbol": str(symbol).upper(),
                                   **{k: v for k, v in obj.items() if k != "lastUpdateId"}},
                                  separators=(",", ":")).encode()
        self._add(recv_ns, data.strip())

    def flush(self) -> int:
        """Write what is buffered in one call; return the bytes written (0 on error)."""
        with self._lock:
            if self._closed or not self._buffer:
                return 0
            payload = b"".join(self._buffer)
            self._buffer, self._buffered = [], 0
            if self.gzip:
                # One complete member per flush: a kill never tears the stream.
                payload = gzip.compress(payload, compresslevel=6)
            try:
                view = memoryview(payload)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError:
                self.errors += 1
                if self.errors == 1 or self.errors % 60 == 0:
                    log.exception("recording to %s failed (%d times); lines lost", self.path, self.errors)
                return 0
            self.bytes_written += len(payload)
            return len(payload)

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        self.flush()
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def stats(self) -> dict:
        """Return ``path``, ``lines``, ``bytes`` (written), ``buffered`` (bytes),
        ``skipped`` and ``errors``."""
        with self._lock:
            return {"path": str(self.path), "lines": self.lines, "bytes": self.bytes_written,
                    "buffered": self._buffered, "skipped": self.skipped, "errors": self.errors}

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- private ---------------------------------------------------------------------

    @staticmethod
    def _acceptable(data: bytes) -> bool:
        # Only lines feed.io.readers.read_recording accepts: UTF-8 text starting with { or [.
        if not data.lstrip()[:1] in (b"{", b"["):
            return False
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def _add(self, recv_ns: int, data: bytes) -> None:
        if self._redact is not None:
            data = self._redact(data.decode("utf-8", "replace")).encode("utf-8")
        if b"\n" in data or b"\r" in data:
            data = data.replace(b"\r", b" ").replace(b"\n", b" ")
        line = b"%d %s\n" % (recv_ns, data)
        with self._lock:
            if self._closed:
                return
            self._buffer.append(line)
            self._buffered += len(line)
            self.lines += 1
            full = self._buffered >= self.max_buffer_bytes
        if full:
            self.flush()
