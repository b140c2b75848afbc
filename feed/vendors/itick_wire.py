"""iTick wire forms: symbol codes, one pure parser per push, and reply wording.

Each ``parse_<message>(d, symbol_of, recv_ns)`` takes the ``data`` object of one push,
a function mapping the pushed ``s`` to the subscribed symbol, and the local receive time
(UTC ns), and returns one ``feed.core.models`` event (or None for a push tickscope skips);
its docstring is the vendor's sample payload with a comment per field. Missing keys raise
KeyError, which the adapter's ``call_parser`` turns into ``MalformedMessage("missing_field")``.
Nothing here keeps state or does I/O: :class:`feed.vendors.itick.ITickAdapter` routes
frames here and keeps the per-connection bookkeeping.

Wire format: ../shared/vendor-protocols.md section 3 (itick-org/free-stock-api
``websocket/*.md``, itick-org/all-example, the official SDKs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from feed.core.models import UNKNOWN, BookSnapshot, MalformedMessage, Trade
from feed.vendors._common import clean_symbol, exchange_ns, levels, price, size, ts_to_ns

__all__ = [
    "SYMBOL_PATTERN",
    "MESSAGE_WORDS",
    "normalize_code",
    "base_url_of",
    "parse_tick",
    "parse_depth",
    "parse_ignored",
    "auth_status",
    "words",
    "code_of",
    "ack_text",
    "refusal_text",
]

#: Vendor messages (lower case, substring) -> plain words for the user.
MESSAGE_WORDS: dict[str, str] = {
    "auth failed": "authentication failed: the API key was refused (check ITICK_TOKEN)",
    "cannot be resolved action": (
        "request not understood (sent before authentication finished, or an action "
        "iTick does not support)"
    ),
    "exceeding the maximum subscription limit": "too many symbols for this iTick plan",
    "e001": "product not found (check the symbol and its region)",
    "e002": "authentication failed (check ITICK_TOKEN)",
    "e003": "subscription limit of this iTick plan reached",
}


# ======================================================================================
# Symbol codes and URLs
# ======================================================================================

_CODE = r"[A-Z0-9][A-Z0-9.\-]{0,19}"
SYMBOL_PATTERN = re.compile(rf"^{_CODE}\$[A-Z]{{2}}$")
_DOT_FORM = re.compile(rf"^({_CODE})\.([A-Z]{{2}})$")      # AAPL.US, BRK.B.US
_BARE = re.compile(r"^[A-Z0-9][A-Z0-9\-]{0,19}$")
_SYMBOL_HELP = (
    "expected CODE$REGION such as AAPL$US, 700$HK, EURUSD$GB or BTCUSDT$BA (AAPL.US also works)"
)


def normalize_code(text: str, default_region: str | None, market: str) -> str:
    """Return ``text`` as ``CODE$REGION`` (upper case).

    Accepts ``AAPL$US``, ``aapl$us``, ``AAPL.US`` (the last dot separates the region:
    ``BRK.B.US`` -> ``BRK.B$US``), and with a ``default_region`` (forex GB, indices GB,
    crypto BA) a bare code (``EURUSD`` -> ``EURUSD$GB``, ``btc/usdt`` -> ``BTCUSDT$BA``).
    Regions are two letters (US, HK, GB, BA, ...); not checked against a list, which
    iTick does not publish.

    Raises
    ------
    ValueError
        With a message for the user (naming ``market``) when ``text`` cannot be read as
        a symbol.
    """
    sym = clean_symbol(text)
    if SYMBOL_PATTERN.match(sym):
        return sym
    m = _DOT_FORM.match(sym)
    if m:
        return f"{m.group(1)}${m.group(2)}"
    if default_region and _BARE.match(sym):
        return f"{sym}${default_region}"
    if _BARE.match(sym):
        raise ValueError(
            f"{text.strip()!r} needs a region on the iTick {market} market, "
            f"e.g. {sym}$US or {sym}$HK"
        )
    raise ValueError(f"{text.strip()!r} is not an iTick symbol: {_SYMBOL_HELP}")


def base_url_of(url: str, market: str) -> str:
    """Return the ``base_url`` for an endpoint URL: ``url`` without a trailing ``/<market>``.

    ``ws://127.0.0.1:9000`` and ``ws://127.0.0.1:9000/stock`` (market ``stock``) both give
    ``ws://127.0.0.1:9000``; ``wss://h/websocket`` (the Python SDK's prefix) stays as is,
    so the market is appended after it.
    """
    base = url.rstrip("/")
    suffix = f"/{market}"
    return base[: -len(suffix)] if base.endswith(suffix) else base


# ======================================================================================
# Parsers: one per wire message. Each takes the ``data`` object, the symbol resolver and
# the receive time. Missing keys raise KeyError -> MalformedMessage("missing_field").
# ======================================================================================


def parse_tick(d: dict, symbol_of: Callable[[object], str], recv_ns: int) -> Trade:
    """Parse a tick push (one trade).

    ::

        {"code": 1,
         "data": {"s": "AAPL",            # AAPL, AAPL.US or AAPL$US -> subscribed AAPL$US
                  "ld": 191.52,           # last (trade) price
                  "v": 100,               # trade volume
                  "t": 1717000000123,     # trade time, ms -> ts_ns
                  "type": "tick"}}        # no aggressor side, no trade id
    """
    p = price(d["ld"], "tick ld")
    # Forex and metals ticks carry volume 0 (no real volume): a size of 0 is kept.
    q = size(d["v"], "tick v", zero_ok=True, price_=p)
    return Trade(symbol_of(d["s"]), exchange_ns(d["t"], "tick t"), p, q, UNKNOWN, None, recv_ns)


def parse_depth(d: dict, symbol_of: Callable[[object], str], recv_ns: int) -> BookSnapshot:
    """Parse a depth push: a full top-N image, replace the book.

    ::

        {"code": 1,
         "data": {"s": "AAPL",
                  "a": [{"po": 1, "p": 191.53, "v": 300, "o": 3}],   # asks: level, price,
                  "b": [{"po": 1, "p": 191.51, "v": 200, "o": 2}],   # volume, orders
                  "type": "depth"}}

    No time field is documented; ``t`` is used when present, else ``ts_ns`` is 0.
    """
    if "a" not in d and "b" not in d:
        raise MalformedMessage("missing_field", "depth push has neither a (asks) nor b (bids)")
    t = d.get("t")
    return BookSnapshot(
        symbol_of(d["s"]), 0 if t is None else ts_to_ns(t, "t"), None,
        levels(d.get("b"), "b", price="p", size="v", rank="po", descending=True),
        levels(d.get("a"), "a", price="p", size="v", rank="po", descending=False),
        is_partial=True,
    )


def parse_ignored(d: dict, symbol_of: Callable[[object], str], recv_ns: int) -> None:
    """Skip a documented push tickscope does not use (``quote``, ``kline@N``).

    ::

        {"code": 1, "data": {"s": "AAPL", "ld": 191.5, "o": 190.1, "h": 192.0, "l": 189.9,
                             "t": 1717000000123, "v": 123456, "tu": 2.3e7, "ts": 0,
                             "type": "quote"}}
    """
    return None


def words(vendor_msg: object) -> str:
    """Return the vendor's message in plain words (:data:`MESSAGE_WORDS`), else as said."""
    text = str(vendor_msg or "").strip()
    low = text.lower()
    for phrase, words in MESSAGE_WORDS.items():
        if phrase in low:
            return words
    return text or "no reason given"


