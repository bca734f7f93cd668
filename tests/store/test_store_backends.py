"""What is specific to one durable backend: URLs, migrations, replicas sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storekit import collect, hive, settings_for_tests

from apiary.errors import BadRequest, Unavailable
from apiary.store import open_store
from apiary.store.postgres import PostgresStore, parse_postgres_url
from apiary.store.sqlite import SQLiteStore, parse_sqlite_url
from services import fresh_postgres_url

# ------------------------------------------------------------------------------------ SQLite


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("sqlite://relative.db", "three slashes"),
        ("sqlite:///", "missing database file path"),
        ("sqlite:///tmp/x.db?synchronous=sometimes", "synchronous"),
        ("sqlite:///tmp/x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///tmp/x.db?journal=memory", "'journal' is unknown"),
    ],
)
def test_bad_sqlite_urls_name_the_problem(url: str, field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        parse_sqlite_url(url)


async def test_sqlite_pragmas_and_migrations(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/deep/er/apiary.db?synchronous=full&busy_timeout=250"
    assert parse_sqlite_url(url) == (tmp_path / "deep/er/apiary.db", "full", 250)
    for _ in range(2):  # the second open applies nothing new
        async with open_store(url) as store:
            assert isinstance(store, SQLiteStore)

            def probe(c: sqlite3.Connection) -> tuple[object, ...]:
                return (
                    c.execute("PRAGMA journal_mode").fetchone()[0],
                    c.execute("PRAGMA synchronous").fetchone()[0],
                    c.execute("PRAGMA busy_timeout").fetchone()[0],
                    c.execute("SELECT version FROM schema_migrations").fetchall(),
                )

            assert await store._call(probe) == ("wal", 2, 250, [(1,)])


async def test_sqlite_refuses_a_database_from_a_newer_release(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/apiary.db"
    async with open_store(url) as store:
        assert isinstance(store, SQLiteStore)
        await store._call(
            lambda c: c.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
        )
    with pytest.raises(RuntimeError, match="newer release"):
        await open_store(url).open()


# -------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_postgres_url() as url:
        yield url


def test_postgres_url_pool_parameters() -> None:
    dsn, lo, hi = parse_postgres_url("postgres://u@h:1/db?pool_min_size=2&pool_max_size=4&x=y")
    assert (dsn, lo, hi) == ("postgresql://u@h:1/db?x=y", 2, 4)
    with pytest.raises(BadRequest, match="pool_max_size"):
        parse_postgres_url("postgresql://h/db?pool_max_size=0")
    with pytest.raises(BadRequest, match="larger"):
        parse_postgres_url("postgresql://h/db?pool_min_size=5&pool_max_size=2")


async def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="PostgreSQL"):
        await open_store("postgresql://postgres@127.0.0.1:1/nowhere").open()


async def test_postgres_refuses_a_database_from_a_newer_release(pg_url: str) -> None:
    async with open_store(pg_url) as store:
        assert isinstance(store, PostgresStore)
        async with store._conn() as conn:
            await conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
    with pytest.raises(RuntimeError, match="newer release"):
        await open_store(pg_url).open()


async def test_replicas_migrate_concurrently_once(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert isinstance(stores[0], PostgresStore)
        async with stores[0]._conn() as conn:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def _wake_latency(writer: PostgresStore, watcher: PostgresStore, name: str) -> float:
    since = await watcher.resource_version()
    waiting = asyncio.create_task(collect(watcher, 1, since=since, timeout=5))
    await asyncio.sleep(0.1)  # let the watch settle into its (10 s) wait
    started = time.monotonic()
    await writer.create(hive(name))
    (change,) = await waiting
    assert change.object["metadata"]["name"] == name
    return time.monotonic() - started


async def test_a_write_on_one_replica_wakes_a_watch_on_another(pg_url: str) -> None:
    settings = settings_for_tests(watch_poll_interval=10.0)
    a, b = PostgresStore(pg_url, settings), PostgresStore(pg_url, settings)
    async with a, b:
        assert await _wake_latency(a, b, "first") < 1.0

        # the server drops b's LISTEN connection: b reconnects and is woken again
        lost = b._listener.conn
        async with a._conn() as conn:
            await conn.execute("SELECT pg_terminate_backend($1)", lost.get_server_pid())
        for _ in range(200):
            if b._listener.conn is not None and b._listener.conn is not lost:
                break
            await asyncio.sleep(0.02)
        assert b._listener.conn is not None and b._listener.conn is not lost
        assert await _wake_latency(a, b, "second") < 1.0


async def test_replicas_writing_at_once_give_watchers_one_gap_free_order(pg_url: str) -> None:
    a, b = PostgresStore(pg_url, settings_for_tests()), PostgresStore(pg_url, settings_for_tests())
    async with a, b:
        since = await a.resource_version()
        watching = asyncio.create_task(collect(b, 300, since=since, timeout=30))

        async def write(store: PostgresStore, prefix: str) -> None:
            for i in range(50):
                obj = await store.create(hive(f"{prefix}-{i}"))
                await store.update(dict(obj, spec={"i": i}))
                await store.delete("Hive", "default", f"{prefix}-{i}")

        await asyncio.gather(write(a, "a"), write(b, "b"))
        changes = await watching
        assert [c.rv for c in changes] == list(range(since + 1, since + 301))
        assert await a.resource_version() == await b.resource_version() == since + 300


async def test_postgres_pool_returns_a_connection_without_a_reset_round_trip(pg_url: str) -> None:
    """asyncpg's default reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``)
    is one more query per acquire; our pooled connections hold nothing it would undo
    (``pgbackend.open_pool``). A transaction left open is still rolled back."""
    async with open_store(f"{pg_url}?pool_max_size=1") as store:
        assert isinstance(store, PostgresStore)
        async with store._conn() as conn:
            raw = conn._con  # the proxy is new per acquire, the connection is not
            sent = raw._protocol.queries_count
        async with store._conn() as again:
            assert again._con is raw
            assert raw._protocol.queries_count == sent  # nothing ran on release
            tx = again.transaction()
            await tx.start()
            await again.execute("CREATE TEMP TABLE left_open (x int)")
        async with store._conn() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None


async def test_postgres_writes_a_status_batch_in_one_read_and_one_statement(pg_url: str) -> None:
    async with open_store(f"{pg_url}?pool_max_size=1") as store:
        assert isinstance(store, PostgresStore)
        names = [f"s{i}" for i in range(20)]
        for name in names:
            await store.create({"apiVersion": "apiary.io/v1", "kind": "Cell",
                                "metadata": {"name": name}, "spec": {}})  # fmt: skip
        async with store._conn() as conn:
            raw = conn._con

        def running(obj: dict[str, object]) -> dict[str, object]:
            return {**obj, "status": {"phase": "Running"}}

        def warm(obj: dict[str, object]) -> dict[str, object]:
            return {**obj, "status": {"phase": "Pending"}}

        # The first batch also prepares its two statements (asyncpg asks for the array types).
        await store.update_status_many("Cell", [("", n, warm) for n in names])
        since, sent = await store.resource_version(), raw._protocol.queries_count
        out = await store.update_status_many("Cell", [("", n, running) for n in names])
        assert raw._protocol.queries_count - sent == 2
        assert [o["metadata"]["resourceVersion"] for o in out if o is not None] == [
            str(since + i) for i in range(1, 21)
        ]
        for name in names:
            assert (await store.get("Cell", "", name))["status"] == {"phase": "Running"}
