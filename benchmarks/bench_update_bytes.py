"""Bytes the dashboard sends per live update and per symbol switch, measured in headless
chromium. A script, not a test::

    python benchmarks/bench_update_bytes.py [--seconds 30] [--switch-to ETHUSDT] [--repo PATH]

It starts what ``tickscope`` starts with no arguments (the embedded simulator, the default
1m bars, 4 updates a second) on a temporary data dir, serves the Dash app on loopback and
opens it in headless chromium (dash[testing]'s ``DashComposite``, selenium, chromium's
DevTools performance log: ``goog:loggingPrefs {'performance': 'ALL'}``). For each
``/_dash-update-component`` response it takes

* the bytes on the wire: ``Network.loadingFinished.encodedDataLength`` (compressed body
  plus response headers, as chromium counts them);
* the decoded body (``Network.getResponseBody``): the same run's uncompressed baseline,
  i.e. what the wire would carry without compression.

Steady: every update over ``--seconds`` with the page left alone (median and mean). Switch:
the updates in the ``--settle`` seconds after the symbol dropdown is set to ``--switch-to``
(their total bytes, how many there were, and how many carried a full candle figure).

``--repo PATH`` measures another checkout of tickscope (e.g. the main branch, for a before
and after on the same machine); default: this one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

UPDATE_PATH = "/_dash-update-component"


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="steady window, s (default 30)")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds after page load before measuring")
    p.add_argument("--switch-to", default="ETHUSDT", help="symbol selected for the switch (default ETHUSDT)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds counted after the switch (default 3)")
    p.add_argument("--verbose", action="store_true",
                   help="list each steady output's median size, and each switch response's outputs and sizes")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                   help="tickscope checkout to measure (default: this one)")
    return p.parse_args(argv)


def chrome_options():
    """Headless chromium as root in a container, with the DevTools performance log on."""
    from selenium.webdriver.chrome.options import Options

    class PerfLogOptions(Options):
        # dash[testing] sets goog:loggingPrefs to {"browser": "SEVERE"} after us: merge.
        def set_capability(self, name, value):
            if name == "goog:loggingPrefs":
                value = {**value, "performance": "ALL"}
            super().set_capability(name, value)

    options = PerfLogOptions()
    for flag in ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,900",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary and "DASH_TEST_CHROMEPATH" not in os.environ:
        options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return options


class UpdateLog:
    """The ``/_dash-update-component`` responses seen in chromium's performance log."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self._urls: dict[str, str] = {}  # requestId -> url
        self._encoding: dict[str, str] = {}  # requestId -> content-encoding
        self._done: set[str] = set()  # requestIds counted

    def drain(self) -> list[dict]:
        """Return ``{"t", "wire", "decoded", "body"}`` per update response finished since
        the last call (``t``: chromium's monotonic timestamp, s)."""
        out = []
        # Every response of the period (page, scripts, updates): wire and decoded bytes.
        self.period = {"responses": 0, "wire": 0, "decoded": 0}
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            method, params = msg.get("method"), msg.get("params", {})
            rid = params.get("requestId")
            if method == "Network.dataReceived":
                self.period["decoded"] += int(params.get("dataLength", 0))
            if method == "Network.loadingFinished":
                self.period["responses"] += 1
                self.period["wire"] += int(params.get("encodedDataLength", 0))
            if method == "Network.responseReceived":
                resp = params["response"]
                self._urls[rid] = resp.get("url", "")
                headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
                self._encoding[rid] = headers.get("content-encoding", "")
            elif method == "Network.loadingFinished" and UPDATE_PATH in self._urls.get(rid, ""):
                try:
                    body = self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": rid})["body"]
                except Exception:  # evicted from chromium's buffer: size unknown
                    body = None
                if rid in self._done:  # chromium may repeat an event: count each response once
                    continue
                self._done.add(rid)
                out.append({"t": params["timestamp"], "wire": int(params["encodedDataLength"]),
                            "decoded": None if body is None else len(body.encode()),
                            "encoding": self._encoding.get(rid, ""), "body": body})
        return out


def full_candle_figure(body: str | None) -> bool:
    """True when an update response carries a whole candle figure (not a Patch)."""
    if not body:
        return False
    try:
        figure = json.loads(body).get("response", {}).get("candles", {}).get("figure")
    except (ValueError, AttributeError):
        return False
    return isinstance(figure, dict) and "data" in figure and "layout" in figure


