"""The market-state boundary between the one writer (the engine) and its readers.

Readers (the Dash callbacks, ``/api/*``) see market state only through
:class:`MarketReader`. Two implementations exist:

* in-process (the default): :class:`feed.io.engine.Engine` itself; reads take the
  engine lock for microseconds and copy out;
* Redis (``--redis URL``): collectors (``tickscope collect``) publish each engine
  cycle to Redis with one pipeline (``feed.io.redis_writer``) and every dashboard worker
  (``tickscope serve``) keeps a replica fed from the streams (``feed.io.redis_reader``).

This module holds the interface and the Redis layout both sides agree on: key names and
the encoding of stream entries. Nothing here talks to Redis.

Redis layout (``P`` is the key prefix, ``tickscope`` by default; ``S`` a symbol):

====================== ======= ==========================================================
key                    type    what
====================== ======= ==========================================================
``P:trades:S``         stream  raw trades, one entry per engine cycle and kind
                               (:func:`encode_trades`); ``MAXLEN ~`` retention; the entry
                               id is the readers' cursor
``P:bars:S:SPEC``      stream  closed bars of the collector's default spec, one entry per
                               bar (:func:`encode_bar`); a closed bar revised by a late
                               trade is written again: the last entry of a start wins
``P:forming:S``        string  the bar in progress of the default spec (JSON) or absent
``P:book:S``           string  the book's top levels (:func:`encode_depth`)
``P:meta:S``           string  per-symbol state readers cannot rebuild from trades: gap
                               marks, symbol status, verification (JSON)
``P:owner:S``          string  name of the collector that owns S (``SET NX``, TTL renewed
                               by its heartbeat)
``P:collector:NAME``   string  the collector's heartbeat: pid, host, symbols, health and
                               status JSON, engine clock, ``market`` (its bar rules and
                               limits, ``MarketConfig`` fields); TTL ``HEARTBEAT_TTL_S``
``P:collectors``       set     every collector name running or dead (a missing heartbeat =
                               stale); a clean stop removes its name
``P:commands``         stream  subscribe / unsubscribe asked from a dashboard
                               (:func:`encode_command`)
====================== ======= ==========================================================

Floats are written by orjson, whose shortest round-trip representation parses back to
the same bits, so bars rebuilt by a reader equal the collector's bit for bit.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import orjson

from feed.core.models import Trade

__all__ = [
    "MarketReader", "DEFAULT_PREFIX", "HEARTBEAT_S", "HEARTBEAT_TTL_S", "Keys",
    "TRADES_APPENDED", "TRADES_INSERTED", "encode_trades", "decode_trades",
    "encode_command", "decode_command", "MAX_ENTRY_BYTES",
    "encode_bar", "decode_bar", "encode_depth", "decode_depth",
]

#: Default key prefix; several deployments can share one Redis with different prefixes.
DEFAULT_PREFIX = "tickscope"
#: A collector writes its heartbeat this often, seconds.
HEARTBEAT_S = 1.0
#: A heartbeat key expires after this long: a collector silent this long is stale, seconds.
HEARTBEAT_TTL_S = 5.0
#: A stream entry larger than this is refused by readers (counted, skipped): bytes.
MAX_ENTRY_BYTES = 64 * 1024 * 1024

#: Entry kinds of ``P:trades:S``: trades appended by the live feed, and trades put in
#: place by history (backfill, gap repair), which readers insert by time.
TRADES_APPENDED = b"t"
TRADES_INSERTED = b"i"


@runtime_checkable
class MarketReader(Protocol):
    """What the dashboard and ``/api/*`` read; ``Engine`` and ``RedisReader`` provide it.

    Shapes and units are those of :class:`feed.io.engine.Engine`'s methods of the same
    names (times UTC ns, prices quote currency, sizes base units).
    """

    default_spec: str

    def symbols(self) -> list[str]: ...
    def clock_ns(self) -> int: ...
    def normalize_symbol(self, text: str) -> str: ...
    def subscribe(self, text: str) -> str: ...
    def unsubscribe(self, symbol: str) -> None: ...
    def bar_series(self, symbol: str, spec: Any, since: int = 0) -> Any: ...
    def older_bars(self, symbol: str, spec: Any, before_ns: int, limit: int = 500) -> Any: ...
    def bars_frame(self, symbol: str, spec: Any) -> Any: ...
    def vendor_candles(self, symbol: str) -> list: ...
    def verify(self, symbol: str) -> dict | None: ...
    def depth(self, symbol: str, levels: int = 50) -> Any: ...
    def trades(self, symbol: str, limit: int = 100) -> list[Trade]: ...
    def gap_marks_since(self, symbol: str, since: int = 0) -> tuple[int, list[tuple[int, int]]]: ...
    def status(self) -> Any: ...
    def health(self) -> dict: ...


class Keys:
    """Key names under one prefix (see the module docstring for what each holds)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"bad Redis key prefix {prefix!r}")
        self.prefix = prefix
        self.collectors = f"{prefix}:collectors"
        self.commands = f"{prefix}:commands"

    def trades(self, symbol: str) -> str:
        return f"{self.prefix}:trades:{symbol}"

    def bars(self, symbol: str, spec: str) -> str:
        return f"{self.prefix}:bars:{symbol}:{spec}"

    def forming(self, symbol: str) -> str:
        return f"{self.prefix}:forming:{symbol}"

    def book(self, symbol: str) -> str:
        return f"{self.prefix}:book:{symbol}"

    def meta(self, symbol: str) -> str:
        return f"{self.prefix}:meta:{symbol}"

    def owner(self, symbol: str) -> str:
        return f"{self.prefix}:owner:{symbol}"

    def collector(self, name: str) -> str:
        return f"{self.prefix}:collector:{name}"


def encode_trades(trades: Sequence[Trade]) -> bytes:
    """Encode one symbol's trades as columns (JSON via orjson).

    Keys: ``ts`` exchange time (UTC ns), ``px`` price (quote currency), ``sz`` size (base
    units), ``sd`` taker side (``feed.core.models`` BUY/SELL/UNKNOWN), ``id`` trade id or
    null, ``rv`` receive time (UTC ns), ``ib`` 1 if the trade counts in bars, ``c`` trades
    it stands for (an aggregate trade's ``l - f + 1``).
    """
    return orjson.dumps({
        "ts": [t.ts_ns for t in trades], "px": [t.price for t in trades],
        "sz": [t.size for t in trades], "sd": [t.side for t in trades],
        "id": [t.trade_id for t in trades], "rv": [t.recv_ns for t in trades],
        "ib": [1 if t.in_bars else 0 for t in trades], "c": [t.count for t in trades],
    })


def decode_trades(symbol: str, data: bytes) -> list[Trade]:
    """Decode :func:`encode_trades` output for ``symbol``.

    Raises
    ------
    ValueError
        If ``data`` is not such an entry (wrong JSON, columns of unequal length or wrong
        types): a reader counts it and skips the entry.
    """
    if len(data) > MAX_ENTRY_BYTES:
        raise ValueError(f"trade entry of {len(data):,} bytes is over the {MAX_ENTRY_BYTES:,} limit")
    try:
        cols = orjson.loads(data)
        ts, px, sz, sd, ids, rv, ib, cnt = (cols[k] for k in ("ts", "px", "sz", "sd", "id", "rv", "ib", "c"))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a trade entry: {exc}") from None
    n = len(ts)
    if not all(isinstance(c, list) and len(c) == n for c in (ts, px, sz, sd, ids, rv, ib, cnt)):
        raise ValueError("trade entry columns differ in length")
    out = []
    for i in range(n):
        t, p, s, d, tid, r, b, c = ts[i], px[i], sz[i], sd[i], ids[i], rv[i], ib[i], cnt[i]
        if (type(t) is not int or type(p) not in (float, int) or type(s) not in (float, int)
                or type(d) is not int or (tid is not None and type(tid) is not int)
                or type(r) is not int or type(c) is not int or c < 1):
            raise ValueError(f"bad trade at row {i} of the entry")
        out.append(Trade(symbol, t, float(p), float(s), d, tid, r, bool(b), c))
    return out


#: Operations a dashboard may ask collectors for.
COMMAND_OPS = ("subscribe", "unsubscribe")


def encode_command(op: str, symbol: str, collector: str | None = None) -> dict[str, str]:
    """Fields of one ``P:commands`` entry: ``op`` (subscribe, unsubscribe), ``symbol``
    (as typed by the user; the collector validates it) and ``collector`` (a target
    collector's name, or empty: the first collector that claims the symbol takes it).

    Raises
    ------
    ValueError
        If ``op`` is unknown or ``symbol`` is empty or longer than 64 characters.
    """
    if op not in COMMAND_OPS:
        raise ValueError(f"unknown command {op!r}")
    if not symbol or len(symbol) > 64:
        raise ValueError("a symbol of 1 to 64 characters is needed")
    return {"op": op, "symbol": symbol, "collector": collector or ""}


def decode_command(fields: dict) -> tuple[str, str, str]:
    """Return ``(op, symbol, collector)`` of a ``P:commands`` entry (bytes or str values).

    Raises
    ------
    ValueError
        If the entry is not a command :func:`encode_command` could have written.
    """
    def text(key: str) -> str:
        v = fields.get(key, fields.get(key.encode(), b""))
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    op, symbol, collector = text("op"), text("symbol"), text("collector")
    encode_command(op, symbol, collector)  # the same checks
    return op, symbol, collector


def encode_bar(bar: Any) -> dict[str, str]:
    """Fields of one ``P:bars:S:SPEC`` entry: the columns of ``feed.core.models``
    ``BAR_COLUMNS`` as text.

    ``start``/``end`` UTC ns as decimal integers; floats as Python's shortest round-trip
    ``repr`` (``nan`` for a series' first ``amplitude``/``change``), so they parse back to
    the same bits; ``trade_count`` an integer; ``closed`` ``1`` or ``0``.
    """
    out = {}
    for k, v in bar.as_dict().items():
        out[k] = ("1" if v else "0") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)
    return out


_BAR_INTS = ("start", "end", "trade_count")
_BAR_TEXT = ("symbol", "bar")


def decode_bar(fields: dict) -> dict[str, Any]:
    """Return one ``P:bars:S:SPEC`` entry (bytes or str keys and values) as a dict keyed
    by ``BAR_COLUMNS``: str symbol and bar, int start/end (UTC ns) and trade_count, bool
    closed, float the rest.

    Raises
    ------
    ValueError
        If a column is missing or does not parse.
    """
    from feed.core.models import BAR_COLUMNS

    def text(key: str) -> str:
        v = fields.get(key, fields.get(key.encode()))
        if v is None:
            raise ValueError(f"bar entry without {key!r}")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    out: dict[str, Any] = {}
    for k in BAR_COLUMNS:
        v = text(k)
        if k in _BAR_TEXT:
            out[k] = v
        elif k in _BAR_INTS:
            out[k] = int(v)
        elif k == "closed":
            if v not in ("0", "1"):
                raise ValueError(f"bar entry closed={v!r}")
            out[k] = v == "1"
        else:
            out[k] = float(v)
    return out


def encode_depth(view: Any) -> bytes:
    """JSON of a :class:`feed.core.views.DepthView` (``P:book:S``): its fields (``bids``
    and ``asks`` as ``[[price, size], ...]``, best first) plus ``stale`` when the view
    has it."""
    import dataclasses

    body = dataclasses.asdict(view)
    return orjson.dumps(body)


def decode_depth(data: bytes) -> Any:
    """Return the :class:`feed.core.views.DepthView` of a ``P:book:S`` value.

    Raises
    ------
    ValueError
        If ``data`` is not such a value.
    """
    import dataclasses

    from feed.core.views import DepthView

    if len(data) > MAX_ENTRY_BYTES:
        raise ValueError("book value over the size limit")
    try:
        body = orjson.loads(data)
        names = {f.name for f in dataclasses.fields(DepthView)}
        kwargs = {k: body[k] for k in names if k in body}
        for side in ("bids", "asks"):
            kwargs[side] = [(float(p), float(q)) for p, q in kwargs.get(side) or []]
        return DepthView(**kwargs)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a book value: {exc}") from None
