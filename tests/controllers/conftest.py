"""Fixtures for the controller tests: a store per backend, a fake clock, the Queen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from apiary.controllers import Queen, QueenSettings
from apiary.store import Store, open_store

from .helpers import FakeClock


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/apiary.db"
    async with open_store(url) as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(clock: FakeClock) -> QueenSettings:
    s = QueenSettings(clock=clock)
    s.loop.resync_period = 3600
    return s


@pytest.fixture
def queen(store: Store, settings: QueenSettings) -> Queen:
    return Queen(store, settings)
