"""Forged ``POST /_dash-update-component`` bodies against the real app.

The app is the one ``tickscope`` runs (the embedded simulator, the engine, the Dash app);
bodies are built the way the page builds them, from ``/_dash-dependencies`` and the values
in ``/_dash-layout``, then one part is replaced by something hostile: a wrong type for an
input, an unknown symbol, a bar spec too fine to build, store garbage, a body that does not
match any callback. None may answer 500 or log a traceback; the ones a user can type are
answered with an inline message.

The last test types a tiny bar spec in a real browser and reads the inline message.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest

from dashboard import ids
from tests.helpers import wait_for
from tests.test_browser import dash_duo  # noqa: F401  (the headless chromium fixture)

DISPATCH = "/_dash-update-component"
HUGE = "X" * 1_000_000


@pytest.fixture
def app_client(runtime, tmp_path):
    """(runtime, Flask test client) of the embedded simulator with trades flowing."""
    rt = runtime("--data-dir", str(tmp_path / "data"), "--bar", "1s", interval_ms=250)
    wait_for(lambda: rt.engine.status().counters.trades > 5, 30, "simulated trades")
    return rt, rt.app.server.test_client()


def layout_values(client) -> dict[tuple[str, str], object]:
    """Return ``{(component id, property): value}`` of every component in ``/_dash-layout``."""
    values: dict[tuple[str, str], object] = {}

    def walk(node):
        if isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict) and "props" in node:
            props = node["props"]
            if isinstance(props.get("id"), str):
                for k, v in props.items():
                    values[(props["id"], k)] = v
            walk(props.get("children"))

    walk(client.get("/_dash-layout").get_json())
    return values


def outputs_of(output: str) -> list[dict] | dict:
    """Return the ``outputs`` a page sends for a dependency's ``output`` string."""
    def one(text):
        name, _, _hash = text.partition("@")
        cid, _, prop = name.rpartition(".")
        return {"id": cid, "property": prop + (f"@{_hash}" if _hash else "")}
    if output.startswith(".."):
        return [one(t) for t in output[2:-2].split("...")]
    return one(output)


def bodies(client) -> dict[str, dict]:
    """Return a well-formed body per server-side callback, keyed by its first input's id."""
    values = layout_values(client)
    values[(ids.SYMBOL, "value")] = "BTCUSDT"
    out = {}
    for dep in client.get("/_dash-dependencies").get_json():
        if dep.get("clientside_function"):
            continue
        body = {
            "output": dep["output"],
            "outputs": outputs_of(dep["output"]),
            "inputs": [{**i, "value": values.get((i["id"], i["property"]))} for i in dep["inputs"]],
            "state": [{**s, "value": values.get((s["id"], s["property"]))} for s in dep["state"]],
            "changedPropIds": [f"{dep['inputs'][0]['id']}.{dep['inputs'][0]['property']}"],
        }
        out[dep["inputs"][0]["id"]] = body
    return out


def with_value(body: dict, cid: str, prop: str, value, changed: bool = False) -> dict:
    """Return a copy of ``body`` with input/state ``cid.prop`` set to ``value``."""
    body = copy.deepcopy(body)
    found = False
    for item in body["inputs"] + body["state"]:
        if item["id"] == cid and item["property"] == prop:
            item["value"] = value
            found = True
    assert found, f"{cid}.{prop} is not an input of {body['output']}"
    if changed:
        body["changedPropIds"] = [f"{cid}.{prop}"]
    return body


