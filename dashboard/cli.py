"""The ``tickscope`` command (also ``python -m dashboard``).

Usage::

    tickscope [--replay FILE ...] [--speed X] [--vendor binance|alltick|itick]
              [--market spot|usdm] [--binance-host main|data] [--itick-market M]
              [--config FILE] [--kline-check]
              [--symbols A,B] [--url WS_URL] [--rest-url URL] [--data-dir DIR]
              [--retention-days D] [--retention-mb M] [--record FILE] [--stale-after S]
              [--host 127.0.0.1] [--port 8050]
    tickscope bars INPUT... --bar SPEC [--symbol S] [--format FMT] [-o OUT]
    tickscope collect --redis URL [--name NAME] [--redis-prefix P] [--redis-retention D] [feed options]
    tickscope serve --redis URL [--redis-prefix P] [--host H] [--port N] [--workers N]

With no arguments it starts the embedded local exchange (a seeded market simulator) on
loopback, connects the ordinary Binance adapter to it and serves the dashboard. With
``--replay`` the embedded exchange plays recorded sessions instead, and the engine's clock
follows the replayed exchange time. ``--url`` alone points the Binance dialect at any
endpoint.

Vendors (``--vendor``):

* ``binance`` -- public streams, no key. ``--market spot|usdm``; ``--binance-host data``
  uses the market-data-only hosts (``data-stream.binance.vision``, spot only). Control
  messages are spaced to the adapter's limit (4/s spot, under Binance's 5/s). HTTP 451
  (restricted location), 429/418 (rate limit, IP ban) are shown with what to do, in the
  status line, ``/api/health`` and the log; 451 stops the feed, 429/418 wait as
  Retry-After says.
* ``alltick`` -- token required. One connection serves one asset class: stocks (AAPL.US,
  700.HK, 600519.SH) or crypto/forex/metals (BTCUSDT, EURUSD, GOLD). Mixing them is
  refused with a message (AllTick counts connections per token and endpoint; a free plan
  has one), and the plan's symbol limit (free: 5; ``[alltick] plan`` or ``max_symbols``
  in the config file) is checked before anything is sent. ``--url`` names the host (or
  either documented path); both endpoints are derived from it.
* ``itick`` -- API key required, sent in the handshake header. ``--itick-market stock|
  forex|indices|crypto``; symbols ``CODE$REGION`` (AAPL$US, 700$HK, EURUSD$GB). ``--url``
  is the host root; ``/<market>`` is appended (a URL already ending in it is used as is).

Tokens come only from the environment (``ALLTICK_TOKEN``, ``ITICK_TOKEN``) or a TOML file
given with ``--config`` (``[alltick] token = "..."``, ``[itick] token = "..."``; the
environment wins), never from a command-line argument (it would show in ``ps``). A missing
token is one message and exit code 2.

``--kline-check`` (Binance and the embedded exchange) also subscribes ``<s>@kline_1m`` and
compares each final candle with tickscope's own 1m bar (``feed.core.klinecheck``); results in
``/api/health`` under ``kline_check``. In replay it needs recorded kline streams.

Persistence: raw trades are stored per source under ``--data-dir`` (default: the
platform's user data dir, e.g. ``~/.local/share/tickscope``): ``embedded/`` for the
simulator, ``binance/``, ``binance-usdm/`` for live vendors. A replay persists only when
``--data-dir`` is given, under ``replay/<market>-<hash of the files>/``: replaying the
same files again restores what was stored and skips trades already seen (by trade id),
while a plain replay never leaves files behind or restores an earlier run. Retention
(``--retention-days``, ``--retention-mb``) is applied a few seconds after start and then
every minute.

``--record FILE`` writes every message received (and every REST snapshot) in the replay
format, gzip-compressed when FILE ends in ``.gz``, so ``--replay FILE`` plays the session
back. Hidden developer options: ``--faults "drop_every=500,skip_ids=3,..."`` injects faults
in the embedded exchange (``feed.exchange.Faults``), ``--sim-rate X`` makes the simulator
X times busier.

A bad argument or unreadable file prints one message naming the problem and exits with
code 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .runconfig import RunConfig, UsageError
from .sources import VENDORS

__all__ = ["main", "build_parser", "config_from_args", "config_from_argv", "setup_logging", "UsageError"]

log = logging.getLogger("tickscope")


def _positive_speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number, not {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--speed must be >= 0 (0 = as fast as possible), not {text!r}")
    return value


def _positive(name: str):
    # An argparse type: a finite number > 0.
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {text!r}") from None
        if not (value > 0 and value != float("inf")):
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, not {text!r}")
        return value
    return parse


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
    p.add_argument("--vendor", choices=list(VENDORS), default=None,
                   help="live vendor to connect to (default: the embedded local exchange)")
    p.add_argument("--market", choices=["spot", "usdm"], default=None,
                   help="Binance market: spot or USD-M futures (default spot)")
    p.add_argument("--binance-host", choices=["main", "data"], default=None,
                   help="Binance hosts: main (stream.binance.com) or data (the market-data-only "
                        "data-stream.binance.vision; spot only)")
    p.add_argument("--itick-market", choices=["stock", "forex", "indices", "crypto"], default=None,
                   help="iTick market (URL path; default stock)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file with vendor settings: [alltick] token, plan, max_symbols; "
                        "[itick] token, max_symbols (tokens may also come from ALLTICK_TOKEN / "
                        "ITICK_TOKEN, which win)")
    p.add_argument("--kline-check", action="store_true",
                   help="Binance: also subscribe <symbol>@kline_1m and compare each final candle "
                        "with tickscope's own 1m bar (results in /api/health)")
    p.add_argument("--kline-interval", default="1m", help=argparse.SUPPRESS)
    p.add_argument("--symbols", default=None,
                   help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT (replay: default every symbol in the files)")
    p.add_argument("--url", default=None,
                   help="WebSocket endpoint replacing the vendor's (Binance: the combined-stream URL, "
                        "e.g. ws://127.0.0.1:9000/stream; AllTick: the host, e.g. "
                        "wss://quote.alltick.io; iTick: the host root, e.g. wss://api.itick.org)")
    p.add_argument("--rest-url", default=None,
                   help="base URL for REST depth snapshots (default: http(s) on the --url host)")
    p.add_argument("--data-dir", default=None,
                   help="where tickscope keeps its files (default: the platform's user data dir); "
                        "a replay persists only when this is given")
    p.add_argument("--retention-days", type=_positive("--retention-days"), default=None, metavar="D",
                   help="delete stored trades older than D days (default: keep)")
    p.add_argument("--retention-mb", type=_positive("--retention-mb"), default=None, metavar="M",
                   help="keep at most M megabytes of stored trades, oldest deleted first (default: no limit)")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="record every received message to FILE in the replay format (.gz: compressed)")
    p.add_argument("--stale-after", type=_positive("--stale-after"), default=30.0, metavar="S",
                   help="reconnect when no message arrived for S seconds while subscribed (default 30)")
    p.add_argument("--backfill", default=None, metavar="DURATION",
                   help="Binance: fetch this much trade history before each symbol's first live trade "
                        "and repair trade-id gaps from it, e.g. 30m, 6h; 0 turns both off (default "
                        "1h live, 10m on the embedded simulator, 0 for a replay)")
    p.add_argument("--faults", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sim-rate", type=_positive("--sim-rate"), default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help="dashboard bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8050, help="dashboard port (default 8050)")
    _add_bar_rules(p)
    p.add_argument("--bar", default="1m", help="bar spec shown first (default 1m)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _add_bar_rules(p: argparse.ArgumentParser) -> None:
    rules = p.add_argument_group("bar rules (see the README's Bars section)")
    rules.add_argument("--utc-offset", default=None, metavar="±HH:MM",
                       help="align time bars to this UTC offset instead of UTC (+08:00 = Binance's UTC+8 klines)")
    rules.add_argument("--session-tz", default=None, metavar="TZ",
                       help="anchor time bars to a daily session open in this IANA time zone, e.g. America/New_York")
    rules.add_argument("--session-open", default="00:00", metavar="HH:MM",
                       help="local session open for --session-tz (default 00:00; US equities 09:30)")
    rules.add_argument("--empty", choices=("gap", "flat"), default="gap",
                       help="empty intervals: no bar (gap, default) or a zero-volume bar at the previous close (flat)")
    rules.add_argument("--late-tolerance", type=float, default=2.0, metavar="S",
                       help="a trade up to S seconds older than the newest revises its closed bar; "
                            "older ones are counted as late (default 2)")
    rules.add_argument("--session-reset", action="store_true",
                       help="tick, volume and value bars never span a session boundary")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Return the :class:`RunConfig` for parsed arguments (:meth:`RunConfig.from_args`)."""
    return RunConfig.from_args(args)


