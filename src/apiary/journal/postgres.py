"""The PostgreSQL journal: scaled-out mode, shared by every apiaryd replica.

URL: ``postgresql://user@host:5432/db`` with optional ``pool_min_size`` / ``pool_max_size``
(other query parameters go to asyncpg unchanged). JSON is stored as text: the journal never looks
inside a message, and text skips jsonb's parse-and-rebuild on every write.

Commits are group-committed (``GroupCommit``): a batch is one transaction whose cost is a handful
of round trips however many commits it carries (``pgwrite.write_batch``) — or, when every
session of the batch exists already, two round trips and no transaction
(``pgwrite.write_unlocked``), redone the locked way if another writer got there first. Each
commit keeps its own version check; concurrency with other replicas is handled by row locks on
the session rows, always taken in session order, so replicas never deadlock.

Waits in other replicas wake at once through ``NOTIFY apiary_journal, '<session>\\n<session>…'``,
issued inside the write transaction (PostgreSQL delivers it exactly when the transaction commits).
Each journal keeps one LISTEN connection and re-establishes it with backoff if the server drops
it, waking every waiter since notifications may have been missed; ``poll_interval`` remains the
safety net.
"""

from __future__ import annotations

import contextlib
from typing import Any

from apiary import pgbackend
from apiary.errors import Unavailable
from apiary.journal import pgwrite
from apiary.journal.base import Clock, Journal
from apiary.journal.batch import GroupCommit
from apiary.journal.model import Entry, PendingCommit, Plan, SessionState, Totals, load_json
from apiary.journal.schema import (
    ENTRY_COLUMNS,
    POSTGRES_DDL,
    POSTGRES_MIGRATIONS,
    SCHEMA_VERSION,
    check_schema_version,
    entry_from_row,
)

_MIGRATION_LOCK = 0x4A_52_4E_4C  # "JRNL": one replica creates the tables at a time


def parse_postgres_url(url: str) -> tuple[str, int, int]:
    """(dsn for asyncpg, pool min, pool max) of a journal URL; see ``pgbackend``."""
    return pgbackend.parse_postgres_url(url, "journal")


