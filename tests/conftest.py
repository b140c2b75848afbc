"""Shared fixtures: the recorded market data in ../shared/data (``tests.helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import require_shared_data


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data (see ``require_shared_data``)."""
    return require_shared_data()


@pytest.fixture
def hft_data() -> Path:
    """Path to the Binance raw captures folder from hftbacktest."""
    return require_shared_data("binance-ws-captures-hftbacktest")
