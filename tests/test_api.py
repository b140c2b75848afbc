"""The HTTP routes beside the dashboard: ``GET /api/health`` and ``GET /api/bars``.

First against a stub of the engine's read API (the contract of each route), then against a
real ``Engine`` fed Binance trade messages through its worker step (no sockets), so the
CSV a client downloads is checked from vendor message to text.
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from flask import Flask

from dashboard.api import register_routes
from feed.core.csvformat import bars_to_csv
from feed.core.events import RawMessage
from feed.core.config import EngineConfig, MarketConfig
from feed.io.engine import Engine
from feed.core.models import BAR_COLUMNS
from feed.vendors.binance import BinanceAdapter
from feed.vendors.itick import ITickAdapter

T0 = 1_723_161_300 * 10**9  # 2024-08-08T23:55:00Z
MIN = 60 * 10**9


def frame(rows: list[dict]) -> pd.DataFrame:
    """Return a bars frame (BAR_COLUMNS) from partial rows with sensible defaults."""
    out = []
    for i, r in enumerate(rows):
        row = dict(symbol="BTCUSDT", bar="1m", start=T0 + i * MIN, end=T0 + (i + 1) * MIN,
                   open=100.0, high=100.0, low=100.0, close=100.0, volume=1.0, turnover=100.0,
                   vwap=100.0, trade_count=1, buy_volume=1.0, sell_volume=0.0, closed=True)
        row.update(r)
        out.append(row)
    return pd.DataFrame(out, columns=list(BAR_COLUMNS))


# -- the routes' contract, on a stub engine ------------------------------------------------------


class StubEngine:
    """Just the read API the routes use."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.asked: list[tuple[str, str]] = []

    def symbols(self):
        return ["BTCUSDT"]

    def normalize_symbol(self, text):
        return BinanceAdapter("spot").normalize_symbol(text)

    def bars_frame(self, symbol, spec):
        self.asked.append((symbol, str(spec)))
        df = self.df.copy()
        df.attrs.update(price_decimals=1, size_decimals=3)
        return df

    def health(self):
        return {"status": "ok", "counters": {"dropped": 0}, "queue_depth": 0, "symbols": {}}


@pytest.fixture
def client_engine():
    server = Flask("test")
    engine = StubEngine(frame([{}, dict(closed=False, amplitude=0.001, change=-0.0005)]))
    register_routes(server, engine)
    return server.test_client(), engine


def test_health_when_get_then_engine_health_json(client_engine):
    client, engine = client_engine
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    assert r.get_json() == engine.health()


def test_bars_when_valid_then_csv_of_every_held_bar(client_engine):
    client, engine = client_engine
    r = client.get("/api/bars?symbol=btcusdt&bar=1m")
    assert r.status_code == 200
    assert r.mimetype == "text/csv"
    expected = bars_to_csv(engine.df, price_decimals=1, size_decimals=3).split("\n")
    expected = [expected[0] + ",verified"] + [line + "," if line else line for line in expected[1:]]
    assert r.get_data(as_text=True) == "\n".join(expected)  # the fake engine verifies nothing
    assert engine.asked == [("BTCUSDT", "1m")]
    assert "BTCUSDT_1m_20240808T235500Z_20240808T235600Z.csv" in r.headers["Content-Disposition"]


def test_bars_when_valid_then_header_is_bar_columns_ending_with_amplitude_and_change(client_engine):
    client, _ = client_engine
    lines = client.get("/api/bars?symbol=BTCUSDT&bar=1m").get_data(as_text=True).splitlines()
    assert lines[0].split(",") == list(BAR_COLUMNS) + ["verified"]
    assert lines[0].endswith(",closed,amplitude,change,verified")
    assert lines[1].endswith(",true,,,") and lines[2].endswith(",false,0.00100000,-0.00050000,")


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("bar=1m", 400, "missing query parameter 'symbol'"),
        ("symbol=BTC%20USDT&bar=1m", 400, "invalid symbol"),
        ("symbol=%3Dcmd&bar=1m", 400, "invalid symbol"),
        ("symbol=AAPL%24US&bar=1m", 400, "invalid symbol"),
        (f"symbol={'A' * 65}&bar=1m", 400, "longer than 64 characters"),
        ("symbol=BTCUSDT", 400, "missing query parameter 'bar'"),
        ("symbol=BTCUSDT&bar=7m", 400, "must divide 60 evenly"),
        ("symbol=BTCUSDT&bar=fast", 400, "bad bar spec"),
        ("symbol=ETHUSDT&bar=1m", 404, "unknown symbol ETHUSDT"),
    ],
)
def test_bars_when_bad_query_then_one_line_json_error(client_engine, query, status, words):
    client, engine = client_engine
    r = client.get(f"/api/bars?{query}")
    assert r.status_code == status
    body = r.get_data(as_text=True)
    assert body.strip().count("\n") == 0
    assert words in json.loads(body)["error"]
    assert engine.asked == []


# -- a real engine, fed vendor messages ----------------------------------------------------------

