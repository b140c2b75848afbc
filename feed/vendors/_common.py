"""Helpers shared by the vendor adapters: secrets, wire numbers, times and depth levels.

Pure functions and one small value class; no adapter state. There is one implementation
of each wire helper here: :func:`number` (prices and sizes), :func:`ts_to_ns` (exchange
times) and :func:`levels` (depth levels of every vendor's row shape, in
:mod:`feed.vendors.depth_levels` with :func:`level_sides`; re-exported here). The adapters
re-export what was public before (``feed.vendors.alltick.Secret``, ``ts_to_ns``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import TypeVar
from urllib.parse import SplitResult, quote

import orjson

from feed.core.models import MalformedMessage

__all__ = [
    "Secret",
    "load_token",
    "redact",
    "SECRET_NAME",
    "ts_to_ns",
    "number",
    "price",
    "size",
    "trade_id",
    "exchange_ns",
    "check_window",
    "MAX_PRICE",
    "MAX_SIZE",
    "MAX_NOTIONAL",
    "levels",
    "level_sides",
    "clean_symbol",
    "load_object",
    "call_parser",
    "shown_url",
    "dumps",
]

_MAX_TS = 4_000_000_000_000_000_000  # ns, year 2096
#: Earliest exchange time taken from a vendor (2000-01-01 UTC, ns): T = 0, 1 or -1000 ms
#: is a placeholder or a bug, never a trade.
_MIN_TS = 946_684_800_000_000_000
_INF = math.inf
_INT64_END = 2**63

#: Sane ranges of a trade's values. Prices and sizes are far beyond any instrument
#: (BTC in satoshi-priced tokens stays below 1e12); the notional bound keeps turnover and
#: VWAP sums finite and exact enough in float64 over any number of trades.
MAX_PRICE = 1e12   # quote currency per base unit
MAX_SIZE = 1e12    # base units
MAX_NOTIONAL = 1e18  # price * size, quote currency

# A plain decimal as vendors write it: optional sign, ASCII digits with at most one point,
# optional exponent. float() also takes "5_0", " 5 ", "infinity", "nan" and non-ASCII
# digits; none of them is a price a vendor sends.
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

#: What a parser raises for a present but unusable field (turned into ``bad_field``).
_FIELD_ERRORS = (TypeError, ValueError, IndexError, AttributeError, OverflowError)

_T = TypeVar("_T")


# ======================================================================================
# Secrets
# ======================================================================================


class Secret:
    """A credential that never shows itself in ``repr``, ``str`` or f-strings.

    ``reveal()`` returns the value for the one place that must send it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (to send it, never to show it)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __reduce__(self):  # pickling would copy the value somewhere it can leak
        raise TypeError("a Secret cannot be pickled")


def load_token(token: str | None, env: str, vendor: str, hint: str) -> Secret:
    """Return the token from ``token`` or the environment variable ``env`` as a :class:`Secret`.

    Raises
    ------
    ValueError
        If there is none, or it contains white space or control characters (which would
        corrupt a URL or an HTTP header). The message never contains the token.
    """
    value = token if token is not None else os.environ.get(env)
    if value is None or not str(value).strip():
        raise ValueError(f"{vendor} needs a token: pass token= or set {env} ({hint})")
    value = str(value).strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"the {vendor} token in {env} contains spaces or control characters")
    return Secret(value)


#: Query-parameter and header names that carry secrets.
SECRET_NAME = re.compile(r"token|key|secret|sign|pass|auth|cookie|session|credential", re.IGNORECASE)
# ``name=value`` pairs whose name looks secret, in free text (URLs in error messages).
_SECRET_PARAM = re.compile(
    r"(?i)\b([\w.-]*(?:token|key|secret|signature|sign|password|passwd|auth)[\w.-]*=)[^&\s\"']+")


def redact(text: str, secrets: Secret | str | Iterable[Secret | str] = (), *,
           url_quoted: bool = False) -> str:
    """Return ``text`` with each secret, and every ``token=...``-like value, masked as ``***``.

    The one redaction helper: the adapters pass their :class:`Secret`, the feed client and
    the snapshot fetcher the token and header values they hold.

    Parameters
    ----------
    text : str
        Text to show (an error message, a URL, a vendor reply).
    secrets : Secret, str or iterable of them
        Values to mask wherever they occur. Secrets shorter than 4 characters are not
        searched for (they would mangle words).
    url_quoted : bool
        Also mask each secret's percent-encoded form (as sent in a URL query).

    Returns
    -------
    str
        The masked text.
    """
    if isinstance(secrets, (str, Secret)):
        secrets = (secrets,)
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else str(secret or "")
        if len(value) < 4:
            continue
        text = text.replace(value, "***")
        if url_quoted:
            text = text.replace(quote(value, safe=""), "***")
    return _SECRET_PARAM.sub(r"\1***", text)


