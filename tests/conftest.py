"""Shared fixtures: the recorded market data in ../shared/data and started runtimes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import require_shared_data, run


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data (see ``require_shared_data``)."""
    return require_shared_data()


@pytest.fixture
def hft_data() -> Path:
    """Path to the Binance raw captures folder from hftbacktest."""
    return require_shared_data("binance-ws-captures-hftbacktest")


@pytest.fixture
def runtime():
    """Return ``start(*argv, **options)``: a started runtime for ``tickscope`` arguments.

    ``options`` go to :func:`dashboard.runtime.start_runtime` (``feed_options``,
    ``engine_options``, ``interval_ms``). Every runtime started is stopped at teardown,
    the last one first.
    """
    started = []

    def start(*argv: str, **options):
        rt = run(argv, **options)
        started.append(rt)
        return rt

    yield start
    for rt in reversed(started):
        rt.stop()
