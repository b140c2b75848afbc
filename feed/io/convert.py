"""Offline conversion of trade files into bars: ``tickscope bars``.

Usage::

    tickscope bars INPUT... --bar SPEC [--symbol S] [--format FMT] [--empty gap|flat]
                   [--late-tolerance S]
                   [--utc-offset ±HH:MM | --session-tz TZ [--session-open HH:MM]]
                   [--price-decimals N] [--size-decimals N] [-o OUT] [--no-progress]

Reads every INPUT with :func:`feed.io.tradefiles.read_trades` (recorded sessions, Binance
trades/aggTrades CSV, Tardis trades CSV, generic CSV/Parquet; the format is detected per
file unless ``--format`` names it), takes the files in the order of their first trade and
each file's trades in file order (the order they arrived in), aggregates them with
:func:`feed.core.batch.aggregate` under the live out-of-order rule and writes the export CSV of
:func:`feed.core.csvformat.bars_to_csv`, the same format as the dashboard's *Export CSV* and
``GET /api/bars``. The last bar is written with ``closed=false``: nothing in the input
shows it ended.

Out-of-order trades follow the one rule of the live dashboard (``feed.core.bars``): a trade
that belongs to a time bar before the one forming revises that bar when it is at most
``--late-tolerance`` seconds (default 2, as ``tickscope --late-tolerance``) older than the
newest trade before it; an older one is counted as late and left out. Trades are never sorted, so the screen of a replay and ``tickscope bars`` of the same
recording write the same bars.

A bad argument or file prints one line, ``tickscope bars: error: <file>:<line>: <problem>``
(or without the line when the problem is the whole file), and exits with code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, NoReturn

import numpy as np
import pandas as pd

from feed.core.batch import aggregate
from feed.core.csvformat import bars_to_csv
from feed.core.models import BarSpec
from feed.io.readers import RecordingError
from feed.io.tradefiles import FORMATS, read_trades

__all__ = ["convert", "main", "build_parser", "exit_process", "MAX_DECIMALS"]

PROG = "tickscope bars"

#: Most decimals inferred for prices or sizes (a float's shortest repr can be longer).
MAX_DECIMALS = 12

# The progress bar appears only once a conversion has run this long (seconds), so small
# files convert silently.
_PROGRESS_DELAY_S = 1.0


def convert(
    inputs: Sequence[str | os.PathLike],
    spec: BarSpec | str,
    *,
    symbol: str | None = None,
    fmt: str | None = None,
    out: str | os.PathLike | IO[str] | None = None,
    progress: bool = True,
    price_decimals: int | None = None,
    size_decimals: int | None = None,
    late_tolerance_s: float = 2.0,
    on_late: Callable[[int], object] | None = None,
    **bar_options,
) -> int:
    """Convert trade files into one bar CSV; return the number of bars written.

    Parameters
    ----------
    inputs : sequence of path
        Trade files (see :func:`feed.io.tradefiles.read_trades`); several files are taken in
        the order of their first trade, each one's trades in file order (never sorted).
    spec : BarSpec or str
        Bar spec, e.g. ``"1m"``, ``"100t"``, ``"50v"``, ``"1000000q"``.
    symbol : str, optional
        The symbol to convert. Required when the inputs hold several symbols.
    fmt : str, optional
        Format of every input (one of :data:`feed.io.tradefiles.FORMATS`); None detects it per file.
    out : path, text file or None
        Where the CSV goes: a path (written to a temporary file, then renamed, so a failed
        run leaves no partial file), an open text file, or None for standard output.
    progress : bool, default True
        Show a tqdm progress bar on standard error when it is a terminal and the
        conversion takes longer than a second.
    price_decimals, size_decimals : int, optional
        Decimals written for prices and sizes; None infers them from the trades (the
        fewest decimals that print every price/size exactly, at most ``MAX_DECIMALS``).
    late_tolerance_s : float, default 2.0
        Seconds a trade of an earlier time bar may be older than the newest before it and
        still revise that bar; older ones are late and left out (``tickscope
        --late-tolerance``).
    on_late : callable, optional
        Called with the number of trades left out as late.
    **bar_options
        Passed to :func:`feed.core.batch.aggregate`: ``empty`` (``"gap"`` or ``"flat"``) and the
        time-grid options ``utc_offset`` (e.g. ``"+08:00"``), ``session_tz`` and
        ``session_open`` (e.g. ``"America/New_York"``, ``"09:30"``).

    Returns
    -------
    int
        Bars written (rows after the header).

    Raises
    ------
    RecordingError
        For an unreadable or bad input (the message names the file and line), inputs with
        several symbols and no ``symbol``, no trades (for ``symbol``), or inputs that
        overlap (the same trade id twice).
    ValueError
        For a bad ``spec``, bar option or decimals.
    OSError
        If ``out`` cannot be written.
    """
    spec = BarSpec.from_str(spec) if isinstance(spec, str) else spec
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no input files")
    for name, value in (("price_decimals", price_decimals), ("size_decimals", size_decimals)):
        if value is not None and not (isinstance(value, int) and 0 <= value <= 18):
            raise ValueError(f"{name} must be a whole number 0..18, not {value!r}")
    if type(late_tolerance_s) not in (int, float) or not 0 <= late_tolerance_s < 1e9:
        raise ValueError(f"late_tolerance_s must be >= 0 seconds, not {late_tolerance_s!r}")
    trades, sym = _read_all(paths, fmt, symbol, progress)
    bars = aggregate(trades, spec, symbol=sym, late_tolerance_ns=int(late_tolerance_s * 1e9),
                     **bar_options)
    if on_late is not None:
        on_late(int(bars.attrs.get("late", 0)))
    in_bars = trades["in_bars"].to_numpy(bool)
    if price_decimals is None:
        price_decimals = _max_decimals_of(_used(trades["price"].to_numpy(np.float64), in_bars))
    if size_decimals is None:
        size_decimals = _max_decimals_of(_used(trades["size"].to_numpy(np.float64), in_bars))
    text = bars_to_csv(bars, price_decimals=price_decimals, size_decimals=size_decimals)
    _write(text, out)
    return len(bars)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``tickscope bars`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Convert trade files into bars and write them as CSV "
        "(the dashboard's export format).",
        epilog=f"formats: {', '.join(FORMATS)} (detected per file when --format is not given). "
        "Examples: tickscope bars capture.gz --bar 1m -o bars.csv; "
        "tickscope bars BTCUSDT-aggTrades-2024-01.zip --bar 100t",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="trade files (plain, .gz or .zip)")
    parser.add_argument("--bar", required=True, type=_bar_spec, metavar="SPEC",
                        help="bar spec: time 1s..1d, tick 100t, volume 50v, value 1000000q")
    parser.add_argument("--symbol", metavar="S",
                        help="symbol to convert (needed when the inputs hold several)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, metavar="FMT",
                        help=f"input format, one of {', '.join(FORMATS)}")
    parser.add_argument("--empty", choices=("gap", "flat"), default="gap",
                        help="time bars: leave empty intervals out (gap, default) or write "
                        "zero-volume bars at the previous close (flat, Binance's convention)")
    parser.add_argument("--late-tolerance", type=_seconds_arg, default=2.0, metavar="S",
                        help="time bars: a trade of an earlier bar up to S seconds older than the "
                        "newest before it revises that bar; older ones are counted as late and "
                        "left out, as live (default 2; trades are never sorted)")
    parser.add_argument("--utc-offset", metavar="±HH:MM",
                        help="time bars: align to this UTC offset instead of UTC "
                        "(+08:00 matches Binance's @kline_<i>@+08:00)")
    parser.add_argument("--session-tz", metavar="TZ",
                        help="time bars: anchor to a daily session open in this IANA time zone, "
                        "e.g. America/New_York")
    parser.add_argument("--session-open", metavar="HH:MM",
                        help="local session open for --session-tz (default 00:00)")
    parser.add_argument("--session-reset", action="store_true",
                        help="tick, volume and value bars: never let a bar span a session "
                        "boundary (sessions by --session-tz/--session-open, else UTC days)")
    parser.add_argument("--price-decimals", type=_decimals_arg, metavar="N",
                        help="decimals for prices (default: inferred from the trades)")
    parser.add_argument("--size-decimals", type=_decimals_arg, metavar="N",
                        help="decimals for sizes (default: inferred from the trades)")
    parser.add_argument("-o", "--output", default="-", metavar="OUT",
                        help="output CSV file (default: standard output)")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tickscope bars`` with ``argv`` (without the program and subcommand names).

    Returns
    -------
    int
        0 on success, 2 for a bad argument or input file (one message on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageError as exc:
        return _error(str(exc))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    out = None if args.output == "-" else args.output
    if args.session_open is not None and args.session_tz is None:
        return _error("--session-open needs --session-tz")
    # Grid options go to aggregate() only when given, so its defaults stay the defaults.
    grid = {k: v for k, v in (("utc_offset", args.utc_offset), ("session_tz", args.session_tz),
                              ("session_open", args.session_open)) if v is not None}
    late: list[int] = []
    try:
        n = convert(
            args.inputs, args.bar, symbol=args.symbol, fmt=args.fmt, out=out,
            progress=not args.no_progress, price_decimals=args.price_decimals,
            size_decimals=args.size_decimals, empty=args.empty,
            session_reset=args.session_reset, late_tolerance_s=args.late_tolerance,
            on_late=late.append, **grid,
        )
    except (RecordingError, ValueError) as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"{args.output}: cannot write: {exc.strerror or exc}")
    if out is not None:
        print(f"{PROG}: wrote {n} bar{'' if n == 1 else 's'} to {out}", file=sys.stderr)
    if late and late[0]:
        print(f"{PROG}: {late[0]} late trade{'' if late[0] == 1 else 's'} left out (more than "
              f"{args.late_tolerance:g} s older than the newest before; --late-tolerance)", file=sys.stderr)
    return 0


def exit_process(code: int) -> NoReturn:
    """End the ``tickscope bars`` process with ``code`` once its output is out, skipping
    the interpreter's teardown.

    Tearing down pandas, numpy and pyarrow (freeing every module's objects, a last
    garbage collection) costs about 0.08 s of a conversion that takes 0.7 s, after the
    bars are written. The output file is closed and renamed by then and nothing here
    registers exit handlers, so only the standard streams need flushing. For the command
    only (``dashboard.cli.main`` with no arguments): a caller of :func:`main` keeps its
    process.

    Raises
    ------
    SystemExit
        With ``code`` when a standard stream cannot be flushed (a closed pipe): the normal
        exit then reports it as it always did.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code)