def shown_url(parts: SplitResult) -> str:
    """Return a URL fit to echo in an error: no user info, no query (either may hold a secret)."""
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


# ======================================================================================
# Wire values
# ======================================================================================


def ts_to_ns(value: object, field: str = "time", *, unit_ns: int | None = None) -> int:
    """Return a vendor timestamp in UTC ns.

    Parameters
    ----------
    value : object
        The wire value.
    field : str
        Its name, for the error message.
    unit_ns : int, optional
        Nanoseconds per unit of a vendor that documents one unit and sends JSON integers
        (Binance: ms, ``1_000_000``); ``value`` must then be an int and is only scaled.
        None: the unit is inferred from the magnitude, and ``value`` may be an int, a
        float, or a string of digits (optionally with a fraction). Values below 1e11 are
        seconds (1e11 s is the year 5138; 1e11 ms is 1973), below 1e14 ms, below 1e17
        microseconds, else nanoseconds.

    Returns
    -------
    int
        UTC ns.

    Raises
    ------
    MalformedMessage
        With ``unit_ns``: ``bad_field`` for anything but an int (a wrong JSON type).
        Without: ``bad_time`` for anything unusable (bools, negative, zero, NaN, text).
    """
    if unit_ns is not None:
        if type(value) is not int:
            raise MalformedMessage("bad_field", f"{field} {value!r}")
        return value * unit_ns
    if type(value) is int:
        n: int | Decimal = value
    elif type(value) is str or type(value) is float:
        if type(value) is str and _PLAIN_DECIMAL.fullmatch(value.strip()) is None:
            raise MalformedMessage("bad_time", f"{field} {value!r}")
        try:
            n = Decimal(value.strip() if type(value) is str else repr(value))
        except InvalidOperation:
            raise MalformedMessage("bad_time", f"{field} {value!r}") from None
        if not n.is_finite():
            raise MalformedMessage("bad_time", f"{field} {value!r}")
        if n == n.to_integral_value():
            n = int(n)
    else:
        raise MalformedMessage("bad_time", f"{field} {value!r}")
    if not 0 < n < _MAX_TS:
        raise MalformedMessage("bad_time", f"{field} {value!r}")
    if n < 100_000_000_000:
        scale = 1_000_000_000
    elif n < 100_000_000_000_000:
        scale = 1_000_000
    elif n < 100_000_000_000_000_000:
        scale = 1_000
    else:
        scale = 1
    ns = int(n * scale)
    if ns >= _MAX_TS:  # after 2096: not a timestamp in any unit
        raise MalformedMessage("bad_time", f"{field} {value!r}")
    return ns


def number(value: object, field: str, *, finite: bool = True, reason: str = "bad_field") -> float:
    """Return a JSON number or numeric string as a float.

    Parameters
    ----------
    value : object
        The wire value: an int, a float or a numeric string (``"61837.63"``).
    field : str
        Its name, for the error message.
    finite : bool, default True
        False: return NaN and infinities too, for a caller whose range check names them
        (Binance counts a NaN price as ``bad_price``).
    reason : str, default "bad_field"
        The reason of the MalformedMessage raised (``bad_price`` for a price field).

    Raises
    ------
    MalformedMessage
        ``reason`` for bools, other types, text that is not a plain decimal
        (``"5_0"``, ``" 5 "``, ``"inf"``, ``"nan"`` are refused) and (with ``finite``)
        NaN and infinities.
    """
    return _float(value, field, reason, finite)


def _float(value: object, field: str, reason: str, finite: bool = True) -> float:
    # The one wire-number reader: JSON numbers (not bools) and plain decimal text only.
    t = type(value)
    if t is str:
        if _PLAIN_DECIMAL.fullmatch(value) is None:
            raise MalformedMessage(reason, f"{field} {value!r}")
        x = float(value)
    elif t is float or t is int:
        try:
            x = float(value)
        except OverflowError:  # an int beyond float range
            raise MalformedMessage(reason, f"{field} {value!r}") from None
    else:
        raise MalformedMessage(reason, f"{field} {value!r}")
    if finite and not math.isfinite(x):
        raise MalformedMessage(reason, f"{field} {value!r}")
    return x


def price(value: object, field: str) -> float:
    """Return a trade price (quote currency), checked.

    Raises
    ------
    MalformedMessage
        ``bad_price`` unless ``value`` is a JSON number (not a bool) or plain decimal text
        (no underscores, spaces, ``inf``/``nan`` words) with 0 < price < :data:`MAX_PRICE`.
    """
    x = _float(value, field, "bad_price")
    if not 0.0 < x < MAX_PRICE:
        raise MalformedMessage("bad_price", f"{field} {value!r}")
    return x


