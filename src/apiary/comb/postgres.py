"""The PostgreSQL Comb (``postgresql://…``): shared by every apiaryd replica.

By default apiaryd puts it in the store's own database; its tables are prefixed ``comb_`` and
created at open (``IF NOT EXISTS``, under an advisory lock so replicas starting together do not
race). Writes to one session are serialized by a transaction-level advisory lock on the session
name, so check-the-limit-then-write and ``incr`` are atomic across replicas.

Long-term memory: ``comb_memory.tsv`` is a generated ``to_tsvector('english', text)`` column with a
GIN index; a query is parsed by ``websearch_to_tsquery`` with its words joined by ``or`` (any word
matches; stop words are dropped by PostgreSQL) and ranked by ``ts_rank_cd`` normalized by
document length (flag 1), so a short text about a word beats a long one that mentions it once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apiary import pgbackend
from apiary.comb.base import (
    Comb,
    CombSettings,
    MemoryHit,
    add_numbers,
    decode,
    encode,
    entry_size,
    python_range,
    too_large,
)

_SCHEMA_LOCK = 0x434F4D42  # "COMB"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS comb_kv (
        session text NOT NULL, key text NOT NULL, value text NOT NULL,
        size integer NOT NULL, expires double precision,
        PRIMARY KEY (session, key))""",
    "CREATE INDEX IF NOT EXISTS comb_kv_expires ON comb_kv (expires) WHERE expires IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS comb_list (
        session text NOT NULL, name text NOT NULL, seq bigint NOT NULL,
        item text NOT NULL, size integer NOT NULL,
        PRIMARY KEY (session, name, seq))""",
    """CREATE TABLE IF NOT EXISTS comb_memory (
        id text PRIMARY KEY, cell text NOT NULL, text text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}', created timestamptz NOT NULL DEFAULT now(),
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)""",
    "CREATE INDEX IF NOT EXISTS comb_memory_tsv ON comb_memory USING GIN (tsv)",
    "CREATE INDEX IF NOT EXISTS comb_memory_cell ON comb_memory (cell)",
)

_USED_SQL = """
SELECT coalesce((SELECT sum(size) FROM comb_kv
                 WHERE session = $1 AND (expires IS NULL OR expires > $2)), 0)
     + coalesce((SELECT sum(size) FROM comb_list WHERE session = $1), 0)
     + coalesce((SELECT sum(octet_length(name))
                 FROM (SELECT DISTINCT name FROM comb_list WHERE session = $1) n), 0)
