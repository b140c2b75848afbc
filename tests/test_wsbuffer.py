"""Whole-buffer frame reading (feed/io/wsbuffer.py) and batched hand-off (feed/io/wire.py).

A raw loopback server (the RFC 6455 upgrade by hand) writes frames in awkward pieces --
one byte at a time, splits inside headers and extended lengths, many frames per write --
with a ping, a fragmented message and 16-bit / 64-bit lengths among them. The real
FeedClient must deliver every text message exactly, in order, and answer the ping.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import pytest

from tests.test_client import FakeAdapter, RecordingSink, clients, start_client  # noqa: F401

pytestmark = pytest.mark.timeout(30)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        return head + bytes((n,)) + payload
    if n < 65536:
        return head + bytes((126,)) + n.to_bytes(2, "big") + payload
    return head + bytes((127,)) + n.to_bytes(8, "big") + payload


class RawServer:
    """Accept one client, upgrade it, then write ``pieces`` (with short pauses) and keep
    reading what the client sends (its SUBSCRIBE, pongs) until it leaves."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.received = b""
        self._ls = socket.socket()
        self._ls.bind(("127.0.0.1", 0))
        self._ls.listen(1)
        self.url = f"ws://127.0.0.1:{self._ls.getsockname()[1]}/stream"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._ls.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            for piece in self.pieces:
                conn.sendall(piece)
                time.sleep(0.002)
            conn.settimeout(5)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except OSError:
                pass

    def close(self) -> None:
        self._ls.close()


def _pieces(wire: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(wire):
        n = sizes[k % len(sizes)]
        out.append(wire[i:i + n])
        i, k = i + n, k + 1
    return out


def test_client_when_frames_arrive_in_awkward_pieces_delivers_every_message_in_order(clients):
    messages = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 37 % 300)) for i in range(400)]
    big = b'{"big":"' + b"y" * 70_000 + b'"}'  # 64-bit length
    wire = b"".join(_frame(m) for m in messages[:200])
    wire += _frame(b"are you there", opcode=0x9)  # ping: the client must pong
    wire += _frame(b'{"frag":"one', fin=False) + _frame(b' two"}', opcode=0x0)  # fragmented
    wire += _frame(big) + b"".join(_frame(m) for m in messages[200:])
    # One byte at a time for the first 2 KB (splits inside every header and length),
    # then odd sizes, then big writes carrying many frames each.
    pieces = [wire[i:i + 1] for i in range(2048)] + _pieces(wire[2048:40_000], [3, 7, 129, 1, 2, 4093])
    pieces += _pieces(wire[40_000:], [65_536])
    server = RawServer(pieces)
    sink = RecordingSink()
    start_client(clients, FakeAdapter(server.url), sink, symbols=["BTCUSDT"])
    expected = messages[:200] + [b'{"frag":"one two"}', big] + messages[200:]
    sink.wait(lambda: len(sink.messages) >= len(expected), timeout=20)
    assert [bytes(m) for m, _ in sink.messages] == expected
    time.sleep(0.2)
    assert b"\x8a" in server.received  # a masked pong frame (opcode 0xA, FIN) went back
    server.close()


class BatchSink(RecordingSink):
    """A sink with ``submit_many``: records each batch."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def submit_many(self, frames, recv_ns):
        with self._cond:
            self.batches.append(len(frames))
            self.messages.extend((f, recv_ns) for f in frames)
            self._cond.notify_all()
        return True


def test_client_when_sink_takes_batches_hands_over_frames_read_together(clients):
    messages = [b'{"n":%d}' % i for i in range(3000)]
    server = RawServer([b"".join(_frame(m) for m in messages)])
    sink = BatchSink()
    start_client(clients, FakeAdapter(server.url), sink, symbols=["BTCUSDT"])
    sink.wait(lambda: len(sink.messages) >= len(messages), timeout=20)
    assert [m for m, _ in sink.messages] == messages
    assert max(sink.batches) > 1 and len(sink.batches) < len(messages)
    assert max(sink.batches) <= 256
    server.close()
