"""Fan-out of market messages to subscribed connections, with backpressure.

Owns the per-connection state (:class:`Client`: subscriptions, outbox) and
:class:`Fanout`, the one point every market message passes through on its way to a
socket: :meth:`Fanout.publish` puts it on each subscribed connection's bounded outbox
(``OUTBOX_MESSAGES``) and waits when an outbox is full; a writer task per connection
(:meth:`Fanout.write_loop`) drains it, everything queued at once in one socket write
(:func:`send_frames`: one message per frame, as Binance sends, but not one system call
and one drain per message), waiting while the socket's write buffer is above
websockets' ``write_limit``. A slow client therefore
slows the source down (replay falls behind its pacing; the simulator catches up in a
burst) instead of being fed an unbounded buffer or losing messages. A client that stops
reading altogether is closed by the keepalive ping timeout (20 s), which releases the
source.

Fault injection (``feed.exchange.faults``) hooks in here, because every market message
passes through ``publish``. Everything runs on the exchange's event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from feed.exchange.dialect import stream_key
from feed.exchange.faults import DROP, OMIT, SHUTDOWN, FaultState, trade_id_of

__all__ = ["OUTBOX_MESSAGES", "WRITE_BATCH", "Client", "Fanout", "Publisher", "send_frames", "text_frame"]

log = logging.getLogger(__name__)

#: Messages queued per connection before the source waits (backpressure).
OUTBOX_MESSAGES = 256


#: Most messages one socket write carries (a connection's outbox holds fewer anyway).
WRITE_BATCH = 512


def text_frame(payload: bytes) -> bytes:
    """Return one unmasked, final WebSocket text frame carrying ``payload`` (RFC 6455 5.2).

    A server's frames are never masked; the length takes 1, 2 or 8 bytes after the
    opcode byte as the payload is under 126 bytes, under 64 KiB, or longer.
    """
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


async def send_frames(ws: ServerConnection, texts: list[str]) -> None:
    """Send ``texts`` as text frames, one message each, in as few socket writes as possible.

    All but the last are framed here and written to the transport at once; the last goes
    through ``ws.send``, which writes it behind them and waits while the write buffer is
    above websockets' limit (flow control), or raises ConnectionClosed. Framing here needs
    no extension to apply to the payload: with one negotiated (compression), or a
    connection no longer open, every message goes through ``ws.send``.

    Raises
    ------
    websockets.exceptions.ConnectionClosed
        When the connection is closed.
    """
    head = texts[:-1]
    protocol = getattr(ws, "protocol", None)
    transport = getattr(ws, "transport", None)
    if head and (protocol is None or transport is None or protocol.extensions
                 or protocol.state is not State.OPEN or transport.is_closing()):
        for text in head:
            await ws.send(text)
    elif head:
        transport.write(b"".join([text_frame(t.encode()) for t in head]))
    await ws.send(texts[-1])


class Publisher(Protocol):
    """What a source publishes through (implemented by :class:`Fanout`)."""

    def wanted(self, symbol: str, channel: str) -> bool:
        """Return True if the source should make (symbol, channel) events: a connection
        is subscribed, or something else records them (the REST history)."""

    def subscribed(self, symbol: str, channel: str) -> bool:
        """Return True if a connection is subscribed to (symbol, channel)."""

    async def publish(self, symbol: str, channel: str, data: str, *,
                      recorded_name: str | None = None, recorded_text: str | None = None) -> None:
        """Queue one event (its JSON text) to every subscribed connection."""


@dataclass(eq=False)
class Client:
    """One WebSocket connection and what it subscribed to."""

    ws: ServerConnection
    # True: wrap events as {"stream":..,"data":..} (/stream or SET_PROPERTY combined).
    combined: bool
    # Subscribed stream names in subscription order (LIST_SUBSCRIPTIONS).
    subs: dict[str, tuple[str, str]] = field(default_factory=dict)
    # (symbol, channel) -> subscribed names matching it (usually one).
    by_key: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # Bounded queue of (stream name, text) awaiting send: the backpressure point.
    outbox: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(OUTBOX_MESSAGES))
    # Set once the connection is gone: nothing more is queued.
    closed: bool = False
    # Fault injection: market messages queued so far, and set once a drop or close marker
    # is queued (nothing more is queued behind it).
    queued: int = 0
    doomed: bool = False
    # Fault injection: the last trade text queued (replayed as a "duplicate").
    last_trade: str | None = None

    def subscribe(self, names: Iterable[str]) -> None:
        """Add stream names (already subscribed ones are left as they are)."""
        for name in names:
            if name not in self.subs:
                key = stream_key(name)
                self.subs[name] = key
                self.by_key.setdefault(key, []).append(name)

    def unsubscribe(self, names: Iterable[str]) -> None:
        """Remove stream names (unknown ones are ignored)."""
        for name in names:
            key = self.subs.pop(name, None)
            if key is not None:
                self.by_key[key].remove(name)
                if not self.by_key[key]:
                    del self.by_key[key]

    def wrap(self, name: str, data: str, recorded_name: str | None, recorded_text: str | None) -> str:
        """Return the text this connection gets for ``data`` on stream ``name``.

        Raw connections get the event itself; combined ones get it wrapped, reusing the
        recorded wrapper byte for byte when the stream name is the recorded one.
        """
        if not self.combined:
            return data
        if name == recorded_name and recorded_text is not None:
            return recorded_text
        return f'{{"stream":"{name}","data":{data}}}'


class Fanout:
    """The connections of one exchange and the routing of messages to them.

    Parameters
    ----------
    faults : FaultState or None
        Fault injection state; None: no faults, and no per-message overhead.
    """

    def __init__(self, faults: FaultState | None) -> None:
        self.faults = faults
        # Connected clients.
        self.clients: set[Client] = set()
        # (symbol, channel) -> number of subscriptions, to skip building unwanted messages.
        self._wanted_count: dict[tuple[str, str], int] = {}

    # -- subscriptions -----------------------------------------------------------------

    def wanted(self, symbol: str, channel: str) -> bool:
        """Return True if any connection is subscribed to (symbol, channel)."""
        return self._wanted_count.get((symbol, channel), 0) > 0

    subscribed = wanted

    def subscribe(self, client: Client, names: list[str]) -> list[str]:
        """Subscribe ``client`` to ``names``; return the names that are new to it."""
        new = list(dict.fromkeys(n for n in names if n not in client.subs))
        client.subscribe(new)
        self._count((client.subs[n] for n in new), +1)
        return new

    def unsubscribe(self, client: Client, names: list[str]) -> None:
        """Unsubscribe ``client`` from ``names``."""
        gone = [client.subs[n] for n in dict.fromkeys(names) if n in client.subs]
        client.unsubscribe(names)
        self._count(gone, -1)

    def drop(self, client: Client) -> None:
        """Forget a connection and release a source waiting on its full outbox."""
        if client.closed:
            return
        client.closed = True
        self.clients.discard(client)
        self._count(client.subs.values(), -1)
        while not client.outbox.empty():
            client.outbox.get_nowait()

    def abort(self, client: Client) -> None:
        """Cut a connection as a network failure would: no close frame."""
        client.doomed = True
        transport = getattr(client.ws, "transport", None)
        if transport is not None:
            transport.abort()

    def abort_all(self) -> None:
        """Cut every connection (fault injection: a refuse window opens)."""
        for client in list(self.clients):
            self.abort(client)

    def _count(self, keys: Iterable[tuple[str, str]], delta: int) -> None:
        for key in keys:
            self._wanted_count[key] = self._wanted_count.get(key, 0) + delta

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self,
        symbol: str,
        channel: str,
        data: str,
        *,
        recorded_name: str | None = None,
        recorded_text: str | None = None,
    ) -> None:
        """Queue one event (its JSON text) to every connection subscribed to it.

        Waits while an outbox is full (backpressure). Every fault is injected here.

        Parameters
        ----------
        symbol, channel : str
            Lower-case symbol and the channel key (``stream_key``) of the event.
        data : str
            The event's JSON text.
        recorded_name, recorded_text : str, optional
            Replay: the recorded stream name and the whole recorded line, forwarded as is
            to combined connections subscribed under that name.
        """
        key = (symbol, channel)
        if not self._wanted_count.get(key):
            return
        fs = self.faults
        if fs is None:
            await self._queue(key, data, recorded_name, recorded_text)
            return
        changed = await fs.on_source(symbol, channel, data, self.abort_all)
        if changed is OMIT:
            return
        if changed is not None:
            data, recorded_text = changed, None  # re-wrap the modified data
        trade_id = trade_id_of(data) if channel == "trade" else None
        meta = (symbol, trade_id) if trade_id is not None else None
        for client, name in self._targets(key):
            text = client.wrap(name, data, recorded_name, recorded_text)
            await client.outbox.put((name, text, meta))
            if channel == "trade":
                client.last_trade = text
            await fs.on_queued(client, symbol)

    async def _queue(self, key, data: str, recorded_name, recorded_text) -> None:
        # The fault-free path: (stream name, text) items.
        for client, name in self._targets(key):
            await client.outbox.put((name, client.wrap(name, data, recorded_name, recorded_text)))

    def _targets(self, key: tuple[str, str]):
        # (client, subscribed name) pairs for one key, re-checking each connection after
        # every wait on a full outbox (it may have closed or been doomed meanwhile).
        for client in tuple(self.clients):
            names = client.by_key.get(key)
            if not names or client.closed or client.doomed:
                continue
            for name in tuple(names):
                if client.closed or client.doomed:
                    break
                yield client, name

    # -- writing -----------------------------------------------------------------------

    async def write_loop(self, client: Client) -> None:
        """Drain one connection's outbox until it closes.

        Skips streams unsubscribed since queuing. Items are (stream name, text) or, with
        faults, (name or None or a marker, payload, meta).
        """
        try:
            if self.faults is None:
                outbox = client.outbox
                while True:
                    # Everything queued by now goes out in one socket write (a burst of
                    # a fast replay is hundreds of messages): still one event per frame.
                    batch = [await outbox.get()]
                    while not outbox.empty() and len(batch) < WRITE_BATCH:
                        batch.append(outbox.get_nowait())
                    texts = [text for name, text in batch if name in client.subs]
                    if texts:
                        await send_frames(client.ws, texts)
            while await self._write_one(client, await client.outbox.get()):
                pass
        except ConnectionClosed:
            pass

    async def _write_one(self, client: Client, item: tuple) -> bool:
        # Write one fault-mode item; False once the connection was dropped.
        fs = self.faults
        name, text, meta = item
        if name is DROP:
            fs.drops += 1
            log.warning("fault: dropping a connection after %d messages", client.queued)
            self.abort(client)
            return False
        if name is SHUTDOWN:
            fs.shutdowns += 1
            asyncio.get_running_loop().call_later(
                fs.faults.shutdown_grace_s,
                lambda c=client: asyncio.ensure_future(c.ws.close(1001, "server shutdown")))
            return True
        if name is not None and name not in client.subs:
            return True
        if isinstance(text, tuple):  # a text frame that is not UTF-8
            await client.ws.send(text[0], text=True)
        else:
            await client.ws.send(text)
        if meta is not None:
            fs.delivered.setdefault(meta[0].upper(), []).append(meta[1])
        return True
