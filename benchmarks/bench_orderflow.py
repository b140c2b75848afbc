"""Bytes and server time per steady update of the order-flow block (tape, DOM ladder,
footprint, flow chart and alerts, all shown), in a real browser.

Starts what ``tickscope --bar 5s`` starts (the embedded simulator), serves the page to
headless chromium for ``--seconds`` and records, on the server, every Dash callback
response: its body size (bytes sent) and the time Flask spent on it. The order-flow
callback (outputs ``of-tape``...) is compared with the page's existing live update (the
candle, depth and status callback, outputs ``candles``...) measured in the same run, the
baseline. The first ``--warmup`` seconds (initial full figures) are left out, so the
figures are the steady state: mostly ``dash.Patch`` increments of the tape and of the
flow chart's bar in progress, the footprint and ladder re-sent when they changed.

Run::

    python benchmarks/bench_orderflow.py [--seconds 60] [--warmup 15]

Needs chromium and chromium-driver (``scripts/test.sh`` installs them). Not part of the
test suite; the machine's load changes the times, the ratio to the baseline less so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.cli import config_from_argv  # noqa: E402
from dashboard.runtime import start_runtime  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--port", type=int, default=8093)
    args = ap.parse_args()

    from flask import g, request
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    with tempfile.TemporaryDirectory() as tmp:
        rt = start_runtime(config_from_argv(["--data-dir", tmp, "--bar", "5s"]), interval_ms=250)
        records: list[tuple[float, str, int, float]] = []
        parts: dict[str, list[tuple[float, int]]] = {}  # order-flow output id -> (when, bytes)
        server = rt.app.server

        @server.before_request
        def _start():
            g.t0 = time.perf_counter()

        @server.after_request
        def _record(response):
            if request.path.startswith("/_dash-update-component"):
                body = request.get_json(silent=True) or {}
                output = str(body.get("output", ""))
                kind = "orderflow" if "of-tape" in output else "live" if "candles" in output else "other"
                data = response.get_data() if not response.direct_passthrough else b""
                records.append((time.monotonic(), kind, len(data), (time.perf_counter() - g.t0) * 1000))
                if kind == "orderflow" and data:
                    try:
                        outputs = json.loads(data).get("response", {})
                    except ValueError:
                        outputs = {}
                    for cid, props in outputs.items():
                        parts.setdefault(cid, []).append((time.monotonic(), len(json.dumps(props))))
            return response

        threading.Thread(target=lambda: rt.app.run(host="127.0.0.1", port=args.port, debug=False),
                         daemon=True).start()
        options = Options()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1440,1000"):
            options.add_argument(flag)
        options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
        driver = webdriver.Chrome(options=options)
        try:
            time.sleep(2)
            driver.get(f"http://127.0.0.1:{args.port}/")
            time.sleep(3)
            # The order-flow block is closed by default: open it, as a trader using it would.
            from selenium.webdriver.common.by import By

            driver.find_element(By.CSS_SELECTOR, "#of-show input").click()
            start = time.monotonic()
            time.sleep(args.seconds)
        finally:
            driver.quit()
            rt.stop()

    steady = [r for r in records if r[0] - start >= args.warmup]
    span = max(args.seconds - args.warmup, 1e-9)
    out = {}
    for kind in ("orderflow", "live"):
        rows = [r for r in steady if r[1] == kind]
        if not rows:
            continue
        out[kind] = {
            "updates": len(rows), "per_s": round(len(rows) / span, 2),
            "bytes_median": int(statistics.median(r[2] for r in rows)),
            "bytes_p90": int(sorted(r[2] for r in rows)[int(0.9 * (len(rows) - 1))]),
            "bytes_per_s": int(sum(r[2] for r in rows) / span),
            "ms_median": round(statistics.median(r[3] for r in rows), 1),
            "ms_p90": round(sorted(r[3] for r in rows)[int(0.9 * (len(rows) - 1))], 1),
        }
    out["orderflow_outputs_bytes_median_when_sent"] = {
        cid: int(statistics.median(n for t, n in rows if t - start >= args.warmup) or 0)
        for cid, rows in sorted(parts.items()) if any(t - start >= args.warmup for t, _ in rows)}
    print(json.dumps(out, indent=2))
    if "orderflow" in out and "live" in out:
        o, b = out["orderflow"], out["live"]
        print(f"order flow vs live update: bytes/update {o['bytes_median'] / max(b['bytes_median'], 1):.2f}x, "
              f"server ms/update {o['ms_median'] / max(b['ms_median'], 1e-9):.2f}x, "
              f"bytes/s {o['bytes_per_s'] / max(b['bytes_per_s'], 1):.2f}x")


if __name__ == "__main__":
    main()
