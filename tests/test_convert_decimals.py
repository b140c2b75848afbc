"""Decimals inferred by `tickscope bars` (feed.io.convert._max_decimals_of): the fewest d
that print every value exactly, stopping where a double has no more digits, as a plain
element-wise scan over every d finds them."""

from __future__ import annotations

import numpy as np
import pytest

from feed.io.convert import MAX_DECIMALS, _max_decimals_of


def reference(values: np.ndarray) -> int:
    # The definition, one whole-array test per d: every value prints exactly with d
    # decimals, or some |v| * 10**d is past 2**52 (no further digit is meaningful).
    v = values[np.isfinite(values)]
    for d in range(MAX_DECIMALS + 1):
        scaled = v * 10.0**d
        if (np.rint(scaled) / 10.0**d == v).all() or (np.abs(scaled) >= 2.0**52).any():
            return d
    return MAX_DECIMALS


def values(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "prices":  # 2 decimals, one value in the middle with 4
        v = np.round(61000 + np.cumsum(rng.choice([-0.01, 0.0, 0.01], size=n)), 2)
        v[n // 2:n // 2 + 1] += 0.0003
        return v
    if kind == "sizes":
        return np.round(rng.integers(1, 200_000, size=n) * 1e-5, 5)
    if kind == "whole":
        return rng.integers(1, 10**6, size=n).astype(float)
    if kind == "noise":  # sums: no short decimal form, limited by precision
        return rng.random(n) * 1e4
    if kind == "huge":
        return rng.integers(1, 10**6, size=n) * 1e12 + 0.5
    if kind == "nan_inf_neg":
        v = -np.round(rng.random(n) * 100, 3)
        v[::97] = np.nan
        v[5:6] = np.inf
        return v
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["prices", "sizes", "whole", "noise", "huge", "nan_inf_neg"])
@pytest.mark.parametrize("n", [0, 1, 500, 8192, 100_000])
def test_max_decimals_of_when_values_of_any_kind_equals_the_definition(kind, n):
    v = values(kind, n, seed=n + len(kind))
    assert _max_decimals_of(v) == reference(v)


def test_max_decimals_of_when_late_value_needs_more_decimals_finds_them():
    v = np.round(np.linspace(1, 2, 200_000), 2)
    v[-1] = 1.123456
    assert _max_decimals_of(v) == 6
