"""Depth levels checked a side at a time take exactly what the row-by-row check takes.

``feed.vendors.depth_levels.levels`` converts and range-checks a side of list rows in one
msgspec call and falls back to the row-by-row loop for anything unusual. Random sides mixing good
values with every hostile value the row check refuses must give the same levels, or the
same ``bad_level`` naming the same first bad row, as the row-by-row loop alone; and
recorded Binance depth messages must take the one-pass path.
"""

from __future__ import annotations

import random

import orjson
import pytest

from feed.core.models import MalformedMessage
from feed.io.readers import merge_recordings
from feed.vendors import depth_levels
from feed.vendors.depth_levels import level_sides, levels
from tests.helpers import require_shared_data

GOOD = ["61837.63", "0.014", "0", "0.00000000", "1", "+1.5", "1.", ".5", "1e3", "2.5E-2",
        "00.1", "-0", "999999999999", "1.e5"]
#: Values the row check refuses (or reads out of range) for a price or a size.
HOSTILE = ["", " 5", "5 ", "5_0", "inf", "nan", "NaN", "infinity", "1e999", "-1", "1,5", "1.2.3",
           ".", "+", "e5", "1e", "1e+", "--1", "0x10", "١٢", "１２", "5\x00", "\ud800", "1e12",
           "-1e-400", "1e-400", "1 000", "5\n", True, False, None, 1, 0, 1.5, -1.0, float("nan"),
           2**1100, [1], {"p": 1}]


#: Refused wherever they stand (the test must not pass by both paths taking them).
REFUSED = ["-1", "inf", "nan", "5_0", "", " 5", "1,5", "1.2.3", "1e999", "١٢", "\ud800", True, None]


def _outcome(fn, rows, *args):
    try:
        return "ok", fn(rows, *args)
    except MalformedMessage as exc:
        return exc.reason, exc.detail


def _row_by_row(rows, field, descending=None):
    return depth_levels._row_levels(rows, field, 0, 1, None, descending)


#: Characters of made-up number text: digits, the decimal marks and what float() or a
#: looser reader might also take (spaces, underscores, the letters of inf/nan, x).
ALPHABET = "0123456789.eE+-_ infatyINFx\u0663"


def _value(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.88:
        return rng.choice(GOOD)
    if roll < 0.94:
        return rng.choice(HOSTILE)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))


def _random_side(rng: random.Random) -> list:
    rows = []
    for _ in range(rng.randint(1, 12)):
        roll = rng.random()
        if roll < 0.03:
            rows.append(rng.choice(["61837.63", ("1", "2"), {"0": "1", "1": "2"}, None, 5]))
        elif roll < 0.06:
            rows.append(rng.choice([[], ["61837.63"], ["61837.63", "1", "extra"]]))
        else:
            p, q = _value(rng), _value(rng)
            rows.append([p, q])
    return rows


def test_random_hostile_sides_match_the_row_by_row_check():
    rng = random.Random(20240808)
    kinds = {"ok": 0, "bad_level": 0}
    for _ in range(30_000):
        rows = _random_side(rng)
        descending = rng.choice([None, True, False])
        got = _outcome(lambda r, f: levels(r, f, descending=descending), rows, "b")
        want = _outcome(_row_by_row, rows, "b", descending)
        assert got == want, rows
        kinds[got[0]] += 1
    # Both outcomes were exercised many times.
    assert kinds["ok"] > 2_000 and kinds["bad_level"] > 2_000, kinds


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("where", ["price", "size"])
def test_each_hostile_value_is_refused_or_read_as_the_row_check_reads_it(value, where):
    rows = [["61837.63", "1.5"], ["61837.64", "0"], ["61837.65", "2"]]
    rows[1] = [value, "0"] if where == "price" else ["61837.64", value]
    want = _outcome(_row_by_row, rows, "a")
    assert _outcome(levels, rows, "a") == want
    if repr(value) in map(repr, REFUSED):  # by repr: 1 == True, 0 == False
        assert want == ("bad_level", f"a level {rows[1]!r}")


def test_a_clean_side_takes_the_one_pass_path():
    rows = [["61837.63", "1.5"], ["61837.62", "0.000"], ["61837.60", "2.25"]]
    assert depth_levels._text_levels(rows, 0, 1) == ((61837.63, 1.5), (61837.62, 0.0), (61837.60, 2.25))
    assert levels(rows, "b") == _row_by_row(rows, "b")


def test_recorded_depth_sides_take_the_one_pass_path_and_match():
    path = require_shared_data("binance-ws-captures-hftbacktest/raw/usdm/btcusdt_20240808.gz")
    sides = 0
    for _, _, raw in merge_recordings([path]):
        if not raw.startswith('{"stream"') or "@depth" not in raw[:40]:
            continue
        data = orjson.loads(raw)["data"]
        for key in ("b", "a"):
            rows = data[key]
            if rows:
                fast = depth_levels._text_levels(rows, 0, 1)
                assert fast is not None and fast == _row_by_row(rows, key)
                sides += 1
        if sides >= 2_000:
            break
    assert sides >= 2_000


def _side_by_side(d):
    return levels(d["b"], "b"), levels(d["a"], "a")


def test_random_depth_objects_match_side_by_side():
    # level_sides (both sides in one call) against levels on each side in turn: the same
    # levels, the same bad_level naming the same row, the same missing side.
    rng = random.Random(8)
    seen = set()
    for _ in range(20_000):
        d = {"e": "depthUpdate", "U": 1, "u": 2}
        for key in ("b", "a"):
            roll = rng.random()
            if roll < 0.03:
                continue  # a missing side
            # Rows as JSON decodes them: lists (level_sides' contract; JSON has no tuples).
            d[key] = None if roll < 0.05 else "x" if roll < 0.06 else [
                list(r) if type(r) is tuple else r for r in _random_side(rng)]
        try:
            want = "ok", _side_by_side(d)
        except KeyError as exc:
            want = "missing", exc.args
        except MalformedMessage as exc:
            want = exc.reason, exc.detail
        try:
            got = "ok", level_sides(d, "b", "a")
        except KeyError as exc:
            got = "missing", exc.args
        except MalformedMessage as exc:
            got = exc.reason, exc.detail
        assert got == want, d
        seen.add(got[0])
    assert seen == {"ok", "missing", "bad_level"}


def test_recorded_depth_objects_take_the_one_call_path_and_match():
    path = require_shared_data("binance-ws-captures-hftbacktest/raw/usdm/btcusdt_20240808.gz")
    n = 0
    kind = depth_levels._SIDE_PAIRS.get(("b", "a")) or (level_sides({"b": [], "a": []}, "b", "a")
                                                   and depth_levels._SIDE_PAIRS[("b", "a")])
    for _, _, raw in merge_recordings([path]):
        if raw.startswith('{"stream"') and "@depth" in raw[:40]:
            d = orjson.loads(raw)["data"]
            pair = depth_levels._convert(d, kind, strict=False)  # raises if the one call failed
            assert (pair.b, pair.a) == level_sides(d, "b", "a") == _side_by_side(d)
            n += 1
            if n >= 2_000:
                break
    assert n >= 2_000
