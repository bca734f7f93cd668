"""One Comb contract suite, run against every backend.

``backend`` is parametrized over memory, SQLite (a file under tmp_path), PostgreSQL (one database
per test session, comb tables dropped before each test) and Redis (a unique key prefix per test,
its keys deleted afterwards). PostgreSQL and Redis are skipped with a reason when unreachable —
and fail under ``APIARY_REQUIRE_SERVICES=1``. Every test gets a fake clock, so TTLs are tested by
moving time, never by sleeping.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from combkit import FakeClock, MakeComb

from apiary.comb import Comb, CombSettings, open_comb
from services import drop_postgres_tables, require_redis, session_postgres_database


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database for this test session (tables are dropped before each test)."""
    with session_postgres_database() as url:
        yield url


@pytest.fixture
def comb_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'comb.db'}"
    if backend == "redis":
        base = require_redis()
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}prefix=apiary-test-{secrets.token_hex(6)}:"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _drop_redis_keys(url: str) -> None:
    import redis.asyncio as aioredis

    from apiary.comb.redis import parse_redis_url

    plain, prefix = parse_redis_url(url)
    client = aioredis.Redis.from_url(plain)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def make_comb(backend: str, comb_url: str, clock: FakeClock) -> AsyncIterator[MakeComb]:
    if backend == "postgresql":
        await drop_postgres_tables(comb_url, ("comb_kv", "comb_list", "comb_memory"))
    opened: list[Comb] = []

    async def make(max_session_bytes: int = 1 << 20) -> Comb:
        comb = open_comb(comb_url, CombSettings(max_session_bytes=max_session_bytes, clock=clock))
        await comb.open()
        opened.append(comb)
        return comb

    yield make
    for comb in reversed(opened):
        await comb.close()
    if backend == "redis":
        await _drop_redis_keys(comb_url)


@pytest.fixture
async def comb(make_comb: MakeComb) -> Comb:
    return await make_comb()
