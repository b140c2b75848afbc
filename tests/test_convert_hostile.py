"""`tickscope bars` on hostile Binance CSVs: whatever the fast reader (feed.io.fastcsv)
refuses, the general chunked reader reads, so every file gives the same bars or the same
one-line error with and without the fast reader; and overlapping inputs are named."""

from __future__ import annotations

from pathlib import Path

import pytest

import feed.io.tradefiles as tradefiles
from feed.io.convert import main
from tests.test_convert_fast import trades_text


def run(argv: list[str], capsys) -> tuple[int, str, bytes]:
    # (exit code, stderr, output bytes) of `tickscope bars argv -o out.csv`.
    out = Path(argv[0]).with_name("out.csv")
    out.unlink(missing_ok=True)
    code = main([*argv, "--bar", "1m", "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    return code, err, out.read_bytes() if out.exists() else b""


def both_readers(monkeypatch, capsys, argv: list[str]):
    # The same conversion with the fast reader and with the general reader alone.
    fast = run(argv, capsys)
    with monkeypatch.context() as m:
        m.setattr(tradefiles, "read_binance_csv", lambda *a, **k: None)
        slow = run(argv, capsys)
    return fast, slow


def damaged(tmp_path: Path, edit, header: bool = False) -> Path:
    rows = trades_text(4000, header=header, seed=21).splitlines()
    edit(rows)
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def set_field(rows: list[str], i: int, field: int, value: str) -> None:
    fields = rows[i].split(",")
    fields[field] = value
    rows[i] = ",".join(fields)


HOSTILE = {
    "extra field mid-file": lambda r: r.__setitem__(2000, r[2000] + ",9"),
    "one field short mid-file": lambda r: r.__setitem__(2000, r[2000].rsplit(",", 1)[0]),
    "quote_qty not a number": lambda r: set_field(r, 1500, 3, "abc"),
    "price not a number": lambda r: set_field(r, 1500, 1, "61k"),
    "price with a decimal comma": lambda r: set_field(r, 1500, 1, '"61000,5"'),
    "price zero": lambda r: set_field(r, 1500, 1, "0"),
    "price NaN": lambda r: set_field(r, 1500, 1, "NaN"),
    "price inf": lambda r: set_field(r, 1500, 1, "inf"),
    "size empty": lambda r: set_field(r, 3999, 2, ""),
    "time in another unit": lambda r: set_field(r, 3000, 4, "1723161600000000"),
    "time as a float": lambda r: set_field(r, 10, 4, "1723161600000.5"),
    "id not an integer": lambda r: set_field(r, 700, 0, "7.5"),
    "id missing": lambda r: set_field(r, 700, 0, ""),
    "buyer maker spelled 1/0": lambda r: [set_field(r, i, 5, "1" if "true" in r[i].split(",")[5] else "0")
                                          for i in range(len(r))],
    "buyer maker True upper case": lambda r: set_field(r, 5, 5, "True"),
    "buyer maker other word": lambda r: set_field(r, 5, 5, "yes"),
    "blank line mid-file": lambda r: r.insert(1000, ""),
    "spaces after commas": lambda r: r.__setitem__(1000, r[1000].replace(",", ", ")),
    "header mid-file": lambda r: r.insert(1000, "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"),
    "duplicate trade id": lambda r: r.__setitem__(1001, r[1000]),
    "time going back": lambda r: set_field(r, 1500, 4, r[10].split(",")[4]),
}


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_bars_when_csv_is_hostile_gives_the_general_readers_output_or_error(tmp_path, monkeypatch, capsys,
                                                                           case, header):
    path = damaged(tmp_path, HOSTILE[case], header=header)
    fast, slow = both_readers(monkeypatch, capsys, [str(path)])
    assert fast == slow
    code, err, out = fast
    assert (code == 0 and out.count(b"\n") > 10) or (code == 2 and err.count("\n") == 1)


def test_bars_when_csv_is_clean_with_header_takes_the_fast_reader(tmp_path, monkeypatch, capsys):
    path = damaged(tmp_path, lambda r: None, header=True)
    calls = []
    real = tradefiles.read_binance_csv
    monkeypatch.setattr(tradefiles, "read_binance_csv", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = run([str(path)], capsys)
    assert calls and fast[0] == 0
    monkeypatch.setattr(tradefiles, "read_binance_csv", lambda *a, **k: None)
    assert run([str(path)], capsys) == fast


def test_bars_when_two_of_three_inputs_overlap_names_those_two(tmp_path, capsys):
    rows = trades_text(3000, seed=5).splitlines()
    parts = [rows[:1000], rows[1000:2000], rows[1500:3000]]  # the last two share 500 trades
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"BTCUSDT-trades-part{i}.csv")
        paths[-1].write_text("\n".join(part) + "\n")
    code, err, _ = run([str(p) for p in paths], capsys)
    assert code == 2
    tid = rows[1500].split(",")[0]
    assert f"{paths[1]} and {paths[2]}: trade id {tid} appears more than once" in err


def test_progress_when_reading_outlasts_the_delay_shows_every_byte_read_so_far(monkeypatch):
    # The bar (and tqdm) only once an update comes after the delay, counting the bytes
    # reported before it.
    import sys
    import types

    import feed.io.convert as convert

    made = []

    class FakeTqdm:
        def __init__(self, **kw):
            self.n, self.closed, self.kw = 0, False, kw
            made.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
    clock = [100.0]
    monkeypatch.setattr(convert.time, "monotonic", lambda: clock[0])
    progress = convert._Progress(1000)
    progress.update(300)
    clock[0] += convert._PROGRESS_DELAY_S / 2
    progress.update(200)
    assert made == []
    clock[0] += convert._PROGRESS_DELAY_S
    progress.update(100)
    progress.update(50)
    progress.close()
    assert len(made) == 1 and made[0].n == 650 and made[0].closed and made[0].kw["total"] == 1000
