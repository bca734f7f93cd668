"""The Queen over PostgreSQL: two run loops, watches via LISTEN, no duplicates."""

from __future__ import annotations

import pytest

from apiary.controllers import QueenSettings
from apiary.store import open_store

from .helpers import FakeClock
from .test_concurrency import run_queens

try:
    from services import fresh_postgres_url
except ImportError:  # pragma: no cover - when tests/ is a package
    from tests.services import fresh_postgres_url

pytestmark = pytest.mark.services


async def test_two_queens_over_postgres() -> None:
    clock = FakeClock()
    settings = QueenSettings(clock=clock)
    async with fresh_postgres_url() as url, open_store(url) as store:
        await run_queens(store, settings, clock)
