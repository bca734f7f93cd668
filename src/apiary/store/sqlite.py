"""The SQLite backend: the embedded mode's durable store, one file in the data directory.

URL: ``sqlite:///abs/path/apiary.db`` with optional query parameters

* ``synchronous=normal`` (default) — WAL mode with ``synchronous=NORMAL``: a committed write
  survives ``kill -9`` of the process (the OS holds it), but the last transactions before a power
  loss or kernel crash may be lost. ``synchronous=full`` fsyncs the WAL on every commit and gives
  power-loss durability at the price of one fsync per write.
* ``busy_timeout=5000`` — milliseconds to wait for another process holding the write lock.

One connection serves everything. aiosqlite runs it on a single worker thread and executes calls
in order, so each primitive is one plain function that runs a whole transaction on that thread
(``_call``): a write is one thread hop instead of six, and no asyncio lock is needed because two
transactions can never interleave. ``mutate`` runs on that thread too — it is pure (it reads the
current body and the clock and builds the new body), so that is safe.

The global resourceVersion is the next ``changes.rv``, allocated inside the write transaction
(``BEGIN IMMEDIATE`` takes the write lock first), so versions are gap-free and in commit order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from apiary import sqlitebackend
from apiary.store import migrations
from apiary.store.base import Store
from apiary.store.model import (
    Change,
    ChangeType,
    Clock,
    Key,
    Mutate,
    Obj,
    SecretCodec,
    StoreSettings,
)

T = TypeVar("T")

_RV_SQL = (
    "SELECT max(coalesce((SELECT max(rv) FROM changes), 0),"
    " (SELECT value FROM meta WHERE key = 'horizon'))"
)


def parse_sqlite_url(url: str) -> tuple[Path, str, int]:
    """(path, synchronous, busy_timeout_ms) of a store URL; see ``sqlitebackend``."""
    return sqlitebackend.parse_sqlite_url(url, "store")


def _dumps(obj: Obj) -> str:
    return orjson.dumps(obj).decode()


def _apply(conn: sqlite3.Connection, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
    """One object's change inside the caller's write transaction: (old, new) bodies."""
    row = conn.execute(
        "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
        (key.kind, key.namespace, key.name),
    ).fetchone()
    text = row[0] if row is not None else None
    current = orjson.loads(text) if text is not None else None
    rv = int(conn.execute(_RV_SQL).fetchone()[0]) + 1
    new = mutate(orjson.loads(text) if text is not None else None, rv)
    if new == current:  # nothing to change (e.g. delete of a terminating object)
        return current, current
    change_type: ChangeType
    if new is None:
        assert text is not None
        conn.execute(
            "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (key.kind, key.namespace, key.name),
        )
        logged: Obj = orjson.loads(text)
        logged["metadata"]["resourceVersion"] = str(rv)
        change_type = "DELETED"
    else:
        conn.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, body, rv)"
            " VALUES (?, ?, ?, ?, ?)",
            (key.kind, key.namespace, key.name, _dumps(new), rv),
        )
        logged = new
        change_type = "ADDED" if current is None else "MODIFIED"
    conn.execute(
        "INSERT INTO changes (rv, type, kind, namespace, name, body) VALUES (?, ?, ?, ?, ?, ?)",
        (rv, change_type, key.kind, key.namespace, key.name, _dumps(logged)),
    )
    return current, new


class SQLiteStore(Store):
    """Durable store in one SQLite file (WAL)."""

    def __init__(
        self,
        url: str,
        settings: StoreSettings | None = None,
        *,
        codec: SecretCodec | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(settings, codec=codec, clock=clock)
        self.url = url
        self.path, self.synchronous, self.busy_timeout_ms = parse_sqlite_url(url)
        self._db: Any = None  # aiosqlite.Connection

    # ------------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's worker thread, after all earlier calls."""
        return await sqlitebackend.run_on(self._db, fn, "store")

    async def _open(self) -> None:
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(str(self.path), isolation_level=None)
        try:
            await self._call(self._setup)
        except BaseException:
            await self._close()
            raise

    def _setup(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite at {self.path} refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(migrations.SCHEMA_MIGRATIONS_DDL)
            applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
            now = datetime.now(UTC).isoformat()
            for step in migrations.pending(migrations.SQLITE, applied):
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at)"
                    " VALUES (?, ?, ?)",
                    (step.version, step.description, now),
                )
            conn.execute("COMMIT")
        except BaseException:
            sqlitebackend.rollback(conn)
            raise

    async def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    # ---------------------------------------------------------------- primitives

    async def _transact(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        return (await self._transact_many([(key, mutate)]))[0]

    async def _transact_many(
        self, items: Sequence[tuple[Key, Mutate]]
    ) -> list[tuple[Obj | None, Obj | None]]:
        """Every item in one write transaction: one thread hop, one lock, one commit."""

        def tx(conn: sqlite3.Connection) -> list[tuple[Obj | None, Obj | None]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = [_apply(conn, key, mutate) for key, mutate in items]
                conn.execute("COMMIT")
            except BaseException:
                sqlitebackend.rollback(conn)
                raise
            return done

        return await self._call(tx)

    async def _read(self, key: Key) -> Obj | None:
        def read(conn: sqlite3.Connection) -> Obj | None:
            row = conn.execute(
                "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (key.kind, key.namespace, key.name),
            ).fetchone()
            return None if row is None else orjson.loads(row[0])  # type: ignore[no-any-return]

        return await self._call(read)

    async def _scan(
        self, kind: str, namespace: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Obj]:
        sql = "SELECT body FROM objects WHERE kind = ?"
        params: list[Any] = [kind]
        if namespace is not None:
            sql += " AND namespace = ?"
            params.append(namespace)
        if after is not None:
            sql += " AND (namespace, name) > (?, ?)"
            params.extend(after)
        sql += " ORDER BY namespace, name LIMIT ?"
        params.append(limit)

        def scan(conn: sqlite3.Connection) -> list[Obj]:
            return [orjson.loads(r[0]) for r in conn.execute(sql, params)]

        return await self._call(scan)

    async def _changes_since(self, rv: int, limit: int) -> list[Change]:
        def changes(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                "SELECT rv, type, body FROM changes WHERE rv > ? ORDER BY rv LIMIT ?",
                (rv, limit),
            )
            return [Change(int(r[0]), r[1], orjson.loads(r[2])) for r in rows]

        return await self._call(changes)

    async def _horizon(self) -> int:
        def horizon(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'horizon'").fetchone()[0])

        return await self._call(horizon)

    async def _compact(self, keep: int) -> None:
        def compact(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                newest = int(conn.execute(_RV_SQL).fetchone()[0])
                horizon = int(
                    conn.execute("SELECT value FROM meta WHERE key = 'horizon'").fetchone()[0]
                )
                cutoff = newest - max(keep, 0)
                if cutoff > horizon:
                    conn.execute("DELETE FROM changes WHERE rv <= ?", (cutoff,))
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'horizon'", (cutoff,))
                conn.execute("COMMIT")
            except BaseException:
                sqlitebackend.rollback(conn)
                raise

        await self._call(compact)

    async def resource_version(self) -> int:
        def current(conn: sqlite3.Connection) -> int:
            return int(conn.execute(_RV_SQL).fetchone()[0])

        return await self._call(current)


__all__ = ["SQLiteStore", "parse_sqlite_url"]