# (seconds after T0, trade id, price, size, buyer is maker)
TRADES = [
    (1.0, 101, "60000.10", "0.010", False),
    (20.0, 102, "60010.00", "0.500", True),
    (61.0, 103, "60020.50", "0.250", False),
    (95.0, 107, "59990.00", "0.125", True),  # 104..106 never arrived: a gap of 3
    (130.0, 108, "60005.00", "1.000", False),
]


def trade_message(seconds: float, trade_id: int, price: str, qty: str, maker: bool) -> str:
    ms = (T0 + int(seconds * 1e9)) // 1_000_000
    return json.dumps({"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": ms, "s": "BTCUSDT", "t": trade_id, "p": price, "q": qty, "T": ms,
        "m": maker, "M": True}})


@pytest.fixture
def real():
    engine = Engine(BinanceAdapter("spot"), EngineConfig(MarketConfig(clock="exchange", close_grace_s=0)))
    engine.subscribe("BTCUSDT")
    engine.process([RawMessage(T0, trade_message(*t)) for t in TRADES])
    server = Flask("test")
    register_routes(server, engine)
    return server.test_client(), engine


def test_bars_when_real_engine_then_csv_rows_are_its_bars_with_amplitude_and_change(real):
    client, engine = real
    r = client.get("/api/bars?symbol=BTCUSDT&bar=1m")
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [r["start"] for r in rows] == ["2024-08-08T23:55:00.000Z", "2024-08-08T23:56:00.000Z",
                                          "2024-08-08T23:57:00.000Z"]
    assert [r["closed"] for r in rows] == ["true", "true", "false"]
    # decimals as the vendor's prices and sizes show them (60000.1: one; 0.125: three)
    assert rows[0]["open"] == "60000.1" and rows[0]["close"] == "60010.0" and rows[0]["volume"] == "0.510"
    assert (rows[0]["amplitude"], rows[0]["change"]) == ("", "")  # the series' first bar
    # 23:56: high 60020.50, low 59990.00, close 59990.00 against the previous close 60010.00
    assert rows[1]["amplitude"] == f"{(60020.5 - 59990.0) / 60010.0:.8f}"
    assert rows[1]["change"] == f"{(59990.0 - 60010.0) / 60010.0:.8f}"
    assert rows[1]["change"].startswith("-0.000333")
    assert r.headers["Content-Disposition"].endswith('"BTCUSDT_1m_20240808T235500Z_20240808T235700Z.csv"')


def test_bars_when_real_engine_then_equals_export_of_its_frame(real):
    client, engine = real
    for spec in ("1m", "2t", "0.5v"):
        text = client.get(f"/api/bars?symbol=BTCUSDT&bar={spec}").get_data(as_text=True)
        df = engine.bars_frame("BTCUSDT", spec)
        lines = bars_to_csv(df, price_decimals=df.attrs["price_decimals"],
                            size_decimals=df.attrs["size_decimals"]).split("\n")
        # The export plus an empty ``verified`` column (no vendor klines in this engine).
        assert text == "\n".join([lines[0] + ",verified"] + [x + "," if x else x for x in lines[1:]])


def test_health_when_real_engine_then_gap_of_missing_trades_counted(real):
    client, engine = real
    body = client.get("/api/health").get_json()
    assert body["counters"]["gaps"] == 3 and body["counters"]["trades"] == len(TRADES)
    assert body["symbols"]["BTCUSDT"]["trades"] == len(TRADES)
    assert engine.gap_marks("BTCUSDT") == [(T0 + 95 * 10**9, 3)]


def test_bars_when_symbol_unsubscribed_then_404(real):
    client, engine = real
    engine.unsubscribe("BTCUSDT")
    r = client.get("/api/bars?symbol=BTCUSDT&bar=1m")
    assert r.status_code == 404 and "not subscribed" in r.get_json()["error"]


# -- the adapter decides what a symbol is --------------------------------------------------------


@pytest.fixture
def itick():
    # As dashboard.sources.make_adapter builds it; no socket is opened and the token is
    # only sent in a handshake, so any text will do.
    engine = Engine(ITickAdapter(token="tok-api-test", market="stock"), EngineConfig(MarketConfig()))
    engine.subscribe("AAPL$US")
    server = Flask("test")
    register_routes(server, engine)
    return server.test_client(), engine


def test_bars_when_itick_session_then_its_symbol_form_answers_csv(itick):
    client, _ = itick
    for query in ("symbol=AAPL$US&bar=1m", "symbol=AAPL%24US&bar=1m", "symbol=aapl.us&bar=1m"):
        r = client.get(f"/api/bars?{query}")
        assert r.status_code == 200, (query, r.get_data(as_text=True))
        assert r.mimetype == "text/csv"
        assert r.get_data(as_text=True).splitlines()[0].split(",") == list(BAR_COLUMNS) + ["verified"]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("symbol=MSFT$US&bar=1m", 404, "unknown symbol MSFT$US"),
        ("symbol=A%20B%20C&bar=1m", 400, "invalid symbol"),
        ("symbol=%3Dcmd&bar=1m", 400, "invalid symbol"),
    ],
)
def test_bars_when_itick_session_and_unknown_or_malformed_symbol_then_json_error(itick, query, status, words):
    client, _ = itick
    r = client.get(f"/api/bars?{query}")
    assert r.status_code == status
    assert words in r.get_json()["error"]
