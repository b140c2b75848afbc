"""Helpers shared by the vendor adapters: secrets, wire numbers and times, frame decoding.

Pure functions and one small value class; no adapter state. The adapters re-export what
was public before (``feed.vendors.alltick.Secret``, ``ts_to_ns``).
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

from feed.core.models import MalformedMessage

__all__ = [
    "Secret",
    "load_token",
    "redact",
    "SECRET_NAME",
    "ts_to_ns",
    "number",
    "clean_symbol",
    "load_object",
    "call_parser",
    "shown_url",
    "dumps",
]

_MAX_TS = 4_000_000_000_000_000_000  # ns, year 2096

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


def ts_to_ns(value: object, field: str = "time") -> int:
    """Return a vendor timestamp in UTC ns; the unit is inferred from the magnitude.

    Accepts an int, a float, or a string of digits (optionally with a fraction). Values
    below 1e11 are seconds (1e11 s is the year 5138; 1e11 ms is 1973), below 1e14 ms, below
    1e17 microseconds, else nanoseconds.

    Raises
    ------
    MalformedMessage
        ``bad_time`` for anything else (bools, negative, zero, NaN, text).
    """
    if type(value) is int:
        n: int | Decimal = value
    elif type(value) is str or type(value) is float:
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


def number(value: object, field: str) -> float:
    """Return a JSON number or numeric string as a finite float.

    Raises
    ------
    MalformedMessage
        ``bad_field`` for bools, text, NaN and infinities.
    """
    if type(value) is str or type(value) is int or type(value) is float:
        try:
            x = float(value)
        except ValueError:
            raise MalformedMessage("bad_field", f"{field} {value!r}") from None
        if math.isfinite(x):
            return x
    raise MalformedMessage("bad_field", f"{field} {value!r}")


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
        msg = json.loads(raw)
    except (ValueError, TypeError, RecursionError) as exc:  # incl. UnicodeDecodeError
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
