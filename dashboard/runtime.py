"""Starting and stopping one run: :func:`start_runtime` turns a :class:`RunConfig` into a
:class:`Runtime` (store, recorder, embedded exchange, adapter, engine, feed, snapshot
fetcher and the Dash app), and :meth:`Runtime.stop` shuts it down.

Persistence: trades are stored per source under ``data_dir`` (default: the platform's
user data dir): ``embedded/`` for the simulator, the adapter's name (``binance/``,
``binance-usdm/``, ...) for live vendors -- the vendor and market, never the endpoint URL,
so ``--url`` pointing at another address of the same market finds the same history. A
replay stores only when ``data_dir`` is given, under ``replay/<market>-<hash of the files'
names and sizes>/``, so replaying the same files (wherever they are) restores their own
history and nothing else; simulated trades never mix with real ones.

Each source directory has its own lock (``feed.io.dirlock``), not one per ``data_dir``:
what must never be shared is one source's history, and a lock per source lets a live run,
a replay and the simulator use the default data dir at the same time, while a second run
of the same source is refused.

A restart on the same source continues it: the symbols subscribed when it stopped
(``TradeStore.subscribed``, those added from the page included) are subscribed again
after the configured ones, and the simulator continues each stored market from its newest
stored trade (price and trade id) instead of re-seeding it, so no trade-id gap is counted
and the price does not jump.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from .runconfig import RunConfig, UsageError
from .sources import DEFAULT_SYMBOLS_SIM, default_symbols, make_adapter, normalize_symbols

__all__ = ["RunConfig", "Runtime", "UsageError", "start_runtime"]

log = logging.getLogger("tickscope")


class Runtime:
    """Everything one ``tickscope`` process runs: exchange, feed, fetcher, engine, app.

    Built by :func:`start_runtime`; :meth:`stop` shuts it all down in reverse order.
    Attributes are None for the parts a run does not have (``exchange`` for a live
    vendor, ``store`` for a plain replay, ``recorder`` without ``record``).
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.exchange = None
        self.engine = None
        self.feed = None
        self.fetcher = None
        self.history = None  # feed.io.backfill.HistoryFetcher (backfill, gap repair)
        self.vendor_candles = None  # feed.io.vendor_candles.VendorCandleSeeder (TickDB seed)
        self.store = None
        self.recorder = None
        self.app = None
        # Marks the end of a replay once the exchange has played everything.
        self._watch: threading.Thread | None = None

    def stop(self) -> None:
        """Stop feed, exchange, fetcher, engine, store and recorder (idempotent).

        The embedded exchange stops before the snapshot fetcher: a replay holds a REST
        depth request until its recorded snapshot plays, and stopping answers it at once.
        The engine stops after both, so it drains what they queued and flushes the store.
        """
        for part in (self.feed, self.exchange, self.fetcher, self.history, self.vendor_candles):
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
    config: RunConfig,
    *,
    interval_ms: int = 250,
    feed_options: dict | None = None,
    engine_options: dict | None = None,
    serve: bool = True,
    before_feed: Any = None,
) -> Runtime:
    """Build and start the run ``config`` describes; return it.

    Parameters
    ----------
    config : RunConfig
        What to run (``dashboard.cli.config_from_argv`` builds one from arguments).
    interval_ms : int, default 250
        Dashboard refresh interval, milliseconds.
    feed_options : dict, optional
        Extra keyword arguments for ``FeedClient`` (tests shorten ``backoff_initial_s``,
        ``stale_after_s``, ...).
    engine_options : dict, optional
        Extra ``EngineConfig`` or ``MarketConfig`` fields (e.g. ``queue_size``).
    serve : bool, default True
        Build the Dash app (``Runtime.app``); False for a run with no web server
        (``tickscope collect``).
    before_feed : callable, optional
        ``before_feed(runtime, symbols)``, called once the engine is built and before any
        symbol is subscribed or the feed starts (``tickscope collect`` claims the symbols
        and attaches its publisher there); what it raises stops the run.

    Returns
    -------
    Runtime
        Started: the engine subscribed the symbols and the feed is connecting.

    Raises
    ------
    UsageError
        For symbols the vendor refuses, a store or recording that cannot be opened, or a
        replay without the kline streams ``kline_check`` needs. Nothing is left running.
    """
    from dashboard.sourcebadge import source_info
    from feed.io.client import FeedClient
    from feed.io.snapshots import SnapshotFetcher
    from feed.io.engine import Engine

    rt = Runtime(config)
    try:
        probe = make_adapter(config, None, None)
        # The store first: the simulator continues from what it holds.
        rt.store = _open_store(config, probe)
        saved = _saved_symbols(rt.store)
        adapter, symbols = _start_source(rt, config, probe)
        rt.recorder = _open_recorder(config, adapter)
    except BaseException:
        rt.stop()
        raise
    rt.engine = Engine(adapter, _engine_config(config, engine_options), store=rt.store, recorder=rt.recorder)
    rt.feed = FeedClient(adapter, rt.engine, symbols=(), name=adapter.name,
                         **{"stale_after_s": config.stale_after, **(feed_options or {})})
    rt.fetcher = SnapshotFetcher(rt.engine, hints=adapter.http_hints)
    if config.backfill_s > 0 and getattr(adapter, "serves_history", False):
        from feed.io.backfill import HistoryFetcher

        rt.history = HistoryFetcher(rt.engine, adapter.history_url("aggTrades"))
    rt.engine.attach(rt.feed, rt.fetcher, rt.history)
    if before_feed is not None:
        try:
            before_feed(rt, symbols)
        except BaseException:
            rt.stop()
            raise
    rt.engine.start()
    for s in symbols:
        rt.engine.subscribe(s)
    rt.vendor_candles = _start_vendor_candles(rt, config, symbols)
    _resubscribe(rt, [s for s in saved if s not in symbols])
    rt.feed.start()
    if rt.exchange is not None and config.replay:
        rt._watch = threading.Thread(target=_watch_replay, args=(rt,), daemon=True)
        rt._watch.start()
    if serve:
        from dashboard.app import create_app

        # After the feed starts (as before). Built before it, the page's first updates
        # raced the first data and the renderer failed now and then (React error #31, in
        # two browser tests about one run in three): most likely a book without levels
        # yet, whose DOM ladder was a list nested in the table's children (fixed in
        # ``orderflow_updates.ladder_update``); the other order was not tried again.
        rt.app = create_app(rt.engine, interval_ms=interval_ms, source=source_info(config, rt.exchange),
                            session_tz=config.session_tz)
    from feed.io.gctune import settle

    settle()  # start-up is done: freeze its heap, rarer GC passes for the ingest
    return rt


