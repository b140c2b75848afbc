"""One websocket-client connection attempt: the socket-thread callbacks of the feed client.

:class:`Connection` wraps one ``websocket.WebSocketApp``: it runs ``run_forever`` on the
caller's thread, timestamps every frame and hands it to the sink untouched (never parses,
logs per message or blocks) -- in batches, through ``sink.submit_many`` when the sink has
it: the frames already read off the socket together are handed over in one call, counts binary and oversize frames into :class:`FrameCounts`
and reports them to ``sink.submit_rejected``, and passes the open, the vendor's auth reply
and the end of the connection to the :class:`~feed.core.session.Session`, whose actions it
hands back to the client to carry out. ``feed.io.client.FeedClient`` makes one per attempt.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

import websocket

from feed.core.session import Close, Session
from feed.io.wsbuffer import BufferedApp, install
from feed.vendors._common import redact

__all__ = ["FrameCounts", "Connection"]

log = logging.getLogger("tickscope.feed")

_OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT
# websocket-client 1.9 passes a fragmented message to on_data with its *last* frame's
# opcode (continuation, 0), so the message type is lost; it is taken as text (a
# fragmented binary message then meets the parser as bad JSON: counted, never lost).
_TEXT_OPCODES = (_OPCODE_TEXT, websocket.ABNF.OPCODE_CONT)
#: Most frames handed to the sink in one ``submit_many`` call (a bound on the latency a
#: batch adds: about 1 ms of frames at the loopback ceiling).
BATCH_FRAMES = 256


@dataclass(slots=True)
class FrameCounts:
    """Frames not delivered, over the client's life (written by the socket thread only)."""

    binary: int = 0  # binary frames (no vendor here sends any)
    oversize: int = 0  # text frames over max_message_bytes
    sink_errors: int = 0  # sink.submit / submit_rejected raised


