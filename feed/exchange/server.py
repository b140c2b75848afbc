"""Embedded local exchange: Binance's market-data dialect on loopback.

One ``websockets`` asyncio server, in its own daemon thread with its own event loop,
serves on a single port:

* WebSocket ``/stream`` (combined: every event wrapped ``{"stream":name,"data":{...}}``;
  ``/stream?streams=a/b`` pre-subscribes), ``/ws`` (raw events) and ``/ws/<stream>``;
  control messages ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` /
  ``SET_PROPERTY`` / ``GET_PROPERTY`` answered as Binance does
  (shared/vendor-protocols.md section 1).
* REST ``GET /api/v3/depth?symbol=X&limit=N`` (also ``/fapi/v1/depth``, ``/dapi/v1/depth``)
  through the server's ``process_request`` hook: the current book with its
  ``lastUpdateId``, prices and sizes as strings.

The market comes from one of two sources:

* Replay (``replay_files``): recorded sessions (``feed.io.readers`` format) played in
  receive-time order at the recorded pacing divided by ``speed``. The playback clock starts
  when the first client subscribes to something, so a client that connects late misses
  nothing; after the last line ``finished`` is set and connections stay open, quiet.
  Recorded stream messages are forwarded byte for byte. The bare REST snapshot lines
  are not sent over WebSocket; they seed the book that the REST endpoint serves, which
  then follows the recorded diffs (Binance's snapshot-plus-diff rule: diffs with
  ``u <= lastUpdateId`` are skipped, diffs recorded before the snapshot are buffered).
  A REST request waits (up to ``SNAPSHOT_WAIT_S``) until the symbol's recorded snapshot
  has been played, as a client of the real exchange buffers diffs until its snapshot
  arrives. A symbol whose files hold no snapshot gets a book built from diffs alone.
  ``symbols`` limits the symbols served; files that mix markets for one symbol (spot and
  USD-M BTCUSDT) are refused. Any depth path (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``)
  serves any recorded symbol.
* Simulator (no files): ``feed.exchange.simulator.MarketSimulator`` per symbol driven by the wall
  clock; ``@trade``, ``@aggTrade``, ``@bookTicker`` as they happen and ``@depth`` diffs
  every 100 ms (every depth speed suffix gets the 100 ms diffs). With ``klines=True`` also
  ``@kline_1s`` and ``@kline_1m`` in Binance's payload shape, built exactly (integer ticks
  and lots) from the simulated trades: the candle so far every 1 s / 2 s (Binance's
  cadence) and the final one (``x: true``) as soon as the interval has passed; an interval
  without trades gets Binance's flat candle (previous close, ``n: 0``, ``f``/``L`` -1).
  Replay forwards recorded kline streams like any other.

Stream matching is by symbol and channel: ``btcusdt@depth``, ``btcusdt@depth@100ms`` and
``btcusdt@depth@0ms`` all receive the symbol's diff-depth stream, whatever speed it was
recorded at. Each connection gets only what it subscribed to.

Backpressure, never drops: every outgoing message goes through ``_publish``, which puts
it on each subscribed connection's bounded outbox (``OUTBOX_MESSAGES``) and waits when an
outbox is full; a writer task per connection drains it with ``await send`` (which itself
waits while the socket's write buffer is above websockets' ``write_limit``). A slow client
therefore slows the source down (replay falls behind its pacing; the simulator catches up
in a burst) instead of being fed an unbounded buffer or losing messages. A client that
stops reading altogether is closed by the keepalive ping timeout (20 s), which releases
the source.

Fault injection (``faults=Faults(...)`` or ``Faults.from_str("drop_every=500,...")``, also
the hidden ``tickscope --faults`` option) happens in ``_publish``, the one place every
market message passes through: it omits trades or diffs, stalls the source, queues hostile
messages or a drop/close marker behind a message on a connection's outbox (the writer
carries the marker out, so everything queued before it is sent first). The only other
hook is the handshake refusal (HTTP 503) in ``_process_request``. What was injected and
which trades were actually written to each socket is in :meth:`EmbeddedExchange.fault_stats`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from feed.exchange.loopback import ServerThread
from feed.io.readers import RecordingError, merge_recordings, read_recording
from feed.exchange.simulator import MarketSimulator, instrument_for, quote_asset_of

__all__ = ["EmbeddedExchange", "Faults", "GARBAGE_KINDS", "HUGE_FRAME_BYTES"]

log = logging.getLogger(__name__)

# -- Binance dialect (shared/vendor-protocols.md section 1) -----------------------------

WS_COMBINED_PATH = "/stream"
WS_RAW_PATH = "/ws"
REST_DEPTH_PATHS = ("/api/v3/depth", "/fapi/v1/depth", "/dapi/v1/depth")
REST_PING_PATHS = ("/api/v3/ping", "/fapi/v1/ping", "/dapi/v1/ping")
REST_DEFAULT_LIMIT = 100
REST_MAX_LIMIT = 5000
#: Channels whose stream names carry no suffix; ``depth`` takes a speed suffix.
CORE_CHANNELS = ("trade", "aggTrade", "bookTicker", "depth")
DEPTH_SPEEDS = ("", "100ms", "1000ms", "0ms", "250ms", "500ms")
#: Channels the simulator produces.
SIM_CHANNELS = ("trade", "aggTrade", "bookTicker", "depth")
#: Kline channels the simulator adds with ``klines=True``: interval -> (ms, push every ms).
SIM_KLINES: dict[str, tuple[int, int]] = {"1s": (1_000, 1_000), "1m": (60_000, 2_000)}
#: Most empty intervals one kline closes in a row (a stalled loop catching up).
SIM_KLINE_CATCH_UP = 120
SIM_SYMBOL_RE = re.compile(r"^[a-z0-9]{5,20}$")
CONTROL_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
MAX_STREAMS_PER_CONNECTION = 1024
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")
_REST_SYMBOL_RE = re.compile(r"^[A-Z0-9-_.]{1,20}$")

# WebSocket error reply codes: {"error":{"code":N,"msg":...},"id":...}
WS_UNKNOWN_PROPERTY = 0
WS_BAD_VALUE_TYPE = 1
WS_INVALID_REQUEST = 2
WS_INVALID_JSON = 3

# REST error codes: {"code":N,"msg":...}
REST_TIMEOUT = -1007
REST_ILLEGAL_CHARS = -1100
REST_MANDATORY_PARAM = -1102
REST_INVALID_SYMBOL = -1121

# -- local policy -----------------------------------------------------------------------

#: Messages queued per connection before the source waits (backpressure).
OUTBOX_MESSAGES = 256
#: How long a REST depth request waits for a symbol's recorded snapshot, seconds.
SNAPSHOT_WAIT_S = 10.0
#: Simulator diff-depth cadence, ns.
SIM_DEPTH_INTERVAL_NS = 100_000_000
#: Longest simulator sleep, s (bounds the delay before a new market starts producing).
SIM_MAX_SLEEP_S = 0.05
#: At speed 0 the replay yields to the event loop every this many lines.
REPLAY_YIELD_EVERY = 64
#: Malformed replay lines logged individually (the rest are only counted).
BAD_LINES_LOGGED = 5
#: Seconds to wait for a client's close handshake when stopping.
CLOSE_TIMEOUT_S = 2.0

_JSON_SEPARATORS = (",", ":")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=_JSON_SEPARATORS)


# Outbox markers (fault injection): abort the connection / close it after a shutdown notice.
_DROP = object()
_SHUTDOWN = object()
# _fault_source's answer "leave this message out".
_OMIT = object()


def _split_stream(name: str) -> tuple[str, str, str]:
    # "btcusdt@depth@100ms" -> ("btcusdt", "depth", "100ms"); suffix "" when absent.
    symbol, _, rest = name.partition("@")
    channel, _, suffix = rest.partition("@")
    return symbol, channel, suffix


def _stream_key(name: str) -> tuple[str, str]:
    # What a stream name matches on: (symbol, channel). Depth speeds collapse to "depth";
    # other suffixed channels (markPrice@1s, depth5@100ms) keep their suffix.
    symbol, channel, suffix = _split_stream(name)
    if channel in CORE_CHANNELS:
        return symbol, channel
    return symbol, f"{channel}@{suffix}" if suffix else channel


def _stream_name_error(name: object) -> str | None:
    # Shape rules of a stream name, independent of what the source serves.
    if not isinstance(name, str) or not name:
        return f"stream names must be non-empty strings, not {name!r}"
    symbol, channel, suffix = _split_stream(name)
    if not symbol or not channel:
        return f"invalid stream name {name!r}: expected <symbol>@<channel>"
    if symbol != symbol.lower():
        return f"invalid stream name {name!r}: symbols in stream names must be lowercase"
    if channel == "depth" and suffix not in DEPTH_SPEEDS:
        return f"invalid stream name {name!r}: unknown depth speed {suffix!r}"
    if channel in ("trade", "aggTrade", "bookTicker") and suffix:
        return f"invalid stream name {name!r}: {channel} takes no suffix"
    return None


def _json_response(status: int, body: object) -> Response:
    data = _dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def _rest_error(status: int, code: int, msg: str) -> Response:
    return _json_response(status, {"code": code, "msg": msg})


def _ws_error(code: int, msg: str, request_id: object) -> str:
    return _dumps({"error": {"code": code, "msg": msg}, "id": request_id})


async def _call(fn):
    # Run a plain function on the loop (EmbeddedExchange.fault_stats).
    return fn()


class _StreamError(ValueError):
    """A stream a client asked for cannot be served; the message says why."""


# -- fault injection --------------------------------------------------------------------

#: Size of the oversized frame among the hostile messages, bytes.
HUGE_FRAME_BYTES = 10 * 1024 * 1024
#: Kinds of hostile message ``Faults.garbage`` draws from, with their relative weights.
#: Each is named after what is wrong with it; ``duplicate`` repeats the last trade sent to
#: the connection (well-formed, but already seen).
GARBAGE_KINDS: dict[str, int] = {
    "truncated": 3, "bad_utf8": 1, "deep_nesting": 1, "empty": 1, "not_object": 2,
    "data_not_object": 1, "wrong_type": 3, "missing_field": 2, "nan_price": 2,
    "negative_price": 1, "zero_size": 1, "negative_size": 1, "unknown_event": 2,
    "unsubscribed_symbol": 2, "bad_level": 1, "bad_update_id": 1, "bad_reply": 1,
    "binary": 2, "huge": 1, "duplicate": 2,
}
_TRADE_ID_RE = re.compile(r'"t":(\d+)')


@dataclass(frozen=True)
class Faults:
    """What the embedded exchange does wrong on purpose (all off by default).

    Message counts are of market messages queued for sending (garbage and notices
    excluded). Per-symbol faults (``skip_ids``, ``depth_gap_every``, ``cross_every``)
    apply to the symbols in ``only`` (every symbol when empty).

    Parameters
    ----------
    drop_every : int, optional
        Abort each connection (TCP reset, no close frame) after this many messages were
        queued on it.
    shutdown_every : int, optional
        After this many messages on a connection, send Binance's ``serverShutdown`` notice,
        then close it (code 1001) ``shutdown_grace_s`` seconds later.
    shutdown_grace_s : float
        Seconds between the notice and the close.
    skip_ids, skip_every : int
        Omit ``skip_ids`` consecutive trades in every ``skip_every`` trades of a symbol
        (from the middle of each block), so the client sees a trade-id gap of exactly
        ``skip_ids``.
    stall, stall_every : float, int
        Stop sending for ``stall`` seconds (connections stay open) after every
        ``stall_every`` messages.
    garbage : float
        Probability (0-1), after each message queued on a connection, of also queuing one
        hostile message (``GARBAGE_KINDS``) on it.
    garbage_big : int
        Most ``huge`` (10 MB) frames per exchange; later draws of that kind are redrawn.
    refuse : float
        Seconds during which WebSocket handshakes are answered HTTP 503.
    refuse_after : int, optional
        Start refusing after this many messages, aborting every connection then; None
        refuses from the start of the exchange.
    depth_gap_every : int, optional
        Omit one diff-depth event in every this many of a symbol (a sequence gap).
    cross_every : int, optional
        Add a bid above every ask to one diff-depth event in every this many of a symbol
        (a crossed book; the exchange's own book is unaffected).
    kline_bad_every : int, optional
        Add one unit of the last decimal to the volume (``v``) of one final kline in every
        this many of a symbol (a vendor candle that disagrees with the trades).
    only : tuple of str
        Lower-case symbols the per-symbol faults apply to; empty: all.
    seed : int
        Seed of the garbage generator.
    """

    drop_every: int | None = None
    shutdown_every: int | None = None
    shutdown_grace_s: float = 0.5
    skip_ids: int = 0
    skip_every: int = 1000
    stall: float = 0.0
    stall_every: int = 1000
    garbage: float = 0.0
    garbage_big: int = 0
    refuse: float = 0.0
    refuse_after: int | None = None
    depth_gap_every: int | None = None
    cross_every: int | None = None
    kline_bad_every: int | None = None
    only: tuple[str, ...] = ()
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("drop_every", "shutdown_every", "depth_gap_every", "cross_every", "refuse_after",
                     "kline_bad_every"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise ValueError(f"fault {name} must be a whole number >= 1, not {v!r}")
        if not (isinstance(self.skip_every, int) and self.skip_every >= 2):
            raise ValueError(f"fault skip_every must be a whole number >= 2, not {self.skip_every!r}")
        if not (isinstance(self.skip_ids, int) and 0 <= self.skip_ids <= self.skip_every // 2):
            raise ValueError(f"fault skip_ids must be 0..skip_every/2 ({self.skip_every // 2}), not {self.skip_ids!r}")
        if not (isinstance(self.stall_every, int) and self.stall_every >= 1):
            raise ValueError(f"fault stall_every must be a whole number >= 1, not {self.stall_every!r}")
        for name in ("stall", "refuse", "shutdown_grace_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"fault {name} must be a number of seconds >= 0, not {v!r}")
        if not (0.0 <= self.garbage <= 1.0):
            raise ValueError(f"fault garbage must be a probability 0..1, not {self.garbage!r}")
        if not (isinstance(self.garbage_big, int) and self.garbage_big >= 0):
            raise ValueError(f"fault garbage_big must be a whole number >= 0, not {self.garbage_big!r}")
        object.__setattr__(self, "only", tuple(s.lower() for s in self.only))

    @classmethod
    def from_str(cls, text: str) -> "Faults":
        """Parse ``"drop_every=500,skip_ids=3,only=btcusdt+ethusdt"``.

        Raises
        ------
        ValueError
            Naming the unknown key or the bad value.
        """
        kwargs: dict[str, object] = {}
        types = {f.name: f.type for f in cls.__dataclass_fields__.values()}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in types:
                raise ValueError(
                    f"bad fault {part!r}: expected key=value with key one of {', '.join(types)}")
            try:
                if key == "only":
                    kwargs[key] = tuple(v for v in value.split("+") if v)
                elif "float" in str(types[key]):
                    kwargs[key] = float(value)
                else:
                    kwargs[key] = int(value)
            except ValueError:
                raise ValueError(f"bad fault {part!r}: {value!r} is not a number") from None
        return cls(**kwargs)

    def applies_to(self, symbol: str) -> bool:
        """Return True when per-symbol faults apply to ``symbol`` (lower case)."""
        return not self.only or symbol in self.only


def _hostile(kind: str, symbol: str, rng, last_trade: str | None) -> str | bytes | tuple[bytes]:
    # One hostile message of ``kind`` about ``symbol`` (lower case): text (a text frame),
    # bytes (a binary frame) or a 1-tuple of bytes (a text frame that is not UTF-8).
    stream = f"{symbol}@trade"
    ok = {"e": "trade", "E": 1, "s": symbol.upper(), "t": 1, "p": "1.5", "q": "2", "T": 1, "m": False, "M": True}

    def trade(**changes: object) -> str:
        data = {**ok, **changes}
        return _dumps({"stream": stream, "data": {k: v for k, v in data.items() if v is not _MISSING}})

    if kind == "truncated":
        text = trade()
        return text[: rng.randrange(1, len(text) - 1)]
    if kind == "bad_utf8":
        return (b'{"stream":"' + stream.encode() + b'","data":{"e":"trade","s":"\xff\xfe"}}',)
    if kind == "deep_nesting":
        return "[" * 50_000 + "]" * 50_000
    if kind == "empty":
        return ""
    if kind == "not_object":
        return rng.choice(["[1,2,3]", "null", "42", '"trade"', "true"])
    if kind == "data_not_object":
        return _dumps({"stream": stream, "data": [1, 2]})
    if kind == "wrong_type":
        return trade(**rng.choice([{"t": "abc"}, {"T": 1.5}, {"m": "yes"}, {"p": [1]}, {"q": None},
                                   {"p": "abc"}, {"t": True}]))
    if kind == "missing_field":
        return trade(**{rng.choice(["p", "q", "t", "T", "m"]): _MISSING})
    if kind == "nan_price":
        return trade(p=rng.choice(["NaN", "nan", "inf", "-Infinity"]))
    if kind == "negative_price":
        return trade(p="-1.5")
    if kind == "zero_size":
        return trade(q="0")
    if kind == "negative_size":
        return trade(q="-2")
    if kind == "unknown_event":
        return rng.choice([
            _dumps({"stream": f"{symbol}@mystery", "data": {"e": "mysteryEvent", "E": 1}}),
            _dumps({"e": "mysteryEvent", "E": 1}),
        ])
    if kind == "unsubscribed_symbol":
        return _dumps({"stream": "zzzusdt@trade", "data": {**ok, "s": "ZZZUSDT"}})
    if kind == "bad_level":
        return _dumps({"stream": f"{symbol}@depth@100ms", "data": {
            "e": "depthUpdate", "E": 1, "s": symbol.upper(), "U": 1, "u": 2,
            "b": [[rng.choice(["NaN", "-1", "0", "inf"]), "1"]], "a": []}})
    if kind == "bad_update_id":
        return _dumps({"stream": f"{symbol}@depth@100ms", "data": {
            "e": "depthUpdate", "E": 1, "s": symbol.upper(), "U": "x", "u": 2, "b": [], "a": []}})
    if kind == "bad_reply":
        return _dumps({"error": "nonsense", "id": rng.randrange(10**6, 10**7)})
    if kind == "binary":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == "huge":
        return '{"stream":"' + stream + '","data":{"e":"trade","pad":"' + "x" * HUGE_FRAME_BYTES + '"}}'
    if kind == "duplicate":
        return last_trade if last_trade is not None else trade(t="abc")
    raise ValueError(f"unknown garbage kind {kind!r}")


_MISSING = object()


class _FaultState:
    # Counters and per-symbol positions of an exchange's fault injection (loop thread only).

    def __init__(self, faults: Faults) -> None:
        import random

        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.kinds = list(GARBAGE_KINDS)
        self.weights = [GARBAGE_KINDS[k] for k in self.kinds]
        self.published = 0  # market messages past the subscription check
        self.trades_seen: dict[str, int] = {}  # symbol -> trades published or skipped
        self.diffs_seen: dict[str, int] = {}  # symbol -> diff-depth events seen
        self.refuse_until: float | None = None  # loop time
        self.refuse_started = False
        self.big_left = faults.garbage_big
        # What happened; see EmbeddedExchange.fault_stats.
        self.drops = 0
        self.shutdowns = 0
        self.stalls = 0
        self.refused = 0
        self.depth_gaps = 0
        self.crossed = 0
        self.klines_seen: dict[str, int] = {}  # symbol -> final klines seen
        self.bad_klines: dict[str, list[int]] = {}  # symbol -> open times (ms) of altered klines
        self.skipped: dict[str, list[int]] = {}
        self.garbage: dict[str, int] = {}
        self.delivered: dict[str, list[int]] = {}  # symbol -> trade ids written to sockets

    def draw_garbage(self) -> str:
        while True:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind != "huge":
                return kind
            if self.big_left > 0:
                self.big_left -= 1
                return kind


# -- per-connection state ---------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    # One WebSocket connection.
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
        for name in names:
            if name not in self.subs:
                key = _stream_key(name)
                self.subs[name] = key
                self.by_key.setdefault(key, []).append(name)

    def unsubscribe(self, names: Iterable[str]) -> None:
        for name in names:
            key = self.subs.pop(name, None)
            if key is not None:
                self.by_key[key].remove(name)
                if not self.by_key[key]:
                    del self.by_key[key]


# -- sources ----------------------------------------------------------------------------


class _ReplayBook:
    # One symbol's book rebuilt from the recorded snapshot and diffs: price -> (p, q)
    # strings as recorded, keyed by float price for ordering.

    def __init__(self, expects_snapshot: bool) -> None:
        # False when the files hold no snapshot for the symbol: the book is built from
        # diffs alone (levels are known only once they change).
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
        self.bids = {float(p): (p, q) for p, q in snap.get("bids", ()) if float(q) != 0}
        self.asks = {float(p): (p, q) for p, q in snap.get("asks", ()) if float(q) != 0}
        self.last_update_id = int(snap["lastUpdateId"])
        pending, self.pending = self.pending, []
        for diff in pending:
            self.apply_diff(diff)
        self.ready.set()

    def apply_diff(self, diff: dict) -> None:
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
        bids = [list(self.bids[k]) for k in sorted(self.bids, reverse=True)[:limit]]
        asks = [list(self.asks[k]) for k in sorted(self.asks)[:limit]]
        return {"lastUpdateId": self.last_update_id, "bids": bids, "asks": asks}


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


class _ReplaySource:
    # Plays recorded sessions; keeps per-symbol books for the REST endpoint.

    def __init__(self, paths: Iterable[str | Path], speed: float, symbols: Iterable[str] | None) -> None:
        self._paths = [Path(p) for p in paths]
        self._speed = speed
        self._scans = [self._scan(p) for p in self._paths]
        channels: dict[str, set[str]] = {}
        markets: dict[str, tuple[str, Path]] = {}
        snapshot_symbols: set[str] = set()
        for scan in self._scans:
            for sym, chans in scan.channels.items():
                channels.setdefault(sym, set()).update(chans)
            for sym, market in scan.markets.items():
                seen = markets.setdefault(sym, (market, scan.path))
                if seen[0] != market:
                    raise ValueError(
                        f"replay files mix markets for {sym.upper()}: {seen[0]} in {seen[1]}, "
                        f"{market} in {scan.path}; run one exchange per market"
                    )
            snapshot_symbols |= scan.snapshots
        if symbols is not None:
            wanted = {s.lower() for s in symbols}
            missing = sorted(wanted - set(channels))
            if missing:
                raise ValueError(
                    f"symbols not in the replay files: {', '.join(s.upper() for s in missing)} "
                    f"(files hold {', '.join(sorted(s.upper() for s in channels)) or 'none'})"
                )
            channels = {s: c for s, c in channels.items() if s in wanted}
        # symbol (lower) -> channel keys recorded, for served symbols only.
        self.channels = channels
        # Books for served symbols that have a recorded diff stream.
        self.books = {
            sym: _ReplayBook(sym in snapshot_symbols) for sym, ch in channels.items() if "depth" in ch
        }
        # Set by the exchange on the first subscription: starts the playback clock.
        self.start = asyncio.Event()
        # Set when the exchange stops: waiting REST requests give up at once.
        self.stopping = asyncio.Event()
        # Malformed recorded lines met during playback.
        self.bad_lines = 0

    @staticmethod
    def _scan(path: Path) -> _FileScan:
        # One pass over the file: symbols, channels, market, snapshot attribution.
        scan = _FileScan(path)
        last_depth: str | None = None
        unattributed = 0
        for _, raw in read_recording(path):
            if raw.startswith('{"stream":"'):
                end = raw.find('"', 11)
                symbol, channel = _stream_key(raw[11:end])
                scan.channels.setdefault(symbol, set()).add(channel)
                if channel == "depth":
                    last_depth = symbol
                if symbol not in scan.markets:
                    market = _market_of(channel, raw)
                    if market:
                        scan.markets[symbol] = market
            elif raw.startswith('{"lastUpdateId"'):
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

    def symbols(self) -> list[str]:
        return sorted(s.upper() for s in self.channels)

    def check(self, symbol: str, channel: str) -> None:
        if symbol not in self.channels:
            raise _StreamError(
                f"unknown symbol {symbol!r}; this replay serves "
                f"{', '.join(sorted(self.channels)) or 'nothing'}"
            )
        if channel not in self.channels[symbol]:
            raise _StreamError(
                f"{symbol}@{channel} is not in the recording (recorded: "
                f"{', '.join(sorted(self.channels[symbol]))})"
            )

    def has_symbol(self, symbol: str) -> bool:
        # REST depth: symbols with a recorded diff-depth stream.
        return symbol in self.books

    async def depth(self, symbol: str, limit: int) -> dict | None:
        # The book now; waits for the recorded snapshot (None on timeout).
        book = self.books.get(symbol)
        if book is None:
            return None
        if not book.ready.is_set():
            waits = [asyncio.ensure_future(book.ready.wait()), asyncio.ensure_future(self.stopping.wait())]
            await asyncio.wait(waits, timeout=SNAPSHOT_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if not book.ready.is_set():
                return None
        return book.image(limit)

    async def run(self, exchange: "EmbeddedExchange") -> None:
        await self.start.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        origin_ns: int | None = None
        scans = self._scans
        last_depth: dict[int, str] = {}
        lines = 0
        for recv_ns, index, raw in merge_recordings(self._paths):
            lines += 1
            if lines % REPLAY_YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if raw.startswith('{"stream":"'):
                end = raw.find('"', 11)
                name = raw[11:end]
                symbol, channel = _stream_key(name)
                if channel == "depth":
                    last_depth[index] = symbol
                if symbol not in self.channels:
                    continue
                snap = None
            elif raw.startswith('{"lastUpdateId"'):
                snap = json.loads(raw)
                symbol = _snapshot_symbol(snap, scans[index], last_depth.get(index))
                if symbol not in self.books:
                    continue
            else:
                continue
            # Pacing: recorded receive-time offsets divided by speed, from the first
            # served line; speed 0 only yields (above) and waits on backpressure.
            if self._speed > 0:
                if origin_ns is None:
                    origin_ns = recv_ns
                    t0 = loop.time()
                delay = t0 + (recv_ns - origin_ns) / 1e9 / self._speed - loop.time()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
            if snap is not None:
                self.books[symbol].load_snapshot(snap)
                continue
            try:
                data = _recorded_data(raw, end)
            except (ValueError, KeyError, TypeError) as exc:
                self._bad_line(recv_ns, index, "not a stream wrapper", exc)
                continue
            if channel == "depth" and symbol in self.books:
                try:
                    self.books[symbol].apply_diff(json.loads(data))
                except (ValueError, KeyError, TypeError) as exc:
                    # Forwarded as recorded all the same: clients meet it as live.
                    self._bad_line(recv_ns, index, "bad diff, book not updated", exc)
            await exchange._publish(symbol, channel, data, recorded_name=name, recorded_text=raw)

    def _bad_line(self, recv_ns: int, index: int, what: str, exc: Exception) -> None:
        # Count malformed recorded lines; log the first few with where they are.
        self.bad_lines += 1
        if self.bad_lines <= BAD_LINES_LOGGED:
            log.warning("replay %s: line at recv %d: %s: %s", self._paths[index], recv_ns, what, exc)


def _recorded_data(raw: str, name_end: int) -> str:
    # The recorded "data" value, byte for byte, sliced out of {"stream":..,"data":..}.
    head = '","data":'
    body = raw.rstrip()
    if raw.startswith(head, name_end) and body.endswith("}"):
        return body[name_end + len(head) : -1]
    return _dumps(json.loads(raw)["data"])  # unusual spacing: re-serialise


@dataclass
class _SimKline:
    # One simulated candle in progress, in exact units: prices in ticks, sizes in lots,
    # quote volumes in tick_units * lot_units (decimals = price + qty decimals).
    interval: str
    interval_ms: int
    push_ms: int  # in-progress pushes every this many ms
    start_ms: int
    prev_close: int | None = None  # ticks; the open/close of a candle without trades
    first_id: int = -1
    last_id: int = -1
    open: int | None = None
    high: int = 0
    low: int = 0
    close: int = 0
    lots: int = 0
    quote: int = 0
    buy_lots: int = 0
    buy_quote: int = 0
    trades: int = 0
    next_push_ms: int = 0

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.interval_ms

    def add(self, fill, ts_ms: int, inst) -> None:
        ticks, lots = fill.price_ticks, fill.qty_lots
        if self.open is None:
            self.open = self.high = self.low = ticks
            self.first_id = fill.trade_id
        self.high = max(self.high, ticks)
        self.low = min(self.low, ticks)
        self.close = ticks
        self.last_id = fill.trade_id
        self.trades += 1
        self.lots += lots
        quote = ticks * inst.tick_units * lots * inst.lot_units
        self.quote += quote
        if not fill.buyer_is_maker:  # the taker bought
            self.buy_lots += lots
            self.buy_quote += quote

    def next(self) -> "_SimKline":
        # The following interval's candle, opening at this close.
        close = self.close if self.open is not None else self.prev_close
        return _SimKline(self.interval, self.interval_ms, self.push_ms, self.end_ms,
                         prev_close=close, next_push_ms=self.end_ms + self.push_ms)

    def payload(self, inst, event_ms: int, final: bool) -> str:
        # Binance's kline event (vendor-protocols.md section 1).
        flat = self.prev_close if self.prev_close is not None else 0
        o = self.open if self.open is not None else flat
        h, lo, c = (self.high, self.low, self.close) if self.open is not None else (flat, flat, flat)
        qd = inst.price_decimals + inst.qty_decimals

        def quote(units: int) -> str:
            return f"{Decimal(units).scaleb(-qd):.{qd}f}"

        return _dumps({"e": "kline", "E": event_ms, "s": inst.symbol, "k": {
            "t": self.start_ms, "T": self.end_ms - 1, "s": inst.symbol, "i": self.interval,
            "f": self.first_id, "L": self.last_id,
            "o": inst.format_price(o), "c": inst.format_price(c),
            "h": inst.format_price(h), "l": inst.format_price(lo),
            "v": inst.format_qty(self.lots), "n": self.trades, "x": final,
            "q": quote(self.quote), "V": inst.format_qty(self.buy_lots), "Q": quote(self.buy_quote),
            "B": "0",
        }})


class _SimSource:
    # One MarketSimulator per symbol, driven by the wall clock.

    def __init__(self, symbols: Iterable[str], seed: int, allowed: set[str] | None,
                 rate: float = 1.0, klines: bool = False) -> None:
        # Channels served (klines only on request: Binance-shaped candles cost a little).
        self.channels = SIM_CHANNELS + (tuple(f"kline_{i}" for i in SIM_KLINES) if klines else ())
        # (symbol, interval) -> candle in progress, for every market once klines are on.
        self._klines: dict[tuple[str, str], _SimKline] | None = {} if klines else None
        self._seed = seed
        # Trade-rate multiplier applied to every instrument.
        self._rate = rate
        # Allow-list (lower case) or None for any well-formed symbol.
        self._allowed = allowed
        # Markets started with the exchange (created when the source starts running, so
        # their clock starts then).
        self._initial = [s.lower() for s in symbols if allowed is None or s.lower() in allowed]
        self.markets: dict[str, MarketSimulator] = {}
        # Last top of book sent per symbol, to emit bookTicker on change only.
        self._tops: dict[str, tuple[int, int, int, int]] = {}
        # Last wall-clock reading handed to a simulator (they refuse time going back).
        self._clock_ns = 0

    def _now(self) -> int:
        # Wall clock, UTC ns, never earlier than a previous reading (NTP may step back).
        self._clock_ns = max(time.time_ns(), self._clock_ns)
        return self._clock_ns

    def symbols(self) -> list[str]:
        return sorted({s.upper() for s in self._initial} | {s.upper() for s in list(self.markets)})

    def symbol_error(self, symbol: str) -> str | None:
        if self._allowed is not None and symbol not in self._allowed:
            return f"unknown symbol {symbol!r}; this exchange serves {', '.join(sorted(self._allowed))}"
        if not SIM_SYMBOL_RE.match(symbol) or quote_asset_of(symbol) is None:
            return (
                f"unknown symbol {symbol!r}: expected 5-20 lowercase letters/digits ending "
                "with a quote asset (usdt, usdc, fdusd, busd, btc, eth, bnb)"
            )
        return None

    def check(self, symbol: str, channel: str) -> None:
        error = self.symbol_error(symbol)
        if error:
            raise _StreamError(error)
        if channel not in self.channels:
            raise _StreamError(
                f"{symbol}@{channel} is not simulated (channels: {', '.join(self.channels)})"
            )

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self.markets or self.symbol_error(symbol) is None

    def ensure(self, symbol: str) -> MarketSimulator:
        # A market starts on first use of its symbol.
        market = self.markets.get(symbol)
        if market is None:
            inst = instrument_for(symbol)
            if self._rate != 1.0:
                inst = dataclasses.replace(inst, trades_per_s=inst.trades_per_s * self._rate)
            market = MarketSimulator(symbol, start_ns=self._now(), seed=self._seed, instrument=inst)
            log.info("simulating %s", market.symbol)
            self.markets[symbol] = market
        return market

    async def depth(self, symbol: str, limit: int) -> dict | None:
        market = self.ensure(symbol)
        inst = market.instrument
        image = market.snapshot(limit)
        return {
            "lastUpdateId": image.last_update_id,
            "bids": [[inst.format_price(p), inst.format_qty(q)] for p, q in image.bids],
            "asks": [[inst.format_price(p), inst.format_qty(q)] for p, q in image.asks],
        }

    async def run(self, exchange: "EmbeddedExchange") -> None:
        for symbol in self._initial:
            self.ensure(symbol)
        next_flush = self._now() // SIM_DEPTH_INTERVAL_NS * SIM_DEPTH_INTERVAL_NS
        while True:
            now = self._now()
            for symbol, market in list(self.markets.items()):
                # A market created while this loop waited on backpressure started later.
                now = max(now, self._clock_ns)
                await self._emit_trades(exchange, symbol, market, market.advance(now), now)
            if self._klines is not None:
                await self._emit_klines(exchange, now)
            if now >= next_flush:
                for symbol, market in list(self.markets.items()):
                    diff = market.flush_depth(now)
                    if diff is not None and exchange._wanted(symbol, "depth"):
                        await exchange._publish(symbol, "depth", self._depth_json(market, diff))
                # Skip missed ticks rather than bursting diffs after a stall.
                next_flush = max(next_flush + SIM_DEPTH_INTERVAL_NS, now - now % SIM_DEPTH_INTERVAL_NS)
            wake = min([next_flush] + [m.next_event_ns for m in self.markets.values()])
            await asyncio.sleep(min(max(0.0, (wake - time.time_ns()) / 1e9), SIM_MAX_SLEEP_S))

    async def _emit_klines(self, exchange, now_ns: int) -> None:
        # Final candles of intervals that have passed (every fill in them was emitted: the
        # markets were advanced to now_ns first), and the in-progress ones on cadence.
        now_ms = now_ns // 1_000_000
        for (symbol, interval), k in list(self._klines.items()):
            market = self.markets.get(symbol)
            if market is None:
                continue
            inst = market.instrument
            channel = f"kline_{interval}"
            for _ in range(SIM_KLINE_CATCH_UP):
                if k.end_ms > now_ms:
                    break
                if exchange._wanted(symbol, channel):
                    await exchange._publish(symbol, channel, k.payload(inst, now_ms, True))
                k = self._klines[(symbol, interval)] = k.next()
            else:  # far behind (a long stall): jump to the current interval
                start = now_ms - now_ms % k.interval_ms
                k = self._klines[(symbol, interval)] = _SimKline(
                    interval, k.interval_ms, k.push_ms, start, prev_close=k.prev_close,
                    next_push_ms=start + k.push_ms)
            if now_ms >= k.next_push_ms:
                k.next_push_ms = now_ms - now_ms % k.push_ms + k.push_ms
                if exchange._wanted(symbol, channel):
                    await exchange._publish(symbol, channel, k.payload(inst, now_ms, False))

    def _kline_fills(self, symbol: str, inst, fills) -> None:
        # Add fills to the symbol's candles (started at the first fill's interval).
        for interval, (ms, push) in SIM_KLINES.items():
            key = (symbol, interval)
            k = self._klines.get(key)
            for f in fills:
                ts_ms = f.ts_ns // 1_000_000  # Binance buckets by the trade time it sends
                if k is None:
                    start = ts_ms - ts_ms % ms
                    k = self._klines[key] = _SimKline(interval, ms, push, start, next_push_ms=start + push)
                while ts_ms >= k.end_ms:  # the run loop closes intervals; this is a safety net
                    k = self._klines[key] = k.next()
                k.add(f, ts_ms, inst)

    async def _emit_trades(self, exchange, symbol, market, fills, now_ns) -> None:
        inst = market.instrument
        event_ms = now_ns // 1_000_000
        if self._klines is not None and fills:
            self._kline_fills(symbol, inst, fills)
        for f in fills:
            price, qty = inst.format_price(f.price_ticks), inst.format_qty(f.qty_lots)
            if exchange._wanted(symbol, "trade"):
                await exchange._publish(symbol, "trade", _dumps({
                    "e": "trade", "E": event_ms, "s": inst.symbol, "t": f.trade_id,
                    "p": price, "q": qty, "T": f.ts_ns // 1_000_000,
                    "m": f.buyer_is_maker, "M": True,
                }))
            if exchange._wanted(symbol, "aggTrade"):
                # One fill per price level, so each aggregate trade holds one trade.
                await exchange._publish(symbol, "aggTrade", _dumps({
                    "e": "aggTrade", "E": event_ms, "s": inst.symbol, "a": f.trade_id,
                    "p": price, "q": qty, "f": f.trade_id, "l": f.trade_id,
                    "T": f.ts_ns // 1_000_000, "m": f.buyer_is_maker, "M": True,
                }))
        top = market.top()
        if top != self._tops.get(symbol):
            self._tops[symbol] = top
            if exchange._wanted(symbol, "bookTicker"):
                bid, bid_qty, ask, ask_qty = top
                await exchange._publish(symbol, "bookTicker", _dumps({
                    "u": market.last_update_id, "s": inst.symbol,
                    "b": inst.format_price(bid), "B": inst.format_qty(bid_qty),
                    "a": inst.format_price(ask), "A": inst.format_qty(ask_qty),
                }))

    @staticmethod
    def _depth_json(market: MarketSimulator, diff) -> str:
        inst = market.instrument
        return _dumps({
            "e": "depthUpdate", "E": diff.ts_ns // 1_000_000, "s": inst.symbol,
            "U": diff.first_update_id, "u": diff.final_update_id,
            "b": [[inst.format_price(p), inst.format_qty(q)] for p, q in diff.bids],
            "a": [[inst.format_price(p), inst.format_qty(q)] for p, q in diff.asks],
        })


# -- the exchange -----------------------------------------------------------------------


class EmbeddedExchange(ServerThread):
    """A Binance-dialect market-data server on loopback, in its own thread.

    Parameters
    ----------
    host : str
        Interface to bind; loopback by default.
    port : int
        TCP port; 0 picks a free one (read it from ``ws_url`` after ``start``).
    replay_files : iterable of path
        Recorded sessions (``feed.io.readers`` format) to play; empty selects simulator mode.
        The files are scanned once here (about 0.2 s per 100,000 lines).
    speed : float
        Replay speed: recorded pacing divided by this (10 = ten times faster); 0 plays as
        fast as the clients read. Ignored by the simulator.
    symbols : iterable of str, optional
        Allow-list of served symbols (any case). None: replay serves every symbol in the
        files; the simulator serves ``sim_symbols`` plus any well-formed symbol.
    seed : int
        Simulator seed (one independent generator per symbol).
    sim_symbols : iterable of str
        Simulator markets started with the exchange. Any other symbol of 5-20 lowercase
        letters/digits ending with a known quote asset (usdt, usdc, fdusd, busd, btc, eth,
        bnb) gets a market on first subscribe or REST request.
    sim_rate : float
        Simulator trade-rate multiplier (1 = each instrument's usual rate; 20 = twenty
        times busier, for load and fault tests). Ignored in replay mode.
    faults : Faults or str, optional
        Faults to inject (a :class:`Faults` or its ``from_str`` text); None: none.
    klines : bool
        Simulator: also serve ``@kline_1s`` and ``@kline_1m`` (for the kline cross-check).
        Replay serves whatever kline streams were recorded.

    Attributes
    ----------
    finished : threading.Event
        Replay mode: set when every file has been played out (never set by the simulator).
    error : BaseException or None
        The exception that stopped the source early (e.g. a corrupt file), if any.

    Raises
    ------
    ValueError
        If an option is out of range, a symbol is not served, or the files mix markets
        (spot and futures) for one symbol.
    feed.io.readers.RecordingError
        If a replay file is missing or unreadable.
    """

    label = "exchange"
    thread_name = "tickscope-exchange"
    start_timeout_s = 10.0
    stop_timeout_s = CLOSE_TIMEOUT_S + 5.0
    log = logging.getLogger(__name__)  # the module's logger

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        replay_files: Iterable[str | Path] = (),
        speed: float = 1.0,
        symbols: Iterable[str] | None = None,
        seed: int = 7,
        sim_symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        sim_rate: float = 1.0,
        faults: Faults | str | None = None,
        klines: bool = False,
    ) -> None:
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed >= 0):
            raise ValueError(f"speed must be a finite number >= 0, not {speed!r}")
        if not (isinstance(sim_rate, (int, float)) and math.isfinite(sim_rate) and sim_rate > 0):
            raise ValueError(f"sim_rate must be a finite number > 0, not {sim_rate!r}")
        if isinstance(faults, str):
            faults = Faults.from_str(faults)
        # Fault injection state (None: no faults, and no per-message overhead).
        self._faults = _FaultState(faults) if faults is not None and faults != Faults() else None
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise ValueError(f"port must be 0..65535, not {port!r}")
        ServerThread.__init__(self, host=host, port=port)
        files = list(replay_files)
        symbols = None if symbols is None else list(symbols)
        self._source: _ReplaySource | _SimSource
        if files:
            self._source = _ReplaySource(files, float(speed), symbols)
        else:
            sim_symbols = list(sim_symbols)
            allowed = None if symbols is None else {s.lower() for s in symbols}
            for s in (symbols or []) + sim_symbols:
                if not SIM_SYMBOL_RE.match(s.lower()) or quote_asset_of(s) is None:
                    raise ValueError(
                        f"cannot simulate {s!r}: expected 5-20 letters/digits ending with a "
                        "quote asset (usdt, usdc, fdusd, busd, btc, eth, bnb)"
                    )
            self._source = _SimSource(sim_symbols, seed, allowed, sim_rate, klines)
        self.finished = threading.Event()
        self.error: BaseException | None = None
        # Connected clients (event-loop thread only).
        self._clients: set[_Client] = set()
        # (symbol, channel) -> number of subscriptions, to skip building unwanted messages.
        self._wanted_count: dict[tuple[str, str], int] = {}

    # -- public ------------------------------------------------------------------------

    def start(self) -> "EmbeddedExchange":
        """Bind, start the server thread and return once it is listening.

        Raises
        ------
        RuntimeError
            If already started.
        OSError
            If the address cannot be bound.
        """
        ServerThread.start(self)
        log.info("exchange listening on %s (%s)", self.ws_url, type(self._source).__name__)
        return self

    @property
    def ws_url(self) -> str:
        """Return the combined-stream URL, ``ws://HOST:PORT/stream``."""
        return f"ws://{self._host_for_url()}:{self.port}{WS_COMBINED_PATH}"

    @property
    def rest_url(self) -> str:
        """Return the REST base URL, ``http://HOST:PORT``."""
        return f"http://{self._host_for_url()}:{self.port}"

    @property
    def symbols(self) -> list[str]:
        """Return the upper-case symbols currently available, sorted."""
        return self._source.symbols()

    def serves(self, symbol: str, channel: str) -> bool:
        """Return True if a subscription to ``<symbol>@<channel>`` would be served.

        ``channel`` as in a stream name after the symbol (``"trade"``, ``"kline_1m"``);
        ``symbol`` in any case.
        """
        try:
            self._source.check(symbol.lower(), _stream_key(f"{symbol.lower()}@{channel}")[1])
        except _StreamError:
            return False
        return True

    def fault_stats(self) -> dict:
        """Return what fault injection did so far (empty without faults).

        Keys: ``drops``, ``shutdowns``, ``stalls``, ``refused`` (handshakes answered 503),
        ``depth_gaps`` (diffs omitted), ``crossed`` (diffs made to cross), ``bad_klines``
        (symbol -> open times, ms, of final klines given a wrong volume), ``skipped``
        (symbol -> omitted trade ids), ``garbage`` (kind -> hostile messages queued),
        ``delivered`` (symbol -> trade ids written to sockets, in order; a trade written
        just before a connection was aborted may still have been lost on the wire).
        Safe to call from any thread (copies taken on the exchange's loop when running).
        """
        fs = self._faults
        if fs is None:
            return {}

        def copy() -> dict:
            return {
                "drops": fs.drops, "shutdowns": fs.shutdowns, "stalls": fs.stalls,
                "refused": fs.refused, "depth_gaps": fs.depth_gaps, "crossed": fs.crossed,
                "bad_klines": {k: list(v) for k, v in fs.bad_klines.items()},
                "skipped": {k: list(v) for k, v in fs.skipped.items()},
                "garbage": dict(fs.garbage),
                "delivered": {k: list(v) for k, v in fs.delivered.items()},
            }

        loop = self._loop
        if loop is not None and loop.is_running() and threading.current_thread() is not self._thread:
            return asyncio.run_coroutine_threadsafe(_call(copy), loop).result(10)
        return copy()

    # -- private: thread and server ----------------------------------------------------

    def _host_for_url(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    # ServerThread hooks (the thread, the loop and start/stop live there).

    def _serve_options(self) -> dict:
        return {
            "process_request": self._process_request,
            "compression": None,  # Binance does not compress; saves CPU on both ends
            "close_timeout": CLOSE_TIMEOUT_S,
            "logger": logging.getLogger(f"{__name__}.ws"),
        }

    def _on_listening(self) -> None:
        fs = self._faults
        if fs is not None and fs.faults.refuse and fs.faults.refuse_after is None:
            fs.refuse_until = asyncio.get_running_loop().time() + fs.faults.refuse

    def _background(self):
        return self._run_source()

    def _on_stopping(self) -> None:
        if isinstance(self._source, _ReplaySource):
            self._source.stopping.set()

    async def _close(self, server: Server) -> None:
        server.close(close_connections=True)
        for client in list(self._clients):
            self._drop(client)
        await server.wait_closed()

    async def _run_source(self) -> None:
        try:
            await self._source.run(self)
        except Exception as exc:  # noqa: BLE001 - a bad file must not kill the server
            self.error = exc
            log.error("exchange source stopped: %s", exc)
        if isinstance(self._source, _ReplaySource):
            self.finished.set()

    # -- private: publishing (the single point every market message passes through) ----

    def _wanted(self, symbol: str, channel: str) -> bool:
        return self._wanted_count.get((symbol, channel), 0) > 0

    async def _publish(
        self,
        symbol: str,
        channel: str,
        data: str,
        *,
        recorded_name: str | None = None,
        recorded_text: str | None = None,
    ) -> None:
        # Queue one event (its JSON text) to every connection subscribed to
        # (symbol, channel); waits while an outbox is full (backpressure). Every fault is
        # injected here (see Faults).
        key = (symbol, channel)
        if not self._wanted_count.get(key):
            return
        fs = self._faults
        trade_id = None
        if fs is not None:
            changed = await self._fault_source(fs, symbol, channel, data)
            if changed is _OMIT:
                return
            if changed is not None:
                data, recorded_text = changed, None  # re-wrap the modified data
            if channel == "trade":
                m = _TRADE_ID_RE.search(data)
                trade_id = int(m.group(1)) if m else None
        for client in tuple(self._clients):
            names = client.by_key.get(key)
            if not names or client.closed or client.doomed:
                continue
            for name in tuple(names):
                if client.closed or client.doomed:
                    break
                if not client.combined:
                    text = data
                elif name == recorded_name and recorded_text is not None:
                    text = recorded_text
                else:
                    text = f'{{"stream":"{name}","data":{data}}}'
                if fs is None:
                    await client.outbox.put((name, text))
                    continue
                await client.outbox.put((name, text, (symbol, trade_id) if trade_id is not None else None))
                if channel == "trade":
                    client.last_trade = text
                await self._fault_connection(fs, client, symbol)

    async def _fault_source(self, fs: _FaultState, symbol: str, channel: str, data: str):
        # Source-level faults: refuse window, stall, omitted trades/diffs, crossed diffs.
        # Returns _OMIT to leave the message out, new data text, or None (send as is).
        f = fs.faults
        fs.published += 1
        if f.refuse and f.refuse_after is not None and not fs.refuse_started and fs.published > f.refuse_after:
            fs.refuse_started = True
            fs.refuse_until = asyncio.get_running_loop().time() + f.refuse
            log.warning("fault: refusing connections for %.1f s", f.refuse)
            for client in list(self._clients):
                self._abort(client)
        if f.stall and fs.published % f.stall_every == 0:
            fs.stalls += 1
            log.warning("fault: stalling for %.1f s", f.stall)
            await asyncio.sleep(f.stall)
        if f.applies_to(symbol):
            if channel == "trade" and f.skip_ids:
                n = fs.trades_seen.get(symbol, 0)
                fs.trades_seen[symbol] = n + 1
                lo = f.skip_every // 2
                if lo <= n % f.skip_every < lo + f.skip_ids:
                    m = _TRADE_ID_RE.search(data)
                    fs.skipped.setdefault(symbol.upper(), []).append(int(m.group(1)) if m else -1)
                    return _OMIT
            elif channel == "depth" and (f.depth_gap_every or f.cross_every):
                n = fs.diffs_seen.get(symbol, 0) + 1
                fs.diffs_seen[symbol] = n
                if f.depth_gap_every and n % f.depth_gap_every == 0:
                    fs.depth_gaps += 1
                    return _OMIT
                if f.cross_every and n % f.cross_every == f.cross_every // 2:
                    diff = json.loads(data)
                    # A bid far above any ask: the book ends the event crossed.
                    diff["b"] = list(diff.get("b", ())) + [["99999999.00", "1.00"]]
                    fs.crossed += 1
                    return _dumps(diff)
            elif channel.startswith("kline") and f.kline_bad_every and '"x":true' in data:
                n = fs.klines_seen.get(symbol, 0) + 1
                fs.klines_seen[symbol] = n
                if n % f.kline_bad_every == 0:
                    event = json.loads(data)
                    k = event["k"]
                    # One lot more than the trades made: the volume disagrees, nothing else.
                    lot = Decimal(1).scaleb(Decimal(k["v"]).as_tuple().exponent)
                    k["v"] = f"{Decimal(k['v']) + lot:f}"
                    fs.bad_klines.setdefault(symbol.upper(), []).append(k["t"])
                    return _dumps(event)
        return None

    async def _fault_connection(self, fs: _FaultState, client: _Client, symbol: str) -> None:
        # Per-connection faults, after a market message was queued on ``client``.
        f = fs.faults
        client.queued += 1
        if f.garbage and fs.rng.random() < f.garbage:
            kind = fs.draw_garbage()
            fs.garbage[kind] = fs.garbage.get(kind, 0) + 1
            await client.outbox.put((None, _hostile(kind, symbol, fs.rng, client.last_trade), None))
        if f.drop_every and client.queued % f.drop_every == 0:
            client.doomed = True
            await client.outbox.put((_DROP, "", None))
        elif f.shutdown_every and client.queued % f.shutdown_every == 0:
            notice = {"e": "serverShutdown", "E": time.time_ns() // 1_000_000}
            text = _dumps({"stream": "!serverShutdown", "data": notice}) if client.combined else _dumps(notice)
            await client.outbox.put((None, text, None))
            await client.outbox.put((_SHUTDOWN, "", None))

    async def _writer(self, client: _Client) -> None:
        # Drain one connection's outbox; skips streams unsubscribed since queuing. Items are
        # (stream name, text) or, with faults, (name or None or a marker, payload, meta).
        fs = self._faults
        try:
            while True:
                item = await client.outbox.get()
                name, text = item[0], item[1]
                if fs is None:
                    if name in client.subs:
                        await client.ws.send(text)
                    continue
                if name is _DROP:
                    fs.drops += 1
                    log.warning("fault: dropping a connection after %d messages", client.queued)
                    self._abort(client)
                    return
                if name is _SHUTDOWN:
                    fs.shutdowns += 1
                    asyncio.get_running_loop().call_later(
                        fs.faults.shutdown_grace_s,
                        lambda c=client: asyncio.ensure_future(c.ws.close(1001, "server shutdown")))
                    continue
                if name is not None and name not in client.subs:
                    continue
                if isinstance(text, tuple):  # a text frame that is not UTF-8
                    await client.ws.send(text[0], text=True)
                else:
                    await client.ws.send(text)
                meta = item[2]
                if meta is not None:
                    fs.delivered.setdefault(meta[0].upper(), []).append(meta[1])
        except ConnectionClosed:
            pass

    def _abort(self, client: _Client) -> None:
        # Cut a connection as a network failure would: no close frame.
        client.doomed = True
        transport = getattr(client.ws, "transport", None)
        if transport is not None:
            transport.abort()

    # -- private: connections ----------------------------------------------------------

    def _drop(self, client: _Client) -> None:
        # Forget a connection and release a source waiting on its full outbox.
        if client.closed:
            return
        client.closed = True
        self._clients.discard(client)
        self._count(client.subs.values(), -1)
        while not client.outbox.empty():
            client.outbox.get_nowait()

    def _count(self, keys: Iterable[tuple[str, str]], delta: int) -> None:
        for key in keys:
            self._wanted_count[key] = self._wanted_count.get(key, 0) + delta

    def _subscribe(self, client: _Client, names: list[str]) -> None:
        new = list(dict.fromkeys(n for n in names if n not in client.subs))
        if isinstance(self._source, _SimSource):
            for name in new:
                self._source.ensure(_split_stream(name)[0])
        client.subscribe(new)
        self._count((client.subs[n] for n in new), +1)
        if isinstance(self._source, _ReplaySource) and client.subs:
            self._source.start.set()

    def _unsubscribe(self, client: _Client, names: list[str]) -> None:
        gone = [client.subs[n] for n in dict.fromkeys(names) if n in client.subs]
        client.unsubscribe(names)
        self._count(gone, -1)

    def _check_streams(self, client: _Client | None, names: list) -> None:
        # Raise _StreamError naming the first stream that cannot be served.
        for name in names:
            error = _stream_name_error(name)
            if error:
                raise _StreamError(error)
            symbol, channel = _stream_key(name)
            self._source.check(symbol, channel)
        total = len(set(names) | set(client.subs if client else ()))
        if total > MAX_STREAMS_PER_CONNECTION:
            raise _StreamError(f"too many streams: {total} > {MAX_STREAMS_PER_CONNECTION} per connection")

    @staticmethod
    def _url_streams(path: str) -> tuple[str, list[str]]:
        # ("/stream", ["a", "b"]) from "/stream?streams=a/b"; "/ws/a/b" works the same.
        url = urlsplit(path)
        route = url.path.rstrip("/") or "/"
        if route.startswith(WS_RAW_PATH + "/"):
            return WS_RAW_PATH, [s for s in route[len(WS_RAW_PATH) + 1 :].split("/") if s]
        streams = parse_qs(url.query).get("streams", [""])[0]
        return route, [s for s in streams.split("/") if s]

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        # REST routes answered here; WebSocket routes validated, then the handshake goes on.
        url = urlsplit(request.path)
        if url.path in REST_DEPTH_PATHS:
            return await self._rest_depth(parse_qs(url.query))
        if url.path in REST_PING_PATHS:
            return _json_response(200, {})
        route, streams = self._url_streams(request.path)
        if route not in (WS_COMBINED_PATH, WS_RAW_PATH):
            return _rest_error(404, -1, f"no route {url.path!r}: use /stream, /ws or /api/v3/depth")
        fs = self._faults
        if fs is not None and fs.refuse_until is not None:
            if asyncio.get_running_loop().time() < fs.refuse_until:
                fs.refused += 1
                return _rest_error(503, REST_TIMEOUT, "Service unavailable (fault injection)")
        try:
            self._check_streams(None, streams)
        except _StreamError as exc:
            return _rest_error(400, REST_INVALID_SYMBOL, f"Invalid request: {exc}")
        return None

    async def _rest_depth(self, query: dict[str, list[str]]) -> Response:
        symbol = (query.get("symbol") or [""])[0]
        if not symbol:
            return _rest_error(400, REST_MANDATORY_PARAM,
                               "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not _REST_SYMBOL_RE.match(symbol):
            return _rest_error(400, REST_ILLEGAL_CHARS,
                               "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.")
        limit_text = (query.get("limit") or [str(REST_DEFAULT_LIMIT)])[0]
        if not limit_text.isdigit() or int(limit_text) < 1:
            return _rest_error(400, REST_ILLEGAL_CHARS,
                               "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        limit = min(int(limit_text), REST_MAX_LIMIT)
        key = symbol.lower()
        if not self._source.has_symbol(key):
            return _rest_error(400, REST_INVALID_SYMBOL, "Invalid symbol.")
        body = await self._source.depth(key, limit)
        if body is None:
            return _rest_error(503, REST_TIMEOUT,
                               "Timeout waiting for response from backend server. "
                               "Send status unknown; execution status unknown.")
        return _json_response(200, body)

    async def _handle(self, ws: ServerConnection) -> None:
        route, streams = self._url_streams(ws.request.path if ws.request else "/stream")
        client = _Client(ws, combined=route == WS_COMBINED_PATH)
        self._clients.add(client)
        writer = asyncio.create_task(self._writer(client))
        try:
            if streams:
                self._subscribe(client, streams)
            async for message in ws:
                reply = self._control(client, message)
                if reply is not None:
                    await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self._drop(client)
            writer.cancel()
            await asyncio.wait([writer])

    def _control(self, client: _Client, message: str | bytes) -> str | None:
        # Answer one control message (Binance SUBSCRIBE etc.).
        try:
            req = json.loads(message)
        except ValueError as exc:
            return _ws_error(WS_INVALID_JSON, f"Invalid JSON: {exc}", None)
        if not isinstance(req, dict):
            return _ws_error(WS_INVALID_REQUEST, "Invalid request: expected a JSON object", None)
        request_id = req.get("id")
        if "id" not in req:
            return _ws_error(WS_INVALID_REQUEST, "Invalid request: missing field `id`", None)
        if not (
            request_id is None
            or (isinstance(request_id, int) and not isinstance(request_id, bool)
                and -(2**63) <= request_id < 2**63)
            or (isinstance(request_id, str) and _REQUEST_ID_RE.match(request_id))
        ):
            return _ws_error(
                WS_INVALID_REQUEST,
                "Invalid request: request ID must be a signed 64-bit integer, an alphanumeric "
                "string of at most 36 characters, or null",
                None,
            )
        method = req.get("method")
        if method not in CONTROL_METHODS:
            return _ws_error(
                WS_INVALID_REQUEST,
                f"Invalid request: unknown variant `{method}`, expected one of "
                + ", ".join(f"`{m}`" for m in CONTROL_METHODS),
                request_id,
            )
        params = req.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return _dumps({"result": list(client.subs), "id": request_id})
        if not isinstance(params, list):
            return _ws_error(WS_INVALID_REQUEST, "Invalid request: params must be an array", request_id)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not params or not all(isinstance(p, str) for p in params):
                return _ws_error(WS_INVALID_REQUEST,
                                 "Invalid request: params must be a non-empty array of stream names",
                                 request_id)
            if method == "UNSUBSCRIBE":
                self._unsubscribe(client, params)
                return _dumps({"result": None, "id": request_id})
            try:
                self._check_streams(client, params)
            except _StreamError as exc:
                return _ws_error(WS_INVALID_REQUEST, f"Invalid request: {exc}", request_id)
            self._subscribe(client, params)
            return _dumps({"result": None, "id": request_id})
        # SET_PROPERTY / GET_PROPERTY: the only property is "combined".
        if not params or not isinstance(params[0], str):
            return _ws_error(WS_INVALID_REQUEST, "Invalid request: property name must be a string", request_id)
        if params[0] != "combined":
            return _ws_error(WS_UNKNOWN_PROPERTY, "Unknown property", request_id)
        if method == "GET_PROPERTY":
            return _dumps({"result": client.combined, "id": request_id})
        if len(params) != 2 or not isinstance(params[1], bool):
            return _ws_error(WS_BAD_VALUE_TYPE, "Invalid value type: expected Boolean", request_id)
        client.combined = params[1]
        return _dumps({"result": None, "id": request_id})
