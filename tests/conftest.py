"""Shared fixtures: the recorded market data in ../shared/data.

Tests that need it use the ``shared_data`` fixture. Without the folder they skip with the
reason; under ``CI=true`` they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("TICKSCOPE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def require_shared_data(*parts: str) -> Path:
    """Return ``SHARED_DATA / parts``; skip (or fail under CI=true) when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        msg = f"recorded market data not found at {path} (set TICKSCOPE_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data (see ``require_shared_data``)."""
    return require_shared_data()


@pytest.fixture
def hft_data() -> Path:
    """Path to the Binance raw captures folder from hftbacktest."""
    return require_shared_data("binance-ws-captures-hftbacktest")


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout`` s.

    Raises
    ------
    AssertionError
        Naming ``what`` was awaited, when the time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
