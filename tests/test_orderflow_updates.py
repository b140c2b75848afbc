"""What the order-flow callback returns (dashboard.orderflow_updates), on a real engine fed a
recorded Binance session in two steps: full views first, then ``dash.Patch`` increments
that carry exactly the new trades and the bar in progress; hostile page inputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dash import Patch, no_update

from dashboard import orderflow_updates as ou
from feed.core.config import EngineConfig, MarketConfig
from feed.core.events import RawMessage
from feed.core.models import BarSpec
from feed.io.engine import Engine
from feed.vendors.binance import BinanceAdapter
from tests.helpers import require_shared_data

pytestmark = pytest.mark.data


def messages(raw: pd.DataFrame) -> list[RawMessage]:
    return [RawMessage(int(r.local_recv_time_ns), json.dumps({"stream": "ethusdt@trade", "data": {
        "e": "trade", "E": int(r.event_time_ms), "s": "ETHUSDT", "t": int(r.trade_id), "p": r.price,
        "q": r.qty, "T": int(r.trade_time_ms), "m": bool(r.is_buyer_maker), "M": True}})) for r in raw.itertuples()]


@pytest.fixture
def session():
    path = require_shared_data("binance-ws-captures-hftbacktest", "trades",
                               "spot_ETHUSDT_2024-08-08T2354Z_2024-08-09T0005Z.csv")
    raw = pd.read_csv(path, dtype={"price": str, "qty": str})
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    engine.subscribe("ETHUSDT")
    return engine, messages(raw)


def test_views_when_a_few_trades_arrive_in_the_same_bar_then_patches_of_just_those(session):
    engine, msgs = session
    engine.process(msgs[:5000])
    # the next trades, up to (not including) the first of a later minute
    t_last = json.loads(msgs[4999].data)["data"]["T"] // 60_000
    more = []
    for m in msgs[5000:]:
        if json.loads(m.data)["data"]["T"] // 60_000 != t_last or len(more) == 5:
            break
        more.append(m)
    assert len(more) == 5
    s, message = ou.parse_settings(None, None, 10, None, "9,21", "view", "session")
    assert message == ""
    spec = BarSpec.from_str("1m")
    cache = ou.FlowCache()
    tape, st_tape = ou.tape_update(engine, "ETHUSDT", s, None)
    fp, st_fp = ou.footprint_update(engine, "ETHUSDT", spec, s, None)
    flow, st_flow = ou.flow_update(engine, "ETHUSDT", spec, s, None, None, cache)
    assert isinstance(tape, list) and len(tape) == 1 + ou.TAPE_ROWS
    assert isinstance(fp, dict) and fp["data"][0]["type"] == "heatmap"
    assert isinstance(flow, dict) and [t["name"] for t in flow["data"]][:4] == ["price", "VWAP", "EMA 9", "EMA 21"]
    # nothing new: nothing sent
    assert ou.tape_update(engine, "ETHUSDT", s, st_tape)[0] is no_update
    assert ou.footprint_update(engine, "ETHUSDT", spec, s, st_fp)[0] is no_update
    assert ou.flow_update(engine, "ETHUSDT", spec, s, None, st_flow, cache)[0] is no_update

    engine.process(more)
    tape2, _ = ou.tape_update(engine, "ETHUSDT", s, st_tape)
    fp2, _ = ou.footprint_update(engine, "ETHUSDT", spec, s, st_fp)
    flow2, _ = ou.flow_update(engine, "ETHUSDT", spec, s, None, st_flow, cache)
    assert all(isinstance(x, Patch) for x in (tape2, fp2, flow2))
    ops = tape2.to_plotly_json()["operations"]
    inserted = [o for o in ops if o["operation"] == "Insert"]
    assert len(inserted) == 5 and sum(o["operation"] == "Delete" for o in ops) == 5
    # the flow patch carries the bar in progress as the engine holds it
    cur = engine.bar_series("ETHUSDT", spec, 2**62).current
    sets = {tuple(o["location"]): o["params"]["value"] for o in flow2.to_plotly_json()["operations"]
            if o["operation"] == "Assign"}
    i = len(flow["data"][0]["x"]) - 1
    assert sets[("data", 0, "close", i)] == cur.close and sets[("data", 0, "high", i)] == cur.high


@pytest.mark.parametrize("kwargs,words", [
    (dict(tape_min="-1"), "tape minimum size"),
    (dict(tape_min="nan"), "tape minimum size"),
    (dict(levels=0), "ladder levels"),
    (dict(levels=10_000), "ladder levels"),
    (dict(levels=2.5), "ladder levels"),
    (dict(step="0"), "step must be"),
    (dict(emas="9,abc"), "EMA lengths"),
    (dict(emas="1,2,3,4,5"), "EMA lengths"),
    (dict(emas="100000"), "EMA lengths"),
    (dict(alert_window=1), "surge window"),
    (dict(alert_price="inf"), "alert price"),
])
def test_settings_when_input_hostile_then_named_and_default_kept(kwargs, words):
    s, message = ou.parse_settings(**kwargs)
    assert words in message
    assert s.ladder_levels == 10 and s.emas == (9, 21) and s.tape_min == 0.0 and s.fp_step is None
