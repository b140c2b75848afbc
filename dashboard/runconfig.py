"""What one ``tickscope`` run needs: the frozen :class:`RunConfig` and :class:`UsageError`.

A ``RunConfig`` is built from parsed command-line arguments (:meth:`RunConfig.from_args`)
or directly by code. Its constructor checks every rule that involves its fields only (bar
spec, bar rules, URL schemes, options that belong to one vendor) and raises
:class:`UsageError` naming the option; :meth:`RunConfig.from_args` also reads what the
arguments point at (replay files, the TOML config file, the vendor token in the
environment). Starting the run is :func:`dashboard.runtime.start_runtime`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from feed.core.models import BarSpec
from feed.core.timegrid import make_grid

from .errors import UsageError

if TYPE_CHECKING:
    from feed.exchange.faults import Faults

__all__ = ["RunConfig", "UsageError"]

log = logging.getLogger("tickscope")

#: The vendor that owns each vendor-specific option; it is refused with any other.
_OPTION_OWNER = {"--market": "binance", "--binance-host": "binance", "--rest-url": "binance",
                 "--kline-check": "binance", "--itick-market": "itick"}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs: source, symbols, bar rules, files and the dashboard address.

    The source is the embedded exchange (simulator, or ``replay`` files at ``speed``) when
    neither ``vendor`` nor ``url`` is given, else a live vendor.

    Parameters
    ----------
    replay : tuple of Path
        Recorded session files played through the embedded exchange, in time order.
    speed : float, default 1
        Replay speed: 1 = recorded pacing, 0 = as fast as possible.
    vendor : {"binance", "alltick", "itick"}, optional
        Live vendor; None with ``url`` None: the embedded exchange (Binance dialect).
    market, binance_host : str, optional
        Binance market (``spot`` / ``usdm``, default spot) and hosts (``main`` / ``data``).
    itick_market : str, optional
        iTick market (``stock``, ``forex``, ``indices``, ``crypto``; default stock).
    config_file : str, optional
        The TOML file the vendor settings below were read from (for messages only).
    token, max_symbols, alltick_plan
        Vendor settings: the token (never shown in ``repr``), the per-connection symbol
        limit and the AllTick plan name.
    kline_check : bool
        Also subscribe the vendor's final klines and compare them with our bars.
    kline_interval : str, default "1m"
        Interval of the compared klines.
    symbols : tuple of str
        Symbols as the user typed them; the adapter normalises and checks them.
    url, rest_url : str, optional
        WebSocket endpoint replacing the vendor's; base URL for REST depth snapshots.
    data_dir : Path, optional
        Where trades are stored (default: the platform's user data dir; a replay stores
        only when this is given).
    retention_days, retention_mb : float, optional
        Delete stored trades older than this many days / beyond this many megabytes.
    record : str, optional
        File recording every received message in the replay format.
    stale_after : float, default 30
        Seconds without a message, while subscribed, before reconnecting.
    faults : feed.exchange.server.Faults, optional
        Faults injected by the embedded exchange (developer option).
    sim_rate : float, default 1
        Simulator activity multiplier.
    backfill : float, optional
        Seconds of trades to fetch from the vendor's REST history before each symbol's first
        live trade (``--backfill``); a trade-id gap is repaired from the same history
        whenever it is > 0. None: the default (``backfill_s``).
    host, port
        Dashboard bind address and port.
    bar : str, default "1m"
        Bar spec shown first.
    utc_offset, session_tz, session_open, empty, late_tolerance, session_reset
        Bar rules (see ``feed.core.bars.make_aggregator``); ``late_tolerance`` in seconds.

    Raises
    ------
    UsageError
        Naming the option, for a value or combination that cannot run.
    """

    replay: tuple[Path, ...] = ()
    speed: float = 1.0
    vendor: str | None = None
    market: str | None = None
    binance_host: str | None = None
    itick_market: str | None = None
    config_file: str | None = None
    token: str | None = field(default=None, repr=False)
    max_symbols: int | None = None
    alltick_plan: str | None = None
    kline_check: bool = False
    kline_interval: str = "1m"
    symbols: tuple[str, ...] = ()
    url: str | None = None
    rest_url: str | None = None
    data_dir: Path | None = None
    retention_days: float | None = None
    retention_mb: float | None = None
    record: str | None = None
    stale_after: float = 30.0
    faults: Faults | None = None
    sim_rate: float = 1.0
    backfill: float | None = None
    host: str = "127.0.0.1"
    port: int = 8050
    bar: str = "1m"
    utc_offset: str | None = None
    session_tz: str | None = None
    session_open: str = "00:00"
    empty: str = "gap"
    late_tolerance: float = 2.0
    session_reset: bool = False

    def __post_init__(self) -> None:
        try:
            BarSpec.from_str(self.bar)
        except ValueError as exc:
            raise UsageError(f"--bar: {exc}") from None
        self._check_bar_rules()
        if self.replay and self.vendor:
            raise UsageError("--replay plays through the embedded exchange; drop --vendor")
        _check_url("--url", self.url, ("ws", "wss"), "a ws:// or wss://")
        _check_url("--rest-url", self.rest_url, ("http", "https"), "an http:// or https://")
        self._check_vendor_options()
        if self.faults is not None and not self.embedded:
            raise UsageError("--faults applies to the embedded exchange only; drop --vendor/--url")

    # -- derived values ---------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when the run starts the embedded exchange (no ``vendor``, no ``url``)."""
        return not self.vendor and not self.url

    @property
    def vendor_name(self) -> str:
        """The adapter's vendor: ``vendor``, or ``binance`` (the embedded exchange's dialect)."""
        return self.vendor or "binance"

    @property
    def binance_market(self) -> str:
        """The Binance market: ``market`` or ``spot``."""
        return self.market or "spot"

    @property
    def kline_streams(self) -> str | None:
        """The kline interval compared (``kline_interval``), or None without ``kline_check``."""
        return self.kline_interval if self.kline_check else None

    @property
    def backfill_s(self) -> float:
        """Seconds of REST history to backfill: ``backfill`` when given, else 1 h for live
        Binance and ``DEFAULT_BACKFILL_EMBEDDED_S`` (30 min) on the embedded simulator,
        so the default start opens with history. The simulator makes its past only when
        the backfill first asks for it (``feed.exchange.sim_past``, vectorised: about
        0.05 s per symbol), and the backfill runs in the background, newest first, so
        the page is not delayed. The default is 0 for a replay (nothing was played
        before it), with ``record`` (the recording must replay as it was received, and
        REST history is not in it), with the developer options ``faults`` (injected gaps
        stay visible) and ``sim_rate`` other than 1 (the made-up past follows the
        instrument's usual rate), and for vendors without trade history."""
        if self.backfill is not None:
            return self.backfill
        if (self.vendor_name != "binance" or self.replay or self.record or self.faults is not None
                or (self.embedded and self.sim_rate != 1.0)):
            return 0.0
        return DEFAULT_BACKFILL_EMBEDDED_S if self.embedded else DEFAULT_BACKFILL_LIVE_S

    @property
    def bar_options(self) -> dict[str, Any]:
        """The bar rules as ``feed.core.bars.make_aggregator`` keywords (tolerance in ns)."""
        return {"utc_offset": self.utc_offset, "session_tz": self.session_tz,
                "session_open": self.session_open, "empty": self.empty,
                "late_tolerance_ns": int(self.late_tolerance * 1e9),
                "session_reset": self.session_reset}

    # -- building -------------------------------------------------------------------------

    @classmethod
    def from_args(cls, args: Any) -> "RunConfig":
        """Return the config for parsed ``tickscope`` arguments, reading the files they name.

        Parameters
        ----------
        args : argparse.Namespace
            From ``dashboard.cli.build_parser().parse_args(...)``.

        Raises
        ------
        UsageError
            For a bad argument, an unreadable replay or config file, a missing token.
        """
        config = cls(
            speed=args.speed, vendor=args.vendor, market=args.market, binance_host=args.binance_host,
            itick_market=args.itick_market, config_file=args.config, kline_check=args.kline_check,
            kline_interval=args.kline_interval, symbols=_split_symbols(args.symbols), url=args.url,
            rest_url=args.rest_url, data_dir=Path(args.data_dir) if args.data_dir else None,
            retention_days=args.retention_days, retention_mb=args.retention_mb, record=args.record,
            stale_after=args.stale_after, faults=_parse_faults(args.faults), sim_rate=args.sim_rate,
            host=args.host, port=args.port, bar=args.bar, utc_offset=args.utc_offset,
            session_tz=args.session_tz, session_open=args.session_open, empty=args.empty,
            late_tolerance=args.late_tolerance, session_reset=args.session_reset,
            replay=tuple(Path(p) for p in args.replay),
            backfill=parse_duration(args.backfill, "--backfill") if getattr(args, "backfill", None) else None,
        )
        _check_replay_files(config.replay)
        if config.vendor_name == "binance":
            if config.config_file:
                log.info("--config: Binance needs no token; the file is not read")
            return config
        from .sources import load_vendor_settings

        return replace(config, **load_vendor_settings(config.vendor_name, config.config_file))

    # -- checks ---------------------------------------------------------------------------

    def _check_bar_rules(self) -> None:
        if not (self.late_tolerance >= 0):
            raise UsageError(f"--late-tolerance must be >= 0 seconds, not {self.late_tolerance}")
        try:
            make_grid(60_000_000_000, utc_offset=self.utc_offset, session_tz=self.session_tz,
                      session_open=self.session_open)
        except ValueError as exc:
            raise UsageError(f"bar rules: {exc}") from None

    def _check_vendor_options(self) -> None:
        vendor = self.vendor_name
        given = {"--market": self.market, "--binance-host": self.binance_host,
                 "--itick-market": self.itick_market, "--rest-url": self.rest_url,
                 "--kline-check": self.kline_check or None}
        for option, value in given.items():
            owner = _OPTION_OWNER[option]
            if value is not None and owner != vendor:
                why = (" (AllTick serves klines over HTTP only; iTick's are not compared)"
                       if option == "--kline-check" else "")
                raise UsageError(f"{option} applies to --vendor {owner} only, not {vendor}{why}")
        if self.binance_host == "data":
            if self.binance_market != "spot":
                raise UsageError("--binance-host data: Binance's market-data-only host serves spot only; "
                                 "use --market spot or drop --binance-host")
            if self.url or self.embedded:
                raise UsageError("--binance-host names Binance's hosts; it cannot go with --url "
                                 "or the embedded exchange (add --vendor binance, drop --url)")


