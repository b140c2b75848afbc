"""A loopback WebSocket firehose in its own process: Binance ``@trade`` frames, pre-encoded.

Used by ``bench_ingest.py`` and ``bench_latency.py``. The server does the RFC 6455 upgrade
by hand and then writes ready-made frames with ``sendall`` in 64 KiB blocks, so its own
cost is close to nothing and it runs on the other core: the receiver, not the sender, is
what these benchmarks measure. Frames are the combined-stream form
(``{"stream":"btcusdt@trade","data":{...}}``, vendor-protocols.md section 1) with
consecutive trade ids, so tickscope's gap and duplicate checks see a clean stream.

Two modes:

* ``rate=None``: every frame as fast as the receiver takes them (TCP back-pressure paces
  the sender). Trade times are the generation time.
* ``rate=R``: R trades per second in 1 ms ticks; each frame's ``E``/``T`` is stamped with
  the wall clock just before it is sent (ms: Binance's resolution), so receive - ``T`` is
  the latency (within the 1 ms truncation, the same for every receiver).
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing as mp
import socket
import time

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def trade_json(tid: int, t_ms: int, symbol: str = "BTCUSDT") -> bytes:
    """Return one combined-stream Binance spot ``@trade`` message (JSON bytes)."""
    price = 61000 + (tid % 5000) / 100
    return (b'{"stream":"%s@trade","data":{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%.2f",'
            b'"q":"0.%05d","T":%d,"m":%s,"M":true}}'
            % (symbol.lower().encode(), t_ms, symbol.encode(), tid, price, 1 + tid % 90000, t_ms,
               b"true" if tid % 2 else b"false"))


def frame(payload: bytes) -> bytes:
    """Return an unmasked server-to-client text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def _handshake(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("client left during the handshake")
        data += chunk
    key = next(line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def _serve(listener: socket.socket, n: int, rate: float | None, start_id: int, ready) -> None:
    t_ms = time.time_ns() // 1_000_000
    blob = b"".join(frame(trade_json(start_id + i, t_ms)) for i in range(n)) if rate is None else b""
    ready.set()
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _handshake(conn)
    time.sleep(0.3)  # let the client subscribe and settle (its SUBSCRIBE is ignored)
    try:
        if rate is None:
            view = memoryview(blob)
            for i in range(0, len(blob), 65536):
                conn.sendall(view[i:i + 65536])
        else:
            per_tick, sent, t0 = rate / 1000.0, 0, time.perf_counter()
            while sent < n:
                due = min(n, int((time.perf_counter() - t0) * 1000.0 * per_tick) + 1)
                if due > sent:
                    now_ms = time.time_ns() // 1_000_000
                    conn.sendall(b"".join(frame(trade_json(start_id + i, now_ms)) for i in range(sent, due)))
                    sent = due
                time.sleep(0.0005)
        time.sleep(2.0)  # keep the link up while the receiver drains
    except OSError:
        pass
    finally:
        conn.close()


class Firehose:
    """Serve ``n`` trade frames to the first client of ``url``, from a child process.

    Parameters
    ----------
    n : int
        Frames to send.
    rate : float or None
        Trades per second, or None for as fast as possible.
    start_id : int
        First trade id.
    """

    def __init__(self, n: int, rate: float | None = None, start_id: int = 1) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/stream"
        ctx = mp.get_context("fork")
        ready = ctx.Event()
        self._proc = ctx.Process(target=_serve, args=(self._listener, n, rate, start_id, ready), daemon=True)
        self._proc.start()
        ready.wait(60)

    def close(self) -> None:
        """Stop the server process and the listener."""
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
        self._listener.close()
