"""The PostgreSQL backend: the scaled-out mode's store, shared by every apiaryd replica.

URL: ``postgresql://user@host:5432/db`` with optional ``pool_min_size`` / ``pool_max_size`` query
parameters (other parameters, e.g. ``sslmode``, go to asyncpg unchanged).

Watches must never miss a change, so the global resourceVersion is commit-ordered: every write
transaction increments a single row, ``rv_counter``, and the row lock that takes is held to commit.
A version therefore only becomes visible after every smaller version is committed (or rolled back,
which returns the number: versions are gap-free), and a reader that has seen version N has seen
everything up to N. The increment is the transaction's LAST statement (see ``_transact``), so the
lock that serializes all writers is held for one statement and the commit, not for the whole
read-modify-write.

Other replicas learn of a commit through ``NOTIFY apiary_changes, '<rv>'``. It is issued inside the
write transaction, which PostgreSQL delivers exactly when (and only if) the transaction commits;
each store keeps one dedicated LISTEN connection that wakes its watchers, and re-establishes it
(waking everyone, since notifications may have been missed) if the server drops it. The periodic
poll in ``Store.watch`` remains the safety net.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from apiary import pgbackend
from apiary.store import migrations
from apiary.store.base import Store
from apiary.store.model import Change, Clock, Key, Mutate, Obj, SecretCodec, StoreSettings

CHANNEL = "apiary_changes"
_MIGRATION_LOCK = 0x41_50_49_41  # "APIA": one replica migrates at a time

# The last statement of every write: allocate the version (rv_counter, locked to commit), stamp
# it into the body in place of the transaction's placeholder ($5) and write object + change log.
# Data-modifying CTEs all run, exactly once; each reads ``r``, so the counter is locked before any
# row is inserted (no lock-order cycle between the counter and a unique-index wait).
_RV_CTE = "r AS (UPDATE rv_counter SET v = v + 1 RETURNING v)"
_STAMPED = "replace($4, $5, r.v::text)"
_KEY = "kind = $1 AND namespace = $2 AND name = $3"


def _writes(object_write: str, change: str) -> str:
    """The object's row and its change-log entry, written with the version ``r`` holds."""
    return f"""w AS (
    {object_write}
), c AS (
    INSERT INTO changes (rv, type, kind, namespace, name, body)
    SELECT r.v, '{change}', $1, $2, $3, {_STAMPED} FROM r
)
SELECT v, pg_notify('{CHANNEL}', v::text) FROM r"""


_INSERT = _writes(
    f"INSERT INTO objects (kind, namespace, name, body, rv) SELECT $1, $2, $3, {_STAMPED}, r.v"
    " FROM r",
    "ADDED",
)
_UPDATE = _writes(f"UPDATE objects SET body = {_STAMPED}, rv = r.v FROM r WHERE {_KEY}", "MODIFIED")
_DELETE = _writes(f"DELETE FROM objects USING r WHERE {_KEY}", "DELETED")

_INSERT_SQL = f"WITH {_RV_CTE}, {_INSERT}"
_UPDATE_SQL = f"WITH {_RV_CTE}, {_UPDATE}"
_DELETE_SQL = f"WITH {_RV_CTE}, {_DELETE}"

# The same writes for a body decided from an unlocked read, in one autocommit statement: ``cur``
# locks the object's row only if it still has the version read ($6) — a concurrent writer's
# commit fails that check (READ COMMITTED re-checks a locked row's WHERE) — and ``r`` allocates a
# version only if ``cur`` found it, so a lost race writes nothing and returns no row. The object's
# row is locked before the counter, the order the locking path takes too.
_UNCHANGED = f"""cur AS (
    SELECT 1 FROM objects WHERE {_KEY} AND rv = $6 FOR UPDATE
), r AS (UPDATE rv_counter SET v = v + 1 WHERE EXISTS (SELECT 1 FROM cur) RETURNING v)"""

_UPDATE_IF_SQL = f"WITH {_UNCHANGED}, {_UPDATE}"
_DELETE_IF_SQL = f"WITH {_UNCHANGED}, {_DELETE}"

