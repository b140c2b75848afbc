"""Collectors seen by a reader: their heartbeats parsed (hostile until checked) and merged
into one :class:`feed.core.health.Status` for the status line and ``/api/health``.

A collector (``tickscope collect``) writes a heartbeat every ``HEARTBEAT_S`` with a TTL
of ``HEARTBEAT_TTL_S`` (``feed.io.bus``): a reader that finds the key gone shows the
collector ``stale``, keeps its symbols with their last figures, marked stale, and shows it
alive again when it beats again. Several collectors merge: symbols in collector-name
order (each collector's in its own order), counters summed, the worst state.

Pure: the caller reads Redis and passes the times in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from feed.core.config import MarketConfig
from feed.core.health import Counters, Status, SymbolStatus, health_json, iso_or_none

__all__ = ["Beat", "parse_beat", "market_of", "symbol_status", "merge_status", "collectors_json", "health_body",
           "STATE_ORDER", "MAX_SYMBOLS", "iso_to_ns"]

#: Feed states, worst first: the merged state is the worst of the collectors'.
STATE_ORDER = ("failed", "stale", "reconnecting", "connecting", "authenticating", "stopped", "live",
               "replay-finished")
#: Most symbols taken from one heartbeat (a bound on what a forged one can cost).
MAX_SYMBOLS = 1000
_MAX_NAME = 128
_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_to_ns(text: Any) -> int | None:
    """Return UTC ns of an ISO-8601 time (``iso_ms`` output, ``Z`` or offset), or None."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


def _int(v: Any, default: int = 0) -> int:
    return v if type(v) is int else default


def _text(v: Any, limit: int = _MAX_NAME) -> str:
    return v[:limit] if isinstance(v, str) else ""


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


@dataclass(frozen=True)
class Beat:
    """One collector's heartbeat (``P:collector:NAME``), checked.

    ``clock_ns`` is its engine clock and ``beat_ns`` its wall clock when written (UTC
    ns); ``health`` its ``Engine.health()`` body; ``source`` its
    ``dashboard.sourcebadge.source_info`` (``progress`` a number or None); ``market``
    its bar rules and limits when it publishes them (else None).
    """

    name: str
    pid: int = 0
    host: str = ""
    symbols: tuple[str, ...] = ()
    clock_ns: int = 0
    beat_ns: int = 0
    health: Mapping[str, Any] = field(default_factory=dict)
    vendor: str = ""
    source: Mapping[str, Any] | None = None
    default_spec: str = "1m"
    market: Mapping[str, Any] | None = None

    @property
    def state(self) -> str:
        """The collector's feed state (``health["feed"]["state"]``) or ``"stopped"``."""
        state = _dict(self.health.get("feed")).get("state")
        return state if state in STATE_ORDER else "stopped"


def parse_beat(name: str, body: Any) -> Beat:
    """Return the :class:`Beat` of ``body`` (the decoded JSON of a heartbeat key).

    Raises
    ------
    ValueError
        If ``body`` is not an object, or its symbols are not a list of short strings.
    """
    if not isinstance(body, dict):
        raise ValueError("heartbeat is not a JSON object")
    symbols = body.get("symbols", [])
    if not isinstance(symbols, list) or len(symbols) > MAX_SYMBOLS:
        raise ValueError("heartbeat symbols are not a list of at most 1000")
    if not all(isinstance(s, str) and 0 < len(s) <= 64 for s in symbols):
        raise ValueError("heartbeat symbols must be strings of 1 to 64 characters")
    source = body.get("source")
    market = body.get("market")
    return Beat(
        name=name, pid=_int(body.get("pid")), host=_text(body.get("host")),
        symbols=tuple(dict.fromkeys(symbols)), clock_ns=_int(body.get("clock_ns")),
        beat_ns=_int(body.get("beat_ns")), health=_dict(body.get("health")),
        vendor=_text(body.get("vendor")), source=source if isinstance(source, dict) else None,
        default_spec=_text(body.get("default_spec"), 40) or "1m",
        market=market if isinstance(market, dict) else None,
    )


def market_of(beat: Beat, default_bar_options: Mapping[str, Any]) -> MarketConfig:
    """Return the market config ``beat``'s collector runs: its published ``market`` when
    valid, else the ``tickscope`` defaults with the clock of its source (a replay runs on
    the exchange clock) and ``default_bar_options``."""
    clock = "exchange" if _dict(beat.source).get("kind") == "replay" else "wall"
    base = {"clock": clock, "default_spec": beat.default_spec, "bar_options": dict(default_bar_options)}
    m = beat.market or {}
    picked = {k: m[k] for k in ("clock", "default_spec", "max_trades", "max_bars", "close_grace_s",
                                "max_series", "max_rebuild_bars") if k in m}
    if isinstance(m.get("bar_options"), dict):
        picked["bar_options"] = m["bar_options"]
    try:
        cfg = MarketConfig(**{**base, **picked})
        if not 0 < cfg.max_trades <= 100_000_000 or not 0 < cfg.max_bars <= 10_000_000:
            raise ValueError("limits out of range")
        return cfg
    except (TypeError, ValueError):
        return MarketConfig(**base)


