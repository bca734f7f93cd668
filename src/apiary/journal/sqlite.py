"""The SQLite journal: embedded mode, its own file (``<data-dir>/journal.db``).

URL: ``sqlite:///abs/path/journal.db`` with optional ``synchronous=normal|full|off|extra``
(default normal) and ``busy_timeout`` (ms, default 5000). A file of its own means the journal and
the object store never wait on each other's write lock.

Writes: WAL with ``synchronous=NORMAL`` (a committed batch survives ``kill -9``; the last ones may
not survive a power loss — ``synchronous=full`` buys that with an fsync per batch). All commits go
through ``GroupCommit``: the queued calls run as ONE transaction in ONE function on the writer
connection's worker thread (one thread hop per batch, no asyncio lock needed since aiosqlite runs
calls in order), each call with its own version check, so a failed check fails only that call.
Reads use a second connection (WAL readers never block the writer, nor it them); a commit is
acknowledged only after its transaction committed, so a read issued afterwards sees it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from apiary.errors import BadRequest, Unavailable
from apiary.journal.base import Clock, Journal
from apiary.journal.batch import GroupCommit
from apiary.journal.model import Entry, PendingCommit, Plan, SessionState, load_json, plan_commit
from apiary.journal.schema import SCHEMA_VERSION, SQLITE_DDL, check_schema_version

T = TypeVar("T")

_SYNCHRONOUS = ("off", "normal", "full", "extra")
_COLUMNS = (
    "session, id, kind, message, stage, parent, drone, latency_ms,"
    " prompt_tokens, completion_tokens, seq, created"
)
_INSERT = (
    "INSERT OR IGNORE INTO journal_entries (session, seq, id, kind, stage, parent, drone,"
    " latency_ms,"
    " prompt_tokens, completion_tokens, created, message, pending)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def parse_sqlite_url(url: str) -> tuple[Path, str, int]:
    """(path, synchronous, busy_timeout_ms) from ``sqlite:///abs/path.db?…``; bad parts → 400."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise BadRequest(f"journal URL {url!r}: scheme must be sqlite://")
    if parts.netloc:
        raise BadRequest(
            f"journal URL {url!r}: expected sqlite:///absolute/path.db (three slashes), "
            f"got host {parts.netloc!r}"
        )
    if not parts.path or parts.path == "/":
        raise BadRequest(f"journal URL {url!r}: missing database file path")
    synchronous, busy_timeout = "normal", 5000
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "synchronous" and value.lower() in _SYNCHRONOUS:
            synchronous = value.lower()
        elif name == "synchronous":
            raise BadRequest(
                f"journal URL parameter synchronous={value!r}: use one of {', '.join(_SYNCHRONOUS)}"
            )
        elif name == "busy_timeout" and value.isdigit():
            busy_timeout = int(value)
        elif name == "busy_timeout":
            raise BadRequest(f"journal URL parameter busy_timeout={value!r}: milliseconds")
        else:
            raise BadRequest(
                f"journal URL parameter {name!r} is unknown (known: synchronous, busy_timeout)"
            )
    return Path(parts.path), synchronous, busy_timeout


def _entry(row: Any) -> Entry:
    return Entry(
        session=row[0],
        id=row[1],
        kind=row[2],
        message=load_json(row[3]),
        stage=row[4],
        parent=row[5],
        drone=row[6],
        latency_ms=row[7],
        prompt_tokens=int(row[8]),
        completion_tokens=int(row[9]),
        seq=int(row[10]),
        created=float(row[11]),
    )


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


_SESSION_UPDATE = (
    "UPDATE journal_sessions SET version = ?, state = ?, last_seq = ?, messages = ?,"
    " prompt_tokens = ?, completion_tokens = ? WHERE session = ?"
)
_SESSION_INSERT = (
    "INSERT INTO journal_sessions (version, state, last_seq, messages, prompt_tokens,"
    " completion_tokens, session) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_CLOSE = (
    "UPDATE journal_entries SET pending = NULL"
    " WHERE session = ? AND id = ? AND kind = 'dispatch' AND pending = 1"
)
_CHUNK = 400  # pairs per IN (...) query: well under SQLite's 32,766 bound variables


def _chunks(items: list[T], size: int = _CHUNK) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _sessions_of(conn: sqlite3.Connection, names: list[str]) -> dict[str, list[Any]]:
    """session -> [version, state, last_seq, messages, prompt, completion] for those that exist."""
    out: dict[str, list[Any]] = {}
    for chunk in _chunks(names):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT session, version, state, last_seq, messages, prompt_tokens,"
            f" completion_tokens FROM journal_sessions WHERE session IN ({marks})",
            chunk,
        )
        for r in rows:
            out[r[0]] = list(r[1:])
    return out