def main(argv=None) -> int:
    args = _parse_args(argv)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    sys.path.insert(0, str(args.repo.resolve()))
    from dash.testing.application_runners import ThreadedRunner
    from dash.testing.composite import DashComposite

    from dashboard.cli import config_from_argv
    from dashboard.runtime import start_runtime

    data_dir = tempfile.mkdtemp(prefix="tickscope-bench-")
    rt = start_runtime(config_from_argv(["--data-dir", data_dir]), interval_ms=250)
    try:
        with ThreadedRunner() as runner, DashComposite(
            server=runner, browser="Chrome", headless=True, options=[chrome_options()],
            percy_run=False, percy_finalize=False, wait_timeout=30,
        ) as dc:
            dc.start_server(rt.app)
            log = UpdateLog(dc.driver)
            time.sleep(args.warmup)
            log.drain()
            load = log.period
            time.sleep(args.seconds)
            steady = log.drain()
            dc.select_dcc_dropdown("#symbol", value=args.switch_to)
            time.sleep(args.settle)
            switch = log.drain()
    finally:
        rt.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"tickscope at {args.repo}: embedded simulator, default view (1m bars, 250 ms updates)")
    print(f"page load and first {args.warmup:.0f} s: {load['responses']} responses, {load['wire']:,} B on the wire,"
          f" {load['decoded']:,} B decoded")
    if not steady:
        print("no update responses seen")
        return 1
    wire = [r["wire"] for r in steady]
    decoded = [r["decoded"] for r in steady if r["decoded"] is not None]
    encodings = sorted({r["encoding"] or "identity" for r in steady})
    empty = sum(1 for r in steady if not r["body"])
    print(f"steady: {len(steady)} updates in {args.seconds:.0f} s ({empty} with nothing to send),"
          f" content-encoding {', '.join(encodings)}")
    print(f"  on the wire : median {statistics.median(wire):8,.0f} B   mean {statistics.mean(wire):8,.0f} B"
          f"   min {min(wire):8,} B   max {max(wire):8,} B")
    if decoded:
        med = statistics.median(decoded)
        print(f"  decoded body: median {med:8,.0f} B   mean {statistics.mean(decoded):8,.0f} B   (baseline: uncompressed)")
        print(f"  ratio wire/decoded (medians): {statistics.median(wire) / med:.2f}x")
    sw_wire = sum(r["wire"] for r in switch)
    sw_dec = sum(r["decoded"] or 0 for r in switch)
    fulls = [r for r in switch if full_candle_figure(r["body"])]
    print(f"switch to {args.switch_to}: {len(switch)} updates in {args.settle:.0f} s, {sw_wire:,} B on the wire,"
          f" {sw_dec:,} B decoded; {len(fulls)} carried a full candle figure"
          f" ({sum(r['wire'] for r in fulls):,} B wire, {sum(r['decoded'] or 0 for r in fulls):,} B decoded)")
    if args.verbose:
        sizes: dict[str, list[int]] = {}
        for r in steady:
            for part in describe(r["body"]).split(", "):
                name, _, n = part.rpartition(":")
                if n.isdigit():
                    sizes.setdefault(name, []).append(int(n))
        print("steady outputs (decoded JSON bytes: median, in how many updates):")
        for name, ns in sorted(sizes.items(), key=lambda kv: -statistics.median(kv[1])):
            print(f"  {name:<48}{statistics.median(ns):>9,.0f} B  in {len(ns)}")
        for r in switch:
            print(f"  {r['wire']:8,} B wire  {r['decoded'] or 0:8,} B decoded  {describe(r['body'])}")
    return 0


def describe(body: str | None) -> str:
    """``component.prop: bytes`` of each output in an update response body."""
    try:
        response = json.loads(body or "").get("response", {})
    except (ValueError, AttributeError):
        return "?"
    parts = []
    for cid, props in response.items():
        for prop, value in props.items():
            kind = "full" if isinstance(value, dict) and "data" in value and "layout" in value else (
                "patch" if isinstance(value, dict) and "__dash_patch_update" in value else "")
            parts.append(f"{cid}.{prop}{'(' + kind + ')' if kind else ''}:{len(json.dumps(value))}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
