"""websocket-client with whole-buffer reads: a frame reader and a dispatcher, not a fork.

websocket-client 1.9's ``frame_buffer.recv_strict`` asks the socket for exactly the bytes
it needs next -- a 2-byte header, the extended length, the payload -- so every message
costs three or more ``recv`` system calls, and its ``Dispatcher`` polls a selector before
every message. At tens of thousands of messages a second that, not JSON, is the feed
thread's time (a profile of a loopback firehose: about 60 % in those reads and polls).

:class:`BufferedFrames` subclasses ``websocket._abnf.frame_buffer`` and overrides only
``recv_strict``: it reads up to :data:`READ_SIZE` bytes per ``recv`` into one buffer and
serves header, length, mask and payload from it, so one system call brings hundreds of
frames. Everything else -- header parsing, masking, ``ABNF.validate``, fragment joining,
the ``skip_utf8_validation`` flag -- stays websocket-client's own code. Bytes a
timeout interrupted stay buffered (the frame reader keeps its half-read header too), so
nothing is lost or reordered.

:class:`BufferedApp` subclasses ``websocket.WebSocketApp`` and overrides only
``create_dispatcher`` (a documented hook: it returns the object ``run_forever`` reads
with) so that the next frame is read without a poll while a whole frame is already
buffered; the selector is asked only when the buffer is short. Pings, pongs, the
ping-timeout check, ``keep_running`` and closing are websocket-client's as before.
:func:`install` swaps the reader into a freshly created ``websocket.WebSocket``
(before ``connect``; the HTTP upgrade reads byte by byte, so no frame bytes are buffered
before it).
"""

from __future__ import annotations

import selectors
from typing import Any

import websocket
from websocket._abnf import frame_buffer
from websocket._dispatcher import Dispatcher

__all__ = ["BufferedFrames", "BufferedApp", "install", "READ_SIZE", "CHECK_EVERY"]

#: Bytes asked of the socket per ``recv``: a loopback or busy vendor link fills it.
READ_SIZE = 256 * 1024
#: Frames taken from the buffer between two ping-timeout checks of websocket-client.
CHECK_EVERY = 64


class BufferedFrames(frame_buffer):
    """websocket-client's frame reader, fed whole socket buffers instead of exact reads.

    Parameters
    ----------
    recv_fn : callable
        ``recv(bufsize) -> bytes`` of the ``websocket.WebSocket`` (``WebSocket._recv``:
        raises ``WebSocketConnectionClosedException`` at EOF, ``WebSocketTimeoutException``
        after the socket timeout).
    skip_utf8_validation : bool
        As websocket-client's; tickscope passes True.
    """

    def __init__(self, recv_fn: Any, skip_utf8_validation: bool) -> None:
        super().__init__(recv_fn, skip_utf8_validation)
        self._buf = b""  # bytes received, not yet served
        self._pos = 0  # index of the first unserved byte in _buf

    def recv_strict(self, bufsize: int) -> bytes:
        """Return exactly ``bufsize`` bytes, reading :data:`READ_SIZE` at a time.

        Raises what the socket's ``recv`` raises; bytes read before that stay buffered.
        """
        if not isinstance(bufsize, int):
            raise ValueError("bufsize must be an integer")
        buf, pos = self._buf, self._pos
        end = pos + bufsize
        if end > len(buf):
            # Keep only the unserved tail (a partial frame: small), then append reads.
            parts = [buf[pos:]]
            have = len(buf) - pos
            try:
                while have < bufsize:
                    chunk = self.recv(max(READ_SIZE, bufsize - have))
                    if not isinstance(chunk, bytes) or not chunk:
                        break
                    parts.append(chunk)
                    have += len(chunk)
            finally:
                buf = self._buf = b"".join(parts)
                pos = self._pos = 0
            end = bufsize
            if have < bufsize:  # websocket-client's own contract: return what there is
                self._buf, self._pos = b"", 0
                return buf
        self._pos = end
        return buf[pos:end]

    def has_frame(self) -> bool:
        """Return True when a whole frame (header, length, mask, payload) is buffered and
        no frame is half read, so reading the next one cannot block."""
        if self.header is not None:
            return False
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 2:
            return False
        b2 = buf[pos + 1]
        n = b2 & 0x7F
        head = 2
        if n == 126:
            if avail < 4:
                return False
            n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            if avail < 10:
                return False
            n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
        return avail >= head + (4 if b2 & 0x80 else 0) + n


def install(ws: websocket.WebSocket) -> BufferedFrames:
    """Give a new, unconnected ``websocket.WebSocket`` a :class:`BufferedFrames` reader.

    Returns the reader. Call before ``connect`` (``WebSocketApp`` calls a callable
    ``header`` at that moment).
    """
    frames = BufferedFrames(ws._recv, ws.frame_buffer.skip_utf8_validation)
    ws.frame_buffer = frames
    return frames


class _BufferedDispatcher(Dispatcher):
    # websocket-client's Dispatcher.read loop, polling only when no whole frame is
    # buffered (and, for TLS, when the TLS layer holds no decrypted bytes either).

    def read(self, sock: Any, read_callback: Any, check_callback: Any) -> None:
        app = self.app
        if app.sock is None or app.sock.sock is None:
            return
        raw = app.sock.sock
        frames = app.sock.frame_buffer
        buffered = getattr(frames, "has_frame", None) or (lambda: False)
        tls_pending = getattr(raw, "pending", None) or (lambda: 0)
        sel = selectors.DefaultSelector()
        sel.register(raw, selectors.EVENT_READ)
        run = 0  # frames read from the buffer since the last ping-timeout check
        try:
            while app.keep_running:
                if buffered():
                    if not read_callback():
                        break
                    # The ping-timeout check costs more than taking a buffered frame:
                    # within a burst, once every CHECK_EVERY frames (microseconds apart).
                    run += 1
                    if run < CHECK_EVERY:
                        continue
                elif tls_pending() or sel.select(self.ping_timeout):
                    if not read_callback():
                        break
                run = 0
                check_callback()
        finally:
            sel.close()


class BufferedApp(websocket.WebSocketApp):
    """``websocket.WebSocketApp`` whose ``run_forever`` reads with a poll-free dispatcher
    while frames are buffered (a custom ``dispatcher=`` argument still wins)."""

    def create_dispatcher(self, ping_timeout: Any, dispatcher: Any = None, is_ssl: bool = False,
                          handleDisconnect: Any = None) -> Any:  # noqa: N803 - library's name
        """Return websocket-client's wrapper for a custom dispatcher, else ours."""
        if dispatcher:
            return super().create_dispatcher(ping_timeout, dispatcher, is_ssl, handleDisconnect)
        return _BufferedDispatcher(self, ping_timeout or 10)