def config_from_argv(argv: list[str]) -> RunConfig:
    """Return the :class:`RunConfig` for ``tickscope`` arguments (without the program name).

    Raises
    ------
    SystemExit
        With code 2, from argparse, for an unknown option or a malformed value.
    UsageError
        For a bad combination of options, an unreadable file or a missing token.
    """
    return config_from_args(build_parser().parse_args(argv))


def setup_logging(level: str) -> None:
    """Configure the log of a ``tickscope`` process at ``level`` (INFO, ...)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # websocket-client logs every disconnect at ERROR; the feed reports them itself.
    logging.getLogger("websocket").setLevel(logging.CRITICAL)
    logging.getLogger("feed.exchange.ws").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the ``tickscope`` command; return the process exit code.

    ``tickscope bars ...`` is the offline converter (:func:`feed.io.convert.main`, which
    owns its own arguments); ``tickscope collect ...`` publishes to Redis with no web
    server (:func:`dashboard.collect.main`).
    """
    whole_process = argv is None  # the command itself (console script, python -m), not a call
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bars"]:  # before any dashboard import: the converter needs none
        from feed.io.convert import exit_process, main as bars_main

        code = bars_main(argv[1:])
        return exit_process(code) if whole_process else code
    from .runtime import start_runtime

    if argv[:1] == ["collect"]:  # a feed publishing to Redis, no web server (dashboard/collect.py)
        from .collect import main as collect_main

        return collect_main(argv[1:])
    if argv[:1] == ["serve"]:  # dashboards reading Redis, under gunicorn (dashboard/serve.py)
        from .serve import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = config_from_args(args)
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("binding the dashboard to %s: anyone who can reach this address sees it", config.host)
        rt = start_runtime(config)
    except UsageError as exc:
        print(f"tickscope: error: {exc}", file=sys.stderr)
        return 2
    address = f"{config.host}:{config.port}"
    print(f"tickscope: dashboard on http://{address}/  (Ctrl+C to stop)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        rt.app.run(host=config.host, port=config.port, debug=False)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"tickscope: error: cannot serve on {address}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        rt.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
