"""Browser tests of the order-flow block (dash_duo, headless chromium) on the embedded
simulator: each view renders and updates, the tape's size filter acts, an alert rule
fires and the alert log survives a reload. The runtime, browser and helpers are those of
``tests/test_browser.py``."""

from __future__ import annotations

import time

import pytest

from dashboard import orderflow_layout as ol
from tests.test_browser import dash_duo, graph, live, runtime, set_input, wait_until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def rows(dash_duo, table_id: str) -> list[list[str]]:
    """Return the body rows of an order-flow table as cell texts, read atomically."""
    return dash_duo.driver.execute_script(
        "var t = document.getElementById(arguments[0]); if (!t) { return []; }"
        "return Array.from(t.querySelectorAll('tr')).filter(function (r) { return r.querySelector('td'); })"
        ".map(function (r) { return Array.from(r.children).map(function (c) { return c.textContent; })"
        ".concat([r.className]); });", table_id)


def _hms(ts_ns: int) -> str:
    s = (ts_ns // 10**9) % 86400
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}.{(ts_ns // 10**6) % 1000:03d}"


def block_open(dash_duo) -> bool:
    """True when the block's views are not hidden (its style has no display: none)."""
    return "none" not in (dash_duo.find_element(f"#{ol.BODY}").get_attribute("style") or "")


def open_block(dash_duo) -> None:
    """Open the order-flow block (closed by default; it stays open across reloads)."""
    dash_duo.wait_for_element(f"#{ol.SHOW} input").click()
    wait_until(lambda: block_open(dash_duo), message="the order-flow block open")


def tape_ready(dash_duo, n=3):
    return wait_until(lambda: (lambda r: r if len(r) >= n else None)(rows(dash_duo, ol.TAPE)),
                      message=f"{n}+ tape rows")


def test_orderflow_views_when_live_simulator_then_each_renders_and_updates(live, dash_duo):
    dash_duo.start_server(live.app)
    open_block(dash_duo)
    tape = tape_ready(dash_duo)
    # newest on top: times descend; side words and colours agree; every row is a trade held
    times = [r[0] for r in tape]
    assert times == sorted(times, reverse=True)
    assert all(r[3] in ("buy", "sell") and f"tape-{r[3]}" in r[4] for r in tape)
    # each row is a trade the engine holds: time (ms), price and size as printed
    dp = [len(c.split(".")[-1]) if "." in c else 0 for c in tape[0][1:3]]
    held = {(_hms(t.ts_ns), f"{t.price:,.{dp[0]}f}", f"{t.size:,.{dp[1]}f}", {1: "buy", -1: "sell"}[t.side])
            for t in live.engine.trades("BTCUSDT", 5000)}
    assert all(tuple(r[:4]) in held for r in tape)

    ladder = wait_until(lambda: (lambda r: r if len(r) >= 10 else None)(rows(dash_duo, ol.LADDER)),
                        message="ladder rows")
    prices = [float(r[1].replace(",", "")) for r in ladder]
    assert prices == sorted(prices, reverse=True)  # asks above, bids below
    asks = [r for r in ladder if r[2]]
    bids = [r for r in ladder if r[0]]
    assert asks and bids and min(float(r[1].replace(",", "")) for r in asks) > max(
        float(r[1].replace(",", "")) for r in bids)

    fp = wait_until(lambda: (lambda g: g if g and g["data"] and g["data"][0]["type"] == "heatmap" else None)(
        graph(dash_duo, f"{ol.FOOTPRINT}")), message="footprint heatmap")
    assert any(" x " in (t or "") for row in fp["data"][0]["text"] for t in row)  # bid x ask cells
    assert any(a.startswith("Δ ") for a in fp["layout"]["annotations"])  # delta per bar

    flow = wait_until(lambda: (lambda g: g if g and len(g["data"]) >= 5 else None)(graph(dash_duo, ol.FLOW)),
                      message="flow chart")
    names = [t["name"] for t in flow["data"]]
    assert names[:4] == ["price", "VWAP", "EMA 9", "EMA 21"] and "CVD" in names
    assert "volume at price" in names
    assert any(a.startswith("POC ") for a in flow["layout"]["annotations"])
    assert any(a.startswith("VAH ") for a in flow["layout"]["annotations"])

    # updates: new trades reach the top of the tape, new bars the footprint and the flow chart
    first_top = tape[0]
    wait_until(lambda: rows(dash_duo, ol.TAPE)[0] != first_top, message="a new trade on the tape")
    n_bars = len(flow["data"][0]["x"])
    first_x = flow["data"][0]["x"][-1]
    wait_until(lambda: (lambda g: g["data"][0]["x"][-1] != first_x or len(g["data"][0]["x"]) > n_bars)(
        graph(dash_duo, ol.FLOW)), message="a new bar on the flow chart")
    fp_x = len(fp["data"][0]["x"])
    fp_first = fp["layout"]["annotations"]
    wait_until(lambda: (lambda g: g["layout"]["annotations"] != fp_first or len(g["data"][0]["x"]) != fp_x)(
        graph(dash_duo, ol.FOOTPRINT)), message="the footprint to change")
    assert len(rows(dash_duo, ol.TAPE)) <= 40
    assert dash_duo.get_logs() == []


def test_tape_when_min_size_set_then_only_trades_at_least_that_size_and_large_emphasised(live, dash_duo):
    dash_duo.start_server(live.app)
    open_block(dash_duo)
    tape_ready(dash_duo, 5)
    sizes = sorted(t.size for t in live.engine.trades("BTCUSDT", 2000))
    cut = sizes[len(sizes) // 2]  # the median: about half the trades pass
    set_input(dash_duo, f"#{ol.TAPE_MIN}", f"{cut}")
    set_input(dash_duo, f"#{ol.TAPE_LARGE}", f"{sizes[int(len(sizes) * 0.8)]}")
    dash_duo.find_element(f"#{ol.TAPE_LARGE}").send_keys("\n")

    def filtered():
        r = rows(dash_duo, ol.TAPE)
        return r if r and all(float(x[2].replace(",", "")) >= cut - 1e-12 for x in r) and \
            any("tape-large" in x[4] for x in r) else None
    shown = wait_until(filtered, message="the filtered tape")
    large = sizes[int(len(sizes) * 0.8)]
    for r in shown:
        assert ("tape-large" in r[4]) == (float(r[2].replace(",", "")) >= large - 1e-12) or \
            abs(float(r[2].replace(",", "")) - large) < 1e-6  # display rounding at the edge
    time.sleep(1.0)  # and it stays filtered through the patches that follow
    assert all(float(x[2].replace(",", "")) >= cut - 1e-12 for x in rows(dash_duo, ol.TAPE))


def test_alert_when_trade_size_rule_fires_then_logged_and_log_survives_reload(live, dash_duo):
    dash_duo.start_server(live.app)
    open_block(dash_duo)
    tape_ready(dash_duo)
    set_input(dash_duo, f"#{ol.ALERT_SIZE}", "0")  # every trade is at least 0: fires on the next
    dash_duo.find_element(f"#{ol.ALERT_SIZE}").send_keys("\n")
    items = wait_until(lambda: dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (e) { return e.textContent; });",
        f"#{ol.ALERT_LOG} li") or None, message="an alert in the log")
    assert any("BTCUSDT large" in t for t in items)
    dash_duo.driver.refresh()
    wait_until(lambda: block_open(dash_duo), message="the block still open")
    again = wait_until(lambda: dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (e) { return e.textContent; });",
        f"#{ol.ALERT_LOG} li") or None, message="the alert log after a reload")
    assert set(items) <= set(again)
    # the rule itself persisted too
    assert dash_duo.find_element(f"#{ol.ALERT_SIZE}").get_attribute("value") == "0"


