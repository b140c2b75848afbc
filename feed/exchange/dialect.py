"""Binance's market-data dialect as the embedded exchange speaks it (the server side).

Owns the wire facts of shared/vendor-protocols.md section 1 as a server sees them: routes,
stream-name parsing and validation, the control messages (``SUBSCRIBE`` /
``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY``) and their
error replies, the REST depth query rules and JSON responses, and the compact JSON
encoding every message uses. No sockets, threads or clock: the server and the sources
call these functions with text in and text (or a ``Response``) out.
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = [
    "WS_COMBINED_PATH", "WS_RAW_PATH", "REST_DEPTH_PATHS", "REST_PING_PATHS", "CORE_CHANNELS",
    "DEPTH_SPEEDS", "CONTROL_METHODS", "MAX_STREAMS_PER_CONNECTION", "StreamError",
    "ControlError", "ControlRequest", "RestError", "dumps", "split_stream", "stream_key",
    "stream_name_error", "url_streams", "read_control", "check_params", "ws_result",
    "read_depth_query", "json_response", "rest_error", "BACKEND_TIMEOUT", "not_recorded",
]

# -- routes and channels ----------------------------------------------------------------

WS_COMBINED_PATH = "/stream"
WS_RAW_PATH = "/ws"
REST_DEPTH_PATHS = ("/api/v3/depth", "/fapi/v1/depth", "/dapi/v1/depth")
REST_PING_PATHS = ("/api/v3/ping", "/fapi/v1/ping", "/dapi/v1/ping")
REST_DEFAULT_LIMIT = 100
REST_MAX_LIMIT = 5000
#: Channels whose stream names carry no suffix; ``depth`` takes a speed suffix.
CORE_CHANNELS = ("trade", "aggTrade", "bookTicker", "depth")
DEPTH_SPEEDS = ("", "100ms", "1000ms", "0ms", "250ms", "500ms")
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
#: tickscope's own code, not Binance's: a replayed symbol whose recording holds no book.
REST_NOT_RECORDED = -9404

_JSON_SEPARATORS = (",", ":")


def dumps(obj: object) -> str:
    """Return ``obj`` as compact JSON (no spaces), the way Binance writes it."""
    return json.dumps(obj, separators=_JSON_SEPARATORS)


# -- stream names -----------------------------------------------------------------------


class StreamError(ValueError):
    """A stream a client asked for cannot be served; the message says why."""


def split_stream(name: str) -> tuple[str, str, str]:
    """Return (symbol, channel, suffix) of a stream name; suffix "" when absent.

    ``"btcusdt@depth@100ms"`` -> ``("btcusdt", "depth", "100ms")``.
    """
    symbol, _, rest = name.partition("@")
    channel, _, suffix = rest.partition("@")
    return symbol, channel, suffix


def stream_key(name: str) -> tuple[str, str]:
    """Return what a stream name matches on: (symbol, channel).

    Depth speeds collapse to ``"depth"`` (every speed gets the same diffs); other suffixed
    channels (``markPrice@1s``, ``depth5@100ms``) keep their suffix.
    """
    symbol, channel, suffix = split_stream(name)
    if channel in CORE_CHANNELS:
        return symbol, channel
    return symbol, f"{channel}@{suffix}" if suffix else channel


def stream_name_error(name: object) -> str | None:
    """Return why ``name`` is not a well-formed stream name, or None if it is.

    Only the shape is checked, not whether the source serves the stream.
    """
    if not isinstance(name, str) or not name:
        return f"stream names must be non-empty strings, not {name!r}"
    symbol, channel, suffix = split_stream(name)
    if not symbol or not channel:
        return f"invalid stream name {name!r}: expected <symbol>@<channel>"
    if symbol != symbol.lower():
        return f"invalid stream name {name!r}: symbols in stream names must be lowercase"
    if channel == "depth" and suffix not in DEPTH_SPEEDS:
        return f"invalid stream name {name!r}: unknown depth speed {suffix!r}"
    if channel in ("trade", "aggTrade", "bookTicker") and suffix:
        return f"invalid stream name {name!r}: {channel} takes no suffix"
    return None


def url_streams(path: str) -> tuple[str, list[str]]:
    """Return (route, pre-subscribed streams) of a WebSocket request path.

    ``"/stream?streams=a/b"`` -> ``("/stream", ["a", "b"])``; ``"/ws/a/b"`` works the same.
    """
    url = urlsplit(path)
    route = url.path.rstrip("/") or "/"
    if route.startswith(WS_RAW_PATH + "/"):
        return WS_RAW_PATH, [s for s in route[len(WS_RAW_PATH) + 1 :].split("/") if s]
    streams = parse_qs(url.query).get("streams", [""])[0]
    return route, [s for s in streams.split("/") if s]


# -- control messages -------------------------------------------------------------------


class ControlError(Exception):
    """A control message Binance would answer with an error reply.

    Parameters
    ----------
    code : int
        Binance's WebSocket error code (``WS_*``).
    msg : str
        The error text.
    request_id : object
        The request's ``id`` (None when it could not be read).
    """

    def __init__(self, code: int, msg: str, request_id: object = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id

    def reply(self) -> str:
        """Return the error reply, ``{"error":{"code":N,"msg":...},"id":...}``."""
        return dumps({"error": {"code": self.code, "msg": self.msg}, "id": self.request_id})


@dataclass(frozen=True)
class ControlRequest:
    """A well-formed control message: its method, params and id."""

    method: str
    params: list
    request_id: object


def ws_result(result: object, request_id: object) -> str:
    """Return a successful control reply, ``{"result":...,"id":...}``."""
    return dumps({"result": result, "id": request_id})


def _valid_request_id(request_id: object) -> bool:
    # Binance: a signed 64-bit integer, an alphanumeric string of 1-36 chars, or null.
    return (
        request_id is None
        or (isinstance(request_id, int) and not isinstance(request_id, bool)
            and -(2**63) <= request_id < 2**63)
        or (isinstance(request_id, str) and bool(_REQUEST_ID_RE.match(request_id)))
    )


def read_control(message: str | bytes) -> ControlRequest:
    """Parse a control message and check its envelope (JSON object, id, method).

    ``params`` is returned as sent (default ``[]``); its shape is checked per method by
    :func:`check_params`.

    Raises
    ------
    ControlError
        With Binance's reply for a message that is not a valid request.
    """
    try:
        req = json.loads(message)
    except ValueError as exc:
        raise ControlError(WS_INVALID_JSON, f"Invalid JSON: {exc}") from None
    if not isinstance(req, dict):
        raise ControlError(WS_INVALID_REQUEST, "Invalid request: expected a JSON object")
    if "id" not in req:
        raise ControlError(WS_INVALID_REQUEST, "Invalid request: missing field `id`")
    request_id = req.get("id")
    if not _valid_request_id(request_id):
        raise ControlError(
            WS_INVALID_REQUEST,
            "Invalid request: request ID must be a signed 64-bit integer, an alphanumeric "
            "string of at most 36 characters, or null",
        )
    method = req.get("method")
    if method not in CONTROL_METHODS:
        raise ControlError(
            WS_INVALID_REQUEST,
            f"Invalid request: unknown variant `{method}`, expected one of "
            + ", ".join(f"`{m}`" for m in CONTROL_METHODS),
            request_id,
        )
    return ControlRequest(method, req.get("params", []), request_id)


def check_params(req: ControlRequest) -> None:
    """Check the params of a SUBSCRIBE / UNSUBSCRIBE / SET_PROPERTY / GET_PROPERTY request.

    The only property is ``combined`` (a bool). LIST_SUBSCRIPTIONS takes none and is not
    checked.

    Raises
    ------
    ControlError
        With Binance's reply for params of the wrong shape or an unknown property.
    """
    params, request_id = req.params, req.request_id
    if not isinstance(params, list):
        raise ControlError(WS_INVALID_REQUEST, "Invalid request: params must be an array", request_id)
    if req.method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not params or not all(isinstance(p, str) for p in params):
            raise ControlError(WS_INVALID_REQUEST,
                               "Invalid request: params must be a non-empty array of stream names",
                               request_id)
        return
    if not params or not isinstance(params[0], str):
        raise ControlError(WS_INVALID_REQUEST, "Invalid request: property name must be a string", request_id)
    if params[0] != "combined":
        raise ControlError(WS_UNKNOWN_PROPERTY, "Unknown property", request_id)
    if req.method == "SET_PROPERTY" and (len(params) != 2 or not isinstance(params[1], bool)):
        raise ControlError(WS_BAD_VALUE_TYPE, "Invalid value type: expected Boolean", request_id)


# -- REST -------------------------------------------------------------------------------


def json_response(status: int, body: object) -> Response:
    """Return an HTTP response with ``body`` as compact JSON and ``Connection: close``."""
    data = dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def rest_error(status: int, code: int, msg: str) -> Response:
    """Return a Binance REST error response, body ``{"code":N,"msg":...}``."""
    return json_response(status, {"code": code, "msg": msg})


class RestError(Exception):
    """A REST request Binance would refuse; :meth:`response` is the error reply."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg

    def response(self) -> Response:
        """Return the HTTP error response."""
        return rest_error(self.status, self.code, self.msg)


