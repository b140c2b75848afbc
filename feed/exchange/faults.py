"""Fault injection of the embedded exchange: what it does wrong on purpose, and when.

Owns :class:`Faults` (the spec, also parsed from text by ``Faults.from_str`` for the
hidden ``tickscope --faults`` option), the hostile messages it can mix into a connection
(``GARBAGE_KINDS``, :func:`hostile_message`) and :class:`FaultState`, the counters and
per-symbol positions of one running exchange.

Every fault happens where every market message passes through the fan-out
(``feed.exchange.fanout.Fanout.publish``): :meth:`FaultState.on_source` omits trades or
diffs, stalls the source, alters a diff or a kline; :meth:`FaultState.on_queued` queues
hostile messages or a drop/close marker behind a message on a connection's outbox (the
writer carries the marker out, so everything queued before it is sent first). The only
other hook is the handshake refusal (HTTP 503) in the server's request hook. What was
injected and which trades were actually written to each socket is in
:meth:`FaultState.stats`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from feed.exchange.dialect import dumps

__all__ = ["Faults", "FaultState", "GARBAGE_KINDS", "HUGE_FRAME_BYTES", "hostile_message",
           "DROP", "SHUTDOWN", "OMIT", "trade_id_of"]

log = logging.getLogger(__name__)

#: Outbox markers: abort the connection / close it after a shutdown notice.
DROP = object()
SHUTDOWN = object()
#: :meth:`FaultState.on_source`'s answer "leave this message out".
OMIT = object()

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


def trade_id_of(data: str) -> int | None:
    """Return the trade id (``"t"``) in a trade event's JSON text, or None."""
    m = _TRADE_ID_RE.search(data)
    return int(m.group(1)) if m else None


# -- hostile messages -------------------------------------------------------------------

_MISSING = object()
Hostile = str | bytes | tuple[bytes]


class _Target(NamedTuple):
    # What a hostile message is about: lower-case symbol, its trade stream, the garbage
    # generator, and the last trade text queued on the connection.
    symbol: str
    stream: str
    rng: random.Random
    last_trade: str | None

    def ok(self) -> dict[str, Any]:
        # A well-formed trade event of the symbol.
        # T is a real 2024 time: a time before 2000 is refused as bad_time by the adapter.
        return {"e": "trade", "E": 1, "s": self.symbol.upper(), "t": 1, "p": "1.5", "q": "2",
                "T": 1_723_161_255_000, "m": False, "M": True}

    def trade(self, **changes: object) -> str:
        # The well-formed trade with ``changes`` (``_MISSING`` removes a field).
        data = {**self.ok(), **changes}
        return dumps({"stream": self.stream, "data": {k: v for k, v in data.items() if v is not _MISSING}})

    def diff(self, **fields: object) -> str:
        # A diff-depth event of the symbol with ``fields``.
        data = {"e": "depthUpdate", "E": 1, "s": self.symbol.upper(), **fields}
        return dumps({"stream": f"{self.symbol}@depth@100ms", "data": data})


def _truncated(t: _Target) -> str:
    text = t.trade()
    return text[: t.rng.randrange(1, len(text) - 1)]


def _unknown_event(t: _Target) -> str:
    return t.rng.choice([
        dumps({"stream": f"{t.symbol}@mystery", "data": {"e": "mysteryEvent", "E": 1}}),
        dumps({"e": "mysteryEvent", "E": 1}),
    ])


def _unsubscribed_symbol(t: _Target) -> str:
    return dumps({"stream": "zzzusdt@trade", "data": {**t.ok(), "s": "ZZZUSDT"}})


def _huge(t: _Target) -> str:
    return '{"stream":"' + t.stream + '","data":{"e":"trade","pad":"' + "x" * HUGE_FRAME_BYTES + '"}}'