def test_layout_when_four_charts_with_symbols_chosen_then_the_same_four_come_back_after_reload(live, dash_duo):
    from selenium.webdriver.common.keys import Keys

    dash_duo.start_server(live.app)
    open_block(dash_duo)
    tape_ready(dash_duo)
    four = dash_duo.find_element(f"#{ol.LAYOUT} input[value='4']")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", four)
    wait_until(lambda: "of-charts-4" in dash_duo.find_element(f"#{ol.CHARTS}").get_attribute("class"),
               message="the four-chart layout")
    wanted = ["ETHUSDT", "SOLUSDT", "BTCUSDT", "ETHUSDT"]
    for i, symbol in enumerate(wanted):
        box = dash_duo.find_element(f"#{ol.CHART_SYMBOL[i]}")
        dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        box.click()
        menu = dash_duo.find_element(".dash-dropdown-options")
        option = next(o for o in menu.find_elements("css selector", ".dash-dropdown-option") if o.text == symbol)
        option.click()
        wait_until(lambda: not dash_duo.driver.find_elements("css selector", ".dash-dropdown-options")
                   or dash_duo.driver.switch_to.active_element.send_keys(Keys.ESCAPE),
                   message="the dropdown to close")

    def titles():
        out = []
        for c in ol.CHART:
            g = graph(dash_duo, c)
            out.append((g or {}).get("layout", {}).get("title") or "")
        return out

    def showing_wanted():
        t = titles()
        return t if all(f"<b>{s}</b>" in x for s, x in zip(wanted, t)) else None

    wait_until(showing_wanted, timeout=30, message="four charts showing the symbols chosen")
    dash_duo.driver.refresh()
    wait_until(lambda: block_open(dash_duo), message="the block still open")
    wait_until(lambda: "of-charts-4" in dash_duo.find_element(f"#{ol.CHARTS}").get_attribute("class"),
               message="the four-chart layout after a reload")
    back = wait_until(showing_wanted, timeout=30, message="the same four charts after a reload")
    assert len(back) == 4
    # the shared crosshair: hovering one chart hovers the others at the same time
    from selenium.webdriver.common.action_chains import ActionChains

    area = dash_duo.find_element(f"#{ol.CHART[0]} .draglayer .xy .nsewdrag")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", area)
    ActionChains(dash_duo.driver).move_to_element(area).move_by_offset(5, 0).perform()
    hovered = wait_until(lambda: dash_duo.driver.execute_script(
        "return [1, 2, 3].map(function (i) { var h = document.querySelector('#of-chart-' + i + ' .hoverlayer');"
        " return h ? h.childElementCount : 0; });") if dash_duo.driver.execute_script(
        "return [1, 2, 3].every(function (i) { var h = document.querySelector('#of-chart-' + i + ' .hoverlayer');"
        " return h && h.childElementCount > 0; });") else None, message="the other charts hovered at the same time")
    assert all(n > 0 for n in hovered)