class Connection:
    """One connection attempt to ``url``; callbacks run on the thread calling :meth:`serve`.

    Parameters
    ----------
    url : str
        Where to connect (may hold a token: never logged).
    client : object
        The owner, giving ``name``, ``adapter``, ``sink``, ``session``, ``lock`` (a
        Condition guarding the session), ``stop_event``, ``counts`` (:class:`FrameCounts`),
        ``secrets``, ``max_message_bytes``, ``connect_timeout_s`` and ``carry_out(actions)``.
    """

    def __init__(self, url: str, client: Any) -> None:
        self.url = url  # may hold secrets; never shown
        self._client = client  # the FeedClient: session, sink, lock, carry_out
        self._session: Session = client.session  # decides what every event means
        self.error: BaseException | None = None  # the last error websocket-client reported
        self.close_args: tuple[Any, Any] = (None, None)  # (code, reason) of the close frame
        self._core: websocket.WebSocket | None = None  # the socket object, for shutdown
        self._frames: Any = None  # its BufferedFrames reader (feed/io/wsbuffer.py)
        self._batch: list = []  # text frames read, not yet handed to the sink
        self._batch_ns = 0  # receive time of the batch's first frame, UTC ns
        submit_many = getattr(client.sink, "submit_many", None)
        self._submit_many = submit_many if callable(submit_many) else None
        self.app = BufferedApp(url, header=self._handshake_header, on_open=self._on_open,
                                          on_data=self._on_data, on_error=self._on_error,
                                          on_close=self._on_close)

    def serve(self, ping_interval_s: float, ping_timeout_s: float | None) -> None:
        """Connect and serve frames until the connection ends (blocks)."""
        try:
            self.app.run_forever(skip_utf8_validation=True, ping_interval=ping_interval_s,
                                 ping_timeout=ping_timeout_s)
        finally:
            self._flush()  # frames read before the end still reach the sink, in order
            # websocket-client 1.9.2 leaves the descriptor open after a close handshake
            # (send_close() clears .connected, so teardown's close() returns early) until
            # the garbage collector runs; the server then waits for our FIN. Close it here.
            core, self._core = self._core, None
            if core is not None:
                core.shutdown()

    def close(self, graceful: bool = True) -> None:
        """End the connection: a close frame first when ``graceful``, then cut the socket."""
        if graceful:
            self.send_close()
        self.cut()

    def send_close(self) -> None:
        """Ask for a clean close: a close frame, and no more reading after the reply."""
        self.app.keep_running = False
        ws = self.app.sock
        if ws is not None and ws.connected:
            try:
                ws.send_close()
            except Exception:  # already gone
                pass

    def cut(self) -> None:
        """Shut the raw socket down, waking the reader with EOF (also mid-handshake), so
        ``run_forever`` returns at once; never closes the descriptor under the reader."""
        ws = self.app.sock
        raw = getattr(ws, "sock", None) if ws is not None else None
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send(self, text: str) -> None:
        """Send one text frame; a failure means the connection is going down (resubscribe
        on the next open covers it)."""
        try:
            self.app.send(text)
        except Exception as exc:
            log.debug("%s: send failed: %s", self._client.name, type(exc).__name__)

    # -- socket-thread callbacks -----------------------------------------------------------

    def _handshake_header(self) -> dict:
        # websocket-client calls a callable header after creating its socket object and
        # before connecting (1.9.x initialize_socket), so this is where a per-connection
        # timeout can be set without touching its module-wide default.
        ws = self.app.sock
        if ws is not None:
            ws.settimeout(self._client.CONNECT_TIMEOUT_S)
            self._core = ws
            self._frames = install(ws)  # whole-buffer reads instead of one recv per field
        return dict(self._client.adapter.header() or {})

    def _on_open(self, ws: websocket.WebSocketApp) -> None:
        client = self._client
        with client.lock:
            if client.stop_event.is_set():
                # stop() may have cleared keep_running before run_forever set it again.
                ws.keep_running = False
                return
            actions = self._session.on_open(time.monotonic())
            gen = self._session.generation
            client.lock.notify_all()  # the service thread starts heartbeat and watchdog
        if any(isinstance(a, Close) for a in actions):
            ws.keep_running = False
            return
        log.info("%s: connected to %s (generation %d)", client.name, client.display_url, gen)
        client.carry_out(actions)

    def _on_data(self, ws: websocket.WebSocketApp, data: bytes | str, opcode: int, fin: bool) -> None:
        # Hot path: O(1), no parsing, no locks, no logging. websocket-client calls this for
        # every complete message (fragments joined), with the opcode on_message would hide.
        # Text frames gather in a batch while more whole frames wait in the read buffer;
        # the batch goes to the sink when the buffer runs dry (or is BATCH_FRAMES long).
        client = self._client
        self._session.on_frame(time.monotonic())
        if opcode not in _TEXT_OPCODES or len(data) > client.max_message_bytes:
            self._flush()  # keep the order: frames before this one reach the sink first
            recv_ns = time.time_ns()
            if opcode not in _TEXT_OPCODES:
                client.counts.binary += 1
                self._reject("binary_frame", data, recv_ns)
            else:
                client.counts.oversize += 1
                self._reject("too_large", data, recv_ns)
            return
        batch = self._batch
        if not batch:
            self._batch_ns = time.time_ns()
        batch.append(data)
        if self._session.awaiting_auth:
            self._flush()
            self._check_auth(data, self._batch_ns)
            return
        frames = self._frames
        if len(batch) >= BATCH_FRAMES or frames is None or not frames.has_frame():
            self._flush()

    def _flush(self) -> None:
        # Hand the gathered frames to the sink in one call (stamped with the first one's
        # receive time: they came off the socket within microseconds of each other).
        batch = self._batch
        if not batch:
            return
        self._batch = []
        recv_ns = self._batch_ns
        client = self._client
        try:
            if self._submit_many is not None:
                self._submit_many(batch, recv_ns)
            else:
                for data in batch:
                    client.sink.submit(data, recv_ns)
        except Exception:
            client.counts.sink_errors += 1
            if client.counts.sink_errors == 1:
                log.exception("%s: sink.submit raised (logged once)", client.name)

    def _check_auth(self, data: bytes | str, recv_ns: int) -> None:
        # While AUTHENTICATING: is this frame the vendor's auth reply?
        client = self._client
        try:
            ok = client.adapter.auth_status(data)
        except Exception:
            log.exception("%s: adapter auth_status() failed", client.name)
            return
        if ok is None:
            return
        refusal = "" if ok else redact(self._refusal_words(data, recv_ns), client.secrets)
        with client.lock:
            actions = self._session.on_auth_reply(time.monotonic(), ok, refusal)
            client.lock.notify_all()
        if ok:
            log.info("%s: authenticated", client.name)
        client.carry_out(actions)

    def _refusal_words(self, data: bytes | str, recv_ns: int) -> str:
        # The vendor's reason, as the adapter words it (its VendorReply for this frame).
        try:
            events = self._client.adapter.parse(data, recv_ns)
        except Exception:
            events = []
        for ev in events:
            if getattr(ev, "ok", True) is False and getattr(ev, "message", ""):
                return str(ev.message)
        return ""

    def _reject(self, reason: str, data: bytes | str, recv_ns: int) -> None:
        # An undelivered frame: tell the sink (which counts it as malformed), sample only.
        sample = bytes(data[:64]) if isinstance(data, (bytes, bytearray)) else str(data[:64])
        try:
            self._client.sink.submit_rejected(reason, sample, recv_ns)
        except Exception:
            self._client.counts.sink_errors += 1

    def _on_error(self, ws: websocket.WebSocketApp, exc: BaseException) -> None:
        # Called when a connection ends (every end: websocket-client's reconnect is unused)
        # and when one of our callbacks raised; the last one is what ended the connection.
        self.error = exc

    def _on_close(self, ws: websocket.WebSocketApp, code: Any, reason: Any) -> None:
        self.close_args = (code, reason)

