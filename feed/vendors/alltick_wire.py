"""AllTick wire forms: endpoint URLs, symbol codes, one pure parser per push, reply wording.

Each ``parse_<message>(d, recv_ns)`` takes the ``data`` object of one push and the local
receive time (UTC ns) and returns one ``feed.core.models`` event; its docstring is the
vendor's sample payload with a comment per field. Missing keys raise KeyError, which the
adapter's ``call_parser`` turns into ``MalformedMessage("missing_field")``. Nothing here
keeps state or does I/O: :class:`feed.vendors.alltick.AllTickAdapter` routes frames here
by ``cmd_id`` and keeps the per-connection request bookkeeping.

Wire format: ../shared/vendor-protocols.md section 2 and the AllTick repository
``websocket_interface/*.md``.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlsplit

from feed.core.models import BUY, SELL, UNKNOWN, BookSnapshot, MalformedMessage, Trade
from feed.vendors._common import (
    clean_symbol,
    exchange_ns,
    levels,
    price,
    shown_url,
    size,
    trade_id,
    ts_to_ns,
)

__all__ = [
    "STOCK_PATH",
    "FOREX_CRYPTO_PATH",
    "endpoints_from",
    "check_ws_url",
    "with_token",
    "SYMBOL_PATTERN",
    "normalize_code",
    "asset_class_of",
    "depth_market_of",
    "parse_trade",
    "parse_depth",
    "Ack",
    "parse_ack",
    "ack_text",
    "refusal_text",
]


#: Paths of the two documented endpoints (stocks; forex, metals and crypto).
STOCK_PATH = "/quote-stock-b-ws-api"
FOREX_CRYPTO_PATH = "/quote-b-ws-api"

# ======================================================================================
# Endpoint URLs
# ======================================================================================


def endpoints_from(url: str) -> tuple[str, str]:
    """Return ``(stock_url, forex_crypto_url)`` for one URL naming another AllTick host.

    ``url`` may end in either documented path (``/quote-stock-b-ws-api`` or
    ``/quote-b-ws-api``): the other is the same host with the other path. Any other path
    (or none) is a prefix both documented paths are appended to, so
    ``ws://127.0.0.1:9000`` serves ``ws://127.0.0.1:9000/quote-stock-b-ws-api`` and
    ``ws://127.0.0.1:9000/quote-b-ws-api``.
    """
    parts = urlsplit(url)
    stock_path, fx_path = STOCK_PATH, FOREX_CRYPTO_PATH
    path = parts.path.rstrip("/")
    for own in (stock_path, fx_path):
        if path.endswith(own):
            path = path[: -len(own)]
            break
    root = f"{parts.scheme}://{parts.netloc}{path}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{root}{stock_path}{query}", f"{root}{fx_path}{query}"


def check_ws_url(url: str, what: str) -> str:
    """Return ``url`` if it is a ws:// or wss:// endpoint without a token in it.

    Raises
    ------
    ValueError
        Naming ``what``; the URL is echoed without its query, which could hold a token.
    """
    parts = urlsplit(url)
    shown = shown_url(parts)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"{what} must start with ws:// or wss://, not {shown!r}")
    if "token=" in parts.query or parts.password:
        raise ValueError(f"{what} must not contain the token; pass token= or set ALLTICK_TOKEN")
    return url


def with_token(url: str, token_text: str) -> str:
    """Return ``url`` with ``token=<token_text>`` appended to its query."""
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}token={token_text}"


# ======================================================================================
# Symbol codes
# ======================================================================================

# Symbol shapes (upper case). Stocks: CODE.MARKET; the rest: plain codes.
_US = r"[A-Z][A-Z0-9\-]{0,9}(?:\.[A-Z])?"       # AAPL, BRK.B
_HK = r"[0-9]{1,5}"                              # 700, 1288 (leading zeros dropped)
_CN = r"[0-9]{6}"                                # 600519, 000001
_STOCK_RE = re.compile(rf"^(?:(?P<us>{_US})\.US|(?P<hk>{_HK})\.HK|(?P<cn>{_CN})\.(?P<ex>SH|SZ))$")
_PLAIN_RE = re.compile(r"^(?=.*[A-Z])[A-Z0-9]{2,20}$")   # BTCUSDT, EURUSD, GOLD, 1INCHUSDT
_HK_DASH_RE = re.compile(r"^HK-([0-9]{1,5})$")           # depth doc example form
#: Quote currencies that mark a plain code as crypto (5 levels) rather than FX/metal (1).
_CRYPTO_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH")

SYMBOL_PATTERN = re.compile(
    rf"^(?:(?:{_US})\.US|(?:{_HK})\.HK|(?:{_CN})\.(?:SH|SZ)|(?=.*[A-Z])[A-Z0-9]{{2,20}})$"
)
_SYMBOL_HELP = (
    "expected CODE.US (AAPL.US), CODE.HK (700.HK), six digits .SH/.SZ (600519.SH) for "
    "stocks, or a plain code (BTCUSDT, EURUSD, GOLD) for crypto, forex and metals"
)



def normalize_code(text: str) -> str:
    """Return ``text`` as an AllTick code, not yet checked against an endpoint.

    Upper-cases, strips white space and ``/`` (``btc/usdt`` -> ``BTCUSDT``), drops
    leading zeros of HK codes (``00700.HK`` -> ``700.HK``) and reads ``HK-1288`` as
    ``1288.HK``.

    Raises
    ------
    ValueError
        With a message for the user when ``text`` is not a valid code.
    """
    sym = clean_symbol(text)
    m = _HK_DASH_RE.match(sym)
    if m:
        sym = f"{m.group(1)}.HK"
    m = _STOCK_RE.match(sym)
    if m and m.group("hk") is not None:
        sym = f"{int(m.group('hk'))}.HK"
    elif not m and not _PLAIN_RE.match(sym):
        raise ValueError(f"{text.strip()!r} is not an AllTick symbol: {_SYMBOL_HELP}")
    return sym


def asset_class_of(symbol: str) -> str:
    """Return ``"stock"`` for ``.US/.HK/.SH/.SZ`` codes, else ``"forex_crypto"``."""
    return "stock" if _STOCK_RE.match(symbol) else "forex_crypto"


def depth_market_of(symbol: str) -> str:
    """Return the depth market of a code: ``US HK SH SZ crypto fx`` (keys of DEPTH_LEVELS)."""
    m = _STOCK_RE.match(symbol)
    if m:
        return "US" if m.group("us") else "HK" if m.group("hk") else m.group("ex")
    if symbol.startswith(("BTC", "ETH")) or any(
        symbol.endswith(q) and len(symbol) > len(q) for q in _CRYPTO_QUOTES
    ):
        return "crypto"
    return "fx"  # forex, metals, commodities: 1 level; a crypto read as fx gets 1


# ======================================================================================
# Small helpers
# ======================================================================================


def _uint(value: object, field: str) -> int | None:
    # seq: int or digit string -> int; missing/None/"" -> None.
    if value is None or value == "":
        return None
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise MalformedMessage("bad_field", f"{field} {value!r}")


# ======================================================================================
# Parsers: one per wire message. Each takes the ``data`` object and the receive time.
# Missing keys raise KeyError, which ``parse`` turns into MalformedMessage("missing_field").
# ======================================================================================

_DIRECTION = {0: UNKNOWN, 1: BUY, 2: SELL, "0": UNKNOWN, "1": BUY, "2": SELL, None: UNKNOWN}


def parse_trade(d: dict, recv_ns: int) -> Trade:
    """Parse a trade push (cmd_id 22998).

    ::

        {"cmd_id": 22998,
         "data": {"code": "AAPL.US",           # symbol as subscribed
                  "seq": "30841440",           # quote number, str or int -> trade_id
                  "tick_time": "1717000000123",  # str or int; ms documented, s seen -> ts_ns
                  "price": "191.52",           # str
                  "volume": "100",             # str; 0 for FX/metals (no real volume)
                  "turnover": "19152.00",      # ignored: tickscope computes price x size
                  "trade_direction": 1}}       # 0 unknown, 1 taker bought, 2 taker sold
    """
    code = d["code"]
    if type(code) is not str or not code:
        raise MalformedMessage("bad_symbol", f"trade code {code!r}")
    p = price(d["price"], "trade price")
    # FX and metals trade with volume 0 (no real volume): a size of 0 is kept.
    q = size(d["volume"], "trade volume", zero_ok=True, price_=p)
    ts = exchange_ns(d["tick_time"], "tick_time")
    direction = d.get("trade_direction")
    side = _DIRECTION.get(direction) if type(direction) is not bool else None
    if side is None:
        raise MalformedMessage("bad_field", f"trade_direction {direction!r}")
    seq = d.get("seq")
    tid = None if seq is None or seq == "" else trade_id(seq, "trade seq", digits_ok=True)
    return Trade(code.upper(), ts, p, q, side, tid, recv_ns)


def parse_depth(d: dict, recv_ns: int) -> BookSnapshot:
    """Parse an order-book push (cmd_id 22999): a full top-N image, replace the book.

    ::

        {"cmd_id": 22999,
         "data": {"code": "BTCUSDT",
                  "seq": "1717000000000001",       # str or int -> last_update_id (not checked)
                  "tick_time": "1717000000456",    # str or int, s or ms -> ts_ns
                  "bids": [{"price": "67000.0", "volume": "0.8"}],   # best first
                  "asks": [{"price": "67000.5", "volume": "1.1"}]}}  # one side may be empty

    FX/metals/CFD levels carry no real volume (missing, empty or "0" -> 0.0).
    """
    code = d["code"]
    if type(code) is not str or not code:
        raise MalformedMessage("bad_symbol", f"depth code {code!r}")
    if "bids" not in d and "asks" not in d:
        raise MalformedMessage("missing_field", "depth push has neither bids nor asks")
    return BookSnapshot(
        code.upper(), ts_to_ns(d["tick_time"], "tick_time"), _uint(d.get("seq"), "seq"),
        levels(d.get("bids"), "bids", price="price", size="volume", descending=True),
        levels(d.get("asks"), "asks", price="price", size="volume", descending=False),
        is_partial=True,
    )


# ======================================================================================
# Replies
# ======================================================================================


class Ack(NamedTuple):
    """The fields of a reply frame (``ret`` present) the adapter words and matches.

    ``ret`` is the status (200 ok), ``cmd_id`` and ``seq_id`` as sent (None if not
    ints), ``request_id`` the echoed ``trace`` (else ``seq_id`` as text) and ``said`` the
    vendor's ``msg`` (may echo a token: redact before showing).
    """

    ret: int
    cmd_id: int | None
    seq_id: int | None
    request_id: str | None
    said: str


def parse_ack(msg: dict) -> Ack:
    """Parse the answer to a request.

    ::

        {"ret": 200,                    # 200 ok, else an error code (RET_WORDS)
         "msg": "ok",
         "cmd_id": 22005,               # request cmd_id + 1 (22001 heartbeat,
                                        # 22003 depth, 22005 trades, 22007 cancel)
         "seq_id": 2,                   # echoed
         "trace": "tickscope-trades-2", # echoed
         "data": {}}

    Raises
    ------
    MalformedMessage
        ``bad_reply`` if ``ret`` is not a number.
    """
    ret, cmd, seq = msg.get("ret"), msg.get("cmd_id"), msg.get("seq_id")
    if type(ret) is str and ret.isdigit():
        ret = int(ret)
    if type(ret) is not int:
        raise MalformedMessage("bad_reply", f"ret {ret!r}")
    trace = msg.get("trace")
    if type(trace) is str and trace:
        request_id: str | None = trace
    else:
        request_id = None if seq is None else str(seq)
    vendor = msg.get("msg")
    return Ack(ret, cmd if type(cmd) is int else None, seq if type(seq) is int else None,
               request_id, "" if vendor is None else str(vendor))


def ack_text(kind: str | None, symbols: tuple[str, ...]) -> str:
    """Return the words for a successful reply to a ``kind`` request about ``symbols``."""
    if kind == "cancel":
        return "AllTick: cancelled all subscriptions"
    doing = kind or "request"
    return f"AllTick: subscribed {doing} for {', '.join(symbols)}" if symbols else f"AllTick: {doing} ok"


def refusal_text(ret: int, words: str, kind: str | None, symbols: tuple[str, ...],
                 added: list[str], said: str) -> str:
    """Return the words for a refused request.

    Parameters
    ----------
    ret : int
        The vendor's status code.
    words : str
        ``ret`` in plain words (``RET_WORDS``).
    kind : str or None
        What the request was (``trades``, ``depth``, ``cancel``, ``heartbeat``).
    symbols : tuple of str
        The symbols the request named.
    added : list of str
        Those not in the list AllTick last accepted: the suspects of a symbol refusal.
    said : str
        The vendor's own message, already redacted.
    """
    doing = kind or "request"
    extra = ""
    if said and said.lower() not in ("ok", words.lower()):
        extra = f"; AllTick says {said[:120]!r}"
    about = f" ({doing} {', '.join(symbols)})" if symbols else f" ({doing})"
    if added and len(added) < len(symbols):
        # The request resent the accepted list plus these: they are the suspects.
        about += f"; added in this request: {', '.join(added)}"
    return f"AllTick error {ret}: {words}{about}{extra}"