# -- private ----------------------------------------------------------------------------


class _UsageError(Exception):
    # A bad command line; main prints it as one line.
    pass


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and exits on an error; tickscope prints one line (DESIGN.md
    # "Errors") and main returns 2.

    def error(self, message: str):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _bar_spec(text: str) -> BarSpec:
    try:
        return BarSpec.from_str(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {text!r}")
    return value


def _decimals_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 18:
        raise argparse.ArgumentTypeError(f"expected a whole number 0..18, not {text!r}")
    return value


def _read_all(paths: list[Path], fmt: str | None, symbol: str | None,
              progress: bool) -> tuple[pd.DataFrame, str]:
    # Every input's trades (of one symbol) and that symbol: files in the order of their
    # first trade, each file's trades in file order (arrival order). Never sorted by time:
    # the aggregator applies the live out-of-order rule to them. The frames have no
    # symbol column (one symbol is checked from each file's row_symbols instead).
    bar = _progress_bar(paths) if progress else None
    try:
        frames = [
            read_trades(p, fmt=fmt, symbol=symbol, on_progress=bar.update if bar else None,
                        symbol_column=False)
            for p in paths
        ]
    finally:
        if bar is not None:
            bar.close()
    where = paths[0] if len(paths) == 1 else ", ".join(map(str, paths))
    seen = sorted({s for f in frames for s in f.attrs.get("symbols", ())})
    # Stable: files with equal first times (and empty files, last) keep command-line order.
    first = [int(f["ts_ns"].iloc[0]) if len(f) else None for f in frames]
    by_first = sorted(range(len(frames)), key=lambda i: (first[i] is None, first[i] or 0))
    frames = [frames[i] for i in by_first]
    paths = [paths[i] for i in by_first]
    lengths = [len(f) for f in frames]
    trades = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if not len(trades):
        if symbol and seen:
            raise RecordingError(f"{where}: no {symbol.upper()} trades; symbols found: {', '.join(seen)}")
        raise RecordingError(f"{where}: no trades found")
    symbols = sorted({s for f in frames for s in f.attrs["row_symbols"]})
    if len(symbols) > 1:
        raise RecordingError(
            f"{where}: trades of several symbols ({', '.join(symbols)}); choose one with --symbol"
        )
    _check_overlap(trades, lengths, paths)
    return trades, symbols[0]


def _check_overlap(trades: pd.DataFrame, lengths: list[int], paths: list[Path]) -> None:
    # The same trade id twice means overlapping inputs: its volume would count twice.
    # ``lengths``: rows of each of ``paths``, in the order of the rows of ``trades``.
    ids = trades["trade_id"]
    known = ids.notna().to_numpy()
    if not known.any():
        return
    if known.all():
        # Ids rising in file order (one exchange file, or files in sequence) cannot repeat;
        # this is the usual case and costs one pass instead of a hash of every id.
        arr = ids.to_numpy(np.int64)
        if bool(np.all(arr[1:] > arr[:-1])):
            return
    dup = ids[known].duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    rows = np.flatnonzero(known)[dup]
    tid = int(ids.iloc[rows[0]])
    file_of = np.searchsorted(np.cumsum(lengths), rows[ids.iloc[rows].to_numpy() == tid], side="right")
    files = sorted({str(paths[i]) for i in file_of})
    raise RecordingError(
        f"{' and '.join(files)}: trade id {tid} appears more than once: the inputs overlap "
        f"(each trade must be given once)"
    )


def _progress_bar(paths: list[Path]) -> _Progress | None:
    # A progress bar over input bytes on stderr; None when stderr is not a terminal.
    if not sys.stderr.isatty():
        return None
    return _Progress(sum(p.stat().st_size for p in paths if p.is_file()))


class _Progress:
    # tqdm over ``total`` input bytes, created (and tqdm imported) only when an update
    # comes after _PROGRESS_DELAY_S: a conversion done by then, as most are, never pays
    # for importing tqdm. The bytes reported before are carried into the bar.

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.monotonic()
        self.done = 0
        self.bar = None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is None:
            if time.monotonic() - self.start < _PROGRESS_DELAY_S:
                return
            try:
                from tqdm import tqdm
            except ImportError:  # progress is a nicety; conversion works without it
                self.start = float("inf")  # never try again
                return
            self.bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="reading", file=sys.stderr, leave=False)
            n = self.done
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _max_decimals_of(values: np.ndarray) -> int:
    # The vector form of feed.core.models.decimals_of, for millions of rows: the most
    # decimals any value needs (the fewest d that print every value exactly), capped at
    # MAX_DECIMALS. decimals_of per value would cost a Decimal per trade. Exact test:
    # a value parsed from a d-decimal text is the double nearest to k / 10**d, and
    # rint(v * 10**d) recovers k while v * 10**d < 2**52, so rint(v * 10**d) / 10**d == v
    # (IEEE division is correctly rounded) holds exactly then, and fails for more digits.
    v = np.asarray(values, np.float64)
    if not len(v):
        return 0
    lo, hi = float(v.min()), float(v.max())  # NaN if any is NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        v = v[np.isfinite(v)]
        if not len(v):
            return 0
        lo, hi = float(v.min()), float(v.max())
    # The largest |v| * 10**d is top * 10**d (rounding is monotonic), so whether any
    # value is beyond the precision test's bound is known without a pass over them.
    top = max(abs(lo), abs(hi))
    start = 0
    if len(v) > 8192:
        # Start where a sample stops: below it some value fails already (and no value of
        # all is beyond the precision test's bound there), so one or two passes remain.
        bound = next((d for d in range(MAX_DECIMALS + 1) if top * 10.0**d >= 2.0**52), MAX_DECIMALS)
        start = min(_max_decimals_of(v[:8192]), bound)
    for d in range(start, MAX_DECIMALS + 1):
        if top * 10.0**d >= 2.0**52 or _decimals_pass(v, d):
            return d  # further digits are beyond a double's precision here; or exact
    return MAX_DECIMALS


def _decimals_pass(v: np.ndarray, d: int) -> bool:
    # Every value prints exactly with d decimals; tested in blocks that stay in cache
    # (whole-array temporaries would be written to fresh memory), stopping at the first
    # block with a value that does not.
    scale = 10.0**d
    buf = np.empty(min(len(v), _DECIMALS_BLOCK))
    for lo in range(0, len(v), _DECIMALS_BLOCK):
        part = v[lo:lo + _DECIMALS_BLOCK]
        scaled = np.multiply(part, scale, out=buf[:len(part)])
        np.rint(scaled, out=scaled)
        np.divide(scaled, scale, out=scaled)
        if not np.array_equal(scaled, part):
            return False
    return True


# Values per block of _decimals_pass.
_DECIMALS_BLOCK = 1 << 16


def _used(values: np.ndarray, in_bars: np.ndarray) -> np.ndarray:
    # The values of trades that count in bars (all of them, as a rule: no copy then).
    return values if in_bars.all() else values[in_bars]


def _write(text: str, out: str | os.PathLike | IO[str] | None) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if hasattr(out, "write"):
        out.write(text)
        return
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
