"""One journal contract suite, run against every backend (like tests/store).

``backend`` is parametrized over memory, SQLite (a file under tmp_path) and PostgreSQL (skipped —
or failed under ``APIARY_REQUIRE_SERVICES=1`` — when unreachable). PostgreSQL gets one fresh
database per test session whose journal tables are dropped before each test. ``make_journal``
opens further journals on the same URL (reopen after close, a second replica, a fake clock) and
closes them all at the end, so no test leaves a task or connection behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from journalkit import MakeJournal

from apiary.journal import Journal, open_journal
from apiary.journal.schema import TABLES
from services import drop_postgres_tables, session_postgres_database


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def journal_postgres_database() -> Iterator[str]:
    """A database for this test session (tables are dropped before each test)."""
    with session_postgres_database() as url:
        yield url


@pytest.fixture
def journal_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("journal_postgres_database"))


@pytest.fixture
async def make_journal(backend: str, journal_url: str) -> AsyncIterator[MakeJournal]:
    if backend == "postgresql":
        await drop_postgres_tables(journal_url, TABLES)
    opened: list[Journal] = []

    async def make(**kw: object) -> Journal:
        journal = open_journal(journal_url, **kw)
        await journal.open()
        opened.append(journal)
        return journal

    yield make
    for journal in reversed(opened):
        await journal.close()


@pytest.fixture
async def journal(make_journal: MakeJournal) -> Journal:
    return await make_journal()