def _start_vendor_candles(rt: Runtime, config: RunConfig, symbols: list[str]) -> Any:
    # AllTick and iTick stream no trade history: with TICKDB_API_KEY set, TickDB's own 1m
    # candles of the last ``backfill`` (default 1 h) are drawn before the live bars.
    # TICKDB_BASE_URL replaces https://api.tickdb.ai (a test fake, a mirror).
    import os

    from feed.vendors.tickdb import TICKDB_BASE, api_key

    key = api_key()
    if config.vendor_name not in ("alltick", "itick") or not key or config.backfill == 0:
        return None
    from feed.io.vendor_candles import VendorCandleSeeder

    try:
        seeder = VendorCandleSeeder(rt.engine, os.environ.get("TICKDB_BASE_URL") or TICKDB_BASE, key,
                                    config.backfill or 3600.0)
    except ValueError as exc:
        raise UsageError(f"TICKDB_BASE_URL: {exc}") from None
    for s in symbols:
        seeder.seed(s)
    return seeder


def _saved_symbols(store: Any) -> list[str]:
    # The symbols subscribed when this source last ran (empty without a store).
    if store is None:
        return []
    try:
        return store.subscribed()
    except Exception:
        log.exception("could not read the symbols subscribed before; starting without them")
        return []


def _resubscribe(rt: Runtime, saved: list[str]) -> None:
    # Subscribe again what was subscribed before the restart; a symbol the source no longer
    # takes (not in this replay, refused by the vendor's rules) is skipped with a log line.
    for s in saved:
        if rt.exchange is not None and not rt.exchange.serves(s, "trade"):
            log.info("not resubscribing %s: this source does not serve it", s)
            continue
        try:
            rt.engine.subscribe(s)
        except ValueError as exc:
            log.warning("not resubscribing %s: %s", s, exc)
        else:
            log.info("resubscribed %s (subscribed before the restart)", s)


def _sim_resume(store: Any) -> dict[str, tuple[float, int]]:
    # symbol -> (last price, last trade id) of every market the store holds: the simulator
    # continues them. Unusable rows (no id, a non-positive price) are left to re-seed.
    out: dict[str, tuple[float, int]] = {}
    if store is None:
        return out
    for symbol in store.symbols():
        try:
            last = store.last_trade(symbol)
        except Exception:
            log.exception("could not read the last stored trade of %s; it starts afresh", symbol)
            continue
        if last is not None and last[2] is not None and last[1] > 0 and last[2] >= 0:
            out[symbol] = (last[1], last[2])
    return out


def _start_source(rt: Runtime, config: RunConfig, probe: Any) -> tuple[Any, list[str]]:
    # The adapter and the checked symbols; starts the embedded exchange when there is one.
    # Symbols are checked with the vendor's rules (``probe``) before anything starts.
    symbols = normalize_symbols(config.symbols, probe)
    if config.embedded:
        symbols = _start_exchange(rt, config, symbols)
        adapter = make_adapter(config, rt.exchange.ws_url, rt.exchange.rest_url)
    else:
        adapter = probe if config.vendor_name != "binance" else make_adapter(config, config.url, config.rest_url)
        symbols = symbols or default_symbols(config.vendor_name, adapter)
    try:
        return adapter, adapter.validate_subscription(symbols)
    except ValueError as exc:
        raise UsageError(f"--symbols: {exc}") from None


