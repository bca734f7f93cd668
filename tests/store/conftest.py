"""One store contract suite, run against every backend (dramatiq style).

``backend`` is parametrized over memory, SQLite (a file under tmp_path) and PostgreSQL (skipped —
or failed under ``APIARY_REQUIRE_SERVICES=1`` — when unreachable). PostgreSQL gets one fresh
database per test session (``CREATE DATABASE`` costs 150-300 ms on a busy machine) whose tables
are dropped before each test, so every test still starts from an empty, freshly migrated schema.
``make_store`` opens further stores on the same URL (reopen after close, a second replica, a codec)
and closes them all at the end (closing is idempotent), so no test leaves a task or connection
behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from storekit import MakeStore, settings_for_tests

from apiary.store import Store, StoreSettings, open_store
from apiary.store.model import Clock, SecretCodec
from services import drop_postgres_tables, session_postgres_database

_TABLES = ("objects", "changes", "rv_counter", "meta", "schema_migrations")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database for this test session (tables are dropped before each test)."""
    with session_postgres_database() as url:
        yield url


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'apiary.db'}"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture
async def make_store(backend: str, store_url: str) -> AsyncIterator[MakeStore]:
    if backend == "postgresql":
        await drop_postgres_tables(store_url, _TABLES)
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
