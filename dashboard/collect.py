"""``tickscope collect``: a feed and engine with no web server, publishing to Redis.

Usage::

    tickscope collect --redis redis://HOST:PORT/DB [--name NAME] [--redis-prefix P]
                      [--redis-retention DURATION] [the feed options of ``tickscope``:
                      --vendor ... --symbols ... --replay ... --speed ... --data-dir ...]

The run is the one ``tickscope`` starts (:func:`dashboard.runtime.start_runtime`, without
the Dash app); each engine cycle is published by :class:`feed.io.redis_writer.RedisPublisher`
and ``P:commands`` is followed by :class:`feed.io.redis_commands.CommandConsumer` (layout:
:mod:`feed.io.bus`). Each symbol is owned by one collector (``P:owner:S``): a symbol a
live collector owns already, a bad URL or an unreachable Redis is one message and exit
code 2. SIGTERM or SIGINT stops the feed, writes what is queued, removes the heartbeat and
releases the owner keys.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .runconfig import UsageError, parse_duration

__all__ = ["main", "build_collect_parser", "start_collector", "Collector"]

log = logging.getLogger("tickscope")

#: Default ``--redis-retention``: trade and bar stream entries kept this long (wall time).
DEFAULT_RETENTION = "24h"


def build_collect_parser() -> argparse.ArgumentParser:
    """Return the parser of ``tickscope collect``: the feed options of ``tickscope`` plus
    ``--redis``, ``--name``, ``--redis-prefix``, ``--redis-retention`` (``--host`` and
    ``--port`` are accepted and ignored: a collector serves nothing)."""
    from feed.io.bus import DEFAULT_PREFIX

    from .cli import build_parser

    p = build_parser()
    p.prog = "tickscope collect"
    p.description = "Run a feed and engine with no web server and publish them to Redis."
    g = p.add_argument_group("Redis")
    g.add_argument("--redis", required=True, metavar="URL",
                   help="Redis to publish to, e.g. redis://127.0.0.1:6379/0")
    g.add_argument("--name", default=None,
                   help="this collector's name (default HOST-PID); its heartbeat key and owner keys carry it")
    g.add_argument("--redis-prefix", default=DEFAULT_PREFIX, metavar="P",
                   help=f"key prefix (default {DEFAULT_PREFIX})")
    g.add_argument("--redis-retention", default=DEFAULT_RETENTION, metavar="DURATION",
                   help=f"keep stream entries this long, e.g. 6h, 1d, 0 = no trim (default {DEFAULT_RETENTION})")
    return p


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            user = parts.username or ""
            host = parts.hostname or ""
            netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"
    return url


def connect(url: str) -> Any:
    """Return a ``redis.Redis`` client of ``url`` that answered PING.

    Raises
    ------
    UsageError
        For a URL the client cannot parse or a Redis that does not answer.
    """
    import redis

    shown = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=3.0,
                                      health_check_interval=10)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--redis: not a Redis URL ({shown}): {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise UsageError(f"--redis: cannot reach Redis at {shown}: {exc}") from None
    return client


class Collector:
    """One running collector: the runtime, its publisher and command consumer.

    Built by :func:`start_collector`; :meth:`stop` shuts it down (idempotent).
    """

    def __init__(self, client: Any, keys: Any, name: str, retention_s: float, url: str) -> None:
        self.client = client
        self.keys = keys
        self.name = name
        self.retention_s = retention_s
        self.url = url
        self.runtime: Any = None
        self.publisher: Any = None
        self.commands: Any = None
        self._claimed: list[str] = []
        self._stopped = False

    def _before_feed(self, rt: Any, symbols: list[str]) -> None:
        # Claim the symbols, then attach the publisher: before any trade is applied.
        from dashboard.sourcebadge import source_info
        from feed.io.redis_commands import OwnershipError, claim_symbol, release_symbol
        from feed.io.redis_writer import RedisPublisher

        import redis

        try:
            for s in symbols:
                claim_symbol(self.client, self.keys, s, self.name)
                self._claimed.append(s)
        except (OwnershipError, redis.RedisError) as exc:
            for s in self._claimed:
                try:
                    release_symbol(self.client, self.keys, s, self.name)
                except redis.RedisError:
                    pass
            if isinstance(exc, OwnershipError):
                raise UsageError(f"{exc.symbol} is owned by the live collector {exc.owner!r}; stop it "
                                 f"or leave {exc.symbol} out of --symbols") from None
            raise UsageError(f"--redis: cannot reach Redis at {redact_url(self.url)}: {exc}") from None
        info = {"vendor": rt.engine.adapter.name, "source": source_info(rt.config, rt.exchange)}
        self.publisher = RedisPublisher(rt.engine, self.client, self.name, self.keys,
                                        retention_s=self.retention_s, info=info)
        rt.engine.attach_publisher(self.publisher)
        self.publisher.start()

    def stop(self) -> None:
        """Stop the feed and engine, write what is queued, remove the heartbeat and release
        the owner keys still ours."""
        if self._stopped:
            return
        self._stopped = True
        if self.commands is not None:
            self.commands.stop()
        symbols = self.runtime.engine.symbols() if self.runtime is not None else []
        if self.runtime is not None:
            self.runtime.stop()
        if self.publisher is not None:
            self.publisher.stop()
        from feed.io.redis_commands import release_symbol

        for s in {*symbols, *self._claimed}:
            try:
                release_symbol(self.client, self.keys, s, self.name)
            except Exception:
                pass


def start_collector(argv: list[str], **runtime_options: Any) -> Collector:
    """Start a collector for ``tickscope collect`` arguments (without ``collect``).

    ``runtime_options`` go to :func:`dashboard.runtime.start_runtime` (tests shorten the
    feed's timings).

    Raises
    ------
    SystemExit
        With code 2, from argparse, for an unknown option or a malformed value.
    UsageError
        For a bad URL, an unreachable Redis, a symbol owned by another live collector, a
        collector of the same name alive, or any ``tickscope`` usage error.
    """
    return _start(build_collect_parser().parse_args(argv), runtime_options)


def _start(args: argparse.Namespace, runtime_options: dict) -> Collector:
    from feed.io.bus import Keys
    from feed.io.redis_commands import CommandConsumer

    from .cli import config_from_args
    from .runtime import start_runtime

    config = config_from_args(args)
    retention = parse_duration(args.redis_retention, "--redis-retention")
    try:
        keys = Keys(args.redis_prefix)
    except ValueError as exc:
        raise UsageError(f"--redis-prefix: {exc}") from None
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise UsageError(f"--name: 1 to 100 characters without spaces, not {name!r}")
    client = connect(args.redis)
    if _name_alive(client.get(keys.collector(name))):
        raise UsageError(f"--name: a live collector named {name!r} already publishes to this Redis; "
                         "choose another name")
    col = Collector(client, keys, name, retention, args.redis)
    try:
        col.runtime = start_runtime(config, serve=False, before_feed=col._before_feed, **runtime_options)
    except BaseException:
        col.stop()  # a publisher already started: its thread and owner keys
        raise
    exchange = col.runtime.exchange  # the embedded one serves only the symbols it plays or simulates
    serves = (lambda s: exchange.serves(s, "trade")) if exchange is not None else None
    col.commands = CommandConsumer(col.runtime.engine, client, name, keys, serves).start()
    col.publisher.commands = col.commands
    return col


def _name_alive(beat: bytes | None) -> bool:
    # A heartbeat of this name is alive unless it is this host's and its process is gone
    # (killed a moment ago: its key has not expired yet, and a restart takes over).
    if beat is None:
        return False
    import orjson

    try:
        body = orjson.loads(beat)
        host, pid = body["host"], int(body["pid"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return True
    if host != socket.gethostname() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def main(argv: list[str]) -> int:
    """Run ``tickscope collect`` until SIGTERM or SIGINT; return the exit code (2 on a
    usage error)."""
    from .cli import setup_logging

    parser = build_collect_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    # Handlers first: a signal during start-up (owner keys already claimed) still stops
    # cleanly, once the start is done.
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        col = _start(args, {})
    except UsageError as exc:
        print(f"tickscope collect: error: {exc}", file=sys.stderr)
        return 2
    print(f"tickscope collect: {col.name} publishing {','.join(col.runtime.engine.symbols())} to "
          f"{redact_url(args.redis)} (prefix {col.keys.prefix}; Ctrl+C to stop)", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        col.stop()
    return 0
