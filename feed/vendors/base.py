"""The one protocol every vendor adapter implements.

An adapter is pure translation between tickscope and one vendor dialect: it names the
endpoint, builds control messages and turns received frames into ``feed.core.models`` events.
It never opens sockets, sleeps, logs per message or calls back; the feed client and the
engine do that (DESIGN.md "Data flows one way").

Life of a connection, as the client drives it::

    ws = connect(adapter.url(symbols))
    on open:   for text in adapter.subscribe_messages(symbols): send(text)   # throttled to
                                                                             # max_messages_per_s
    every heartbeat_interval_s (if not None): send(adapter.heartbeat_message())
    on frame:  events = adapter.parse(frame, recv_ns)       # MalformedMessage -> count, skip
    for a book: url = adapter.snapshot_url(symbol)          # None: depth pushes are snapshots
                book.apply_snapshot(adapter.parse_snapshot(symbol, http_get(url), recv_ns))

Traits (:class:`VendorBase` gives each a default; adapters override data and methods)
--------------------------------------------------------------------------------------
``header()``                  handshake headers (secrets; never logged).
``display_url(symbols)``      the URL to show (tokens masked); default: the client strips
                              secret-looking query parameters.
``redact(text)``              mask the adapter's secrets in text (malformed-sample logs).
``validate_subscription(l)``  the full symbol list about to be subscribed, or ValueError with
                              a message for the user (plan limits, endpoint mixing); called
                              before a symbol is added, so nothing is sent for a refused one.
``replaces_subscriptions``    True: each subscribe replaces the previous one, so the client
                              always passes the FULL current list to ``subscribe_messages``.
``requires_auth_reply``       True: subscribe only after ``auth_status(raw)`` (True / False /
                              None for other frames) said yes, within ``auth_timeout_s``.
``is_fatal_reply(event)``     True for a VendorReply that retrying cannot fix (bad token): the
                              engine tells the client to stop (``FeedClient.fail``).
``http_hints``                {HTTP status: advice} for handshake/REST errors (``{wait}`` is
                              the Retry-After wait, s).
``consecutive_trade_ids``     False: trade ids are not consecutive per symbol, so the engine
                              neither counts gaps nor drops trades as duplicates by id.
``on_open()``                 a new connection opened (called by the client before sending
                              anything on it): forget per-connection state.
``auth_timeout_s``            seconds to wait for the auth reply before retrying.
``time_window_ns``            most ns a trade's or depth event's exchange time may differ
                              from its receive time (``time_out_of_window`` beyond); None:
                              no check (the default, and replays: recorded times are old).
                              Adapters take it as the ``time_window_s`` option; the app sets
                              :data:`DEFAULT_TIME_WINDOW_S` for live feeds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from feed.core.models import BookDelta, BookSnapshot, Event, MalformedMessage, Trade, VendorReply
from feed.vendors._common import check_window

__all__ = ["Event", "VendorAdapter", "VendorBase", "DEFAULT_TIME_WINDOW_S", "time_window_ns"]

#: Default window around the receive time for exchange times, s (one day, as
#: ``feed.core.config.MarketConfig.time_window_s``): a clock that far off is a bug.
DEFAULT_TIME_WINDOW_S = 86_400.0


def time_window_ns(time_window_s: float | None) -> int | None:
    """Return an adapter's ``time_window_s`` option in ns (None stays None: no check).

    Raises
    ------
    ValueError
        Unless it is None or a finite number > 0.
    """
    if time_window_s is None:
        return None
    if type(time_window_s) not in (int, float) or not 0 < time_window_s < 1e9:
        raise ValueError(f"time_window_s must be None or seconds > 0, not {time_window_s!r}")
    return int(time_window_s * 1_000_000_000)


@runtime_checkable
class VendorAdapter(Protocol):
    """A vendor dialect: endpoints, control messages and a parser.

    Attributes
    ----------
    name : str
        Short id used in logs, counters and the UI, e.g. ``"binance"`` or ``"binance-usdm"``.
    symbol_pattern : re.Pattern
        What a normalised symbol of this vendor looks like.
    heartbeat_interval_s : float or None
        Seconds between application heartbeats; None when the vendor needs none (protocol
        pings are answered by the WebSocket library).
    max_messages_per_s : float
        Most control messages the client may send per second on one connection (the vendor
        disconnects above it); subscription bursts must be spread to respect it.
    """

    name: str
    symbol_pattern: re.Pattern[str]
    heartbeat_interval_s: float | None
    max_messages_per_s: float

    def normalize_symbol(self, text: str) -> str:
        """Return the vendor-neutral upper-case form of a symbol a user typed.

        Raises
        ------
        ValueError
            With a message fit to show the user, when ``text`` is not a valid symbol.
        """
        ...

    def url(self, symbols: "list[str] | tuple[str, ...]" = ()) -> str:
        """Return the WebSocket URL to connect to for ``symbols`` (normalised).

        Subscriptions are always (re)sent with :meth:`subscribe_messages` after each open;
        a vendor that can only take symbols in the URL uses ``symbols`` here.
        """
        ...

    def subscribe_messages(self, symbols: "list[str] | tuple[str, ...]") -> list[str]:
        """Return the text frames that subscribe trades and depth for ``symbols``."""
        ...

    def unsubscribe_messages(self, symbols: "list[str] | tuple[str, ...]") -> list[str]:
        """Return the text frames that cancel the subscriptions of ``symbols``."""
        ...

    def heartbeat_message(self) -> str | None:
        """Return the application heartbeat frame, or None when the vendor needs none."""
        ...

    def parse(self, raw: str | bytes, recv_ns: int) -> list[Event]:
        """Return the events in one received frame (possibly none).

        Parameters
        ----------
        raw : str or bytes
            The frame as received (bytes when the client skips UTF-8 validation).
        recv_ns : int
            Local receive time, UTC ns; copied into events that carry it.

        Raises
        ------
        feed.core.models.MalformedMessage
            For anything unusable (bad JSON, missing or mistyped fields, NaN/negative
            numbers, unknown events); never any other exception for bad input.
        """
        ...

    def snapshot_url(self, symbol: str) -> str | None:
        """Return the REST URL of a full depth snapshot, or None if pushes are snapshots."""
        ...

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> BookSnapshot:
        """Return the snapshot in a REST response body.

        Raises
        ------
        feed.core.models.MalformedMessage
            If the body is not a usable snapshot (including vendor error bodies).
        """
        ...


class VendorBase:
    """Defaults for every trait an adapter may have, so callers never probe with getattr.

    An adapter subclasses this and overrides what its vendor does differently; the
    defaults describe a vendor with consecutive trade ids, no auth, no handshake headers,
    no plan limits and no REST snapshots.
    """

    #: Short id used in logs, counters and the UI.
    name: str = "vendor"
    #: Seconds between application heartbeats; None: the vendor needs none.
    heartbeat_interval_s: float | None = None
    #: Control messages the client may send per second on one connection.
    max_messages_per_s: float = 5.0
    #: True: each subscribe replaces the previous one (send the full list every time).
    replaces_subscriptions: bool = False
    #: True: subscribe only after :meth:`auth_status` said yes.
    requires_auth_reply: bool = False
    #: Seconds to wait for the auth reply before retrying.
    auth_timeout_s: float = 10.0
    #: False: trade ids are not consecutive per symbol (no gap or duplicate logic by id).
    consecutive_trade_ids: bool = True
    #: {HTTP status: advice in words} for handshake and REST errors (``{wait}``: Retry-After).
    http_hints: Mapping[int, str] = MappingProxyType({})
    #: Most ns an exchange time may differ from its receive time; None: no check.
    time_window_ns: int | None = None

    def check_time(self, event: object, recv_ns: int) -> object:
        """Return ``event``, or refuse it when its exchange time is out of the window.

        Trades and depth events that carry a time (``ts_ns`` > 0) are checked against
        ``recv_ns`` (``_common.check_window``; a ``recv_ns`` of 0 skips the check).

        Raises
        ------
        MalformedMessage
            ``time_out_of_window``.
        """
        t = type(event)
        if t is Trade or ((t is BookDelta or t is BookSnapshot) and event.ts_ns > 0):
            check_window(event.ts_ns, recv_ns, self.time_window_ns, f"{event.symbol} {t.__name__}")
        return event

    def header(self) -> dict[str, str]:
        """Return handshake headers (may hold secrets: never logged). Default: none."""
        return {}

    def display_url(self, symbols: Iterable[str] = ()) -> str | None:
        """Return the URL to show, secrets masked; None: the client masks it itself."""
        return None

    def redact(self, text: str) -> str:
        """Return ``text`` with this adapter's secrets masked. Default: unchanged."""
        return text

    def validate_subscription(self, symbols: Iterable[str]) -> list[str]:
        """Check the full symbol list about to be subscribed; return it as a list.

        Raises
        ------
        ValueError
            With words for the user (plan limit, endpoint mixing). Default: never.
        """
        return list(symbols)

    def is_fatal_reply(self, reply: VendorReply) -> bool:
        """Return True for a refusal that retrying cannot fix (bad token). Default: False."""
        return False

    def rejected_symbols(self, reply: VendorReply) -> tuple[str, ...]:
        """Return the symbols a refusal names, to unsubscribe again. Default: none."""
        return ()

    def on_open(self) -> None:
        """Forget per-connection state; called before anything is sent on a new connection."""
        return None

    def auth_status(self, raw: str | bytes) -> bool | None:
        """Return True/False for the vendor's auth reply, None for any other frame."""
        return None

    def snapshot_url(self, symbol: str) -> str | None:
        """Return the REST depth-snapshot URL; None: depth pushes are full images."""
        return None

    def parse_snapshot(self, symbol: str, body: bytes, recv_ns: int) -> BookSnapshot:
        """Parse a REST depth snapshot.

        Raises
        ------
        feed.core.models.MalformedMessage
            Always, by default: this vendor serves no REST snapshots.
        """
        raise MalformedMessage("bad_snapshot", "this vendor serves no REST depth snapshots")
