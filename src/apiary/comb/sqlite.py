"""The SQLite Comb (``sqlite:///abs/path/comb.db``): the embedded mode's durable memory.

Like the SQLite store, one connection serves everything and aiosqlite runs it on one worker
thread; each primitive is one plain function that runs a whole transaction there
(``BEGIN IMMEDIATE`` … ``COMMIT``), so check-the-limit-then-write and read-add-write (``incr``)
are atomic without an asyncio lock, also against another process on the same file.

Long-term memory is an FTS5 table (``porter unicode61`` tokenizer, so ``cats`` finds ``cat``),
ranked by FTS5's ``bm25()`` (lower is better there; we return its negation so higher is better).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from apiary import sqlitebackend
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
from apiary.errors import BadRequest

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS comb_kv (
        session TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        size INTEGER NOT NULL, expires REAL,
        PRIMARY KEY (session, key)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS comb_kv_expires ON comb_kv (expires) WHERE expires IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS comb_list (
        session TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL,
        item TEXT NOT NULL, size INTEGER NOT NULL,
        PRIMARY KEY (session, name, seq)) WITHOUT ROWID""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS comb_memory USING fts5(
        text, id UNINDEXED, cell UNINDEXED, metadata UNINDEXED,
        tokenize = 'porter unicode61')""",
)

_USED_SQL = """
SELECT coalesce((SELECT sum(size) FROM comb_kv
                 WHERE session = :s AND (expires IS NULL OR expires > :now)), 0)
     + coalesce((SELECT sum(size) FROM comb_list WHERE session = :s), 0)
     + coalesce((SELECT sum(length(CAST(name AS BLOB)))
                 FROM (SELECT DISTINCT name FROM comb_list WHERE session = :s)), 0)
"""


def parse_sqlite_comb_url(url: str) -> Path:
    """The database file of ``sqlite:///abs/path/comb.db`` (the Comb takes no options)."""
    path, params = sqlitebackend.sqlite_path(url, "comb")
    if params:
        raise BadRequest(f"comb URL {url!r}: takes no query parameters")
    return path


def _cell_range(cell: str) -> tuple[str, str]:
    """Sessions of a cell are ``cell/…``: the key range ``[cell/, cell0)`` (``0`` follows ``/``)."""
    return cell + "/", cell + "0"


