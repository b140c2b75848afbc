"""``GET /api/trades`` and ``GET /api/footprint`` on a real engine fed a recorded Binance
session (spot ETHUSDT, 14,515 trades) as ``@trade`` messages, checked against a plain pandas
computation of the same trades; then every bad parameter gets a one-line JSON 400/404."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
from flask import Flask

from dashboard.api import register_routes
from dashboard.orderflow_data import MAX_TAPE_LIMIT
from feed.core.config import EngineConfig, MarketConfig
from feed.core.events import RawMessage
from feed.core.flowcsv import FOOTPRINT_CSV_COLUMNS, TRADES_CSV_COLUMNS
from feed.io.engine import Engine
from feed.vendors.binance import BinanceAdapter

pytestmark = pytest.mark.data

NAME = "trades/spot_ETHUSDT_2024-08-08T2354Z_2024-08-09T0005Z.csv"


@pytest.fixture(scope="module")
def recorded():
    from tests.helpers import require_shared_data

    path = require_shared_data("binance-ws-captures-hftbacktest", NAME)
    raw = pd.read_csv(path, dtype={"price": str, "qty": str})
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    engine.subscribe("ETHUSDT")
    msgs = [RawMessage(int(r.local_recv_time_ns), json.dumps({"stream": "ethusdt@trade", "data": {
        "e": "trade", "E": int(r.event_time_ms), "s": "ETHUSDT", "t": int(r.trade_id), "p": r.price,
        "q": r.qty, "T": int(r.trade_time_ms), "m": bool(r.is_buyer_maker), "M": True}}))
        for r in raw.itertuples()]
    for i in range(0, len(msgs), 1000):
        engine.process(msgs[i:i + 1000])
    server = Flask("test")
    register_routes(server, engine)
    ref = pd.DataFrame({
        "trade_id": raw["trade_id"], "ts_ns": raw["trade_time_ms"] * 1_000_000,
        "price": raw["price"].astype(float), "size": raw["qty"].astype(float),
        "side": np.where(raw["is_buyer_maker"], "sell", "buy"),
    })
    return server.test_client(), engine, ref


def rows(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def iso(ns: pd.Series) -> list[str]:
    return pd.to_datetime(ns, unit="ns", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3].add("Z").tolist()


@pytest.mark.parametrize("limit", [1, 250, 20000])
def test_trades_when_recorded_session_then_latest_n_oldest_first_as_pandas(recorded, limit):
    client, _, ref = recorded
    r = client.get(f"/api/trades?symbol=ETHUSDT&limit={limit}")
    assert r.get_data(as_text=True).splitlines()[0] == ",".join(TRADES_CSV_COLUMNS)
    got = rows(r)
    want = ref.tail(limit)
    assert len(got) == min(limit, len(ref))
    assert [int(g["trade_id"]) for g in got] == want["trade_id"].tolist()
    assert [g["time"] for g in got] == iso(want["ts_ns"])
    assert [g["price"] for g in got] == [f"{p:.2f}" for p in want["price"]]  # ETHUSDT: 2 decimals
    assert [g["size"] for g in got] == [f"{s:.4f}" for s in want["size"]]
    assert [g["side"] for g in got] == want["side"].tolist()
    assert {g["symbol"] for g in got} == {"ETHUSDT"}


@pytest.mark.parametrize("bar,step", [("1m", None), ("15s", "0.5"), ("1000t", "1")])
def test_footprint_when_recorded_session_then_cells_equal_pandas(recorded, bar, step):
    client, _, ref = recorded
    q = f"/api/footprint?symbol=ETHUSDT&bar={bar}" + (f"&step={step}" if step else "")
    r = client.get(q)
    assert r.get_data(as_text=True).splitlines()[0] == ",".join(FOOTPRINT_CSV_COLUMNS)
    got = pd.DataFrame(rows(r))
    df = ref.copy()
    if bar.endswith("t"):
        run = np.arange(len(df)) // 1000
        df["bar_key"] = run
        df["start"] = df["ts_ns"].to_numpy()[run * 1000]
    else:
        ns = {"1m": 60, "15s": 15}[bar] * 10**9
        df["start"] = df["bar_key"] = df["ts_ns"] // ns * ns
    df["level"] = df["price"] if step is None else np.floor(df["price"] / float(step) + 1e-9) * float(step)
    df["buy"] = df["size"].where(df["side"] == "buy", 0.0)
    df["sell"] = df["size"].where(df["side"] == "sell", 0.0)
    g = df.groupby(["bar_key", "level"], sort=True)
    want = pd.DataFrame({"start": g["start"].first(), "buy": g["buy"].sum(), "sell": g["sell"].sum(),
                         "n": g.size()}).reset_index()
    assert got["start"].tolist() == iso(want["start"])
    assert got["price"].tolist() == [f"{p:.2f}" for p in want["level"]]
    assert got["buy_volume"].tolist() == [f"{v:.4f}" for v in want["buy"]]
    assert got["sell_volume"].tolist() == [f"{v:.4f}" for v in want["sell"]]
    assert got["trade_count"].astype(int).tolist() == want["n"].tolist()
    assert set(got["bar"]) == {bar} and set(got["symbol"]) == {"ETHUSDT"}
    assert got["trade_count"].astype(int).sum() == len(ref)


@pytest.mark.parametrize(("query", "status", "words"), [
    ("/api/trades", 400, "missing query parameter 'symbol'"),
    ("/api/trades?symbol=ETHUSDT&limit=0", 400, "limit must be"),
    ("/api/trades?symbol=ETHUSDT&limit=-5", 400, "limit must be"),
    ("/api/trades?symbol=ETHUSDT&limit=abc", 400, "limit must be"),
    (f"/api/trades?symbol=ETHUSDT&limit={MAX_TAPE_LIMIT + 1}", 400, "limit must be"),
    ("/api/trades?symbol=ETHUSDT&limit=99999999999999999999999", 400, "limit must be"),
    ("/api/trades?symbol=" + "A" * 100, 400, "longer than"),
    ("/api/trades?symbol=BTCUSDT", 404, "not subscribed"),
    ("/api/footprint?symbol=ETHUSDT", 400, "missing query parameter 'bar'"),
    ("/api/footprint?symbol=ETHUSDT&bar=7m", 400, "divide 60"),
    ("/api/footprint?symbol=ETHUSDT&bar=50v", 400, "time or tick"),
    ("/api/footprint?symbol=ETHUSDT&bar=1m&step=0", 400, "step must be"),
    ("/api/footprint?symbol=ETHUSDT&bar=1m&step=-1", 400, "step must be"),
    ("/api/footprint?symbol=ETHUSDT&bar=1m&step=nan", 400, "step must be"),
    ("/api/footprint?symbol=ETHUSDT&bar=1m&step=inf", 400, "step must be"),
    ("/api/footprint?symbol=ETHUSDT&bar=1m&step=1e-9", 400, "price levels"),
    ("/api/footprint?symbol=ETHUSDT&bar=1.5t", 400, "whole number"),
    ("/api/footprint?symbol=ETHUSDT&bar=" + "9" * 500 + "m", 400, "bad bar spec"),
    ("/api/footprint?symbol=%3Dcmd&bar=1m", 400, "invalid symbol"),
    ("/api/footprint?symbol=SOLUSDT&bar=1m", 404, "not subscribed"),
])
def test_orderflow_routes_when_bad_parameter_then_one_line_json_error(recorded, query, status, words):
    client, _, _ = recorded
    r = client.get(query)
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_data(as_text=True)
    assert body.strip().count("\n") == 0
    assert words in json.loads(body)["error"]


def test_footprint_when_spec_makes_too_many_bars_then_400_naming_the_bound(recorded, monkeypatch):
    client, _, ref = recorded
    monkeypatch.setattr("dashboard.orderflow_data.MAX_FOOTPRINT_BARS", 1000)
    r = client.get("/api/footprint?symbol=ETHUSDT&bar=1t")
    assert r.status_code == 400
    assert f"about {len(ref):,} bars" in r.get_json()["error"]
    assert client.get("/api/footprint?symbol=ETHUSDT&bar=100t").status_code == 200


def test_footprint_when_more_trades_held_than_the_read_cap_then_the_latest_only(recorded, monkeypatch):
    client, _, ref = recorded
    monkeypatch.setattr("dashboard.orderflow_data.MAX_FOOTPRINT_TRADES", 1000)
    got = rows(client.get("/api/footprint?symbol=ETHUSDT&bar=1m"))
    assert sum(int(g["trade_count"]) for g in got) == 1000
    assert got[-1]["start"] == iso(ref["ts_ns"].tail(1) // (60 * 10**9) * (60 * 10**9))[0]