"""


class PostgresComb(Comb):
    def __init__(self, url: str, settings: CombSettings | None = None) -> None:
        super().__init__(settings)
        self.dsn, self._pool_min, self._pool_max = pgbackend.parse_postgres_url(url, "comb")
        self._pool: Any = None  # asyncpg.Pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = await pgbackend.open_pool(
            self.dsn, min(self._pool_min, 2), self._pool_max, "comb"
        )
        try:
            async with self._conn() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for statement in SCHEMA:
                    await conn.execute(statement)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        await pgbackend.close_pool(pool)

    def _conn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return pgbackend.pooled(self._pool, "comb")

    @contextlib.asynccontextmanager
    async def _locked(self, session: str, now: float) -> AsyncIterator[tuple[Any, int]]:
        """A transaction holding the session's lock, expired keys gone; (conn, bytes used)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", session)
            await conn.execute(
                "DELETE FROM comb_kv WHERE session = $1 AND expires IS NOT NULL AND expires <= $2",
                session,
                now,
            )
            used = int(await conn.fetchval(_USED_SQL, session, now))
            yield conn, used

    def _room(self, session: str, used: int, delta: int) -> None:
        if delta > 0 and used + delta > self.limit:
            raise too_large(session, used + delta, self.limit)

    # ---------------------------------------------------------------- session memory

    async def _get(self, session: str, key: str, now: float) -> str | None:
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT value FROM comb_kv WHERE session = $1 AND key = $2"
                " AND (expires IS NULL OR expires > $3)",
                session,
                key,
                now,
            )
        return None if value is None else str(value)

    async def _upsert(
        self, conn: Any, session: str, key: str, text: str, size: int, expires: float | None
    ) -> None:
        await conn.execute(
            "INSERT INTO comb_kv (session, key, value, size, expires) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (session, key) DO UPDATE SET value = EXCLUDED.value,"
            " size = EXCLUDED.size, expires = EXCLUDED.expires",
            session,
            key,
            text,
            size,
            expires,
        )

    async def _set(
        self, session: str, key: str, text: str, expires: float | None, now: float
    ) -> None:
        size = entry_size(key, text)
        async with self._locked(session, now) as (conn, used):
            old = await conn.fetchval(
                "SELECT size FROM comb_kv WHERE session = $1 AND key = $2", session, key
            )
            self._room(session, used, size - int(old or 0))
            await self._upsert(conn, session, key, text, size, expires)

    async def _delete(self, session: str, key: str, now: float) -> bool:
        async with self._locked(session, now) as (conn, _):
            status = await conn.execute(
                "DELETE FROM comb_kv WHERE session = $1 AND key = $2", session, key
            )
        return bool(status != "DELETE 0")

    async def _incr(self, session: str, key: str, by: int | float, now: float) -> int | float:
        async with self._locked(session, now) as (conn, used):
            row = await conn.fetchrow(
                "SELECT value, size, expires FROM comb_kv WHERE session = $1 AND key = $2",
                session,
                key,
            )
            value = add_numbers(decode(row["value"]) if row else None, by, key)
            text = encode(value)
            size = entry_size(key, text)
            self._room(session, used, size - (int(row["size"]) if row else 0))
            await self._upsert(conn, session, key, text, size, row["expires"] if row else None)
        return value

    async def _keys(self, session: str, now: float) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT key FROM comb_kv WHERE session = $1 AND (expires IS NULL OR expires > $2)",
                session,
                now,
            )
        return [str(r[0]) for r in rows]

    async def _clear(self, session: str) -> int:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", session)
            lists = await conn.fetchval(
                "SELECT count(DISTINCT name) FROM comb_list WHERE session = $1", session
            )
            await conn.execute("DELETE FROM comb_list WHERE session = $1", session)
            status = await conn.execute("DELETE FROM comb_kv WHERE session = $1", session)
        return int(status.split()[-1]) + int(lists)

    async def _usage(self, session: str, now: float) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval(_USED_SQL, session, now))

    async def _append(self, session: str, name: str, text: str, now: float) -> int:
        size = len(text.encode())
        async with self._locked(session, now) as (conn, used):
            row = await conn.fetchrow(
                "SELECT count(*) AS n, max(seq) AS last FROM comb_list"
                " WHERE session = $1 AND name = $2",
                session,
                name,
            )
            count = int(row["n"])
            self._room(session, used, size + (0 if count else len(name.encode())))
            await conn.execute(
                "INSERT INTO comb_list (session, name, seq, item, size)"
                " VALUES ($1, $2, $3, $4, $5)",
                session,
                name,
                int(row["last"] or 0) + 1,
                text,
                size,
            )
        return count + 1

    async def _list_range(self, session: str, name: str, start: int, stop: int) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT item FROM comb_list WHERE session = $1 AND name = $2 ORDER BY seq",
                session,
                name,
            )
        return python_range([str(r[0]) for r in rows], start, stop)

    async def _purge_expired(self, now: float) -> int:
        async with self._conn() as conn:
            status = await conn.execute(
                "DELETE FROM comb_kv WHERE expires IS NOT NULL AND expires <= $1", now
            )
        return int(status.split()[-1])

    async def _forget_cell(self, cell: str) -> None:
        prefix = cell + "/"
        async with self._conn() as conn, conn.transaction():
            await conn.execute("DELETE FROM comb_kv WHERE starts_with(session, $1)", prefix)
            await conn.execute("DELETE FROM comb_list WHERE starts_with(session, $1)", prefix)
            await conn.execute("DELETE FROM comb_memory WHERE cell = $1", cell)

    # --------------------------------------------------------------- long-term memory

    async def _remember(self, cell: str, text: str, metadata: dict[str, Any]) -> str:
        memory_id = uuid.uuid4().hex
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO comb_memory (id, cell, text, metadata) VALUES ($1, $2, $3, $4::jsonb)",
                memory_id,
                cell,
                text,
                encode(metadata, "metadata"),
            )
        return memory_id

    async def _search(self, cell: str, words: list[str], limit: int) -> list[MemoryHit]:
        query = " or ".join(words)
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, text, metadata::text AS metadata, ts_rank_cd(tsv, q, 1) AS score"
                " FROM comb_memory, websearch_to_tsquery('english', $2) AS q"
                " WHERE cell = $1 AND tsv @@ q ORDER BY score DESC, created DESC LIMIT $3",
                cell,
                query,
                limit,
            )
        return [
            MemoryHit(str(r["id"]), str(r["text"]), orjson.loads(r["metadata"]), float(r["score"]))
            for r in rows
        ]

    async def _forget(self, cell: str, memory_id: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(
                "DELETE FROM comb_memory WHERE id = $1 AND cell = $2", memory_id, cell
            )
        return bool(status != "DELETE 0")


__all__ = ["PostgresComb"]
