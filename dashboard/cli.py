"""The ``tickscope`` command (also ``python -m dashboard``).

Usage::

    tickscope [--replay FILE ...] [--speed X] [--vendor binance] [--market spot|usdm]
              [--symbols A,B] [--url WS_URL] [--rest-url URL] [--data-dir DIR]
              [--host 127.0.0.1] [--port 8050]
    tickscope bars INPUT... --bar SPEC [--symbol S] [--format FMT] [-o OUT]

With no arguments it starts the embedded local exchange (a seeded market simulator) on
loopback, connects the ordinary Binance adapter to it and serves the dashboard. With
``--replay`` the embedded exchange plays recorded sessions instead, and the engine's clock
follows the replayed exchange time. ``--vendor binance`` connects to Binance's public
streams; ``--url`` points the Binance dialect at any endpoint.

A bad argument or unreadable file prints one message naming the problem and exits with
code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["main", "build_parser", "Runtime", "start_runtime"]

log = logging.getLogger("tickscope")

DEFAULT_SYMBOLS_SIM = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class UsageError(Exception):
    """A bad argument or input file; its message is printed and the exit code is 2."""


def _positive_speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number, not {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--speed must be >= 0 (0 = as fast as possible), not {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be 0..65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``tickscope`` command."""
    p = argparse.ArgumentParser(
        prog="tickscope",
        description="Live market-data dashboard: vendor ticks to local bars and order-book depth.",
    )
    p.add_argument("--replay", nargs="+", metavar="FILE", default=[],
                   help="recorded session files (plain or .gz, '<recv time> <JSON>' per line) "
                        "to play through the embedded exchange, in time order")
    p.add_argument("--speed", type=_positive_speed, default=1.0,
                   help="replay speed: 1 = recorded pacing, 10 = ten times faster, 0 = as fast as possible")
    p.add_argument("--vendor", choices=["binance"], default=None,
                   help="live vendor to connect to (default: the embedded local exchange)")
    p.add_argument("--market", choices=["spot", "usdm"], default="spot",
                   help="Binance market: spot or USD-M futures (default spot)")
    p.add_argument("--symbols", default=None,
                   help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT (replay: default every symbol in the files)")
    p.add_argument("--url", default=None,
                   help="WebSocket endpoint replacing the vendor's (Binance: the combined-stream URL, "
                        "e.g. ws://127.0.0.1:9000/stream)")
    p.add_argument("--rest-url", default=None,
                   help="base URL for REST depth snapshots (default: http(s) on the --url host)")
    p.add_argument("--data-dir", default=None,
                   help="where tickscope keeps its files (default: the platform's user data dir)")
    p.add_argument("--host", default="127.0.0.1", help="dashboard bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8050, help="dashboard port (default 8050)")
    p.add_argument("--bar", default="1m", help="bar spec shown first (default 1m)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _check_replay_files(paths: list[str]) -> list[Path]:
    # Every file must exist and start with a '<time> <JSON>' line; one message per problem.
    from feed.replay import RecordingError, read_recording

    out = []
    for text in paths:
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"--replay: {text}: no such file")
        try:
            next(read_recording(path), None)
        except RecordingError as exc:
            raise UsageError(f"--replay: {exc}") from None
        out.append(path)
    return out


def _parse_symbols(text: str | None, adapter) -> list[str]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            out.append(adapter.normalize_symbol(part.strip()))
        except ValueError as exc:
            raise UsageError(f"--symbols: {exc}") from None
    return out


class Runtime:
    """Everything one ``tickscope`` process runs: exchange, feed, fetcher, engine, app.

    Built by :func:`start_runtime`; ``stop()`` shuts it all down in reverse order.
    """

    def __init__(self) -> None:
        self.exchange = None
        self.engine = None
        self.feed = None
        self.fetcher = None
        self.store = None
        self.app = None
        self._watch: threading.Thread | None = None

    def stop(self) -> None:
        """Stop feed, fetcher, engine, store and exchange (idempotent)."""
        for part in (self.feed, self.fetcher):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("error while stopping %r", part)
        if self.engine is not None:
            self.engine.stop()
        if self.store is not None:
            self.store.close()
        if self.exchange is not None:
            self.exchange.stop()


def start_runtime(args: argparse.Namespace, *, interval_ms: int = 250) -> Runtime:
    """Build and start the runtime for parsed ``args``; return it.

    Raises
    ------
    UsageError
        For a bad argument or unreadable file.
    """
    from dashboard.app import create_app
    from feed.client import FeedClient, SnapshotFetcher
    from feed.engine import Engine
    from feed.models import BarSpec
    from feed.vendors.binance import BinanceAdapter

    try:
        BarSpec.from_str(args.bar)
    except ValueError as exc:
        raise UsageError(f"--bar: {exc}") from None
    replay = _check_replay_files(args.replay)
    if replay and args.vendor:
        raise UsageError("--replay plays through the embedded exchange; drop --vendor")
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise UsageError(f"--url: {args.url!r} is not a ws:// or wss:// URL")
    if args.rest_url:
        parts = urlsplit(args.rest_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--rest-url: {args.rest_url!r} is not an http:// or https:// URL")

    rt = Runtime()
    embedded = not args.vendor and not args.url
    probe = BinanceAdapter(args.market)
    symbols = _parse_symbols(args.symbols, probe)
    if embedded:
        from feed.exchange import EmbeddedExchange

        rt.exchange = EmbeddedExchange(
            replay_files=replay, speed=args.speed, symbols=symbols or None,
        ).start()
        if replay and not symbols:
            symbols = list(rt.exchange.symbols)
        if not replay and not symbols:
            symbols = list(DEFAULT_SYMBOLS_SIM)
        ws_url, rest_url = rt.exchange.ws_url, rt.exchange.rest_url
    else:
        ws_url, rest_url = args.url, args.rest_url
        if not symbols:
            symbols = ["BTCUSDT"]
    adapter = BinanceAdapter(args.market, ws_url=ws_url, rest_url=rest_url)

    if not replay:
        from feed.store import TradeStore

        source = "embedded" if embedded else adapter.name
        data_dir = Path(args.data_dir) if args.data_dir else _default_data_dir()
        try:
            rt.store = TradeStore(data_dir / source)
        except Exception as exc:
            raise UsageError(f"--data-dir: cannot use {data_dir}: {exc}") from None

    rt.engine = Engine(adapter, store=rt.store, clock="exchange" if replay else "wall",
                       default_spec=args.bar)
    rt.feed = FeedClient(adapter, rt.engine, symbols=())
    rt.fetcher = SnapshotFetcher(rt.engine)
    rt.engine.attach(rt.feed, rt.fetcher)
    rt.engine.start()
    for s in symbols:
        rt.engine.subscribe(s)
    rt.feed.start()
    if rt.exchange is not None and replay:
        rt._watch = threading.Thread(target=_watch_replay, args=(rt,), daemon=True)
        rt._watch.start()
    rt.app = create_app(rt.engine, interval_ms=interval_ms)
    return rt


def _watch_replay(rt: Runtime) -> None:
    # Tell the engine when the recorded session has played out, once it drained the queue.
    rt.exchange.finished.wait()
    rt.engine.wait_idle(timeout=60, quiet_s=1.0)
    rt.engine.mark_source_finished()


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tickscope", appauthor=False))


def main(argv: list[str] | None = None) -> int:
    """Run the ``tickscope`` command; return the process exit code.

    ``tickscope bars ...`` is the offline converter (:func:`feed.convert.main`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bars"]:
        from feed.convert import main as bars_main

        return bars_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # websocket-client logs every disconnect at ERROR; the feed reports them itself.
    logging.getLogger("websocket").setLevel(logging.CRITICAL)
    logging.getLogger("feed.exchange.ws").setLevel(logging.WARNING)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding the dashboard to %s: anyone who can reach this address sees it", args.host)
    try:
        rt = start_runtime(args)
    except UsageError as exc:
        print(f"tickscope: error: {exc}", file=sys.stderr)
        return 2
    print(f"tickscope: dashboard on http://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        rt.app.run(host=args.host, port=args.port, debug=False)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"tickscope: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        rt.stop()
        return 2
    finally:
        rt.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