#: The reply to a depth request the source could not answer in time.
BACKEND_TIMEOUT = RestError(503, REST_TIMEOUT, "Timeout waiting for response from backend server. "
                            "Send status unknown; execution status unknown.")


def not_recorded(symbol: str, recorded: Iterable[str] = ()) -> RestError:
    """Return the REST depth refusal of a replayed ``symbol`` whose recording holds no book.

    HTTP 404, body ``{"code":-9404,"msg":"BTCUSDT@depth is not in the recording: ..."}``.
    Binance has no such case (a listed symbol always has a book), so neither its 400
    ``-1121 Invalid symbol`` (a client unsubscribes the symbol: its trades are lost too)
    nor a 5xx (a client retries for ever) fits: 404 says the resource does not exist
    here, and a replay client may stop asking (``feed.core.market``). ``recorded``: the
    symbol's recorded channels, named in the message.
    """
    held = ", ".join(sorted(recorded)) or "nothing"
    return RestError(404, REST_NOT_RECORDED,
                     f"{symbol.upper()}@depth is not in the recording: no order book to serve "
                     f"(recorded for this symbol: {held})")


def read_depth_query(query: dict[str, list[str]]) -> tuple[str, int]:
    """Return (symbol, limit) of a ``/depth`` query, limit capped at ``REST_MAX_LIMIT``.

    Raises
    ------
    RestError
        With Binance's error for a missing or malformed ``symbol`` or ``limit``.
    """
    symbol = (query.get("symbol") or [""])[0]
    if not symbol:
        raise RestError(400, REST_MANDATORY_PARAM,
                        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    if not _REST_SYMBOL_RE.match(symbol):
        raise RestError(400, REST_ILLEGAL_CHARS,
                        "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.")
    limit_text = (query.get("limit") or [str(REST_DEFAULT_LIMIT)])[0]
    if not limit_text.isdigit() or int(limit_text) < 1:
        raise RestError(400, REST_ILLEGAL_CHARS,
                        "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
    return symbol, min(int(limit_text), REST_MAX_LIMIT)
