"""Shape check of every ``POST /_dash-update-component`` body, before Dash reads it.

Dash's dispatcher indexes the body it is sent (``body["output"]``, ``inputs`` items'
``id``/``property``/``value``, one output spec per registered output) and answers 500
with a traceback for anything else. A page built from ``/_dash-dependencies`` always
sends the exact shape; a forged body that does not is answered 400 with one line in the
log (counted in :attr:`Guard.refused`), so Dash only ever runs a registered server-side
callback with its own inputs and states, in order. The values themselves are the
callbacks' to check (``dashboard.inputs``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import jsonify, request

__all__ = ["Guard", "install", "body_problem"]

log = logging.getLogger(__name__)

#: Largest body accepted, bytes: the biggest honest body (the candle store, options of
#: every symbol) is a few KB.
MAX_BODY_BYTES = 2_000_000


def _prop(text: Any) -> Any:
    # "children@<hash>" (an allow_duplicate output) names the property "children"
    return text.partition("@")[0] if isinstance(text, str) else text


def _expected(app: Any) -> dict[str, dict]:
    # output string -> {"outputs": [(id, prop)], "inputs": [...], "state": [...], "multi"}
    out = {}
    for key, cb in app.callback_map.items():
        if not callable(cb.get("callback")):
            continue  # clientside: runs in the browser only
        outputs = cb["output"] if isinstance(cb["output"], (list, tuple)) else [cb["output"]]
        out[key] = {
            "outputs": [(o.component_id, _prop(o.component_property)) for o in outputs],
            "multi": isinstance(cb["output"], (list, tuple)),
            "inputs": [(i["id"], i["property"]) for i in cb["inputs"]],
            "state": [(s["id"], s["property"]) for s in cb["state"]],
        }
    return out


def _items_problem(items: Any, want: list[tuple], what: str) -> str | None:
    if not isinstance(items, list) or len(items) != len(want):
        return f"{what} must be a list of {len(want)}"
    for item, (cid, prop) in zip(items, want):
        if not isinstance(item, dict) or item.get("id") != cid or item.get("property") != prop:
            return f"{what} do not match the callback"
        value = item.get("value")
        if isinstance(value, float) and not math.isfinite(value):
            return f"{what}: {cid}.{prop} is not a finite number"
    return None


def body_problem(body: Any, expected: dict[str, dict]) -> str | None:
    """Return why ``body`` is not a callback request of this app, or None when it is.

    Parameters
    ----------
    body : any
        The decoded JSON body.
    expected : dict
        Output string -> the callback's outputs, inputs and states (as :func:`install`
        builds it from ``app.callback_map``).
    """
    if not isinstance(body, dict):
        return "body must be a JSON object"
    want = expected.get(body.get("output")) if isinstance(body.get("output"), str) else None
    if want is None:
        return "no such callback"
    outputs = body.get("outputs")
    outputs = outputs if want["multi"] else [outputs]
    if (not isinstance(outputs, list) or len(outputs) != len(want["outputs"])
            or any(not isinstance(o, dict) or (o.get("id"), _prop(o.get("property"))) != w
                   for o, w in zip(outputs, want["outputs"]))):
        return "outputs do not match the callback"
    problem = (_items_problem(body.get("inputs"), want["inputs"], "inputs")
               or _items_problem(body.get("state", []), want["state"], "state"))
    if problem:
        return problem
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return "changedPropIds must be a list of strings"
    return None


class Guard:
    """The installed check: ``refused`` counts bodies answered 400."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused = 0
        self._expected: dict[str, dict] | None = None

    def check(self) -> Any:
        """Flask ``before_request`` hook: None to let Dash answer, else a 400 response."""
        path = self.app.config.routes_pathname_prefix + "_dash-update-component"
        if request.path != path or request.method != "POST":
            return None
        if self._expected is None:  # callbacks are all registered by the first request
            self._expected = _expected(self.app)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            problem = "body too large"
        else:
            problem = body_problem(request.get_json(silent=True), self._expected)
        if problem is None:
            return None
        self.refused += 1
        log.warning("refused a callback request from %s: %s", request.remote_addr, problem)
        return jsonify(error=problem), 400


def install(app: Any) -> Guard:
    """Check every callback request of the Dash ``app`` (see the module docstring)."""
    guard = Guard(app)
    app.server.before_request(guard.check)
    return guard