def _existing_ids(conn: sqlite3.Connection, pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    """session -> the ids among ``pairs`` that the session already holds."""
    out: dict[str, set[str]] = {}
    for chunk in _chunks(pairs):
        flat = [v for pair in chunk for v in pair]
        rows = conn.execute(
            # CROSS JOIN keeps the VALUES list outside: one index probe per pair, not a scan.
            f"SELECT e.session, e.id FROM (VALUES {','.join(['(?, ?)'] * len(chunk))}) AS t"
            " CROSS JOIN journal_entries e ON e.session = t.column1 AND e.id = t.column2",
            flat,
        )
        for session, id_ in rows:
            out.setdefault(session, set()).add(id_)
    return out


@dataclass
class _Decided:
    """What a batch writes, decided in Python from the sessions' rows and the known ids."""

    plans: list[Plan | None]
    rows: list[tuple[Any, ...]]
    closes: list[tuple[str, str]]
    updates: list[tuple[Any, ...]]
    inserts: list[tuple[Any, ...]]


def _decide(
    batch: list[PendingCommit],
    sessions: dict[str, list[Any]],
    existing: dict[str, set[str]],
    created: float,
) -> _Decided:
    """Every commit in order, each with its own version check; later ones see earlier ones."""
    known = set(sessions)
    out = _Decided([], [], [], [], [])
    touched: dict[str, None] = {}
    for c in batch:
        cur = sessions.get(c.session)
        if (cur[0] if cur is not None else 0) != c.expect_version:
            out.plans.append(None)
            continue
        if cur is None:
            cur = sessions[c.session] = [0, "", 0, 0, 0, 0]
        ids = existing.setdefault(c.session, set())
        plan = plan_commit(c, ids, cur[2])
        out.plans.append(plan)
        for r in plan.rows:
            e = r.entry
            ids.add(e.id)
            out.rows.append(
                (
                    c.session,
                    r.seq,
                    e.id,
                    e.kind,
                    e.stage,
                    e.parent,
                    e.drone,
                    e.latency_ms,
                    e.prompt_tokens,
                    e.completion_tokens,
                    created,
                    r.message,
                    1 if r.pending else None,
                )
            )
        out.closes.extend((c.session, d) for d in plan.close)
        cur[0] += 1
        cur[1] = c.state
        cur[2] = plan.last_seq
        cur[3] += len(plan.rows)
        cur[4] += plan.prompt_tokens
        cur[5] += plan.completion_tokens
        touched[c.session] = None
    for s in touched:
        (out.updates if s in known else out.inserts).append((*sessions[s], s))
    return out


def _write_batch(
    conn: sqlite3.Connection, batch: list[PendingCommit], created: float
) -> list[Plan | None]:
    """A whole batch in one transaction and a handful of statements, whatever its size.

    Under the write lock (``BEGIN IMMEDIATE``) nothing else can change the rows, so the batch
    reads its sessions once, decides every commit in Python, and writes with ``executemany``: C
    loops instead of Python-level statements per commit. Entry ids are assumed new (the usual
    case): ``INSERT OR IGNORE`` plus the change count proves it for the price of the insert
    itself. If some id already existed, the attempt is rolled back and the batch decided again
    knowing which ids exist, so a repeated id never uses up a seq.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        names = list({c.session: None for c in batch})
        decided = _decide(batch, _sessions_of(conn, names), {}, created)
        before = conn.total_changes
        conn.executemany(_INSERT, decided.rows)
        if conn.total_changes - before != len(decided.rows):
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            sessions = _sessions_of(conn, names)
            pairs = [(c.session, e.id) for c in batch if c.session in sessions for e in c.entries]
            decided = _decide(batch, sessions, _existing_ids(conn, pairs), created)
            conn.executemany(_INSERT, decided.rows)
        if decided.closes:
            conn.executemany(_CLOSE, decided.closes)
        conn.executemany(_SESSION_UPDATE, decided.updates)
        conn.executemany(_SESSION_INSERT, decided.inserts)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return decided.plans


class SQLiteJournal(Journal):
    """Durable journal in one SQLite file (WAL), group-committed."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        poll_interval: float | None = None,
        max_batch: int = 1024,
    ) -> None:
        super().__init__(clock=clock, poll_interval=poll_interval)
        self.url = url
        self.path, self.synchronous, self.busy_timeout_ms = parse_sqlite_url(url)
        self._writer: Any = None  # aiosqlite.Connection
        self._reader: Any = None
        self.group = GroupCommit(self._flush, max_batch)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    async def _on(db: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(raw connection)`` on that connection's worker thread, after earlier calls."""
        if db is None:
            raise RuntimeError("the SQLite journal is not open")
        result: T = await db._execute(fn, db._conn)
        return result

    async def _open(self) -> None:
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await aiosqlite.connect(str(self.path), isolation_level=None)
            await self._on(self._writer, self._setup_writer)
            self._reader = await aiosqlite.connect(str(self.path), isolation_level=None)
            await self._on(self._reader, self._setup_reader)
        except BaseException:
            await self._close_connections()
            raise
        self.group.reopen()

    def _pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")

    def _setup_writer(self, conn: sqlite3.Connection) -> None:
        self._pragmas(conn)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite journal at {self.path} refused WAL mode (got {mode!r})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SQLITE_DDL:
                conn.execute(statement)
            row = conn.execute("SELECT version FROM journal_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO journal_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                check_schema_version(int(row[0]), str(self.path))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _setup_reader(self, conn: sqlite3.Connection) -> None:
        self._pragmas(conn)
        conn.execute("PRAGMA query_only=ON")

    async def _close_connections(self) -> None:
        for attr in ("_reader", "_writer"):
            db = getattr(self, attr)
            setattr(self, attr, None)
            if db is not None:
                await db.close()

    async def _close(self) -> None:
        await self.group.close()
        await self._close_connections()

    async def _read_on(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on(self._reader, fn)

    # ---------------------------------------------------------------- primitives

    async def _commit(self, pending: PendingCommit) -> int | None:
        return await self.group.submit(pending)

    async def _flush(self, batch: list[PendingCommit]) -> list[int | None]:
        created = self.clock()
        try:
            plans = await self._on(self._writer, lambda conn: _write_batch(conn, batch, created))
        except sqlite3.OperationalError as exc:  # locked by another process, disk full, …
            raise Unavailable(f"SQLite journal at {self.path}: {exc}") from exc
        results: list[int | None] = []
        for c, plan in zip(batch, plans, strict=True):
            if plan is None:
                results.append(None)
            else:
                plan.apply(created)
                results.append(c.expect_version + 1)
        return results

    async def _load(self, session: str) -> SessionState:
        def load(conn: sqlite3.Connection) -> SessionState:
            row = conn.execute(
                "SELECT version, state FROM journal_sessions WHERE session = ?", (session,)
            ).fetchone()
            return (
                SessionState(0, {}) if row is None else SessionState(int(row[0]), load_json(row[1]))
            )

        return await self._read_on(load)

    async def _get(self, session: str, id: str) -> Entry | None:
        def get(conn: sqlite3.Connection) -> Entry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM journal_entries WHERE session = ? AND id = ?",
                (session, id),
            ).fetchone()
            return None if row is None else _entry(row)

        return await self._read_on(get)

    async def _read(
        self, session: str, after_seq: int, limit: int, kinds: tuple[str, ...] | None
    ) -> list[Entry]:
        sql = f"SELECT {_COLUMNS} FROM journal_entries WHERE session = ? AND seq > ?"
        params: list[Any] = [session, after_seq]
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params.extend(kinds)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)

        def read(conn: sqlite3.Connection) -> list[Entry]:
            return [_entry(r) for r in conn.execute(sql, params)]

        return await self._read_on(read)

    async def _is_answered(self, session: str, dispatch_id: str) -> bool:
        def answered(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT pending FROM journal_entries"
                " WHERE session = ? AND id = ? AND kind = 'dispatch'",
                (session, dispatch_id),
            ).fetchone()
            return row is not None and row[0] is None

        return await self._read_on(answered)

    async def _open_dispatches(self, older_than: float, limit: int) -> list[Entry]:
        def scan(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM journal_entries WHERE pending = 1 AND created < ?"
                " ORDER BY created, session, seq LIMIT ?",
                (older_than, limit),
            )
            return [_entry(r) for r in rows]

        return await self._read_on(scan)

    async def _usage(self, session: str) -> tuple[int, int, int]:
        def usage(conn: sqlite3.Connection) -> tuple[int, int, int]:
            row = conn.execute(
                "SELECT messages, prompt_tokens, completion_tokens FROM journal_sessions"
                " WHERE session = ?",
                (session,),
            ).fetchone()
            return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))

        return await self._read_on(usage)

    async def _delete(self, session: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM journal_entries WHERE session = ?", (session,))
                conn.execute("DELETE FROM journal_sessions WHERE session = ?", (session,))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

        await self._on(self._writer, delete)


__all__ = ["SQLiteJournal", "parse_sqlite_url"]