# kind -> generator. Each draws from the rng exactly as the kind needs, so a seed repeats.
_HOSTILE: dict[str, Callable[[_Target], Hostile]] = {
    "truncated": _truncated,
    "bad_utf8": lambda t: (b'{"stream":"' + t.stream.encode() + b'","data":{"e":"trade","s":"\xff\xfe"}}',),
    "deep_nesting": lambda t: "[" * 50_000 + "]" * 50_000,
    "empty": lambda t: "",
    "not_object": lambda t: t.rng.choice(["[1,2,3]", "null", "42", '"trade"', "true"]),
    "data_not_object": lambda t: dumps({"stream": t.stream, "data": [1, 2]}),
    # Mistyped fields without a reason of their own (a mistyped price, size, id or time is
    # bad_price, bad_size, bad_trade_id or bad_time: the adapter unit tests cover those).
    "wrong_type": lambda t: t.trade(**t.rng.choice(
        [{"m": "yes"}, {"m": 1}, {"m": None}, {"m": "true"}, {"m": [True]}, {"m": 0}, {"m": {}}])),
    "missing_field": lambda t: t.trade(**{t.rng.choice(["p", "q", "t", "T", "m"]): _MISSING}),
    "nan_price": lambda t: t.trade(p=t.rng.choice(["NaN", "nan", "inf", "-Infinity"])),
    "negative_price": lambda t: t.trade(p="-1.5"),
    "zero_size": lambda t: t.trade(q="0"),
    "negative_size": lambda t: t.trade(q="-2"),
    "unknown_event": _unknown_event,
    "unsubscribed_symbol": _unsubscribed_symbol,
    "bad_level": lambda t: t.diff(U=1, u=2, b=[[t.rng.choice(["NaN", "-1", "0", "inf"]), "1"]], a=[]),
    "bad_update_id": lambda t: t.diff(U="x", u=2, b=[], a=[]),
    "bad_reply": lambda t: dumps({"error": "nonsense", "id": t.rng.randrange(10**6, 10**7)}),
    "binary": lambda t: bytes(t.rng.randrange(256) for _ in range(t.rng.randrange(1, 64))),
    "huge": _huge,
    "duplicate": lambda t: t.last_trade if t.last_trade is not None else t.trade(t="abc"),
}