def forged(client) -> dict[str, object]:
    """Return the forged variants: name -> body (a dict, or raw text to post as is)."""
    b = bodies(client)
    tick, sub, bars, export = b[ids.PULSE], b[ids.SUBSCRIBE_BUTTON], b[ids.BAR_KIND], b[ids.EXPORT_REQUEST]
    unsub = b[ids.UNSUBSCRIBE_BUTTON]
    t = lambda cid, prop, v: with_value(tick, cid, prop, v)  # noqa: E731
    good_request = {"n": 1, "range": None, "type": "date"}
    variants: dict[str, object] = {
        "tick n_intervals negative": t(ids.PULSE, "data", -5),
        "tick n_intervals NaN": json.dumps(t(ids.PULSE, "data", float("nan"))),
        "tick n_intervals string": t(ids.PULSE, "data", "many"),
        "tick symbol list": t(ids.SYMBOL, "value", ["BTCUSDT"]),
        "tick symbol dict": t(ids.SYMBOL, "value", {"a": 1}),
        "tick symbol number": t(ids.SYMBOL, "value", 12345),
        "tick symbol huge": t(ids.SYMBOL, "value", HUGE),
        "tick symbol unknown": t(ids.SYMBOL, "value", "ZZZZUSDT"),
        "tick bar spec garbage": t(ids.BAR_SIZE, "value", "garbage"),
        "tick bar spec too fine": t(ids.BAR_SIZE, "value", "0.00000001v"),
        "tick bar spec number": t(ids.BAR_SIZE, "value", 5),
        "tick label dict": t(ids.BAR_LABEL, "value", {"x": 1}),
        "tick time zone garbage": t(ids.TIMEZONE, "value", "Mars/Olympus_Mons"),
        "tick time zone list": t(ids.TIMEZONE, "value", ["UTC"]),
        "tick browser zone forged": with_value(t(ids.TIMEZONE, "value", "browser"), ids.BROWSER_TZ, "data",
                                               "../../etc/passwd"),
        "tick candle store garbage": t(ids.CANDLES_STORE, "data",
                                       {"key": "BTCUSDT|1s", "n_closed": "abc", "gap_total": [],
                                        "n_points": None, "generation": {}}),
        "tick candle store string": t(ids.CANDLES_STORE, "data", "junk"),
        "tick depth store list": t(ids.DEPTH_STORE, "data", ["x"]),
        "tick status store garbage": t(ids.STATUS_STORE, "data", {"dropped": "x", "drop_seen": "y"}),
        "tick subscribe store garbage": t(ids.SUBSCRIBE_STORE, "data",
                                          {"symbol": 5, "at": "x", "errors": 7, "n": []}),
        "tick options garbage": t(ids.SYMBOL, "options", [1, None, {"value": []}, "BTCUSDT"]),
        "tick options string": t(ids.SYMBOL, "options", "notalist"),
        "subscribe number": with_value(sub, ids.SUBSCRIBE_INPUT, "value", 12345),
        "subscribe huge": with_value(sub, ids.SUBSCRIBE_INPUT, "value", HUGE),
        "subscribe dict": with_value(sub, ids.SUBSCRIBE_INPUT, "value", {"a": 1}),
        "remove symbol list": with_value(unsub, ids.SYMBOL, "value", ["BTCUSDT"]),
        "remove symbol huge": with_value(unsub, ids.SYMBOL, "value", HUGE),
        "remove symbol unknown": with_value(unsub, ids.SYMBOL, "value", "ZZZZUSDT"),
        "bars kind list": with_value(bars, ids.BAR_KIND, "value", ["time"], changed=True),
        "bars kind unknown": with_value(bars, ids.BAR_KIND, "value", "nonsense", changed=True),
        "bars current dict": with_value(with_value(bars, ids.BAR_KIND, "value", "tick", changed=True),
                                        ids.BAR_SIZE, "value", {"x": 1}),
        "bars custom list": with_value(bars, ids.BAR_CUSTOM, "value", ["1m"], changed=False),
        "export request string": with_value(export, ids.EXPORT_REQUEST, "data", "junk"),
        "export request bad range": with_value(
            with_value(export, ids.EXPORT_REQUEST, "data", {**good_request, "range": ["a", {}]}),
            ids.CANDLES_STORE, "data", {"key": "BTCUSDT|1s", "view": "BTCUSDT|1s"}),
        "export spec garbage": with_value(export, ids.EXPORT_REQUEST, "data", good_request) | {
            "state": [{"id": ids.SYMBOL, "property": "value", "value": "BTCUSDT"},
                      {"id": ids.BAR_SIZE, "property": "value", "value": "??"},
                      {"id": ids.CANDLES_STORE, "property": "data", "value": None}]},
        "missing inputs": {k: v for k, v in tick.items() if k != "inputs"},
        "missing state": {k: v for k, v in tick.items() if k != "state"},
        "inputs not a list": {**tick, "inputs": {"a": 1}},
        "inputs too short": {**tick, "inputs": tick["inputs"][:2]},
        "input id swapped": {**tick, "inputs": [{"id": "nope", "property": "value", "value": 1}]
                             + tick["inputs"][1:]},
        "relayoutData forged input": {**tick, "inputs": tick["inputs"] + [
            {"id": ids.CANDLES, "property": "relayoutData", "value": {"xaxis.range[0]": {"$": 1}}}]},
        "unknown output id": {**tick, "output": "nope.children"},
        "output not a string": {**tick, "output": ["x"]},
        "outputs mismatch": {**tick, "outputs": [{"id": "nope", "property": "figure"}]},
        "clientside output": {**tick, "output": "bar-label.options",
                              "outputs": {"id": "bar-label", "property": "options"}},
        "body a list": [1, 2, 3],
        "body not json": "{not json",
        "changedPropIds garbage": {**tick, "changedPropIds": [{"a": 1}, 5]},
    }
    return variants