def size(value: object, field: str, *, zero_ok: bool = False, price_: float | None = None) -> float:
    """Return a trade size (base units), checked.

    Parameters
    ----------
    value, field
        The wire value and its name.
    zero_ok : bool
        Accept 0 (AllTick and iTick FX and metals carry no real volume).
    price_ : float, optional
        The trade's price: ``price_ * size`` must stay below :data:`MAX_NOTIONAL`.

    Raises
    ------
    MalformedMessage
        ``bad_size`` for anything but a number of plain form with 0 < size (0 <= size
        with ``zero_ok``) < :data:`MAX_SIZE` and a notional below :data:`MAX_NOTIONAL`.
    """
    x = _float(value, field, "bad_size")
    if not ((0.0 <= x) if zero_ok else (0.0 < x)) or not x < MAX_SIZE or (
            price_ is not None and not price_ * x < MAX_NOTIONAL):
        raise MalformedMessage("bad_size", f"{field} {value!r}")
    return x


def trade_id(value: object, field: str, *, digits_ok: bool = False) -> int:
    """Return a trade id that fits int64 (0 <= id < 2**63).

    ``digits_ok``: also take a string of ASCII digits (AllTick ``seq``).

    Raises
    ------
    MalformedMessage
        ``bad_trade_id`` for bools, floats, other text and ids out of range.
    """
    if type(value) is str and digits_ok and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value < _INT64_END:
        raise MalformedMessage("bad_trade_id", f"{field} {value!r}")
    return value


def exchange_ns(value: object, field: str, *, unit_ns: int | None = None) -> int:
    """Return an exchange time in UTC ns between 2000 and 2096 (:func:`ts_to_ns`).

    Raises
    ------
    MalformedMessage
        ``bad_time`` for bools, wrong types, unusable text and times outside 2000-2096
        (T = 0, 1, -1000 or 10^18 ms).
    """
    if unit_ns is not None and type(value) is not int:
        raise MalformedMessage("bad_time", f"{field} {value!r}")
    ns = ts_to_ns(value, field, unit_ns=unit_ns)
    if not _MIN_TS <= ns < _MAX_TS:
        raise MalformedMessage("bad_time", f"{field} {value!r}")
    return ns


def check_window(ts_ns: int, recv_ns: int, window_ns: int | None, what: str) -> None:
    """Refuse an exchange time more than ``window_ns`` from the local receive time.

    ``window_ns`` None (replays: recorded times are old) or a ``recv_ns`` before 2000
    (0 or a small placeholder: parsing without a receive time) skips the check.

    Raises
    ------
    MalformedMessage
        ``time_out_of_window``, naming both times.
    """
    if window_ns is not None and recv_ns >= _MIN_TS and abs(ts_ns - recv_ns) > window_ns:
        raise MalformedMessage("time_out_of_window", f"{what} at {ts_ns} ns received at {recv_ns} ns")


def clean_symbol(text: object) -> str:
    """Return a typed symbol upper-cased, stripped and without ``/`` (not yet validated).

    Raises
    ------
    ValueError
        If ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise ValueError(f"a symbol must be text, not {type(text).__name__}")
    return text.strip().upper().replace("/", "")


# ======================================================================================
# Frames
# ======================================================================================


def load_object(raw: str | bytes) -> dict:
    """Return a received frame's JSON object.

    Raises
    ------
    MalformedMessage
        ``bad_json`` (not JSON, not UTF-8, nested too deep) or ``bad_shape`` (not an object).
    """
    try:
        msg = orjson.loads(raw)  # several times json.loads; same values, stricter (no NaN literal)
    except (ValueError, TypeError, RecursionError) as exc:  # incl. invalid UTF-8
        raise MalformedMessage("bad_json", str(exc)[:200]) from None
    if type(msg) is not dict:
        raise MalformedMessage("bad_shape", f"top level is {type(msg).__name__}, not an object")
    return msg


def call_parser(where: str, parser: Callable[..., _T], *args: object) -> _T:
    """Return ``parser(*args)``, its field errors turned into :class:`MalformedMessage`.

    A missing key becomes ``missing_field``, a present but unusable value ``bad_field``
    (both say ``where``); a MalformedMessage raised by the parser passes unchanged.
    """
    try:
        return parser(*args)
    except KeyError as exc:
        raise MalformedMessage("missing_field", f"{where}: no {exc}") from None
    except _FIELD_ERRORS as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage("bad_field", f"{where}: {exc}") from None


def dumps(obj: object) -> str:
    """Return ``obj`` as compact JSON (a control frame)."""
    return json.dumps(obj, separators=(",", ":"))


def __getattr__(name: str) -> object:
    # levels and level_sides live in feed.vendors.depth_levels, which reads the ranges and
    # the decimal pattern above: found there on first use, so neither module imports the
    # other while it loads.
    if name in ("levels", "level_sides"):
        from feed.vendors import depth_levels

        return getattr(depth_levels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