def code_of(msg: dict) -> int | None:
    """Return a frame's ``code`` (1 ok, 0 refused; sometimes a string), None if absent."""
    code = msg.get("code")
    if type(code) is int:
        return code
    if type(code) is str and code.isdigit():
        return int(code)
    return None


def ack_text(action: str, symbols: tuple[str, ...]) -> str:
    """Return the words for a successful reply to ``action`` about ``symbols``."""
    listed = f" {', '.join(symbols)}" if symbols else ""
    done = f"{action}d" if action in ("subscribe", "unsubscribe") else f"{action} ok"
    return f"iTick: {done}{listed}"


def refusal_text(action: str | None, symbols: tuple[str, ...], said: str, *, res_ac: bool) -> str:
    """Return the words for a refusal of ``action`` about ``symbols``.

    Parameters
    ----------
    action : str or None
        The request refused (None: no request was waiting).
    symbols : tuple of str
        The symbols it named.
    said : str
        The vendor's message, already redacted.
    res_ac : bool
        True for a reply that names its action (``resAc``), False for a bare
        ``{"code": 0, "msg": ..}`` matched to the oldest waiting request.
    """
    extra = f" (iTick says {said!r})" if said and words(said) != said else ""
    if res_ac:
        listed = f" {', '.join(symbols)}" if symbols else ""
        return f"iTick refused {action}{listed}: {words(said)}{extra}"
    about = f" ({action} {', '.join(symbols)})" if action else ""
    return f"iTick error: {words(said)}{about}{extra}"


def auth_status(raw: str | bytes) -> bool | None:
    """Return True/False if the raw frame is the auth reply, else None.

    For a client that waits for auth on the socket thread: cheap for frames that are
    not the auth reply (a substring test, no JSON), and never raises.
    """
    marker = b'"auth"' if isinstance(raw, (bytes, bytearray)) else '"auth"'
    if marker not in raw:
        return None
    try:
        msg = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    if type(msg) is not dict or msg.get("resAc") != "auth":
        return None
    return code_of(msg) == 1
