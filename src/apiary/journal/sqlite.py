"""The SQLite journal: embedded mode, its own file (``<data-dir>/journal.db``).

URL: ``sqlite:///abs/path/journal.db`` with optional ``synchronous=normal|full|off|extra``
(default normal) and ``busy_timeout`` (ms, default 5000). Constructor keywords: ``max_batch``
(commits per transaction) and ``checkpoint_every`` (commits between two WAL checkpoints). A
file of its own means the journal and the object store never wait on each other's write lock.

Writes: WAL with ``synchronous=NORMAL`` (a committed batch survives ``kill -9``; the last ones may
not survive a power loss — ``synchronous=full`` buys that with an fsync per batch). All commits go
through ``GroupCommit``: the queued calls run as ONE transaction in ONE function on the writer
connection's worker thread (one thread hop per batch, no asyncio lock needed since aiosqlite runs
calls in order), each call with its own version check, so a failed check fails only that call
(``sqlitewrite``). WAL checkpoints run on the reader thread, not inside a commit
(``checkpoint``).
Reads use other connections (WAL readers never block the writer, nor it them); a commit is
acknowledged only after its transaction committed, so a read issued afterwards sees it. The
reads on every message's path — ``get``, ``load``, ``usage``, ``is_answered`` and the first
:data:`INLINE_ROWS` rows of a ``read`` — run right on the event loop thread, on a connection of
their own: an indexed lookup in a WAL database takes microseconds, far less than handing it to a
thread and waking the loop for the answer. A WAL reader does not wait for locks; should SQLite
still answer "busy" (a crash recovery in another process), the read is retried on the reader
thread, which may wait up to ``busy_timeout``. Scans that may be long (``open_dispatches``, the
rest of a long ``read``) always run on that thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from apiary import sqlitebackend
from apiary.errors import Unavailable
from apiary.journal import sqlitewrite
from apiary.journal.base import Clock, Journal
from apiary.journal.batch import GroupCommit
from apiary.journal.checkpoint import Checkpointer, Outcome
from apiary.journal.model import Entry, PendingCommit, SessionState, Totals, load_json
from apiary.journal.schema import (
    ENTRY_COLUMNS,
    SCHEMA_VERSION,
    SQLITE_DDL,
    check_schema_version,
    entry_from_row,
    sqlite_migrations,
)

T = TypeVar("T")

_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
CHECKPOINT_EVERY = 256
"""Commits between two WAL checkpoints: a few MB of WAL, about SQLite's own default of 1000
pages (a commit rewrites a handful of pages; batched ones share theirs)."""
INLINE_ROWS = 64
"""Most rows a ``read`` decodes on the event loop thread; the rest come from the reader thread."""


def parse_sqlite_url(url: str) -> tuple[Path, str, int]:
    """(path, synchronous, busy_timeout_ms) of a journal URL; see ``sqlitebackend``."""
    return sqlitebackend.parse_sqlite_url(url, "journal")


class SQLiteJournal(Journal):
    """Durable journal in one SQLite file (WAL), group-committed."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        poll_interval: float | None = None,
        max_batch: int = 1024,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        super().__init__(clock=clock, poll_interval=poll_interval)
        self.url = url
        self.path, self.synchronous, self.busy_timeout_ms = parse_sqlite_url(url)
        self._writer: Any = None  # aiosqlite.Connection
        self._reader: Any = None
        self._inline: sqlite3.Connection | None = None  # used on the event loop thread only
        self.group = GroupCommit(self._flush, max_batch)
        self.checkpoints = Checkpointer(self._checkpoint, checkpoint_every, str(self.path))

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    async def _on(db: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(raw connection)`` on that connection's worker thread, after earlier calls."""
        return await sqlitebackend.run_on(db, fn, "journal")

    async def _open(self) -> None:
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await aiosqlite.connect(str(self.path), isolation_level=None)
            await self._on(self._writer, self._setup_writer)
            self._reader = await aiosqlite.connect(str(self.path), isolation_level=None)
            await self._on(self._reader, self._setup_reader)
            self._inline = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._inline.execute("PRAGMA busy_timeout=0")  # never sleep on the loop: see _fast
            self._inline.execute("PRAGMA query_only=ON")
        except BaseException:
            await self._close_connections()
            raise
        self.group.reopen()
        self.checkpoints.reopen()

    def _pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")

    def _setup_writer(self, conn: sqlite3.Connection) -> None:
        self._pragmas(conn)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's job, off the writer
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite journal at {self.path} refused WAL mode (got {mode!r})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SQLITE_DDL:
                conn.execute(statement)
            columns = {
                table: {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                for table in ("journal_entries", "journal_sessions")
            }
            for statement in sqlite_migrations(columns):
                conn.execute(statement)
            row = conn.execute("SELECT version FROM journal_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO journal_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                check_schema_version(int(row[0]), str(self.path))
            conn.execute("COMMIT")
        except BaseException:
            sqlitebackend.rollback(conn)
            raise

    def _setup_reader(self, conn: sqlite3.Connection) -> None:
        self._pragmas(conn)
        conn.execute("PRAGMA query_only=ON")

    async def _close_connections(self) -> None:
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        for attr in ("_reader", "_writer"):
            db = getattr(self, attr)
            setattr(self, attr, None)
            if db is not None:
                await db.close()

    async def _close(self) -> None:
        await self.group.close()
        await self.checkpoints.close()
        await self._close_connections()

    async def _read_on(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on(self._reader, fn)

    async def _checkpoint(self) -> Outcome:
        """A PASSIVE checkpoint on the reader connection (its thread), beside the writer, then a
        RESTART one on the writer connection, between two batches, for the few frames committed
        meanwhile. Only the second lets the WAL start over: SQLite rewinds it when a write
        begins with every frame copied and no reader still in the WAL — which, under steady
        load, never holds by itself; RESTART waits (up to ``busy_timeout``) for the readers of
        the moment, all of them short lookups, to finish."""

        def checkpoint(mode: str) -> Callable[[sqlite3.Connection], Outcome]:
            def run(conn: sqlite3.Connection) -> Outcome:
                busy, frames, done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                return int(busy), int(frames), int(done)

            return run

        await self._read_on(checkpoint("PASSIVE"))
        return await self._on(self._writer, checkpoint("RESTART"))

    async def _fast(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read right here on the loop thread; on "busy", on the reader thread."""
        conn = self._inline
        if conn is None:
            raise RuntimeError("the SQLite journal is not open")
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _BUSY:
                raise Unavailable(f"SQLite journal at {self.path}: {exc}") from exc
        return await self._read_on(fn)

    # ---------------------------------------------------------------- primitives

    async def _commit(self, pending: PendingCommit) -> int | None:
        return await self.group.submit(pending)

    async def _flush(self, batch: list[PendingCommit]) -> list[int | None]:
        created = self.clock()
        try:
            plans = await self._on(
                self._writer, lambda conn: sqlitewrite.write_batch(conn, batch, created)
            )
        except sqlite3.OperationalError as exc:  # locked by another process, disk full, …
            raise Unavailable(f"SQLite journal at {self.path}: {exc}") from exc
        results: list[int | None] = []
        for c, plan in zip(batch, plans, strict=True):
            if plan is None:
                results.append(None)
            else:
                plan.apply(created)
                c.written = plan.rows
                results.append(c.expect_version + 1)
        self.checkpoints.committed(len(batch))
        return results

    async def _load(self, session: str) -> SessionState:
        def load(conn: sqlite3.Connection) -> SessionState:
            row = conn.execute(
                "SELECT version, state FROM journal_sessions WHERE session = ?", (session,)
            ).fetchone()
            return (
                SessionState(0, {}) if row is None else SessionState(int(row[0]), load_json(row[1]))
            )

        return await self._fast(load)

    async def _get(self, session: str, id: str) -> Entry | None:
        def get(conn: sqlite3.Connection) -> Entry | None:
            row = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE session = ? AND id = ?",
                (session, id),
            ).fetchone()
            return None if row is None else entry_from_row(row)

        return await self._fast(get)

    async def _read(
        self, session: str, after_seq: int, limit: int, kinds: tuple[str, ...] | None
    ) -> list[Entry]:
        sql = f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE session = ? AND seq > ?"
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        sql += " ORDER BY seq LIMIT ?"
        kinds = kinds or ()

        def read(after: int, most: int) -> Callable[[sqlite3.Connection], list[Entry]]:
            return lambda conn: [
                entry_from_row(r) for r in conn.execute(sql, (session, after, *kinds, most))
            ]

        got = await self._fast(read(after_seq, min(limit, INLINE_ROWS)))
        if len(got) < INLINE_ROWS or limit <= INLINE_ROWS:
            return got
        return got + await self._read_on(read(got[-1].seq, limit - len(got)))

    async def _is_answered(self, session: str, dispatch_id: str) -> bool:
        def answered(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT pending FROM journal_entries"
                " WHERE session = ? AND id = ? AND kind = 'dispatch'",
                (session, dispatch_id),
            ).fetchone()
            return row is not None and row[0] is None

        return await self._fast(answered)

    async def _open_dispatches(
        self, older_than: float, limit: int, after: tuple[float, str, int] | None
    ) -> list[Entry]:
        start = after or (-1.0, "", -1)

        def scan(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM journal_entries WHERE pending = 1 AND created < ?"
                " AND (created, session, seq) > (?, ?, ?)"
                " ORDER BY created, session, seq LIMIT ?",
                (older_than, *start, limit),
            )
            return [entry_from_row(r) for r in rows]

        return await self._read_on(scan)

    async def _totals(self, session: str) -> Totals:
        def totals(conn: sqlite3.Connection) -> Totals:
            row = conn.execute(
                "SELECT messages, prompt_tokens, completion_tokens, cost_usd FROM journal_sessions"
                " WHERE session = ?",
                (session,),
            ).fetchone()
            if row is None:
                return Totals(0, 0, 0, 0.0)
            return Totals(int(row[0]), int(row[1]), int(row[2]), float(row[3]))

        return await self._fast(totals)

    async def _delete(self, session: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM journal_entries WHERE session = ?", (session,))
                conn.execute("DELETE FROM journal_sessions WHERE session = ?", (session,))
                conn.execute("COMMIT")
            except BaseException:
                sqlitebackend.rollback(conn)
                raise

        await self._on(self._writer, delete)


__all__ = ["SQLiteJournal", "parse_sqlite_url"]
