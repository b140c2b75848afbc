"""HTTP routes beside the dashboard, on the Dash app's Flask server.

``GET /api/health``
    The engine's health JSON (``Engine.health()``), status 200.
``GET /api/bars?symbol=BTCUSDT&bar=1m``
    Every bar the engine holds for the symbol and bar spec (closed bars and the one in
    progress) as ``text/csv`` in the export format (``feed.core.csvformat``). The symbol is
    read by the session's adapter (``engine.normalize_symbol``), so each vendor's own form
    works (``BTCUSDT``, ``AAPL.US``, ``AAPL$US``). Errors are one line of JSON,
    ``{"error": "..."}``: 400 for a missing or malformed symbol or spec, 404 for a
    well-formed symbol that is not subscribed. A last column ``verified`` holds each 1m
    bar's verdict against the vendor's kline (``exact``, ``differs:<fields>`` with the
    fields joined by ``+``, or empty: unverified, or another bar spec).
``GET /api/verify?symbol=BTCUSDT``
    The per-bar verification of the symbol's 1m bars (``Engine.verify``): ``{"symbol",
    "interval", "counts": {"exact", "differs", "unverified"}, "reasons": {code: n},
    "differs": [{"minute", "verdict", "fields": {name: {"vendor", "ours", "diff"}},
    "reason"}]}``; 404 when verification is off or the symbol is not subscribed.
``GET /api/trades?symbol=BTCUSDT&limit=100``
    The latest ``limit`` trades held (default 100, at most 100,000), oldest first, as
    ``text/csv`` with columns ``symbol,trade_id,time,price,size,side`` (``feed.core.flowcsv``):
    ``time`` ISO-8601 UTC with ms and ``Z``, ``side`` the taker side ``buy``/``sell``.
``GET /api/footprint?symbol=BTCUSDT&bar=1m[&step=0.5]``
    One row per bar and price level for every bar of the trades held (the latest 100,000
    at most, ``orderflow_data.MAX_FOOTPRINT_TRADES``), as ``text/csv`` with
    columns ``symbol,bar,start,price,buy_volume,sell_volume,trade_count``; ``price`` is the
    traded price, or the lower edge of its ``step``-wide bin. Time and tick specs only.
    Errors as for ``/api/bars`` (400 for a bad limit, step or spec, 404 for a symbol not
    subscribed).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from feed.core.csvformat import bars_to_csv
from feed.core.models import BarSpec

from .export import export_filename
from .orderflow_data import FlowError, decimals, parse_limit, parse_spec, parse_step, read_footprint, read_tape
from feed.core.flowcsv import footprint_to_csv, trades_to_csv

__all__ = ["register_routes", "register_orderflow_routes", "MAX_SYMBOL_CHARS"]

#: Longest symbol text handed to the adapter (a bound on the cost of one request).
MAX_SYMBOL_CHARS = 64


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def register_routes(server: Flask, engine: Any) -> None:
    """Add the ``/api`` routes to ``server`` (a Dash app's ``app.server``).

    Parameters
    ----------
    server : flask.Flask
    engine
        Read API of ``feed.io.engine.Engine`` (``health``, ``normalize_symbol``,
        ``symbols``, ``bars_frame``).
    """

    register_orderflow_routes(server, engine)

    @server.get("/api/health")
    def health() -> Response:
        return jsonify(engine.health())

    @server.get("/api/bars")
    def bars() -> Response:
        got = _symbol_arg(engine)
        if isinstance(got, Response):
            return got
        symbol = got
        spec_text = (request.args.get("bar") or "").strip()
        if not spec_text:
            return _error(400, "missing query parameter 'bar', e.g. ?symbol=BTCUSDT&bar=1m")
        try:
            spec = BarSpec.from_str(spec_text)
        except ValueError as exc:
            return _error(400, str(exc))
        if symbol not in engine.symbols():
            return _error(404, f"unknown symbol {symbol}: not subscribed")
        try:
            frame = engine.bars_frame(symbol, spec)
            verdicts = _verdicts(engine, symbol) if str(spec) == "1m" else {}
        except KeyError:  # unsubscribed between the check and the read
            return _error(404, f"unknown symbol {symbol}: not subscribed")
        except ValueError as exc:  # a spec too fine for the trades held
            return _error(400, str(exc))
        body = bars_to_csv(
            frame,
            price_decimals=frame.attrs.get("price_decimals", 8),
            size_decimals=frame.attrs.get("size_decimals", 8),
        )
        body = _with_verified(body, frame["start"].tolist(), verdicts)
        return Response(
            body,
            mimetype="text/csv",
            headers={"Content-Disposition": f'inline; filename="{export_filename(symbol, spec, frame)}"'},
        )

    @server.get("/api/verify")
    def verify() -> Response:
        got = _symbol_arg(engine)
        if isinstance(got, Response):
            return got
        if got not in engine.symbols():
            return _error(404, f"unknown symbol {got}: not subscribed")
        try:
            report = engine.verify(got)
        except KeyError:
            return _error(404, f"unknown symbol {got}: not subscribed")
        except ValueError as exc:
            return _error(400, str(exc))
        if report is None:
            return _error(404, "verification is off: it needs Binance with --backfill (REST klines) "
                               "or --kline-check")
        report = {k: v for k, v in report.items() if k != "verdicts"}
        return jsonify(report)


def _symbol_arg(engine: Any) -> str | Response:
    # The normalised ``symbol`` query parameter, or the 400 answer for a bad one.
    text = (request.args.get("symbol") or "").strip()
    if not text:
        return _error(400, "missing query parameter 'symbol', e.g. ?symbol=BTCUSDT")
    if len(text) > MAX_SYMBOL_CHARS:
        return _error(400, f"invalid symbol {text[:40]!r}...: longer than {MAX_SYMBOL_CHARS} characters")
    try:
        return engine.normalize_symbol(text)
    except ValueError as exc:
        return _error(400, f"invalid symbol: {exc}")


def _verdicts(engine: Any, symbol: str) -> dict:
    # Bar start ns -> verdict text of the 1m bars ({} when verification is off).
    verify = getattr(engine, "verify", None)
    report = verify(symbol) if verify is not None else None
    return report["verdicts"] if report else {}


def _with_verified(body: str, starts: list, verdicts: dict) -> str:
    # Append the ``verified`` column (verdict texts hold no comma, quote or newline).
    lines = body.split("\n")
    out = [lines[0] + ",verified"]
    for i, line in enumerate(lines[1:]):
        if not line:
            out.append(line)
            continue
        out.append(line + "," + (verdicts.get(int(starts[i]), "") if i < len(starts) else ""))
    return "\n".join(out)


def _subscribed_symbol(engine: Any) -> str | Response:
    # The symbol of the query, checked as /api/bars checks it, or the error response.
    symbol = _symbol_arg(engine)
    if isinstance(symbol, Response):
        return symbol
    if symbol not in engine.symbols():
        return _error(404, f"unknown symbol {symbol}: not subscribed")
    return symbol


def register_orderflow_routes(server: Flask, engine: Any) -> None:
    """Add ``/api/trades`` and ``/api/footprint`` (see the module docstring) to ``server``."""

    @server.get("/api/trades")
    def trades() -> Response:
        symbol = _subscribed_symbol(engine)
        if isinstance(symbol, Response):
            return symbol
        try:
            limit = parse_limit(request.args.get("limit"))
            frame, held = read_tape(engine, symbol, limit)
        except FlowError as exc:
            return _error(400, str(exc))
        except KeyError:  # unsubscribed between the check and the read
            return _error(404, f"unknown symbol {symbol}: not subscribed")
        price_dp, size_dp = decimals(held)
        return Response(trades_to_csv(symbol, frame, price_decimals=price_dp, size_decimals=size_dp),
                        mimetype="text/csv")

    @server.get("/api/footprint")
    def footprint() -> Response:
        symbol = _subscribed_symbol(engine)
        if isinstance(symbol, Response):
            return symbol
        try:
            spec = parse_spec(request.args.get("bar"))
            step = parse_step(request.args.get("step"))
            frame, held = read_footprint(engine, symbol, spec, step)
        except FlowError as exc:
            return _error(400, str(exc))
        except KeyError:
            return _error(404, f"unknown symbol {symbol}: not subscribed")
        price_dp, size_dp = decimals(held, step)
        return Response(footprint_to_csv(symbol, str(spec), frame, price_decimals=price_dp,
                                         size_decimals=size_dp), mimetype="text/csv")
