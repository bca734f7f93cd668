"""One store contract suite, run against every backend (dramatiq style).

``backend`` is parametrized over memory, SQLite (a file under tmp_path) and PostgreSQL (a fresh
database per test, skipped — or failed under ``APIARY_REQUIRE_SERVICES=1`` — when unreachable).
``make_store`` opens further stores on the same URL (reopen after close, a second replica, a codec)
and closes them all at the end (closing is idempotent), so no test leaves a task or connection
behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storekit import MakeStore, settings_for_tests

from apiary.store import Store, StoreSettings, open_store
from apiary.store.base import Clock, SecretCodec
from services import fresh_postgres_url


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite://{tmp_path / 'apiary.db'}"
    else:
        async with fresh_postgres_url() as url:
            yield url


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[MakeStore]:
    opened: list[Store] = []

    async def make(
        settings: StoreSettings | None = None,
        *,
        codec: SecretCodec | None = None,
        clock: Clock | None = None,
    ) -> Store:
        store = open_store(store_url, settings or settings_for_tests(), codec=codec)
        if clock is not None:
            store.clock = clock
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()