class SQLiteComb(Comb):
    def __init__(self, url: str, settings: CombSettings | None = None) -> None:
        super().__init__(settings)
        self.path = parse_sqlite_comb_url(url)
        self._db: Any = None  # aiosqlite.Connection

    async def open(self) -> None:
        if self._db is not None:
            return
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(str(self.path), isolation_level=None)
        try:
            await self._call(self._setup)
        except BaseException:
            await self.close()
            raise

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        for statement in SCHEMA:
            conn.execute(statement)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await sqlitebackend.run_on(self._db, fn, "comb")

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back if it raises)."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                sqlitebackend.rollback(conn)
                raise
            return out

        return await self._call(run)

    # ---------------------------------------------------------------- session memory

    def _prepare(self, conn: sqlite3.Connection, session: str, now: float) -> int:
        """Drop the session's expired keys; the bytes it holds."""
        conn.execute(
            "DELETE FROM comb_kv WHERE session = ? AND expires IS NOT NULL AND expires <= ?",
            (session, now),
        )
        return int(conn.execute(_USED_SQL, {"s": session, "now": now}).fetchone()[0])

    def _room(self, session: str, used: int, delta: int) -> None:
        if delta > 0 and used + delta > self.limit:
            raise too_large(session, used + delta, self.limit)

    async def _get(self, session: str, key: str, now: float) -> str | None:
        def get(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM comb_kv WHERE session = ? AND key = ?"
                " AND (expires IS NULL OR expires > ?)",
                (session, key, now),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._call(get)

    async def _set(
        self, session: str, key: str, text: str, expires: float | None, now: float
    ) -> None:
        size = entry_size(key, text)

        def put(conn: sqlite3.Connection) -> None:
            used = self._prepare(conn, session, now)
            row = conn.execute(
                "SELECT size FROM comb_kv WHERE session = ? AND key = ?", (session, key)
            ).fetchone()
            self._room(session, used, size - (int(row[0]) if row else 0))
            conn.execute(
                "INSERT OR REPLACE INTO comb_kv (session, key, value, size, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (session, key, text, size, expires),
            )

        await self._tx(put)

    async def _delete(self, session: str, key: str, now: float) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            self._prepare(conn, session, now)
            cur = conn.execute("DELETE FROM comb_kv WHERE session = ? AND key = ?", (session, key))
            return cur.rowcount > 0

        return await self._tx(delete)

    async def _incr(self, session: str, key: str, by: int | float, now: float) -> int | float:
        def incr(conn: sqlite3.Connection) -> int | float:
            used = self._prepare(conn, session, now)
            row = conn.execute(
                "SELECT value, size, expires FROM comb_kv WHERE session = ? AND key = ?",
                (session, key),
            ).fetchone()
            value = add_numbers(decode(row[0]) if row else None, by, key)
            text = encode(value)
            size = entry_size(key, text)
            self._room(session, used, size - (int(row[1]) if row else 0))
            conn.execute(
                "INSERT OR REPLACE INTO comb_kv (session, key, value, size, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (session, key, text, size, row[2] if row else None),
            )
            return value

        return await self._tx(incr)

    async def _keys(self, session: str, now: float) -> list[str]:
        def keys(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM comb_kv WHERE session = ? AND (expires IS NULL OR expires > ?)",
                (session, now),
            )
            return [str(r[0]) for r in rows]

        return await self._call(keys)

    async def _clear(self, session: str) -> int:
        def clear(conn: sqlite3.Connection) -> int:
            lists = conn.execute(
                "SELECT count(DISTINCT name) FROM comb_list WHERE session = ?", (session,)
            ).fetchone()[0]
            conn.execute("DELETE FROM comb_list WHERE session = ?", (session,))
            kv = conn.execute("DELETE FROM comb_kv WHERE session = ?", (session,)).rowcount
            return int(kv) + int(lists)

        return await self._tx(clear)

    async def _usage(self, session: str, now: float) -> int:
        def usage(conn: sqlite3.Connection) -> int:
            return int(conn.execute(_USED_SQL, {"s": session, "now": now}).fetchone()[0])

        return await self._call(usage)

    async def _append(self, session: str, name: str, text: str, now: float) -> int:
        size = len(text.encode())

        def append(conn: sqlite3.Connection) -> int:
            used = self._prepare(conn, session, now)
            count, last = conn.execute(
                "SELECT count(*), max(seq) FROM comb_list WHERE session = ? AND name = ?",
                (session, name),
            ).fetchone()
            self._room(session, used, size + (0 if count else len(name.encode())))
            conn.execute(
                "INSERT INTO comb_list (session, name, seq, item, size) VALUES (?, ?, ?, ?, ?)",
                (session, name, (last or 0) + 1, text, size),
            )
            return int(count) + 1

        return await self._tx(append)

    async def _list_range(self, session: str, name: str, start: int, stop: int) -> list[str]:
        def items(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT item FROM comb_list WHERE session = ? AND name = ? ORDER BY seq",
                (session, name),
            )
            return [str(r[0]) for r in rows]

        return python_range(await self._call(items), start, stop)

    async def _purge_expired(self, now: float) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM comb_kv WHERE expires IS NOT NULL AND expires <= ?", (now,)
            )
            return int(cur.rowcount)

        return await self._tx(purge)

    async def _forget_cell(self, cell: str) -> None:
        lo, hi = _cell_range(cell)

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM comb_kv WHERE session >= ? AND session < ?", (lo, hi))
            conn.execute("DELETE FROM comb_list WHERE session >= ? AND session < ?", (lo, hi))
            conn.execute("DELETE FROM comb_memory WHERE cell = ?", (cell,))

        await self._tx(forget)

    # --------------------------------------------------------------- long-term memory

    async def _remember(self, cell: str, text: str, metadata: dict[str, Any]) -> str:
        memory_id = uuid.uuid4().hex
        meta = encode(metadata, "metadata")

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO comb_memory (text, id, cell, metadata) VALUES (?, ?, ?, ?)",
                (text, memory_id, cell, meta),
            )

        await self._tx(insert)
        return memory_id

    async def _search(self, cell: str, words: list[str], limit: int) -> list[MemoryHit]:
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)

        def search(conn: sqlite3.Connection) -> list[MemoryHit]:
            rows = conn.execute(
                "SELECT id, text, metadata, bm25(comb_memory) AS rank FROM comb_memory"
                " WHERE comb_memory MATCH ? AND cell = ? ORDER BY rank LIMIT ?",
                (match, cell, limit),
            )
            return [MemoryHit(str(r[0]), str(r[1]), orjson.loads(r[2]), -float(r[3])) for r in rows]

        return await self._call(search)

    async def _forget(self, cell: str, memory_id: str) -> bool:
        def forget(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM comb_memory WHERE id = ? AND cell = ?", (memory_id, cell)
            )
            return cur.rowcount > 0

        return await self._tx(forget)


__all__ = ["SQLiteComb", "parse_sqlite_comb_url"]
