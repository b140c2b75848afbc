"""The ``tickscope`` command (also ``python -m dashboard``).

Usage::

    tickscope [--replay FILE ...] [--speed X] [--vendor binance|alltick|itick]
              [--market spot|usdm] [--binance-host main|data] [--itick-market M]
              [--config FILE] [--kline-check]
              [--symbols A,B] [--url WS_URL] [--rest-url URL] [--data-dir DIR]
              [--retention-days D] [--retention-mb M] [--record FILE] [--stale-after S]
              [--host 127.0.0.1] [--port 8050]
    tickscope bars INPUT... --bar SPEC [--symbol S] [--format FMT] [-o OUT]

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
import hashlib
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
#: Vendors of ``--vendor`` and the environment variable holding each one's token.
VENDORS: dict[str, str | None] = {"binance": None, "alltick": "ALLTICK_TOKEN", "itick": "ITICK_TOKEN"}
#: Symbols subscribed when ``--symbols`` is not given, per vendor (iTick: per market).
DEFAULT_SYMBOLS: dict[str, tuple[str, ...]] = {
    "binance": ("BTCUSDT",), "alltick": ("AAPL.US",), "itick:stock": ("AAPL$US",),
    "itick:forex": ("EURUSD$GB",), "itick:crypto": ("BTCUSDT$BA",),
}
#: Where each vendor's token comes from, for the missing-token message.
_TOKEN_HELP = {
    "alltick": "free registration at alltick.co",
    "itick": "register at itick.org",
}


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
    p.add_argument("--faults", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sim-rate", type=_positive("--sim-rate"), default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help="dashboard bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8050, help="dashboard port (default 8050)")
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
    p.add_argument("--bar", default="1m", help="bar spec shown first (default 1m)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _check_replay_files(paths: list[str]) -> list[Path]:
    # Every file must exist and start with a '<time> <JSON>' line; one message per problem.
    from feed.io.readers import RecordingError, read_recording

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
        self.recorder = None
        self.app = None
        self._watch: threading.Thread | None = None

    def stop(self) -> None:
        """Stop feed, exchange, fetcher, engine, store and recorder (idempotent).

        The embedded exchange stops before the snapshot fetcher: a replay holds a REST
        depth request until its recorded snapshot plays, and stopping answers it at once.
        The engine stops after both, so it drains what they queued and flushes the store.
        """
        for part in (self.feed, self.exchange, self.fetcher):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("error while stopping %r", part)
        if self.engine is not None:
            self.engine.stop()
        if self.store is not None:
            try:
                self.store.close()
            except Exception:
                log.exception("error while closing the trade store")
        if self.recorder is not None:
            self.recorder.close()


def start_runtime(
    args: argparse.Namespace,
    *,
    interval_ms: int = 250,
    feed_options: dict | None = None,
    engine_options: dict | None = None,
) -> Runtime:
    """Build and start the runtime for parsed ``args``; return it.

    Parameters
    ----------
    args : argparse.Namespace
        From :func:`build_parser`.
    interval_ms : int
        Dashboard refresh interval, ms.
    feed_options : dict, optional
        Extra keyword arguments for ``FeedClient`` (tests shorten ``backoff_initial_s``,
        ``stale_after_s``, ...).
    engine_options : dict, optional
        Extra keyword arguments for ``Engine`` (e.g. ``queue_size``).

    Raises
    ------
    UsageError
        For a bad argument or unreadable file.
    """
    from dashboard.app import create_app
    from feed.io.client import FeedClient
    from feed.io.snapshots import SnapshotFetcher
    from feed.core.config import EngineConfig, MarketConfig
    from feed.io.engine import Engine
    from feed.core.models import BarSpec

    try:
        BarSpec.from_str(args.bar)
    except ValueError as exc:
        raise UsageError(f"--bar: {exc}") from None
    bar_options = _bar_options(args)
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

    embedded = not args.vendor and not args.url
    vendor = args.vendor or "binance"  # the embedded exchange speaks Binance
    _check_vendor_options(args, vendor, embedded)
    faults = getattr(args, "faults", None)
    if faults and not embedded:
        raise UsageError("--faults applies to the embedded exchange only; drop --vendor/--url")
    if faults:
        from feed.exchange.server import Faults

        try:
            faults = Faults.from_str(faults)
        except ValueError as exc:
            raise UsageError(f"--faults: {exc}") from None
    market = getattr(args, "market", None) or "spot"
    kline_check = getattr(args, "kline_interval", "1m") if getattr(args, "kline_check", False) else None
    rt = Runtime()
    # Symbols are checked with the vendor's rules before anything starts.
    probe = _make_adapter(args, vendor, market, kline_check, None, None)
    symbols = _parse_symbols(args.symbols, probe)
    if embedded:
        from feed.exchange.server import EmbeddedExchange

        try:
            rt.exchange = EmbeddedExchange(
                replay_files=replay, speed=args.speed, symbols=symbols or None,
                sim_rate=getattr(args, "sim_rate", 1.0), faults=faults or None,
                klines=kline_check is not None,
            ).start()
        except ValueError as exc:
            raise UsageError(f"--replay/--symbols: {exc}") from None
        if replay and not symbols:
            symbols = list(rt.exchange.symbols)
        if not replay and not symbols:
            symbols = list(DEFAULT_SYMBOLS_SIM)
        if kline_check and not any(rt.exchange.serves(s, f"kline_{kline_check}") for s in symbols):
            rt.stop()
            raise UsageError(f"--kline-check: the replay files hold no @kline_{kline_check} streams "
                             "to compare with; record a session with them or drop --kline-check")
        adapter = _make_adapter(args, vendor, market, kline_check, rt.exchange.ws_url, rt.exchange.rest_url)
    else:
        adapter = probe if vendor != "binance" else _make_adapter(
            args, vendor, market, kline_check, args.url, args.rest_url)
        if not symbols:
            key = vendor if vendor != "itick" else f"itick:{adapter.market}"
            if key not in DEFAULT_SYMBOLS:
                raise UsageError(f"--symbols: name the symbols for the iTick {adapter.market} market "
                                 "(CODE$REGION)")
            symbols = list(DEFAULT_SYMBOLS[key])
    validate = getattr(adapter, "validate_subscription", None)
    if validate is not None:
        try:
            symbols = validate(symbols)
        except ValueError as exc:
            rt.stop()
            raise UsageError(f"--symbols: {exc}") from None

    try:
        if not replay or args.data_dir:
            from feed.io.store import TradeStore

            data_dir = Path(args.data_dir) if args.data_dir else _default_data_dir()
            source = _replay_store_name(replay, market) if replay else (
                "embedded" if embedded else adapter.name)
            try:
                rt.store = TradeStore(data_dir / source)
            except Exception as exc:
                raise UsageError(f"--data-dir: cannot use {data_dir}: {exc}") from None
        if args.record:
            from feed.io.recorder import Recorder

            try:
                rt.recorder = Recorder(args.record)
            except FileExistsError:
                raise UsageError(f"--record: {args.record} exists; a recording is never overwritten, "
                                 "choose another name") from None
            except OSError as exc:
                raise UsageError(f"--record: cannot create {args.record}: {exc.strerror or exc}") from None
    except UsageError:
        rt.stop()
        raise

    retention_days = getattr(args, "retention_days", None)
    retention_mb = getattr(args, "retention_mb", None)
    engine_options = dict(engine_options or {})
    market = MarketConfig(clock="exchange" if replay else "wall", default_spec=args.bar,
                          bar_options=bar_options, kline_check=kline_check,
                          **{k: engine_options.pop(k) for k in list(engine_options)
                             if k in MarketConfig.__dataclass_fields__})
    config = EngineConfig(
        market=market,
        retention_max_age_s=None if retention_days is None else retention_days * 86400.0,
        retention_max_bytes=None if retention_mb is None else int(retention_mb * 1024 * 1024),
        **engine_options,
    )
    rt.engine = Engine(adapter, config, store=rt.store, recorder=rt.recorder)
    rt.feed = FeedClient(adapter, rt.engine, symbols=(), name=adapter.name,
                         **{"stale_after_s": getattr(args, "stale_after", 30.0), **(feed_options or {})})
    rt.fetcher = SnapshotFetcher(rt.engine, hints=getattr(adapter, "http_hints", None))
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


def _check_vendor_options(args: argparse.Namespace, vendor: str, embedded: bool) -> None:
    # Options that belong to one vendor are refused with the others.
    given = {
        "--market": getattr(args, "market", None), "--binance-host": getattr(args, "binance_host", None),
        "--itick-market": getattr(args, "itick_market", None), "--rest-url": args.rest_url,
        "--kline-check": getattr(args, "kline_check", False) or None,
    }
    owner = {"--market": "binance", "--binance-host": "binance", "--rest-url": "binance",
             "--kline-check": "binance", "--itick-market": "itick"}
    for option, value in given.items():
        if value is not None and owner[option] != vendor:
            why = (" (AllTick serves klines over HTTP only; iTick's are not compared)"
                   if option == "--kline-check" else "")
            raise UsageError(f"{option} applies to --vendor {owner[option]} only, not {vendor}{why}")
    if getattr(args, "binance_host", None) == "data":
        if (getattr(args, "market", None) or "spot") != "spot":
            raise UsageError("--binance-host data: Binance's market-data-only host serves spot only; "
                             "use --market spot or drop --binance-host")
        if args.url or embedded:
            raise UsageError("--binance-host names Binance's hosts; it cannot go with --url "
                             "or the embedded exchange (add --vendor binance, drop --url)")
    if getattr(args, "config", None) and vendor == "binance":
        log.info("--config: Binance needs no token; the file is not read")


def _load_config(path_text: str | None) -> dict:
    # The TOML config file as a dict ({} without one); one message per problem.
    if not path_text:
        return {}
    import tomllib

    path = Path(path_text)
    try:
        with path.open("rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"--config: {path_text}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path_text}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {path_text} is not valid TOML: {exc}") from None
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("--config: %s holds tokens and is readable by other users; chmod 600 it", path_text)
    except OSError:
        pass
    return config


def _vendor_section(config: dict, vendor: str, path_text: str | None) -> dict:
    section = config.get(vendor, {})
    if not isinstance(section, dict):
        raise UsageError(f"--config: {path_text}: [{vendor}] must be a table")
    return section


def _vendor_token(args: argparse.Namespace, vendor: str, section: dict) -> str:
    # The token from the environment (wins) or the config file; never from argv.
    env = VENDORS[vendor]
    value = os.environ.get(env) if env else None
    if value is None or not value.strip():
        value = section.get("token")
        if value is not None and not isinstance(value, str):
            raise UsageError(f"--config: [{vendor}] token must be a string")
    if value is None or not value.strip():
        where = f" or add token = \"...\" under [{vendor}] in the --config file" if getattr(
            args, "config", None) else f" or pass --config FILE with [{vendor}] token = \"...\""
        name = {"alltick": "AllTick", "itick": "iTick"}.get(vendor, vendor)
        raise UsageError(f"{name} needs a token: set {env}{where} ({_TOKEN_HELP[vendor]}); "
                         "tokens are never taken from the command line")
    return value


def _int_setting(section: dict, vendor: str, key: str) -> int | None:
    value = section.get(key)
    if value is not None and (type(value) is not int or value < 1):
        raise UsageError(f"--config: [{vendor}] {key} must be a whole number >= 1, not {value!r}")
    return value


def _make_adapter(args: argparse.Namespace, vendor: str, market: str, kline_check: str | None,
                  ws_url: str | None, rest_url: str | None):
    # The vendor's adapter, or UsageError naming the problem (never showing a token).
    try:
        if vendor == "binance":
            from feed.vendors.binance import BinanceAdapter

            return BinanceAdapter(market, ws_url=ws_url, rest_url=rest_url,
                                  host=getattr(args, "binance_host", None) or "main", klines=kline_check)
        section = _vendor_section(_load_config(getattr(args, "config", None)), vendor,
                                  getattr(args, "config", None))
        token = _vendor_token(args, vendor, section)
        limit = _int_setting(section, vendor, "max_symbols")
        if vendor == "alltick":
            from feed.vendors.alltick import PLAN_SYMBOLS_PER_CONNECTION, AllTickAdapter, endpoints_from

            plan = section.get("plan")
            if plan is not None and plan not in PLAN_SYMBOLS_PER_CONNECTION:
                raise UsageError(f"--config: [alltick] plan must be one of "
                                 f"{', '.join(PLAN_SYMBOLS_PER_CONNECTION)}, not {plan!r}")
            if limit is None:
                limit = PLAN_SYMBOLS_PER_CONNECTION[plan or "free"]
            stock, fx = endpoints_from(args.url) if args.url else (None, None)
            return AllTickAdapter(token=token, stock_url=stock, forex_crypto_url=fx,
                                  max_symbols_per_connection=limit)
        from feed.vendors.itick import ITickAdapter, base_url_of

        itick_market = getattr(args, "itick_market", None) or "stock"
        return ITickAdapter(token=token, market=itick_market,
                            base_url=base_url_of(args.url, itick_market) if args.url else None,
                            max_symbols_per_connection=limit)
    except ValueError as exc:
        option = {"binance": "--market/--binance-host/--url", "alltick": "--vendor alltick",
                  "itick": "--vendor itick"}[vendor]
        raise UsageError(f"{option}: {exc}") from None


def _bar_options(args: argparse.Namespace) -> dict:
    # The bar-rule options as feed.core.bars.make_aggregator keywords; a bad value -> UsageError.
    from feed.core.timegrid import make_grid

    tolerance = getattr(args, "late_tolerance", 2.0)
    if not (tolerance >= 0):
        raise UsageError(f"--late-tolerance must be >= 0 seconds, not {tolerance}")
    options = {
        "utc_offset": getattr(args, "utc_offset", None),
        "session_tz": getattr(args, "session_tz", None),
        "session_open": getattr(args, "session_open", "00:00"),
        "empty": getattr(args, "empty", "gap"),
        "late_tolerance_ns": int(tolerance * 1e9),
        "session_reset": getattr(args, "session_reset", False),
    }
    try:
        make_grid(60_000_000_000, utc_offset=options["utc_offset"], session_tz=options["session_tz"],
                  session_open=options["session_open"])
    except ValueError as exc:
        raise UsageError(f"bar rules: {exc}") from None
    return options


def _watch_replay(rt: Runtime) -> None:
    # Tell the engine when the recorded session has played out, once it drained the queue.
    rt.exchange.finished.wait()
    rt.engine.wait_idle(timeout=60, quiet_s=1.0)
    rt.engine.mark_source_finished()
    if rt.feed is not None:
        # Nothing more will come: silence is expected now, not a dead connection.
        rt.feed.stale_after_s = None


def _replay_store_name(files: list[Path], market: str) -> str:
    # One store per set of recordings and market: a replay restores its own history only.
    digest = hashlib.sha1()
    for path in sorted(str(p.resolve()) for p in files):
        digest.update(path.encode() + b"\0")
    return str(Path("replay") / f"{market}-{digest.hexdigest()[:12]}")


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tickscope", appauthor=False))


def main(argv: list[str] | None = None) -> int:
    """Run the ``tickscope`` command; return the process exit code.

    ``tickscope bars ...`` is the offline converter (:func:`feed.io.convert.main`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bars"]:
        from feed.io.convert import main as bars_main

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
