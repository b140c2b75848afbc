"""``tickscope serve``: the dashboard and ``/api/*`` reading Redis, under gunicorn.

Usage::

    tickscope serve --redis redis://HOST:PORT/DB [--redis-prefix P] [--host 127.0.0.1]
                    [--port 8050] [--workers N] [--threads T] [bar rules]

No feed of its own: collectors (``tickscope collect --redis URL ...``) publish market
state to Redis and every worker process keeps a replica of it
(``feed.io.redis_reader.RedisReader``), started in the worker after the fork (a Redis
connection and a thread do not survive a fork). The Dash app is served by gunicorn with
the documented custom-application pattern (a ``gunicorn.app.base.BaseApplication``
subclass); each worker serves ``T`` requests at a time on threads (``gthread``). Put any
reverse proxy in front of it; workers need no sticky sessions (what a page needs between
requests lives in its ``dcc.Store`` components).

The bar rules (``--utc-offset``, ``--empty``, ``--late-tolerance``, ...) are those of
``tickscope`` and apply to collectors that do not publish their own.

Redis that cannot be reached at start is one message and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

__all__ = ["main", "build_parser", "ServeApplication", "make_server_app"]

log = logging.getLogger("tickscope.serve")


def _count(name: str, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {text!r}") from None
        if not 1 <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be 1..{hi}, not {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``tickscope serve``."""
    from feed.io.bus import DEFAULT_PREFIX

    from .cli import _add_bar_rules, _port

    p = argparse.ArgumentParser(prog="tickscope serve",
                                description="Serve the dashboard from market state in Redis (no feed).")
    p.add_argument("--redis", required=True, metavar="URL", help="Redis URL, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--redis-prefix", default=DEFAULT_PREFIX, metavar="P",
                   help=f"key prefix the collectors write under (default {DEFAULT_PREFIX})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8050, help="port (default 8050)")
    p.add_argument("--workers", type=_count("--workers", 64), default=1,
                   help="worker processes, each with its own replica (default 1)")
    p.add_argument("--threads", type=_count("--threads", 64), default=8,
                   help="requests each worker serves at a time (default 8)")
    p.add_argument("--interval-ms", type=_count("--interval-ms", 60_000), default=250, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_bar_rules(p)
    return p


def _bar_options(args: argparse.Namespace) -> dict:
    # The bar rules as tickscope's RunConfig turns them into aggregator keywords.
    return {"utc_offset": args.utc_offset, "session_tz": args.session_tz,
            "session_open": args.session_open, "empty": args.empty,
            "late_tolerance_ns": int(args.late_tolerance * 1e9), "session_reset": args.session_reset}


def make_server_app(url: str, prefix: str, bar_options: dict, interval_ms: int = 250) -> Any:
    """Start a :class:`~feed.io.redis_reader.RedisReader` and return the Flask server of a
    dashboard reading it (what one worker serves).

    Raises
    ------
    feed.io.redis_reader.ReaderUnavailable
        When Redis cannot be reached.
    """
    from feed.io.redis_reader import RedisReader

    from .app import create_app

    reader = RedisReader(url, prefix, default_bar_options=bar_options).start()
    app = create_app(reader, interval_ms=interval_ms, source=reader.source_info)
    app.server.config["TICKSCOPE_READER"] = reader
    pid = str(os.getpid())

    @app.server.after_request
    def _worker(response):
        # Which worker answered: for operators behind a proxy, and for the tests that must
        # see every worker's replica agree.
        response.headers["X-Tickscope-Worker"] = pid
        return response

    # Dash registers the script files a page may load while rendering the page itself; a
    # worker that never rendered it refuses them ("not a registered library") when another
    # worker served the page. Rendering it once here registers them in every worker.
    index = app.server.test_client().get("/")
    if index.status_code != 200:
        raise RuntimeError(f"the dashboard page did not render (HTTP {index.status_code})")
    return app.server


def _application_class():
    from gunicorn.app.base import BaseApplication

    class ServeApplication(BaseApplication):
        """gunicorn's custom application: options from ``tickscope serve``, the WSGI app
        built by :func:`make_server_app` in each worker (``preload_app`` off, so after the
        fork)."""

        def __init__(self, factory, options: dict) -> None:
            self._factory = factory
            self._options = options
            super().__init__()

        def load_config(self) -> None:
            for key, value in self._options.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key.lower(), value)

        def load(self):
            return self._factory()

    return ServeApplication


def __getattr__(name: str):
    # ServeApplication imports gunicorn on first use only (the default start never does).
    if name == "ServeApplication":
        return _application_class()
    raise AttributeError(name)


def main(argv: list[str]) -> int:
    """Run ``tickscope serve``; return the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from feed.io.redis_reader import ReaderUnavailable, RedisReader

    try:
        RedisReader(args.redis, args.redis_prefix).check()  # in the master: fail fast, once
    except ReaderUnavailable as exc:
        print(f"tickscope serve: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a malformed URL or prefix
        print(f"tickscope serve: error: {exc}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding the dashboard to %s: anyone who can reach this address sees it", args.host)
    options = _bar_options(args)

    def factory():
        return make_server_app(args.redis, args.redis_prefix, options, args.interval_ms)

    bind = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    print(f"tickscope serve: dashboard on http://{bind}/ with {args.workers} worker(s) reading "
          f"{args.redis} (Ctrl+C to stop)", flush=True)
    _application_class()(factory, {
        "bind": bind, "workers": args.workers, "threads": args.threads, "worker_class": "gthread",
        "timeout": 60, "graceful_timeout": 5, "loglevel": args.log_level.lower(),
        "accesslog": None, "preload_app": False, "proc_name": "tickscope-serve",
        # gunicorn >= 25 opens a control socket at one fixed path per user: two serve
        # instances (or a serve beside any other gunicorn) would take each other's.
        "control_socket_disable": True,
    }).run()
    return 0
