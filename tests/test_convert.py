"""Trade-file readers (feed.io.tradefiles.read_trades, detect_format) and `tickscope bars`
(feed.io.convert): every format from small files written here, errors that name file and
line, and end to end on real data against Binance's official klines."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feed.io.convert import convert, main
from feed.core.models import BUY, SELL, UNKNOWN
from feed.io.readers import RecordingError
from feed.io.tradefiles import TRADE_COLUMNS, detect_format, read_trades
from tests.helpers import require_shared_data

MIN_NS = 60_000_000_000
T0_MS = 1_723_161_255_342  # 2024-08-08 23:54:15.342 UTC

# Two trades as Binance's public-data files give them: (id, price, qty, time ms, buyer maker).
ROWS = [(3735683259, "61837.63", "0.020", T0_MS, "true"),
        (3735683260, "61838.10", "0.048", T0_MS + 275, "false")]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def binance_trades_csv(header: bool, unit: str, best_match: bool = True) -> str:
    k = 1000 if unit == "us" else 1
    lines = ["id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"] if header else []
    for tid, p, q, t, m in ROWS:
        quote = f"{float(p) * float(q):.8f}"
        lines.append(",".join([str(tid), p, q, quote, str(t * k), m] + (["true"] if best_match else [])))
    return "\n".join(lines) + "\n"


def binance_aggtrades_csv(header: bool, unit: str, best_match: bool = True) -> str:
    k = 1000 if unit == "us" else 1
    head = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    lines = [head + (",is_best_match" if best_match else "")] if header else []
    for tid, p, q, t, m in ROWS:
        lines.append(",".join([str(tid), p, q, str(tid * 2), str(tid * 2 + 1), str(t * k), m]
                              + (["true"] if best_match else [])))
    return "\n".join(lines) + "\n"


def assert_two_rows(df: pd.DataFrame, symbol: str = "", ids: bool = True) -> None:
    # aggTrades add ``count`` (l - f + 1 trades per aggregate) after the trade columns.
    assert list(df.columns) in (list(TRADE_COLUMNS), list(TRADE_COLUMNS) + ["count"])
    assert df["ts_ns"].tolist() == [T0_MS * 1_000_000, (T0_MS + 275) * 1_000_000]
    assert df["price"].tolist() == [61837.63, 61838.10]
    assert df["size"].tolist() == [0.020, 0.048]
    assert df["side"].tolist() == [SELL, BUY]
    assert df["in_bars"].tolist() == [True, True]
    if ids:
        assert df["trade_id"].tolist() == [3735683259, 3735683260]
    else:
        assert df["trade_id"].isna().all()
    assert df["symbol"].tolist() == [symbol, symbol]
    assert (df["ts_ns"].dtype, df["side"].dtype, df["trade_id"].dtype) == (np.int64, np.int8, "Int64")


def trade_msg(symbol: str, tid: int, price: str, qty: str, t_ms: int, maker: bool, x: str | None = None) -> str:
    data = {"e": "trade", "E": t_ms + 3, "T": t_ms, "s": symbol, "t": tid, "p": price, "q": qty, "m": maker}
    if x is not None:
        data["X"] = x
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data}, separators=(",", ":"))


def recording(lines: list[tuple[int, str]]) -> str:
    return "".join(f"{recv} {raw}\n" for recv, raw in lines)


BOOK_TICKER = ('{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"s":"BTCUSDT",'
               '"b":"1.0","B":"1","a":"1.1","A":"1","T":1,"E":1}}')
DEPTH = ('{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161255343,"T":1723161255342,'
         '"s":"BTCUSDT","U":5,"u":6,"pu":4,"b":[["61837.60","0.1"]],"a":[]}}')


# -- readers: Binance public data ------------------------------------------------------


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("unit", ["ms", "us"])
@pytest.mark.parametrize("best_match", [True, False])
def test_read_trades_when_binance_trades_csv_any_header_and_unit_gives_the_trades(tmp_path, header, unit, best_match):
    path = write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", binance_trades_csv(header, unit, best_match))
    assert detect_format(path) == "binance-trades"
    df = read_trades(path)
    assert_two_rows(df, "BTCUSDT")
    assert df.attrs == {"symbols": ["BTCUSDT"], "format": "binance-trades"}


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("unit", ["ms", "us"])
@pytest.mark.parametrize("best_match", [True, False])
def test_read_trades_when_binance_aggtrades_csv_any_header_and_unit_gives_the_trades(tmp_path, header, unit, best_match):
    path = write(tmp_path / "aggs.csv", binance_aggtrades_csv(header, unit, best_match))
    assert detect_format(path) == "binance-aggtrades"
    df = read_trades(path)
    assert_two_rows(df)
    assert df["count"].tolist() == [2, 2]  # first_trade_id..last_trade_id = 2 trades each


def test_read_trades_when_binance_zip_archive_reads_its_csv(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-08-08.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("BTCUSDT-aggTrades-2024-08-08.csv", binance_aggtrades_csv(False, "ms"))
    assert detect_format(path) == "binance-aggtrades"
    assert_two_rows(read_trades(path), "BTCUSDT")


def test_read_trades_when_symbol_differs_from_file_name_returns_no_trades(tmp_path):
    path = write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", binance_trades_csv(True, "ms"))
    df = read_trades(path, symbol="ethusdt")
    assert len(df) == 0 and df.attrs["symbols"] == ["BTCUSDT"]


def test_read_trades_when_file_does_not_name_symbol_labels_with_symbol_argument(tmp_path):
    path = write(tmp_path / "t.csv", binance_trades_csv(True, "ms"))
    assert_two_rows(read_trades(path, symbol="btcusdt"), "BTCUSDT")


# -- readers: Tardis, generic ----------------------------------------------------------


def test_read_trades_when_tardis_csv_gives_trades_with_taker_side(tmp_path):
    path = write(tmp_path / "tardis.csv", (
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
        f"binance-futures,BTCUSDT,{T0_MS * 1000},{T0_MS * 1000 + 300},3735683259,sell,61837.63,0.020\n"
        f"binance-futures,BTCUSDT,{(T0_MS + 275) * 1000},{T0_MS * 1000 + 999},3735683260,buy,61838.10,0.048\n"
        f"binance-futures,ETHUSDT,{(T0_MS + 276) * 1000},{T0_MS * 1000 + 999},1,unknown,2600.5,1\n"
    ))
    assert detect_format(path) == "tardis"
    everything = read_trades(path)
    assert everything["symbol"].tolist() == ["BTCUSDT", "BTCUSDT", "ETHUSDT"]
    assert everything["side"].tolist() == [SELL, BUY, UNKNOWN]
    assert_two_rows(read_trades(path, symbol="BTCUSDT"), "BTCUSDT")
    assert read_trades(path, symbol="BTCUSDT").attrs["symbols"] == ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000])  # ms, µs, ns epochs
def test_read_trades_when_generic_csv_epoch_in_any_unit_gives_ns(tmp_path, scale):
    path = write(tmp_path / "g.csv", (
        "ts,price,size,side\n"
        f"{T0_MS * scale},61837.63,0.020,s\n"
        f"{(T0_MS + 275) * scale},61838.10,0.048,BUY\n"
    ))
    assert detect_format(path) == "generic"
    assert_two_rows(read_trades(path), ids=False)


def test_read_trades_when_generic_csv_epoch_seconds_with_fraction_gives_ns(tmp_path):
    path = write(tmp_path / "g.csv", (
        "ts,price,size,side\n"
        f"{T0_MS / 1000:.3f},61837.63,0.020,-1\n"
        f"{(T0_MS + 275) / 1000:.3f},61838.10,0.048,1\n"
    ))
    assert_two_rows(read_trades(path), ids=False)


def test_read_trades_when_generic_csv_iso_times_reads_them_as_utc(tmp_path):
    path = write(tmp_path / "g.csv", (
        "timestamp,price,qty,side\n"
        "2024-08-08T23:54:15.342Z,61837.63,0.020,sell\n"
        "2024-08-09T01:54:15.617+02:00,61838.10,0.048,b\n"
    ))
    assert_two_rows(read_trades(path), ids=False)


def test_read_trades_when_csv_is_gzipped_reads_it_and_reports_progress_in_file_bytes(tmp_path):
    path = tmp_path / "g.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("ts,price,size,side,trade_id\n")
        fh.writelines(f"{T0_MS + i},{61837.63 + i / 100:.2f},0.001,buy,{i}\n" for i in range(5000))
    reported = []
    df = read_trades(path, on_progress=reported.append)
    assert len(df) == 5000 and df["trade_id"].iloc[-1] == 4999
    assert sum(reported) == path.stat().st_size


def test_read_trades_when_generic_has_no_side_gives_unknown(tmp_path):
    path = write(tmp_path / "g.csv", f"ts,price,size\n{T0_MS},1.5,2\n")
    df = read_trades(path)
    assert df["side"].tolist() == [UNKNOWN] and df["trade_id"].isna().all()


def test_read_trades_when_generic_parquet_gives_the_trades(tmp_path):
    path = tmp_path / "trades.bin"  # detected by magic bytes, not the extension
    pd.DataFrame({
        "ts": [T0_MS, T0_MS + 275], "price": [61837.63, 61838.10], "size": [0.020, 0.048],
        "side": ["sell", "buy"], "trade_id": [3735683259, 3735683260],
    }).to_parquet(path)
    assert detect_format(path) == "generic"
    assert_two_rows(read_trades(path))


def test_read_trades_when_generic_parquet_datetime_column_gives_ns(tmp_path):
    path = tmp_path / "trades.parquet"
    pd.DataFrame({
        "ts": pd.to_datetime([T0_MS, T0_MS + 275], unit="ms", utc=True),
        "price": [61837.63, 61838.10], "size": [0.020, 0.048], "side": [-1, 1],
        "id": [3735683259, 3735683260],
    }).to_parquet(path)
    assert_two_rows(read_trades(path))


# -- readers: recorded sessions --------------------------------------------------------


def test_read_trades_when_futures_recording_marks_non_market_trades_out_of_bars(tmp_path):
    path = tmp_path / "usdm.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(recording([
            (1723161255340000000, '{"lastUpdateId":7,"bids":[["61837.6","1"]],"asks":[["61837.7","1"]]}'),
            (1723161255341000000, BOOK_TICKER),
            (1723161255343000000, trade_msg("BTCUSDT", 3735683259, "61837.63", "0.020", T0_MS, True, "MARKET")),
            (1723161255344000000, DEPTH),
            (1723161255618000000, trade_msg("BTCUSDT", 3735683260, "61838.10", "0.048", T0_MS + 275, False, "MARKET")),
            (1723161255619000000, trade_msg("BTCUSDT", 3735683261, "61000.00", "0.001", T0_MS + 276, True, "INSURANCE_FUND")),
        ]))
    assert detect_format(path) == "recording"
    df = read_trades(path)
    assert df["in_bars"].tolist() == [True, True, False]
    assert_two_rows(df.iloc[:2], "BTCUSDT")


def test_read_trades_when_recording_has_two_symbols_filters_by_symbol(tmp_path):
    path = write(tmp_path / "spot.txt", recording([
        # Receive times in µs (the 2023 captures), spot trades (no X): all in bars.
        (1723161255343000, trade_msg("BTCUSDT", 3735683259, "61837.63", "0.020", T0_MS, True)),
        (1723161255344000, trade_msg("ETHUSDT", 1520538925, "2600.10", "1.5", T0_MS + 1, False)),
        (1723161255618000, trade_msg("BTCUSDT", 3735683260, "61838.10", "0.048", T0_MS + 275, False)),
    ]))
    both = read_trades(path)
    assert both["symbol"].tolist() == ["BTCUSDT", "ETHUSDT", "BTCUSDT"]
    assert both.attrs["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert_two_rows(read_trades(path, symbol="btcusdt"), "BTCUSDT")


# -- detection and errors --------------------------------------------------------------


@pytest.mark.parametrize("text,fmt", [
    ("1723161255343000000 {\"stream\":\"btcusdt@trade\"}\n", "recording"),
    (binance_trades_csv(False, "ms"), "binance-trades"),
    (binance_trades_csv(True, "us"), "binance-trades"),
    (binance_aggtrades_csv(False, "us"), "binance-aggtrades"),
    (binance_aggtrades_csv(True, "ms", best_match=False), "binance-aggtrades"),
    ("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n", "tardis"),
    ("\n\nts,price,size\n1,2,3\n", "generic"),
])
def test_detect_format_when_first_line_is_known_names_the_format(tmp_path, text, fmt):
    assert detect_format(write(tmp_path / "f", text)) == fmt


@pytest.mark.parametrize("text,where,problem", [
    ("", "", "empty file"),
    ("hello world\n", ":1:", "cannot tell the format"),
    ("a,b,c\n1,2,3\n", ":1:", "unknown header"),
])
def test_detect_format_when_file_is_unknown_raises_naming_file_and_line(tmp_path, text, where, problem):
    path = write(tmp_path / "f.csv", text)
    with pytest.raises(RecordingError) as info:
        detect_format(path)
    assert str(info.value).startswith(f"{path}{where}") and problem in str(info.value)


@pytest.mark.parametrize("text,line,problem", [
    # A blank line before the bad row: the line number still counts it.
    ("ts,price,size\n1723161255342,1.5,2\n\n1723161255343,abc,2\n", 4, "price 'abc' is not a number"),
    ("ts,price,size\n1723161255342,1.5,2\n1723161255343,1.5,\n", 3, "size missing"),
    ("ts,price,size\n1723161255342,1.5,2\n1723161255343,-1,2\n", 3, "price must be a positive number"),
    ("ts,price,size,side\n1723161255342,1.5,2,buy\n1723161255343,1.5,2,long\n", 3, "side 'long'"),
    ("ts,price,size\n1723161255342,1.5,2\n1723161255343000,1.5,2\n", 3, "not an epoch in ms"),
    ("ts,price,size\n2024-08-08T00:00:00Z,1.5,2\nyesterday,1.5,2\n", 3, "neither an epoch"),
    ("ts,price,size\n1723161255342,1.5,2\n1723161255343,1.5,2,9\n", 3, "Expected 3 fields"),
])
def test_read_trades_when_row_is_bad_raises_naming_file_and_line(tmp_path, text, line, problem):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(RecordingError) as info:
        read_trades(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and problem in str(info.value)


def test_read_trades_when_binance_flag_is_not_boolean_raises_naming_line(tmp_path):
    text = binance_trades_csv(False, "ms") + "3735683261,61838.10,0.1,6183.81,1723161255999,maybe\n"
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(RecordingError, match=r":3: is_buyer_maker 'maybe': expected true or false"):
        read_trades(path)


def test_read_trades_when_recording_trade_is_malformed_raises_naming_line(tmp_path):
    bad = trade_msg("BTCUSDT", 3735683260, "-5", "0.048", T0_MS, False)
    path = write(tmp_path / "rec.txt", recording([
        (1723161255343000000, trade_msg("BTCUSDT", 3735683259, "61837.63", "0.020", T0_MS, True)),
        (1723161255344000000, bad),
    ]))
    with pytest.raises(RecordingError, match=r"rec\.txt:2: bad trade message: bad_price"):
        read_trades(path)


def test_read_trades_when_recording_line_has_no_receive_time_raises_naming_line(tmp_path):
    path = write(tmp_path / "rec.txt", recording([(1723161255343000000, BOOK_TICKER)]) + "oops {}\n")
    with pytest.raises(RecordingError, match=r"rec\.txt:2: expected '<receive time> <JSON message>'"):
        read_trades(path, fmt="recording")


def test_read_trades_when_format_is_unknown_raises(tmp_path):
    with pytest.raises(RecordingError, match="unknown format 'csv'"):
        read_trades(write(tmp_path / "f", "x"), fmt="csv")


# -- convert and the command -----------------------------------------------------------


def generic_file(path: Path, rows: list[tuple[int, float, float, str]]) -> Path:
    return write(path, "ts,price,size,side\n" + "".join(f"{t},{p},{s},{d}\n" for t, p, s, d in rows))


def test_convert_when_files_given_out_of_order_takes_them_by_first_trade(tmp_path):
    base = 1_723_161_240_000  # 23:54:00.000
    a = generic_file(tmp_path / "a.csv", [(base + 1_000, 10.0, 1, "buy"), (base + 2_000, 11.5, 0.5, "sell")])
    b = generic_file(tmp_path / "b.csv", [(base + 3_000, 9.5, 0.25, "buy"), (base + 61_000, 12.0, 2, "sell")])
    out = io.StringIO()
    n = convert([b, a], "1m", out=out, symbol="XYZ", progress=False)
    bars = pd.read_csv(io.StringIO(out.getvalue()))
    assert n == 2 and len(bars) == 2
    first = bars.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 11.5, 9.5, 9.5)
    assert (first["volume"], first["buy_volume"], first["sell_volume"]) == (1.75, 1.25, 0.5)
    assert bars["start"].tolist() == ["2024-08-08T23:54:00.000Z", "2024-08-08T23:55:00.000Z"]
    assert bars["closed"].tolist() == [True, False] and bars["symbol"].tolist() == ["XYZ", "XYZ"]


def test_convert_when_flat_empty_option_fills_quiet_minutes(tmp_path):
    base = 1_723_161_240_000
    a = generic_file(tmp_path / "a.csv", [(base, 10.0, 1, "buy"), (base + 180_000, 12.0, 2, "sell")])
    out = io.StringIO()
    assert convert([a], "1m", out=out, progress=False, empty="flat") == 4
    bars = pd.read_csv(io.StringIO(out.getvalue()))
    assert bars["volume"].tolist() == [1, 0, 0, 2] and bars["close"].tolist() == [10, 10, 10, 12]


def test_main_when_stderr_is_not_a_terminal_shows_no_progress_bar(tmp_path, capsys):
    a = generic_file(tmp_path / "a.csv", [(1_723_161_240_000, 10.0, 1, "buy")])
    out = tmp_path / "bars.csv"
    assert main([str(a), "--bar", "1m", "-o", str(out)]) == 0
    assert capsys.readouterr().err == f"tickscope bars: wrote 1 bar to {out}\n"
    assert out.read_text().startswith("symbol,bar,start,end,open,")


def test_main_when_row_is_bad_prints_one_line_and_returns_2(tmp_path, capsys):
    path = write(tmp_path / "bad.csv", "ts,price,size\n1723161255342,1.5,2\n1723161255343,x,2\n")
    assert main([str(path), "--bar", "1m", "-o", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"tickscope bars: error: {path}:3: price 'x' is not a number\n"
    assert not (tmp_path / "out.csv").exists()


def test_main_when_inputs_hold_several_symbols_asks_for_symbol_listing_them(tmp_path, capsys):
    path = write(tmp_path / "rec.txt", recording([
        (1723161255343000000, trade_msg("BTCUSDT", 1, "61837.63", "0.020", T0_MS, True)),
        (1723161255344000000, trade_msg("ETHUSDT", 2, "2600.10", "1.5", T0_MS + 1, False)),
    ]))
    assert main([str(path), "--bar", "1m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tickscope bars: error: ") and "(ETHUSDT, BTCUSDT)" not in err
    assert "several symbols (BTCUSDT, ETHUSDT); choose one with --symbol" in err
    assert main([str(path), "--bar", "1m", "--symbol", "ETHUSDT", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("ETHUSDT,1m,2024-08-08T23:54:00.000Z,2024-08-08T23:55:00.000Z,2600.1,")


@pytest.mark.parametrize("argv,problem", [
    (["x.csv"], "the following arguments are required: --bar"),
    (["x.csv", "--bar", "7m"], "time bar step 7m must divide 60 evenly"),
    (["x.csv", "--bar", "1m", "--format", "json"], "argument --format: invalid choice"),
    (["missing.csv", "--bar", "1m"], "missing.csv: cannot open"),
])
def test_main_when_argument_is_bad_prints_one_line_and_returns_2(tmp_path, monkeypatch, capsys, argv, problem):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tickscope bars: error: ") and problem in err and err.count("\n") == 1


def test_main_when_inputs_overlap_refuses_to_count_trades_twice(tmp_path, capsys):
    a = write(tmp_path / "a.csv", binance_trades_csv(False, "ms"))
    b = write(tmp_path / "b.csv", binance_trades_csv(True, "us"))
    assert main([str(a), str(b), "--bar", "1m"]) == 2
    assert "trade id 3735683259 appears more than once: the inputs overlap" in capsys.readouterr().err


# -- end to end on real data -----------------------------------------------------------

KLINE_FIELDS = [("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"),
                ("volume", "volume"), ("trade_count", "count"), ("buy_volume", "taker_buy_volume")]


def assert_csv_equals_klines(csv_path: Path, klines_path: Path, first_ns: int, last_ns: int) -> int:
    """Assert every fully covered minute of the bar CSV equals the official kline; return the count."""
    ours = pd.read_csv(csv_path)
    ours["start_ns"] = pd.to_datetime(ours["start"], utc=True).dt.as_unit("ns").astype("int64")
    theirs = pd.read_csv(klines_path)
    theirs["start_ns"] = theirs["open_time"].astype("int64") * 1_000_000
    covered = theirs[(theirs["start_ns"] >= first_ns) & (theirs["start_ns"] + MIN_NS <= last_ns)]
    merged = covered.merge(ours, on="start_ns", how="left", suffixes=("_k", ""), validate="one_to_one")
    assert merged["symbol"].notna().all(), "a covered minute has no bar"
    for col, kcol in KLINE_FIELDS:
        k = kcol + "_k" if kcol in ours.columns else kcol
        diff = merged[merged[col] != merged[k]]
        assert diff.empty, f"{col} differs at {diff[['start', col, k]].to_string()}"
    return len(covered)


@pytest.mark.data
@pytest.mark.parametrize("files,klines,expected", [
    (["btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"], "usdm_BTCUSDT_1m_2023-04-04T2355Z_2023-04-05T0010Z.csv", 7),
    (["btcusdt_20240808.gz"], "usdm_BTCUSDT_1m_2024-08-08T2350Z_2024-08-09T0010Z.csv", 4),
])
def test_main_when_usdm_recordings_converted_covered_minutes_equal_official_klines(hft_data, tmp_path, files, klines, expected):
    paths = [hft_data / "raw" / "usdm" / f for f in files]
    out = tmp_path / "bars.csv"
    assert main([*map(str, paths), "--bar", "1m", "-o", str(out), "--no-progress"]) == 0
    trades = pd.concat([read_trades(p) for p in paths])
    first, last = int(trades["ts_ns"].min()), int(trades["ts_ns"].max())
    assert assert_csv_equals_klines(out, hft_data / "klines_official" / klines, first, last) == expected


@pytest.mark.data
def test_main_when_tardis_trades_converted_124_covered_minutes_equal_official_klines(tmp_path):
    folder = require_shared_data("nautilus-testdata-crypto")
    src = folder / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    out = tmp_path / "bars.csv"
    assert main([str(src), "--bar", "1m", "-o", str(out)]) == 0
    trades = read_trades(src)
    assert len(trades) == 9999
    n = assert_csv_equals_klines(out, folder / "official_klines_usdm_BTCUSDT_1m_2020-02-22T0000Z_0207Z.csv",
                                 int(trades["ts_ns"].iloc[0]), int(trades["ts_ns"].iloc[-1]))
    assert n == 124


@pytest.mark.data
def test_main_when_freqtrade_aggtrades_converted_volumes_sum_to_file_total(tmp_path):
    src = require_shared_data("freqtrade-binance-xrpeth-aggtrades") / "XRPETH_aggTrades_2019-10-11_2019-10-13.csv"
    out = tmp_path / "bars.csv"
    assert main([str(src), "--bar", "1m", "-o", str(out)]) == 0
    raw = pd.read_csv(src, dtype=str)
    bars = pd.read_csv(out, dtype=str)
    # Exact decimal sums: the CSV's fixed-decimal volumes add up to the file's quantities.
    assert sum(map(Decimal, bars["volume"])) == sum(map(Decimal, raw["qty"]))
    # trade_count counts the trades each aggregate holds (last - first + 1), not the rows.
    held = sum(int(b) - int(a) + 1 for a, b in zip(raw["first_trade_id"], raw["last_trade_id"]))
    assert sum(map(int, bars["trade_count"])) == held == 14672 and len(raw) == 12477
    assert len(bars) == 2469  # the minutes with trades (freqtrade's own 1m candles have as many)
    assert set(bars["symbol"]) == {"XRPETH"}


@pytest.mark.data
def test_read_trades_when_recording_and_extracted_csv_hold_same_session_gives_same_trades(hft_data):
    rec = pd.concat([read_trades(hft_data / "raw" / "usdm" / f)
                     for f in ("btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz")], ignore_index=True)
    csv_trades = read_trades(hft_data / "trades" / "usdm_BTCUSDT_2023-04-04T2358Z_2023-04-05T0006Z.csv",
                             symbol="BTCUSDT")
    cols = ["ts_ns", "price", "size", "side", "in_bars", "trade_id", "symbol"]
    pd.testing.assert_frame_equal(rec[cols], csv_trades[cols], check_exact=True)
    assert (~rec["in_bars"]).sum() == 1  # the INSURANCE_FUND fill



def test_main_when_session_reset_given_tick_bars_do_not_span_utc_midnight(tmp_path):
    src = tmp_path / "trades.csv"
    # Five trades: three before 2024-01-02 00:00 UTC and two after.
    day = 1_704_153_600_000  # 2024-01-02T00:00Z in ms
    rows = ["ts,price,size"] + [f"{day + dt},{100 + i},1" for i, dt in enumerate([-3000, -2000, -1000, 1000, 2000])]
    src.write_text("\n".join(rows) + "\n")
    plain, reset = tmp_path / "plain.csv", tmp_path / "reset.csv"
    assert main([str(src), "--bar", "4t", "--symbol", "X", "-o", str(plain), "--no-progress"]) == 0
    assert main([str(src), "--bar", "4t", "--symbol", "X", "--session-reset", "-o", str(reset), "--no-progress"]) == 0
    assert [int(r) for r in pd.read_csv(plain)["trade_count"]] == [4, 1]
    assert [int(r) for r in pd.read_csv(reset)["trade_count"]] == [3, 2]


# -- one out-of-order rule for live and batch --------------------------------------------


def test_convert_when_times_go_back_beyond_tolerance_leaves_late_trades_out_as_live(tmp_path, capsys):
    from feed.core.bars import make_aggregator
    from feed.core.models import Trade

    base = 1_723_161_240_000  # 23:54:00.000
    rows = [(base + 1_000, 10.0, 1, "buy"), (base + 61_000, 12.0, 2, "sell"),
            (base + 30_000, 99.0, 5, "buy"),   # 31 s older than the newest: late
            (base + 60_500, 11.0, 1, "sell"),  # 0.5 s older: revises the 23:55 bar (open)
            (base + 125_000, 13.0, 1, "buy")]
    path = generic_file(tmp_path / "a.csv", rows)
    out = tmp_path / "bars.csv"
    assert main([str(path), "--bar", "1m", "--symbol", "XYZ", "-o", str(out), "--no-progress"]) == 0
    assert "1 late trade left out" in capsys.readouterr().err
    bars = pd.read_csv(out)
    assert bars["volume"].tolist() == [1.0, 3.0, 1.0] and bars["open"].tolist() == [10.0, 11.0, 13.0]
    # The streaming aggregator (live) given the same trades in the same order agrees.
    agg = make_aggregator("XYZ", "1m")
    agg.on_trades([Trade("XYZ", t * 1_000_000, p, s, 1 if d == "buy" else -1, None) for t, p, s, d in rows])
    assert agg.late == 1 and [b.volume for b in agg.bars()] == bars["volume"].tolist()
    # A tolerance wider than the step back takes the old trade into its bar.
    assert main([str(path), "--bar", "1m", "--symbol", "XYZ", "-o", str(out), "--no-progress",
                 "--late-tolerance", "40"]) == 0
    assert pd.read_csv(out)["volume"].tolist() == [6.0, 3.0, 1.0]
    assert "late" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "abc", "nan"])
def test_cli_when_late_tolerance_bad_exits_2(tmp_path, capsys, value):
    path = generic_file(tmp_path / "a.csv", [(1_723_161_240_000, 10.0, 1, "buy")])
    assert main([str(path), "--bar", "1m", "--symbol", "XYZ", "--late-tolerance", value]) == 2
    assert "--late-tolerance" in capsys.readouterr().err


def _recording_stepping_back(tmp_path: Path, step_back_ms: int = 120_000) -> tuple[Path, int]:
    # A real spot BTCUSDT recording (trades and depth) up to its 3000th trade; the exchange
    # times of trades 1400-1599 go back step_back_ms (a vendor's clock stepping back).
    # Returns (file, trades).
    src = require_shared_data("binance-ws-captures-hftbacktest") / "raw" / "spot" / "btcusdt_20240808.gz"
    lines, trades = [], 0
    with gzip.open(src, "rt") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if '@trade"' in line:
                if 1400 <= trades < 1600:
                    recv, _, raw = line.partition(" ")
                    msg = json.loads(raw)
                    msg["data"]["T"] -= step_back_ms
                    msg["data"]["E"] -= step_back_ms
                    line = f"{recv} {json.dumps(msg, separators=(',', ':'))}"
                trades += 1
            lines.append(line)
            if trades == 3000:
                break
    path = tmp_path / "stepping_back.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path, trades


def test_replay_and_tickscope_bars_when_times_step_back_120s_write_identical_csv(tmp_path, capsys):
    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    path, n_trades = _recording_stepping_back(tmp_path)
    out = tmp_path / "batch.csv"
    assert main([str(path), "--bar", "1m", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    batch = out.read_text()
    rt = start_runtime(config_from_argv(["--replay", str(path), "--speed", "0"]))
    try:
        assert rt.exchange.finished.wait(60), "replay did not finish"
        assert rt.engine.wait_idle(30, quiet_s=0.5)
        client = rt.app.server.test_client()
        resp = client.get("/api/bars?symbol=BTCUSDT&bar=1m")
        assert resp.status_code == 200
        # /api/bars ends with the `verified` column (empty in a replay without klines).
        lines = resp.get_data(as_text=True).splitlines(keepends=True)
        assert lines[0].rstrip("\n").endswith(",verified")
        live = "".join(line.rstrip("\n").rsplit(",", 1)[0] + "\n" for line in lines)
        counters = rt.engine.counters()
    finally:
        rt.stop()
    assert counters.trades == n_trades and counters.malformed == 0
    assert live == batch
    in_bars = int(pd.read_csv(io.StringIO(batch))["trade_count"].sum())
    dropped = n_trades - in_bars
    assert dropped > 100  # most of the 200 stepped-back trades are older than 2 s
    assert counters.late == dropped
    assert f"{dropped} late trades left out" in err
