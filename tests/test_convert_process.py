"""`tickscope bars` as a process (`python -m dashboard.cli bars ...`), which ends without
the interpreter's teardown once its output is out: every byte of the CSV still arrives,
on standard output through a pipe or in the -o file, and the exit code and the one-line
error are as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from feed.io.convert import main
from tests.test_convert_fast import trades_text

ROOT = Path(__file__).resolve().parents[1]


def tickscope_bars(*args: str) -> subprocess.CompletedProcess:
    # Buffered standard streams, as in a shell (not PYTHONUNBUFFERED).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "dashboard.cli", "bars", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=120)


def test_process_when_bars_go_to_a_pipe_writes_every_byte_the_function_writes(tmp_path):
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text(trades_text(20_000, seed=4))
    assert main([str(path), "--bar", "1s", "-o", str(tmp_path / "ref.csv")]) == 0
    ref = (tmp_path / "ref.csv").read_bytes()
    assert len(ref) > 200_000  # more than a pipe buffer holds
    done = tickscope_bars(str(path), "--bar", "1s")
    assert done.returncode == 0 and done.stdout == ref and done.stderr == b""


def test_process_when_output_file_given_writes_it_and_reports_on_stderr(tmp_path):
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text(trades_text(3_000, seed=5))
    assert main([str(path), "--bar", "1m", "-o", str(tmp_path / "ref.csv")]) == 0
    out = tmp_path / "out.csv"
    done = tickscope_bars(str(path), "--bar", "1m", "-o", str(out))
    assert done.returncode == 0 and out.read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert done.stderr.decode().startswith(f"tickscope bars: wrote ") and done.stdout == b""


def test_process_when_row_is_bad_exits_2_with_one_line(tmp_path):
    rows = trades_text(3_000, seed=6).splitlines()
    rows[1200] += ",1"
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text("\n".join(rows) + "\n")
    done = tickscope_bars(str(path), "--bar", "1m", "-o", str(tmp_path / "out.csv"))
    err = done.stderr.decode()
    assert done.returncode == 2 and err.startswith(f"tickscope bars: error: {path}:1201: ")
    assert err.count("\n") == 1 and not (tmp_path / "out.csv").exists()