def symbol_status(body: Any) -> SymbolStatus | None:
    """Return the :class:`SymbolStatus` of its JSON (``SymbolStatus.as_json``), or None."""
    if not isinstance(body, dict):
        return None
    unsynced = body.get("book_unsynced_s")
    absent = body.get("book_absent")
    return SymbolStatus(
        trades=_int(body.get("trades")), last_trade_ts_ns=iso_to_ns(body.get("last_trade_ts")),
        book_synced=body.get("book_synced") is True, gaps=_int(body.get("gaps")),
        gap_events=_int(body.get("gap_events")), book_resyncs=_int(body.get("book_resyncs")),
        book_sequence_gaps=_int(body.get("book_sequence_gaps")), book_crossed=_int(body.get("book_crossed")),
        book_unsynced_s=float(unsynced) if type(unsynced) in (int, float) and math.isfinite(unsynced) else None,
        book_absent=absent[:120] if isinstance(absent, str) and absent else None,
    )


def _counters(beats: Sequence[Beat]) -> Counters:
    total: dict[str, int] = {}
    for b in beats:
        for k, v in _dict(b.health.get("counters")).items():
            if k in Counters.__dataclass_fields__ and type(v) is int:
                total[k] = total.get(k, 0) + v
    return Counters(**total)


def merge_status(beats: Sequence[tuple[Beat, bool]], symbols: Sequence[str], *,
                 symbol_meta: Mapping[str, SymbolStatus] | None = None,
                 clock_ns: int = 0, now_ns: int = 0) -> Status:
    """Return one status for the collectors ``beats`` (``(beat, alive)``, in name order).

    Parameters
    ----------
    beats : sequence of (Beat, bool)
        Each collector's latest heartbeat and whether its key is still there.
    symbols : sequence of str
        The symbols the reader shows, in order.
    symbol_meta : mapping, optional
        Per-symbol figures fresher than the heartbeats' (``P:meta:S``'s ``symbol``).
    clock_ns : int
        The clock to show, UTC ns (the newest collector clock).
    now_ns : int
        Wall clock, UTC ns: ages of stale heartbeats.
    """
    symbol_meta = symbol_meta or {}
    if not beats:
        return Status(state="connecting", detail="no collector has published to Redis yet",
                      clock_ns=clock_ns)
    per_symbol: dict[str, SymbolStatus] = {}
    worst, details, errors, malformed = "replay-finished", [], [], {}
    kline: dict = {}
    history: dict | None = None
    rate, queue = 0.0, 0
    for beat, alive in beats:
        state = beat.state if alive else "stale"
        if STATE_ORDER.index(state) < STATE_ORDER.index(worst):
            worst = state
        if not alive:
            age = max(0, now_ns - beat.beat_ns) / _NS if beat.beat_ns else None
            held = ", ".join(beat.symbols) or "no symbols"
            details.append(f"collector {beat.name} stale" + (f" (no heartbeat for {age:.0f} s)" if age else "")
                           + f": {held}")
        else:
            feed = _dict(beat.health.get("feed"))
            detail = _text(feed.get("detail"), 500)
            if detail and state not in ("live", "replay-finished"):
                details.append(f"collector {beat.name}: {detail}")
            r = feed.get("messages_per_s")
            rate += float(r) if type(r) in (int, float) and math.isfinite(r) else 0.0
            queue += _int(beat.health.get("queue_depth"))
        errors.extend(_text(e, 500) for e in (beat.health.get("errors") or [])[-5:] if isinstance(e, str))
        for k, v in _dict(beat.health.get("malformed_by_reason")).items():
            if isinstance(k, str) and type(v) is int:
                malformed[k] = malformed.get(k, 0) + v
        kline.update(_dict(beat.health.get("kline_check")))
        h = beat.health.get("history")
        if isinstance(h, dict):
            history = h if history is None else history
        for s, body in _dict(beat.health.get("symbols")).items():
            st = symbol_status(body)
            if st is not None and s in beat.symbols:
                per_symbol.setdefault(s, st)
    ordered = {}
    for s in symbols:
        st = symbol_meta.get(s) or per_symbol.get(s)
        ordered[s] = st if st is not None else SymbolStatus()
    return Status(
        state=worst, detail="; ".join(details), messages_per_s=rate, queue_depth=queue,
        counters=_counters([b for b, _ in beats]), symbols=ordered, clock_ns=clock_ns,
        errors=tuple(errors[-5:]), vendor=", ".join(dict.fromkeys(b.vendor for b, _ in beats if b.vendor)) or None,
        kline_check=kline or None, malformed_by_reason=malformed, history=history,
    )


def collectors_json(beats: Sequence[tuple[Beat, bool]]) -> dict[str, dict]:
    """Return ``/api/health``'s ``collectors``: ``{NAME: {"alive", "symbols", "counters",
    "last_beat", "state", "host", "pid", "vendor"}}`` (``last_beat`` ISO-8601 UTC)."""
    out = {}
    for beat, alive in beats:
        out[beat.name] = {
            "alive": alive, "symbols": list(beat.symbols),
            "counters": _counters([beat]).as_dict(), "last_beat": iso_or_none(beat.beat_ns or None),
            "state": beat.state if alive else "stale", "host": beat.host, "pid": beat.pid,
            "vendor": beat.vendor or None,
        }
    return out


def health_body(status: Status, beats: Sequence[tuple[Beat, bool]], owners: Mapping[str, str]) -> dict:
    """Return ``/api/health`` of a reader: ``health_json(status)`` with ``collectors``
    (:func:`collectors_json`) and, per symbol, ``collector`` (its owner's name) and
    ``stale`` (True while that collector's heartbeat is missing)."""
    body = health_json(status)
    alive = {b.name: a for b, a in beats}
    for s, sym in body["symbols"].items():
        owner = owners.get(s)
        sym["collector"] = owner
        sym["stale"] = not alive.get(owner, False)
    body["collectors"] = collectors_json(beats)
    body["latency_ms"] = None
    return body