# Many updates decided from one unlocked read, in one statement: the rows are locked in key
# order (as every multi-row writer here takes them, so two batches cannot deadlock), and
# versions are taken only if every row still has the version read; else nothing is written.
# Item i (1-based, ``o``) gets version r.v - n + i: consecutive, in the items' order.
_UPDATE_MANY_SQL = f"""
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
        WITH ORDINALITY AS t(kind, namespace, name, body, placeholder, read_rv, o)
), cur AS (
    SELECT 1 FROM objects x JOIN t ON x.kind = t.kind AND x.namespace = t.namespace
        AND x.name = t.name AND x.rv = t.read_rv
    ORDER BY x.kind, x.namespace, x.name FOR UPDATE OF x
), r AS (
    UPDATE rv_counter SET v = v + $7 WHERE (SELECT count(*) FROM cur) = $7 RETURNING v
), s AS (
    SELECT t.*, r.v - $7 + t.o AS rv, replace(t.body, t.placeholder, (r.v - $7 + t.o)::text) AS b
    FROM t, r
), w AS (
    UPDATE objects x SET body = s.b, rv = s.rv FROM s
    WHERE x.kind = s.kind AND x.namespace = s.namespace AND x.name = s.name
), c AS (
    INSERT INTO changes (rv, type, kind, namespace, name, body)
    SELECT s.rv, 'MODIFIED', s.kind, s.namespace, s.name, s.b FROM s
)
SELECT v, pg_notify('{CHANNEL}', v::text) FROM r
"""

_CREATE_RACES = 3
"""Attempts when another replica creates the same key between our read and our insert."""


class _Raced(Exception):
    """Another writer changed the object between the unlocked read and the write."""


class _NoChange(Exception):
    """mutate returned the current body unchanged: roll back, use no version."""

    def __init__(self, current: Obj | None) -> None:
        super().__init__("no change")
        self.current = current


def parse_postgres_url(url: str) -> tuple[str, int, int]:
    """(dsn for asyncpg, pool min, pool max) of a store URL; see ``pgbackend``."""
    return pgbackend.parse_postgres_url(url, "store")


def _dumps(obj: Obj) -> str:
    return orjson.dumps(obj).decode()