def _start_exchange(rt: Runtime, config: RunConfig, symbols: list[str]) -> list[str]:
    # Start the embedded exchange; return the symbols to subscribe (defaults filled in).
    from feed.exchange.process import ExchangeProcess
    from feed.exchange.server import EmbeddedExchange

    kline = config.kline_streams
    # As fast as possible, the exchange gets a process (and a core) of its own, so it
    # does not take the engine's turns on the GIL (feed.exchange.process).
    own_process = bool(config.replay) and config.speed == 0 and config.faults is None
    exchange_class = ExchangeProcess if own_process else EmbeddedExchange
    try:
        rt.exchange = exchange_class(
            replay_files=list(config.replay), speed=config.speed, symbols=symbols or None,
            sim_rate=config.sim_rate, faults=config.faults, klines=kline is not None,
            history_s=0.0 if config.replay else min(config.backfill_s, 3600.0),
            sim_resume=None if config.replay else _sim_resume(rt.store),
        ).start()
    except ValueError as exc:
        raise UsageError(f"--replay/--symbols: {exc}") from None
    if not symbols:
        symbols = list(rt.exchange.symbols) if config.replay else list(DEFAULT_SYMBOLS_SIM)
    if kline and not any(rt.exchange.serves(s, f"kline_{kline}") for s in symbols):
        raise UsageError(f"--kline-check: the replay files hold no @kline_{kline} streams "
                         "to compare with; record a session with them or drop --kline-check")
    return symbols


def _open_store(config: RunConfig, adapter: Any) -> Any:
    # The trade store of this source, or None for a replay without data_dir.
    if config.replay and not config.data_dir:
        return None
    from feed.io.store import StoreError, TradeStore

    data_dir = config.data_dir or _default_data_dir()
    source = (_replay_store_name(config.replay, config.binance_market) if config.replay
              else "embedded" if config.embedded else adapter.name)
    try:
        return TradeStore(data_dir / source)
    except StoreError as exc:  # locked by another process, or corrupt: the message says what to do
        raise UsageError(f"--data-dir: {exc}") from None
    except Exception as exc:
        raise UsageError(f"--data-dir: cannot use {data_dir}: {exc}") from None


def _open_recorder(config: RunConfig, adapter: Any) -> Any:
    # The recorder of config.record, or None; a recording is never overwritten, and the
    # adapter's secrets (an auth reply echoing the key) are masked before anything is written.
    if not config.record:
        return None
    from feed.io.recorder import Recorder

    try:
        return Recorder(config.record, redact=adapter.redact)
    except FileExistsError:
        raise UsageError(f"--record: {config.record} exists; a recording is never overwritten, "
                         "choose another name") from None
    except OSError as exc:
        raise UsageError(f"--record: cannot create {config.record}: {exc.strerror or exc}") from None


def _engine_config(config: RunConfig, engine_options: dict | None) -> Any:
    # EngineConfig for the run; engine_options may set fields of either dataclass.
    from feed.core.config import EngineConfig, MarketConfig

    options = dict(engine_options or {})
    market_fields = {k: options.pop(k) for k in list(options) if k in MarketConfig.__dataclass_fields__}
    history = config.backfill_s > 0
    market_fields = {"backfill_s": config.backfill_s, "repair_gaps": history, **market_fields}
    market = MarketConfig(clock="exchange" if config.replay else "wall", default_spec=config.bar,
                          bar_options=config.bar_options, kline_check=config.kline_streams,
                          **market_fields)
    days, mb = config.retention_days, config.retention_mb
    return EngineConfig(
        market=market,
        retention_max_age_s=None if days is None else days * 86400.0,
        retention_max_bytes=None if mb is None else int(mb * 1024 * 1024),
        **options,
    )


def _watch_replay(rt: Runtime) -> None:
    # Tell the engine when the recorded session has played out, once it drained the queue.
    rt.exchange.finished.wait()
    rt.engine.wait_idle(timeout=60, quiet_s=1.0)
    import time

    from feed.core.events import SourceFinished

    # Through the queue, so the market state also asks for the trades after the newest
    # received (lost unseen if the connection was down when the session ended).
    rt.engine.submit_control(SourceFinished(time.time_ns()))
    if rt.feed is not None:
        # Nothing more will come: silence is expected now, not a dead connection.
        rt.feed.stale_after_s = None


def _replay_store_name(files: tuple[Path, ...], market: str) -> str:
    # One store per set of recordings and market: a replay restores its own history only.
    # Keyed by the files' names and sizes, not their paths: the same recordings moved or
    # copied elsewhere find their history; another day's file (or a longer capture under
    # the same name) gets its own.
    digest = hashlib.sha1()
    for name, size in sorted((p.name, _size(p)) for p in files):
        digest.update(f"{name}\0{size}\0".encode())
    return str(Path("replay") / f"{market}-{digest.hexdigest()[:12]}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tickscope", appauthor=False))
