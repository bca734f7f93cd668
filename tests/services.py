"""Where the external services of the test machine live, and how tests ask for them.

Tests that need PostgreSQL, NATS or Redis call ``require_*()``: on a laptop without the service the
test is skipped with a reason that names the address, while CI (``APIARY_REQUIRE_SERVICES=1``)
turns the same situation into a failure, so a broken service can never pass as "all green".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def postgres_url() -> str:
    """The PostgreSQL URL tests use (env ``APIARY_TEST_POSTGRES``)."""
    return os.environ.get("APIARY_TEST_POSTGRES", DEFAULT_POSTGRES)


def nats_url() -> str:
    """The NATS URL tests use (env ``APIARY_TEST_NATS``)."""
    return os.environ.get("APIARY_TEST_NATS", DEFAULT_NATS)


def redis_url() -> str:
    """The Redis URL tests use (env ``APIARY_TEST_REDIS``)."""
    return os.environ.get("APIARY_TEST_REDIS", DEFAULT_REDIS)


def services_required() -> bool:
    """True when a missing service must fail the run instead of skipping (CI)."""
    return os.environ.get("APIARY_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _require(name: str, url: str, default_port: int) -> str:
    if _reachable(url, default_port):
        return url
    reason = f"{name} not reachable at {url}"
    if services_required():
        pytest.fail(f"{reason} (APIARY_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> str:
    """The PostgreSQL URL if its port answers, else skip (or fail under CI)."""
    return _require("PostgreSQL", postgres_url(), 5432)


def require_nats() -> str:
    """The NATS URL if its port answers, else skip (or fail under CI)."""
    return _require("NATS", nats_url(), 4222)


def require_redis() -> str:
    """The Redis URL if its port answers, else skip (or fail under CI)."""
    return _require("Redis", redis_url(), 6379)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def create_postgres_database() -> str:
    """Create a uniquely named database, return its URL; ``drop_postgres_database`` removes it.

    For fixtures that outlive one event loop (session scope); tests use ``fresh_postgres_url``.
    """
    import asyncpg

    base = require_postgres()
    name = f"apiary_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(_with_database(base, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_database(base, name)


async def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, even with connections still open."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("apiary_test_"):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    admin = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_postgres_url() -> AsyncIterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards.

    Each test run gets its own database so engineers and CI jobs running in parallel on the same
    server never see each other's rows. The drop uses ``WITH (FORCE)`` so a connection leaked by a
    failing test cannot keep the database alive.
    """
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@contextlib.contextmanager
def session_postgres_database() -> Iterator[str]:
    """A database for a whole pytest session, created and dropped on short-lived loops of its own.

    ``CREATE DATABASE`` costs 150-300 ms on a busy machine, so the backend contract suites make
    one per session and empty their tables before each test (``drop_postgres_tables``). A
    session fixture outlives every test's event loop, hence ``asyncio.run`` here.
    """
    url = asyncio.run(create_postgres_database())
    try:
        yield url
    finally:
        asyncio.run(drop_postgres_database(url))


async def drop_postgres_tables(url: str, tables: Iterable[str]) -> None:
    """Drop ``tables`` (those that exist) so the next open starts from a freshly made schema."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")
    finally:
        await conn.close()


def free_port() -> int:
    """A loopback port nothing listens on now (for a server a test starts, or keeps across a
    restart so clients need not learn a new address)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether the process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