def hostile_message(kind: str, symbol: str, rng: random.Random, last_trade: str | None) -> Hostile:
    """Return one hostile message of ``kind`` about ``symbol`` (lower case).

    Parameters
    ----------
    kind : str
        One of ``GARBAGE_KINDS``.
    symbol : str
        Lower-case symbol the message is about.
    rng : random.Random
        Generator of the random parts.
    last_trade : str or None
        The last trade text queued on the connection (``duplicate`` repeats it).

    Returns
    -------
    str, bytes or tuple of bytes
        Text (a text frame), bytes (a binary frame) or a 1-tuple of bytes (a text frame
        that is not UTF-8).

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    make = _HOSTILE.get(kind)
    if make is None:
        raise ValueError(f"unknown garbage kind {kind!r}")
    return make(_Target(symbol, f"{symbol}@trade", rng, last_trade))


# -- state of one running exchange ------------------------------------------------------


class FaultState:
    """Counters and per-symbol positions of one exchange's fault injection.

    Used on the exchange's event-loop thread only.

    Parameters
    ----------
    faults : Faults
        What to inject.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.kinds = list(GARBAGE_KINDS)
        self.weights = [GARBAGE_KINDS[k] for k in self.kinds]
        self.published = 0  # market messages past the subscription check
        self.trades_seen: dict[str, int] = {}  # symbol -> trades published or skipped
        self.diffs_seen: dict[str, int] = {}  # symbol -> diff-depth events seen
        self.refuse_until: float | None = None  # loop time, s
        self.refuse_started = False
        self.big_left = faults.garbage_big
        # What happened; see stats().
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

    def stats(self) -> dict:
        """Return a copy of what was injected (see ``EmbeddedExchange.fault_stats``)."""
        return {
            "drops": self.drops, "shutdowns": self.shutdowns, "stalls": self.stalls,
            "refused": self.refused, "depth_gaps": self.depth_gaps, "crossed": self.crossed,
            "bad_klines": {k: list(v) for k, v in self.bad_klines.items()},
            "skipped": {k: list(v) for k, v in self.skipped.items()},
            "garbage": dict(self.garbage),
            "delivered": {k: list(v) for k, v in self.delivered.items()},
        }

    def draw_garbage(self) -> str:
        """Return the next hostile kind, honouring the ``garbage_big`` budget."""
        while True:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind != "huge":
                return kind
            if self.big_left > 0:
                self.big_left -= 1
                return kind

    def start_refusing(self, now_s: float) -> None:
        """Refuse handshakes for ``faults.refuse`` seconds from loop time ``now_s``."""
        self.refuse_until = now_s + self.faults.refuse

    def refusing(self, now_s: float) -> bool:
        """Return True (and count it) if a handshake at loop time ``now_s`` is refused."""
        if self.refuse_until is not None and now_s < self.refuse_until:
            self.refused += 1
            return True
        return False

    async def on_source(self, symbol: str, channel: str, data: str, abort_all: Callable[[], None]):
        """Apply the source-level faults to one market message.

        Refuse window (``abort_all`` cuts every connection when it opens), stall, omitted
        trades or diffs, crossed diffs, altered final klines.

        Returns
        -------
        object
            ``OMIT`` to leave the message out, new data text, or None (send as is).
        """
        f = self.faults
        self.published += 1
        if f.refuse and f.refuse_after is not None and not self.refuse_started and self.published > f.refuse_after:
            self.refuse_started = True
            self.start_refusing(asyncio.get_running_loop().time())
            log.warning("fault: refusing connections for %.1f s", f.refuse)
            abort_all()
        if f.stall and self.published % f.stall_every == 0:
            self.stalls += 1
            log.warning("fault: stalling for %.1f s", f.stall)
            await asyncio.sleep(f.stall)
        if not f.applies_to(symbol):
            return None
        if channel == "trade" and f.skip_ids:
            return self._skip_trade(symbol, data)
        if channel == "depth" and (f.depth_gap_every or f.cross_every):
            return self._spoil_diff(symbol, data)
        if channel.startswith("kline") and f.kline_bad_every and '"x":true' in data:
            return self._spoil_kline(symbol, data)
        return None

    def _skip_trade(self, symbol: str, data: str):
        f = self.faults
        n = self.trades_seen.get(symbol, 0)
        self.trades_seen[symbol] = n + 1
        lo = f.skip_every // 2
        if lo <= n % f.skip_every < lo + f.skip_ids:
            trade_id = trade_id_of(data)
            self.skipped.setdefault(symbol.upper(), []).append(-1 if trade_id is None else trade_id)
            return OMIT
        return None

    def _spoil_diff(self, symbol: str, data: str):
        f = self.faults
        n = self.diffs_seen.get(symbol, 0) + 1
        self.diffs_seen[symbol] = n
        if f.depth_gap_every and n % f.depth_gap_every == 0:
            self.depth_gaps += 1
            return OMIT
        if f.cross_every and n % f.cross_every == f.cross_every // 2:
            diff = json.loads(data)
            # A bid far above any ask: the book ends the event crossed.
            diff["b"] = list(diff.get("b", ())) + [["99999999.00", "1.00"]]
            self.crossed += 1
            return dumps(diff)
        return None

    def _spoil_kline(self, symbol: str, data: str):
        n = self.klines_seen.get(symbol, 0) + 1
        self.klines_seen[symbol] = n
        if n % self.faults.kline_bad_every == 0:
            event = json.loads(data)
            k = event["k"]
            # One lot more than the trades made: the volume disagrees, nothing else.
            lot = Decimal(1).scaleb(Decimal(k["v"]).as_tuple().exponent)
            k["v"] = f"{Decimal(k['v']) + lot:f}"
            self.bad_klines.setdefault(symbol.upper(), []).append(k["t"])
            return dumps(event)
        return None

    async def on_queued(self, client, symbol: str) -> None:
        """Apply the per-connection faults after a market message was queued on ``client``.

        Maybe queue a hostile message, then a drop marker or a shutdown notice plus its
        close marker (``client`` is a ``feed.exchange.fanout.Client``).
        """
        f = self.faults
        client.queued += 1
        if f.garbage and self.rng.random() < f.garbage:
            kind = self.draw_garbage()
            self.garbage[kind] = self.garbage.get(kind, 0) + 1
            await client.outbox.put((None, hostile_message(kind, symbol, self.rng, client.last_trade), None))
        if f.drop_every and client.queued % f.drop_every == 0:
            client.doomed = True
            await client.outbox.put((DROP, "", None))
        elif f.shutdown_every and client.queued % f.shutdown_every == 0:
            notice = {"e": "serverShutdown", "E": time.time_ns() // 1_000_000}
            text = dumps({"stream": "!serverShutdown", "data": notice}) if client.combined else dumps(notice)
            await client.outbox.put((None, text, None))
            await client.outbox.put((SHUTDOWN, "", None))