def _decide(text: str | None, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
    """(current, what ``mutate`` makes of it) from a stored body; ``mutate`` gets its own copy
    and a provisional version 0 (the real one is taken by the write)."""
    if text is None:
        return None, mutate(None, 0)
    return orjson.loads(text), mutate(orjson.loads(text), 0)


class PostgresStore(Store):
    """Durable store shared by replicas through one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        settings: StoreSettings | None = None,
        *,
        codec: SecretCodec | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(settings, codec=codec, clock=clock)
        self.dsn, self._pool_min, self._pool_max = parse_postgres_url(url)
        self._pool: Any = None  # asyncpg.Pool
        self._listener = pgbackend.Listener(
            self.dsn, CHANNEL, lambda _payload: self._notify(), self._notify, name="store-relisten"
        )

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A pooled connection; losing the server becomes a clear 503, not a driver traceback."""
        return pgbackend.pooled(self._pool, "store")

    def _written(self) -> None:
        """A write of this store committed: its NOTIFY wakes the watchers when it comes back
        to the LISTEN connection — it does, for every commit, often before the writer has its
        own answer — so waking them here too would only make each read the change log again
        and find nothing. While that connection is down, no echo comes: wake them here. (An
        echo lost when the connection drops is made up for by the wake-up on reconnecting; one
        that dies without closing leaves this replica's writes to the watch poll, as it leaves
        every other replica's.)"""
        if self._listener.conn is None:
            self._notify()

    async def _open(self) -> None:
        self._pool = await pgbackend.open_pool(self.dsn, self._pool_min, self._pool_max, "store")
        try:
            async with self._conn() as conn:
                await self._migrate(conn)
            await self._listener.start()
        except BaseException:
            await self._close()
            raise

    async def _migrate(self, conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(migrations.SCHEMA_MIGRATIONS_DDL)
            applied = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for step in migrations.pending(migrations.POSTGRES, applied):
                for statement in step.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at)"
                    " VALUES ($1, $2, now()::text)",
                    step.version,
                    step.description,
                )

    async def _close(self) -> None:
        await self._listener.close()
        pool, self._pool = self._pool, None
        await pgbackend.close_pool(pool)

    # ---------------------------------------------------------------- primitives

    async def _transact(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        """Read, run ``mutate``, write if nobody wrote meanwhile; on a lost race, the same under
        the object's row lock.

        The first try is two round trips, both outside a transaction: read the row, then one
        statement that writes only if the row still has the version read (``_UPDATE_IF_SQL``).
        Most writes find no competitor, and a transaction (BEGIN, a locking read, the write,
        COMMIT) costs twice the round trips. A write that lost the race runs again the locking
        way below, where it cannot lose, so ``mutate`` runs at most a few times whatever the
        contention (it may already run twice, on a create race: it must not count on once).

        The locking way: lock the object's row, run ``mutate``, then — last — take the version
        and write. Commit order still equals version order: the version is allocated by the final
        statement, whose ``rv_counter`` row lock is held until COMMIT, so version N+1 cannot be
        allocated before N's transaction has ended; a rollback after the increment returns N
        (gap-free). Everything before — the row read, ``mutate`` in Python — holds only the
        object's own row lock, so writers of different objects overlap there. ``mutate`` sees a
        provisional version 0; the body is written with a random placeholder as
        ``metadata.resourceVersion`` that the final statement replaces by the real number (the
        only place the version appears in a body). A missing row cannot be locked, so two creates
        of one key can both get here: the loser's INSERT fails on the primary key and it runs
        again, now reading the winner's row (``mutate`` then says AlreadyExists).
        """
        import asyncpg

        with contextlib.suppress(_Raced):
            return await self._write_if_unchanged(key, mutate)
        for attempt in range(_CREATE_RACES):
            try:
                return await self._transact_once(key, mutate)
            except asyncpg.UniqueViolationError:
                if attempt == _CREATE_RACES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _write_if_unchanged(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        import asyncpg

        k = (key.kind, key.namespace, key.name)
        placeholder = f"rv-{uuid.uuid4().hex}"
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT body, rv FROM objects WHERE {_KEY}", *k)
            text, read_rv = (None, None) if row is None else (row[0], row[1])
            current, new = _decide(text, mutate)
            if new == current:
                return current, current  # as of the read: a committed state, no write needed
            if new is None:
                logged: Obj = orjson.loads(text)  # type: ignore[arg-type]
                logged["metadata"]["resourceVersion"] = placeholder
                args: tuple[Any, ...] = (*k, _dumps(logged), placeholder, read_rv)
                sql = _DELETE_IF_SQL
            else:
                new["metadata"]["resourceVersion"] = placeholder
                if current is None:
                    sql, args = _INSERT_SQL, (*k, _dumps(new), placeholder)
                else:
                    sql, args = _UPDATE_IF_SQL, (*k, _dumps(new), placeholder, read_rv)
            try:
                written = await conn.fetchrow(sql, *args)
            except asyncpg.UniqueViolationError:
                raise _Raced() from None  # created meanwhile
        if written is None:
            raise _Raced()
        if new is not None:
            new["metadata"]["resourceVersion"] = str(int(written[0]))
        return current, new

    async def _transact_once(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        k = (key.kind, key.namespace, key.name)
        placeholder = f"rv-{uuid.uuid4().hex}"
        try:
            async with self._conn() as conn, conn.transaction():
                text = await conn.fetchval(
                    "SELECT body FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3"
                    " FOR UPDATE",
                    *k,
                )
                current, new = _decide(text, mutate)
                if new == current:
                    raise _NoChange(current)
                if new is None:
                    logged: Obj = orjson.loads(text)
                    logged["metadata"]["resourceVersion"] = placeholder
                    sql, body = _DELETE_SQL, logged
                else:
                    new["metadata"]["resourceVersion"] = placeholder
                    sql, body = (_INSERT_SQL if current is None else _UPDATE_SQL), new
                row = await conn.fetchrow(sql, *k, _dumps(body), placeholder)
                rv = int(row[0])
        except _NoChange as same:
            return same.current, same.current
        if new is not None:
            new["metadata"]["resourceVersion"] = str(rv)
        return current, new

    async def _transact_many(
        self, items: Sequence[tuple[Key, Mutate]]
    ) -> list[tuple[Obj | None, Obj | None]]:
        """Updates of distinct objects in one read and one statement (``_UPDATE_MANY_SQL``),
        all or none; a batch that creates or deletes, names an object twice, or lost a race
        runs item by item (``_transact``: each atomic on its own, as the base class does)."""
        keys = [key for key, _ in items]
        if len(items) > 1 and len(set(keys)) == len(keys):
            done = await self._update_many(items)
            if done is not None:
                return done
        return [await self._transact(key, mutate) for key, mutate in items]

    async def _update_many(
        self, items: Sequence[tuple[Key, Mutate]]
    ) -> list[tuple[Obj | None, Obj | None]] | None:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        done: list[tuple[Obj | None, Obj | None]] = []
        written: list[Obj] = []
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT x.kind, x.namespace, x.name, x.body, x.rv FROM objects x"
                " JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(kind, namespace, name)"
                " ON x.kind = t.kind AND x.namespace = t.namespace AND x.name = t.name",
                *([getattr(k, f) for k, _ in items] for f in ("kind", "namespace", "name")),
            )
            found = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
            for key, mutate in items:
                text, read_rv = found.get((key.kind, key.namespace, key.name), (None, None))
                current, new = _decide(text, mutate)
                if new == current:
                    done.append((current, current))
                    continue
                if new is None or current is None:
                    return None  # a create or a delete: item by item
                placeholder = f"rv-{uuid.uuid4().hex}"
                new["metadata"]["resourceVersion"] = placeholder
                for column, value in zip(
                    columns,
                    (key.kind, key.namespace, key.name, _dumps(new), placeholder, read_rv),
                    strict=True,
                ):
                    column.append(value)
                done.append((current, new))
                written.append(new)
            if not written:
                return done
            row = await conn.fetchrow(_UPDATE_MANY_SQL, *columns, len(written))
        if row is None:
            return None  # another writer got to one of them first
        first = int(row[0]) - len(written) + 1
        for i, new in enumerate(written):
            new["metadata"]["resourceVersion"] = str(first + i)
        return done

    async def _read(self, key: Key) -> Obj | None:
        async with self._conn() as conn:
            text = await conn.fetchval(
                "SELECT body FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3",
                key.kind,
                key.namespace,
                key.name,
            )
        return None if text is None else orjson.loads(text)  # type: ignore[no-any-return]

    async def _scan(
        self, kind: str, namespace: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Obj]:
        sql = "SELECT body FROM objects WHERE kind = $1"
        params: list[Any] = [kind]
        if namespace is not None:
            params.append(namespace)
            sql += f" AND namespace = ${len(params)}"
        if after is not None:
            params.extend(after)
            sql += f" AND (namespace, name) > (${len(params) - 1}, ${len(params)})"
        params.append(limit)
        sql += f" ORDER BY namespace, name LIMIT ${len(params)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *params)
        return [orjson.loads(r[0]) for r in rows]

    async def _changes_since(self, rv: int, limit: int) -> list[Change]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT rv, type, body FROM changes WHERE rv > $1 ORDER BY rv LIMIT $2", rv, limit
            )
        return [Change(int(r[0]), r[1], orjson.loads(r[2])) for r in rows]

    async def _horizon(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT value FROM meta WHERE key = 'horizon'"))

    async def _compact(self, keep: int) -> None:
        async with self._conn() as conn, conn.transaction():
            # FOR UPDATE on the horizon: replicas compacting at once take turns.
            horizon = int(
                await conn.fetchval("SELECT value FROM meta WHERE key = 'horizon' FOR UPDATE")
            )
            newest = int(await conn.fetchval("SELECT v FROM rv_counter"))
            cutoff = newest - max(keep, 0)
            if cutoff > horizon:
                await conn.execute("DELETE FROM changes WHERE rv <= $1", cutoff)
                await conn.execute("UPDATE meta SET value = $1 WHERE key = 'horizon'", cutoff)

    async def resource_version(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT v FROM rv_counter"))


__all__ = ["CHANNEL", "PostgresStore", "parse_postgres_url"]