def test_forged_callback_bodies_never_answer_500_nor_log_a_traceback(app_client, caplog):
    rt, client = app_client
    variants = forged(client)
    assert len(variants) >= 29
    caplog.set_level(logging.WARNING)
    answers = {}
    for name, body in variants.items():
        data = body if isinstance(body, str) else json.dumps(body)
        resp = client.post(DISPATCH, data=data, content_type="application/json")
        answers[name] = resp.status_code
    assert {n: s for n, s in answers.items() if s >= 500} == {}
    assert set(answers.values()) <= {200, 204, 400}, answers
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert tracebacks == [], [r.getMessage()[:200] for r in tracebacks]
    # the app is unharmed: a good tick still draws
    good = bodies(client)[ids.PULSE]
    assert client.post(DISPATCH, json=good).status_code == 200


def response_outputs(resp) -> dict:
    """Return ``{component id: {property: value}}`` of a callback answer."""
    return resp.get_json()["response"]


def test_forged_bar_spec_too_fine_answers_inline_messages(app_client):
    rt, client = app_client
    b = bodies(client)
    tick = with_value(b[ids.PULSE], ids.BAR_SIZE, "value", "0.00000001v")
    resp = client.post(DISPATCH, json=tick)
    assert resp.status_code == 200
    figure = response_outputs(resp)[ids.CANDLES]["figure"]
    assert "choose a larger step" in json.dumps(figure)
    bars = with_value(b[ids.BAR_KIND], ids.BAR_CUSTOM, "value", "0.00000001v")
    bars["changedPropIds"] = [f"{ids.BAR_CUSTOM}.n_submit"]
    resp = client.post(DISPATCH, json=bars)
    assert resp.status_code == 200
    out = response_outputs(resp)
    assert "choose a larger step" in out[ids.BAR_MESSAGE]["children"]
    assert ids.BAR_SIZE not in out or "value" not in out[ids.BAR_SIZE]  # the spec stays


def test_forged_typed_values_answer_inline_messages(app_client):
    rt, client = app_client
    b = bodies(client)
    resp = client.post(DISPATCH, json=with_value(b[ids.SUBSCRIBE_BUTTON], ids.SUBSCRIBE_INPUT, "value", HUGE))
    assert resp.status_code == 200
    assert "symbol" in response_outputs(resp)[ids.SUBSCRIBE_MESSAGE]["children"]
    resp = client.post(DISPATCH, json=with_value(b[ids.PULSE], ids.SYMBOL, "value", "ZZZZUSDT"))
    assert "ZZZZUSDT is not subscribed" in json.dumps(response_outputs(resp)[ids.CANDLES]["figure"])
    assert rt.engine.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.mark.browser
def test_bar_chooser_when_tiny_spec_typed_shows_why_inline(runtime, tmp_path, dash_duo):
    rt = runtime("--data-dir", str(tmp_path / "data"), "--bar", "1s", interval_ms=250)
    wait_for(lambda: rt.engine.status().counters.trades > 5, 30, "simulated trades")
    dash_duo.start_server(rt.app)
    box = dash_duo.find_element(f"#{ids.BAR_CUSTOM}")
    box.send_keys("0.00000001v")
    dash_duo.find_element(f"#{ids.BAR_CUSTOM_BUTTON}").click()
    dash_duo.wait_for_contains_text(f"#{ids.BAR_MESSAGE}", "choose a larger step", timeout=15)
    assert dash_duo.find_element(f"#{ids.BAR_SIZE}").text.strip() != "0.00000001v"
