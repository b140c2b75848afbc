"""The fast path of Binance public-data CSVs (feed.io.fastcsv): the same frame and bars as
the general chunked reader, and every file it does not accept read by the general reader
with its exact error message."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import feed.io.fastcsv as fastcsv
import feed.io.tradefiles as tradefiles
from feed.io.convert import main
from feed.io.readers import RecordingError
from feed.io.tradefiles import read_trades

T0_MS = 1_723_161_600_000


def trades_text(n: int, header: bool = False, agg: bool = False, seed: int = 3) -> str:
    # Binance public-data rows: a random walk with uneven decimals and bursts of trades.
    rng = np.random.default_rng(seed)
    price = np.round(61000 + np.cumsum(rng.choice([-0.01, 0.0, 0.01], size=n)), 2)
    qty = np.round(rng.integers(1, 200_000, size=n) * 1e-5, 5)
    t = T0_MS + np.cumsum(rng.integers(0, 4000, size=n))
    maker = rng.integers(0, 2, size=n).astype(bool)
    lines = []
    if header:
        lines.append("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,"
                     "is_best_match" if agg else "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match")
    for i in range(n):
        tid = 900_000 + i
        if agg:
            lines.append(f"{tid},{price[i]:.2f},{qty[i]:.5f},{2 * tid},{2 * tid + i % 3},{t[i]},"
                         f"{str(maker[i]).lower()},true")
        else:
            lines.append(f"{tid},{price[i]:.2f},{qty[i]:.5f},{price[i] * qty[i]:.7f},{t[i]},"
                         f"{str(maker[i]).lower()},true")
    return "\n".join(lines) + "\n"


def slow_read(monkeypatch, path: Path) -> pd.DataFrame:
    with monkeypatch.context() as m:
        m.setattr(tradefiles, "read_binance_csv", lambda *a, **k: None)
        return read_trades(path)


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("agg", [False, True])
def test_fast_read_when_file_is_clean_equals_general_reader(tmp_path, monkeypatch, header, agg):
    path = tmp_path / f"BTCUSDT-{'aggTrades' if agg else 'trades'}-2024-08-09.csv"
    path.write_text(trades_text(3001, header=header, agg=agg))
    calls = []
    real = fastcsv.read_binance_csv
    monkeypatch.setattr(tradefiles, "read_binance_csv", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = read_trades(path)
    assert calls
    slow = slow_read(monkeypatch, path)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert fast.attrs == slow.attrs
    assert len(fast) == 3001 and fast["symbol"].iloc[0] == "BTCUSDT"


def test_fast_read_when_gzipped_equals_general_reader(tmp_path, monkeypatch):
    path = tmp_path / "ETHUSDT-trades-2024-08-09.csv.gz"
    path.write_bytes(gzip.compress(trades_text(500).encode()))
    pd.testing.assert_frame_equal(read_trades(path), slow_read(monkeypatch, path), check_exact=True)


def test_bars_when_fast_and_general_readers_write_identical_csv(tmp_path, monkeypatch):
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text(trades_text(5000, seed=11))
    assert main([str(path), "--bar", "1m", "-o", str(tmp_path / "fast.csv")]) == 0
    monkeypatch.setattr(tradefiles, "read_binance_csv", lambda *a, **k: None)
    assert main([str(path), "--bar", "1m", "-o", str(tmp_path / "slow.csv")]) == 0
    fast = (tmp_path / "fast.csv").read_bytes()
    assert fast == (tmp_path / "slow.csv").read_bytes()
    assert fast.count(b"\n") > 100


def set_field(row: str, i: int, value: str) -> str:
    fields = row.split(",")
    fields[i] = value
    return ",".join(fields)


@pytest.mark.parametrize("damage,line,problem", [
    (lambda rows: rows.__setitem__(2400, rows[2400] + ",1"), 2401, "Expected 7 fields"),
    (lambda rows: rows.__setitem__(2500, set_field(rows[2500], 5, "")), 2501, "is_buyer_maker"),
    (lambda rows: rows.__setitem__(2600, set_field(rows[2600], 1, "-1.5")), 2601, "price"),
    (lambda rows: rows.__setitem__(2700, set_field(rows[2700], 2, "")), 2701, "size missing"),
    (lambda rows: rows.__setitem__(10, set_field(rows[10], 4, "9")), 11, "timestamp"),
])
def test_fast_read_when_row_is_bad_raises_the_general_readers_error(tmp_path, damage, line, problem):
    rows = trades_text(3000).splitlines()
    damage(rows)
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(RecordingError) as err:
        read_trades(path)
    assert f"{path}:{line}:" in str(err.value) and problem in str(err.value)
