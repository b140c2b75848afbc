"""The Dash application: ``create_app(reader)``.

Tiny on purpose (the dmc-docs ``run.py`` pattern): the layout comes from
``layout.create_layout``, callbacks from ``callbacks.register`` and HTTP routes from
``api.register_routes``, each given the reader as an argument. The reader is the
market-state boundary (``feed.io.bus.MarketReader``): the engine itself in-process, or a
``feed.io.redis_reader.RedisReader`` under ``tickscope serve``. Nothing the app keeps
between requests lives in the server process but caches any worker can rebuild: state
that must follow a page lives in its ``dcc.Store`` components.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import dash

from . import api, callbacks, guard, layout

log = logging.getLogger(__name__)

__all__ = ["create_app", "ASSETS_FOLDER"]

#: The top-level ``assets/`` folder (dark theme CSS).
ASSETS_FOLDER = Path(__file__).resolve().parents[1] / "assets"


def _callback_failed(exc: Exception) -> None:
    # Last resort for a bug in a callback (the inputs are checked before use): the page
    # keeps what it shows (None -> no_update), the traceback goes to the log.
    log.error("dashboard callback failed", exc_info=exc)


def create_app(
    reader: Any,
    *,
    interval_ms: int = 250,
    max_points: int = callbacks.MAX_POINTS,
    keep_points: int = callbacks.KEEP_POINTS,
    source: dict | Callable[[], dict | None] | None = None,
    session_tz: str | None = None,
) -> dash.Dash:
    """Return the dashboard app reading ``reader``.

    Parameters
    ----------
    reader : feed.io.bus.MarketReader
        Source of every figure, the status line and the exports: a
        ``feed.io.engine.Engine`` (in-process) or a ``feed.io.redis_reader.RedisReader``.
    interval_ms : int, default 250
        Period of the live-update timer, milliseconds.
    max_points, keep_points : int
        Cap of closed bars in the candle chart and bars kept by the redraw the cap forces
        (see ``dashboard.callbacks``).
    source : dict or callable, optional
        Where the data comes from (``dashboard.sourcebadge.source_info``), shown as the
        status line's badge (``SIMULATED``, ``REPLAY x10``, ``Binance USD-M``); a callable
        returning it is asked on every refresh (the collectors' sources under ``serve``).
    session_tz : str, optional
        The exchange session's IANA zone (``--session-tz``), offered as a chart time zone.

    Returns
    -------
    dash.Dash
        Serve it with ``app.run(...)``; ``app.server`` is the Flask app.

    Raises
    ------
    ValueError
        If ``interval_ms`` is not positive or the point caps are inconsistent.
    """
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be > 0, not {interval_ms}")
    app = dash.Dash(
        __name__,
        title="tickscope",
        update_title=None,  # no "Updating..." tab title on every tick
        assets_folder=str(ASSETS_FOLDER),
        on_error=_callback_failed,
        # gzip every response the client accepts it for (flask-compress, Dash's own option):
        # live updates are mostly repeated JSON keys and digits, ~4x smaller gzipped.
        compress=True,
    )
    # A function, so every page load lists the symbols subscribed by then.
    app.layout = lambda: layout.create_layout(
        symbols=reader.symbols(), default_spec=reader.default_spec, interval_ms=interval_ms,
        session_tz=session_tz,
    )
    callbacks.register(app, reader, max_points=max_points, keep_points=keep_points, source=source)
    guard.install(app)  # a body that is not one of these callbacks' is answered 400
    api.register_routes(app.server, reader)
    return app