def _check_url(option: str, url: str | None, schemes: tuple[str, ...], what: str) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise UsageError(f"{option}: {url!r} is not {what} URL")


def _split_symbols(text: str | None) -> tuple[str, ...]:
    # "A, B,,C" -> ("A", "B", "C"); the adapter checks each one later.
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


#: ``--backfill`` defaults: live Binance, and the embedded simulator (see
#: ``RunConfig.backfill_s``: 30 min of three symbols is about 50 REST calls and 1 s of
#: background work, against about 2.5 s for an hour).
DEFAULT_BACKFILL_LIVE_S = 3600.0
DEFAULT_BACKFILL_EMBEDDED_S = 1800.0
#: The longest backfill accepted (Binance serves aggregate trades for years, but a week of
#: a busy symbol is millions of trades and thousands of calls).
MAX_BACKFILL_S = 7 * 86400.0
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> float:
    """Return seconds for a duration such as ``30m``, ``6h``, ``1d``, ``90s`` or ``0``.

    Raises
    ------
    UsageError
        Naming ``option``, for anything else or more than ``MAX_BACKFILL_S``.
    """
    t = str(text).strip().lower()
    try:
        seconds = 0.0 if t == "0" else float(t[:-1]) * _DURATION_UNITS[t[-1]]
    except (KeyError, ValueError, IndexError):
        raise UsageError(f"{option}: expected a duration such as 30m, 6h, 1d or 0, not {text!r}") from None
    if not 0 <= seconds <= MAX_BACKFILL_S:
        raise UsageError(f"{option}: {text!r} is outside 0..7d")
    return seconds


def _parse_faults(text: str | None) -> Faults | None:
    if not text:
        return None
    from feed.exchange.faults import Faults

    try:
        return Faults.from_str(text)
    except ValueError as exc:
        raise UsageError(f"--faults: {exc}") from None


def _check_replay_files(paths: tuple[Path, ...]) -> None:
    # Every file must exist and start with a '<time> <JSON>' line; one message per problem.
    from feed.io.readers import RecordingError, read_recording

    for path in paths:
        if not path.is_file():
            raise UsageError(f"--replay: {path}: no such file")
        try:
            next(read_recording(path), None)
        except RecordingError as exc:
            raise UsageError(f"--replay: {exc}") from None
