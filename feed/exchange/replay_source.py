"""The replay source of the embedded exchange: recorded sessions played back on the wire.

Recorded sessions (``feed.io.readers`` format) are played in receive-time order at the
recorded pacing divided by ``speed``. The playback clock starts when the first client
subscribes to something, so a client that connects late misses nothing; after the last
line the exchange's ``finished`` is set and connections stay open, quiet. Recorded
stream messages are forwarded byte for byte.

The bare REST snapshot lines are not sent over WebSocket; they seed the book that the
REST endpoint serves, which then follows the recorded diffs (Binance's snapshot-plus-diff
rule: diffs with ``u <= lastUpdateId`` are skipped, diffs recorded before the snapshot
are buffered). A REST request waits (up to ``SNAPSHOT_WAIT_S``) until the symbol's
recorded snapshot has been played, as a client of the real exchange buffers diffs until
its snapshot arrives. A symbol whose files hold no snapshot gets a book built from diffs
alone. ``symbols`` limits the symbols served; files that mix markets for one symbol (spot
and USD-M BTCUSDT) are refused. Any depth path (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``)
serves any recorded symbol.

A subscription to a stream the recording lacks, of a recorded symbol (``btcusdt@depth``
of a trades-only capture), is accepted and serves nothing, as Binance accepts any valid
stream of a listed symbol. Refusing it would be less honest, not more: a client
subscribes a symbol's streams in one request, reads a refusal as "the vendor does not
list this symbol" and unsubscribes it, so the recorded trades would never play. What is
missing is said where it is asked for: REST depth of such a symbol answers HTTP 404
``"BTCUSDT@depth is not in the recording: ..."`` (``feed.exchange.dialect.not_recorded``),
never a book invented or a timeout. An unknown symbol is still refused (WebSocket error
2, REST 400 ``-1121 Invalid symbol``).

Why :class:`ReplayBook` and not ``feed.core.book.OrderBook``: the replay plays the
exchange, not a client. Its REST answer must be the recorded image itself: prices and
sizes as the recorded strings (``"60000.10000000"``; ``OrderBook`` keeps floats, which
would change the bytes served), and every recorded diff applied whatever its sequence
(``OrderBook`` discards itself on a gap or a crossed book and waits for a new snapshot,
while a recording may well hold a gap or a crossed moment, which the client under test
must be the one to detect). It also serves a book built from diffs alone when the files
hold no snapshot, which ``OrderBook`` by design never does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from feed.exchange.dialect import StreamError, dumps, not_recorded, stream_key
from feed.exchange.fanout import Publisher
from feed.io.readers import RecordingError, merge_recordings, read_recording

__all__ = ["ReplayBook", "ReplaySource", "SNAPSHOT_WAIT_S"]

log = logging.getLogger(__name__)

#: How long a REST depth request waits for a symbol's recorded snapshot, seconds.
SNAPSHOT_WAIT_S = 10.0
#: At speed 0 the replay yields to the event loop every this many lines (and whenever
#: a connection's outbox is full): the writers then send what queued in one socket write.
REPLAY_YIELD_EVERY = 512
#: Malformed replay lines logged individually (the rest are only counted).
BAD_LINES_LOGGED = 5

_STREAM_HEAD = '{"stream":"'
_SNAPSHOT_HEAD = '{"lastUpdateId"'


class ReplayBook:
    """One symbol's book rebuilt from the recorded snapshot and diffs, as recorded.

    Levels are kept as the recorded (price, size) strings, keyed by float price for
    ordering. Diffs apply when ``u`` is above the book's id, with no continuity check.

    Parameters
    ----------
    expects_snapshot : bool
        False when the files hold no snapshot for the symbol: the book is built from diffs
        alone (levels are known only once they change).
    """

    def __init__(self, expects_snapshot: bool) -> None:
        self.expects_snapshot = expects_snapshot
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        # Last applied update id (snapshot lastUpdateId or diff u); None before any.
        self.last_update_id: int | None = None
        # Diffs recorded before the snapshot, applied when it arrives (client buffering).
        self.pending: list[dict] = []
        # Set once the book can be served.
        self.ready = asyncio.Event()

    def load_snapshot(self, snap: dict) -> None:
        """Install a recorded REST snapshot, then the diffs buffered before it."""
        self.bids = {float(p): (p, q) for p, q in snap.get("bids", ()) if float(q) != 0}
        self.asks = {float(p): (p, q) for p, q in snap.get("asks", ()) if float(q) != 0}
        self.last_update_id = int(snap["lastUpdateId"])
        pending, self.pending = self.pending, []
        for diff in pending:
            self.apply_diff(diff)
        self.ready.set()

    def apply_diff(self, diff: dict) -> None:
        """Apply one recorded diff (buffered while the snapshot is still to come).

        Raises
        ------
        ValueError, KeyError, TypeError
            If the diff is malformed.
        """
        if self.last_update_id is None and self.expects_snapshot:
            self.pending.append(diff)
            return
        u = int(diff["u"])
        if self.last_update_id is not None and u <= self.last_update_id:
            return
        for side, levels in ((self.bids, diff.get("b", ())), (self.asks, diff.get("a", ()))):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = (p, q)
        self.last_update_id = u
        self.ready.set()

    def image(self, limit: int) -> dict:
        """Return the REST depth body: ``lastUpdateId`` and ``limit`` levels a side."""
        bids = [list(self.bids[k]) for k in sorted(self.bids, reverse=True)[:limit]]
        asks = [list(self.asks[k]) for k in sorted(self.asks)[:limit]]
        return {"lastUpdateId": self.last_update_id, "bids": bids, "asks": asks}


# -- scanning the files -----------------------------------------------------------------


@dataclass
class _FileScan:
    # What one recording holds, from a pass over its lines.
    path: Path
    # symbol (lower) -> channel keys recorded
    channels: dict[str, set[str]] = field(default_factory=dict)
    # symbol (lower) -> "spot", "usdm" or "coinm" (from the diff/trade fields)
    markets: dict[str, str] = field(default_factory=dict)
    # symbols (lower) with a REST snapshot line
    snapshots: set[str] = field(default_factory=set)
    # lines in the file (the replay's progress is lines played of every file's)
    lines: int = 0


def _market_of(channel: str, raw: str) -> str | None:
    # Which Binance market a recorded diff comes from: futures diffs carry "pu" (the
    # previous u), COIN-M ones also "ps" (the pair). Other streams do not tell reliably.
    if channel != "depth":
        return None
    if '"ps":' in raw:
        return "coinm"
    return "usdm" if '"pu":' in raw else "spot"


def _snapshot_symbol(snap: dict, scan: _FileScan, last_depth_symbol: str | None) -> str | None:
    # A bare REST snapshot names no symbol (COIN-M's does): attribute it to the symbol of
    # the file's last diff before it, else to the file's only symbol.
    if isinstance(snap.get("symbol"), str):
        return snap["symbol"].lower()
    if last_depth_symbol is not None:
        return last_depth_symbol
    if len(scan.channels) == 1:
        return next(iter(scan.channels))
    return None


def _scan(path: Path) -> _FileScan:
    # One pass over the file: symbols, channels, market, snapshot attribution.
    scan = _FileScan(path)
    last_depth: str | None = None
    unattributed = 0
    for _, raw in read_recording(path):
        scan.lines += 1
        if raw.startswith(_STREAM_HEAD):
            end = raw.find('"', 11)
            symbol, channel = stream_key(raw[11:end])
            scan.channels.setdefault(symbol, set()).add(channel)
            if channel == "depth":
                last_depth = symbol
            if symbol not in scan.markets:
                market = _market_of(channel, raw)
                if market:
                    scan.markets[symbol] = market
        elif raw.startswith(_SNAPSHOT_HEAD):
            try:
                snap = json.loads(raw)
            except ValueError as exc:
                raise RecordingError(f"{path}: bad REST snapshot line: {exc}") from exc
            if isinstance(snap.get("symbol"), str):
                scan.snapshots.add(snap["symbol"].lower())
            elif last_depth is not None:
                scan.snapshots.add(last_depth)
            else:
                unattributed += 1
    if unattributed and len(scan.channels) == 1:
        scan.snapshots.add(next(iter(scan.channels)))
    return scan


def _served_channels(scans: list[_FileScan], symbols: Iterable[str] | None) -> dict[str, set[str]]:
    # symbol -> channel keys over every file, limited to ``symbols``; refuses mixed markets.
    channels: dict[str, set[str]] = {}
    markets: dict[str, tuple[str, Path]] = {}
    for scan in scans:
        for sym, chans in scan.channels.items():
            channels.setdefault(sym, set()).update(chans)
        for sym, market in scan.markets.items():
            seen = markets.setdefault(sym, (market, scan.path))
            if seen[0] != market:
                raise ValueError(
                    f"replay files mix markets for {sym.upper()}: {seen[0]} in {seen[1]}, "
                    f"{market} in {scan.path}; run one exchange per market"
                )
    if symbols is None:
        return channels
    wanted = {s.lower() for s in symbols}
    missing = sorted(wanted - set(channels))
    if missing:
        raise ValueError(
            f"symbols not in the replay files: {', '.join(s.upper() for s in missing)} "
            f"(files hold {', '.join(sorted(s.upper() for s in channels)) or 'none'})"
        )
    return {s: c for s, c in channels.items() if s in wanted}


def _recorded_data(raw: str, name_end: int) -> str:
    # The recorded "data" value, byte for byte, sliced out of {"stream":..,"data":..}.
    head = '","data":'
    body = raw.rstrip()
    if raw.startswith(head, name_end) and body.endswith("}"):
        return body[name_end + len(head) : -1]
    return dumps(json.loads(raw)["data"])  # unusual spacing: re-serialise


@dataclass
class _Line:
    # One served recorded line: a stream message (name set) or a REST snapshot (snap set).
    recv_ns: int
    index: int
    raw: str
    symbol: str
    channel: str = ""
    name: str = ""
    name_end: int = 0
    snap: dict | None = None


class _Pacer:
    # Recorded receive-time offsets divided by speed, from the first served line; speed 0
    # never sleeps (the replay then only yields and waits on backpressure).

    def __init__(self, speed: float) -> None:
        self._speed = speed
        self._origin_ns: int | None = None
        self._t0 = 0.0

    async def wait(self, recv_ns: int) -> None:
        if self._speed <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._origin_ns is None:
            self._origin_ns = recv_ns
            self._t0 = loop.time()
        delay = self._t0 + (recv_ns - self._origin_ns) / 1e9 / self._speed - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)


# -- the source -------------------------------------------------------------------------


class ReplaySource:
    """Plays recorded sessions; keeps per-symbol books for the REST endpoint.

    Parameters
    ----------
    paths : iterable of path
        Recorded sessions; scanned once here (about 0.2 s per 100,000 lines).
    speed : float
        Recorded pacing divided by this; 0 plays as fast as the clients read.
    symbols : iterable of str, optional
        Symbols to serve (any case); None: every symbol in the files.

    Raises
    ------
    ValueError
        If a symbol is not in the files, or the files mix markets for one symbol.
    feed.io.readers.RecordingError
        If a file is missing or unreadable.
    """

    #: The exchange's ``finished`` is set when ``run`` returns: the files are played out.
    plays_out = True

    def __init__(self, paths: Iterable[str | Path], speed: float, symbols: Iterable[str] | None) -> None:
        self._paths = [Path(p) for p in paths]
        self._speed = speed
        self._scans = [_scan(p) for p in self._paths]
        snapshot_symbols: set[str] = set().union(*(scan.snapshots for scan in self._scans))
        # symbol (lower) -> channel keys recorded, for served symbols only.
        self.channels = _served_channels(self._scans, symbols)
        # Books for served symbols that have a recorded diff stream.
        self.books = {
            sym: ReplayBook(sym in snapshot_symbols) for sym, ch in self.channels.items() if "depth" in ch
        }
        # Set on the first subscription: starts the playback clock.
        self.start = asyncio.Event()
        # Set when the exchange stops: waiting REST requests give up at once.
        self.stopping = asyncio.Event()
        # Malformed recorded lines met during playback.
        self.bad_lines = 0
        # Lines read so far of every file's (:attr:`progress`).
        self.played_lines = 0
        self.total_lines = sum(scan.lines for scan in self._scans)

    # -- what the exchange asks --------------------------------------------------------

    def symbols(self) -> list[str]:
        """Return the upper-case served symbols, sorted."""
        return sorted(s.upper() for s in self.channels)

    def check(self, symbol: str, channel: str) -> None:
        """Raise StreamError unless ``symbol`` is served (lower case).

        Any channel of a served symbol is accepted, recorded or not (see the module
        docstring: Binance accepts any valid stream of a listed symbol); an unrecorded one
        plays nothing. :meth:`recorded` says which ones play.
        """
        if symbol not in self.channels:
            raise StreamError(
                f"unknown symbol {symbol!r}; this replay serves "
                f"{', '.join(sorted(self.channels)) or 'nothing'}"
            )

    def recorded(self, symbol: str, channel: str) -> bool:
        """Return True if (symbol, channel) was recorded and is served (lower case,
        channel as ``feed.exchange.dialect.stream_key`` gives it)."""
        return channel in self.channels.get(symbol, ())

    @property
    def progress(self) -> float:
        """Return the fraction of the files' lines played, 0..1 (1 for empty files)."""
        return min(self.played_lines / self.total_lines, 1.0) if self.total_lines else 1.0

    def has_symbol(self, symbol: str) -> bool:
        """Return True if ``symbol`` is served (REST depth then answers a book, or
        :meth:`depth` refuses it when it has no recorded diff stream)."""
        return symbol in self.channels

    def on_subscribe(self, names: list[str]) -> None:
        """Start the playback clock (the first subscription does)."""
        self.start.set()

    def close(self) -> None:
        """Release REST requests waiting for a snapshot (the exchange is stopping)."""
        self.stopping.set()

    async def depth(self, symbol: str, limit: int) -> dict | None:
        """Return the REST depth body now; waits for the recorded snapshot (None on timeout).

        Raises
        ------
        feed.exchange.dialect.RestError
            ``not_recorded`` (HTTP 404) when ``symbol``'s files hold no diff stream.
        """
        book = self.books.get(symbol)
        if book is None:
            raise not_recorded(symbol, self.channels.get(symbol, ()))
        if not book.ready.is_set():
            waits = [asyncio.ensure_future(book.ready.wait()), asyncio.ensure_future(self.stopping.wait())]
            await asyncio.wait(waits, timeout=SNAPSHOT_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if not book.ready.is_set():
                return None
        return book.image(limit)

    # -- playback ----------------------------------------------------------------------

    async def run(self, out: Publisher) -> None:
        """Play every file once the first client subscribed; return when played out."""
        await self.start.wait()
        pacer = _Pacer(self._speed)
        paced = self._speed > 0
        # As fast as possible, lines of streams no one takes (most of a capture is
        # bookTicker) are dropped as they are read; paced, every served line still sets
        # the pace (the clock starts at the first one), so they are dropped after it.
        for line in self._served_lines(None if paced else out):
            if line is None:  # every few lines: let the writers and the server run
                await asyncio.sleep(0)
                continue
            if paced:
                await pacer.wait(line.recv_ns)
            if line.snap is not None:
                self.books[line.symbol].load_snapshot(line.snap)
                continue
            # A stream no one takes is not built into a message at all; diffs still
            # follow the book the REST endpoint serves.
            if line.channel != "depth" and not out.wanted(line.symbol, line.channel):
                continue
            await self._play(out, line)

    def _served_lines(self, out: Publisher | None) -> Iterator[_Line | None]:
        # The served lines in receive-time order, and None every REPLAY_YIELD_EVERY lines
        # read (the caller yields to the loop then). With ``out``, lines of non-depth
        # streams ``out`` does not want are left out here.
        last_depth: dict[int, str] = {}  # file index -> symbol of its last diff
        keys: dict[str, tuple[str, str]] = {}  # stream name -> stream_key (a handful)
        channels = self.channels
        lines = 0
        for recv_ns, index, raw in merge_recordings(self._paths):
            lines += 1
            self.played_lines = lines
            if lines % REPLAY_YIELD_EVERY == 0:
                yield None
            if raw.startswith(_STREAM_HEAD):
                end = raw.find('"', 11)
                name = raw[11:end]
                key = keys.get(name)
                if key is None:
                    key = keys[name] = stream_key(name)
                symbol, channel = key
                if channel == "depth":
                    last_depth[index] = symbol
                elif out is not None and not out.wanted(symbol, channel):
                    continue
                if symbol in channels:
                    yield _Line(recv_ns, index, raw, symbol, channel, name, end)
            elif raw.startswith(_SNAPSHOT_HEAD):
                snap = json.loads(raw)
                symbol = _snapshot_symbol(snap, self._scans[index], last_depth.get(index))
                if symbol in self.books:
                    yield _Line(recv_ns, index, raw, symbol, snap=snap)

    async def _play(self, out: Publisher, line: _Line) -> None:
        # Follow the book with a recorded diff, then forward the message as recorded.
        try:
            data = _recorded_data(line.raw, line.name_end)
        except (ValueError, KeyError, TypeError) as exc:
            self._bad_line(line, "not a stream wrapper", exc)
            return
        if line.channel == "depth" and line.symbol in self.books:
            try:
                self.books[line.symbol].apply_diff(orjson.loads(data))
            except (ValueError, KeyError, TypeError) as exc:
                # Forwarded as recorded all the same: clients meet it as live.
                self._bad_line(line, "bad diff, book not updated", exc)
            if not out.wanted(line.symbol, line.channel):
                return
        await out.publish(line.symbol, line.channel, data, recorded_name=line.name, recorded_text=line.raw)

    def _bad_line(self, line: _Line, what: str, exc: Exception) -> None:
        # Count malformed recorded lines; log the first few with where they are.
        self.bad_lines += 1
        if self.bad_lines <= BAD_LINES_LOGGED:
            log.warning("replay %s: line at recv %d: %s: %s", self._paths[line.index], line.recv_ns, what, exc)