class PostgresJournal(Journal):
    """Durable journal shared by replicas through one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        poll_interval: float | None = None,
        max_batch: int = 1024,
    ) -> None:
        super().__init__(clock=clock, poll_interval=poll_interval)
        self.dsn, self._pool_min, self._pool_max = parse_postgres_url(url)
        self._pool: Any = None  # asyncpg.Pool
        self._listener = pgbackend.Listener(
            self.dsn, pgwrite.CHANNEL, self._on_notify, self._wake_all, name="journal-relisten"
        )
        self.group = GroupCommit(self._flush, max_batch)

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A pooled connection; losing the server becomes a clear 503, not a driver traceback."""
        return pgbackend.pooled(self._pool, "journal")

    async def _open(self) -> None:
        self._pool = await pgbackend.open_pool(self.dsn, self._pool_min, self._pool_max, "journal")
        try:
            async with self._conn() as conn:
                await self._migrate(conn)
            await self._listener.start()
        except BaseException:
            await self._close_connections()
            raise
        self.group.reopen()

    async def _migrate(self, conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            for statement in (*POSTGRES_DDL, *POSTGRES_MIGRATIONS):
                await conn.execute(statement)
            found = await conn.fetchval("SELECT version FROM journal_schema")
            if found is None:
                await conn.execute(
                    "INSERT INTO journal_schema (version) VALUES ($1)", SCHEMA_VERSION
                )
            else:
                check_schema_version(int(found), "PostgreSQL")

    def _on_notify(self, payload: str) -> None:
        for session in payload.split("\n"):
            self._wake(session)

    async def _close_connections(self) -> None:
        await self._listener.close()
        pool, self._pool = self._pool, None
        await pgbackend.close_pool(pool)

    async def _close(self) -> None:
        await self.group.close()
        await self._close_connections()

    # ---------------------------------------------------------------- primitives

    async def _commit(self, pending: PendingCommit) -> int | None:
        return await self.group.submit(pending)

    async def _flush(self, batch: list[PendingCommit]) -> list[int | None]:
        import asyncpg

        created = self.clock()
        careful = False
        try:
            async with self._conn() as conn:
                plans = await pgwrite.write_unlocked(conn, batch, created)
        except asyncpg.UniqueViolationError:
            plans, careful = None, True  # a repeated id: nothing written, probe first
        if plans is None:
            plans = await self._write_locked(batch, created, careful)
        results: list[int | None] = []
        for c, plan in zip(batch, plans, strict=True):
            if plan is None:
                results.append(None)
            else:
                plan.apply(created)
                c.written = plan.rows
                results.append(c.expect_version + 1)
        return results

    async def _write_locked(
        self, batch: list[PendingCommit], created: float, careful: bool
    ) -> list[Plan | None]:
        """The batch in one transaction (``pgwrite.write_batch``), redone on a repeated id
        (probing ids first) or a deadlock."""
        import asyncpg

        for attempt in range(5):
            try:
                async with self._conn() as conn, conn.transaction():
                    return await pgwrite.write_batch(conn, batch, created, careful=careful)
            except pgwrite.IdsExisted:
                careful = True  # a repeated id: redo, probing which ids exist first
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == 4:
                    raise
        raise Unavailable("PostgreSQL journal: a commit batch kept failing; try again")

    async def _load(self, session: str) -> SessionState:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT version, state FROM journal_sessions WHERE session = $1", session
            )
        if row is None or int(row[0]) == 0:
            return SessionState(0, {})
        return SessionState(int(row[0]), load_json(row[1]))

    async def _get(self, session: str, id: str) -> Entry | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE session = $1 AND id = $2",
                session,
                id,
            )
        return None if row is None else entry_from_row(row)

    async def _read(
        self, session: str, after_seq: int, limit: int, kinds: tuple[str, ...] | None
    ) -> list[Entry]:
        async with self._conn() as conn:
            if kinds is None:
                rows = await conn.fetch(
                    f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE session = $1 AND seq > $2"
                    " ORDER BY seq LIMIT $3",
                    session,
                    after_seq,
                    limit,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE session = $1 AND seq > $2"
                    " AND kind = ANY($4::text[]) ORDER BY seq LIMIT $3",
                    session,
                    after_seq,
                    limit,
                    list(kinds),
                )
        return [entry_from_row(r) for r in rows]

    async def _is_answered(self, session: str, dispatch_id: str) -> bool:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT pending FROM journal_entries"
                " WHERE session = $1 AND id = $2 AND kind = 'dispatch'",
                session,
                dispatch_id,
            )
        return row is not None and row[0] is None

    async def _open_dispatches(
        self, older_than: float, limit: int, after: tuple[float, str, int] | None
    ) -> list[Entry]:
        start = after or (-1.0, "", -1)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE pending AND created < $1"
                " AND (created, session, seq) > ($3, $4, $5)"
                " ORDER BY created, session, seq LIMIT $2",
                older_than,
                limit,
                *start,
            )
        return [entry_from_row(r) for r in rows]

    async def _totals(self, session: str) -> Totals:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT messages, prompt_tokens, completion_tokens, cost_usd FROM journal_sessions"
                " WHERE session = $1",
                session,
            )
        if row is None:
            return Totals(0, 0, 0, 0.0)
        return Totals(int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    async def _totals_many(self, sessions: list[str]) -> dict[str, Totals]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT session, messages, prompt_tokens, completion_tokens, cost_usd"
                " FROM journal_sessions WHERE session = ANY($1::text[])",
                sessions,
            )
        found = {r[0]: Totals(int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows}
        return {s: found.get(s, Totals(0, 0, 0, 0.0)) for s in sessions}

    async def _delete(self, session: str) -> None:
        async with self._conn() as conn, conn.transaction():
            # Lock the session row first, as writers do, so a delete never deadlocks with them.
            await conn.execute(
                "SELECT 1 FROM journal_sessions WHERE session = $1 FOR UPDATE", session
            )
            await conn.execute("DELETE FROM journal_entries WHERE session = $1", session)
            await conn.execute("DELETE FROM journal_sessions WHERE session = $1", session)


__all__ = ["PostgresJournal", "parse_postgres_url"]
