"""The journal's tables, for SQLite and PostgreSQL.

``journal_sessions`` holds one row per session: the state document, its version (the optimistic
lock), the last seq handed out and running usage sums (so ``usage`` is one row read, not a scan).
``journal_entries`` is the transcript, keyed by (session, seq) with a unique (session, id) index
that makes entry ids idempotency keys. ``pending`` is set only on an unanswered dispatch and NULL
otherwise, so the partial index behind ``open_dispatches`` holds just the open ones and stays small.

Table names carry a ``journal_`` prefix so a PostgreSQL deployment can keep the journal in the
same database as the object store without collisions. ``journal_schema`` records the layout
version: a newer layout than this code knows is refused instead of being misread.
"""

from __future__ import annotations

from apiary.errors import Unavailable

SCHEMA_VERSION = 1

SQLITE_DDL = (
    "CREATE TABLE IF NOT EXISTS journal_schema (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS journal_sessions (
        session TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        messages INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS journal_entries (
        session TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        stage TEXT,
        parent TEXT,
        drone TEXT,
        latency_ms REAL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        created REAL NOT NULL,
        message TEXT NOT NULL,
        pending INTEGER,
        PRIMARY KEY (session, seq)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS journal_entries_id ON journal_entries (session, id)",
    "CREATE INDEX IF NOT EXISTS journal_entries_pending ON journal_entries (created)"
    " WHERE pending = 1",
)

POSTGRES_DDL = (
    "CREATE TABLE IF NOT EXISTS journal_schema (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS journal_sessions (
        session text PRIMARY KEY,
        version bigint NOT NULL,
        state text NOT NULL,
        last_seq bigint NOT NULL,
        messages bigint NOT NULL DEFAULT 0,
        prompt_tokens bigint NOT NULL DEFAULT 0,
        completion_tokens bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS journal_entries (
        session text NOT NULL,
        seq bigint NOT NULL,
        id text NOT NULL,
        kind text NOT NULL,
        stage text,
        parent text,
        drone text,
        latency_ms double precision,
        prompt_tokens bigint NOT NULL,
        completion_tokens bigint NOT NULL,
        created double precision NOT NULL,
        message text NOT NULL,
        pending boolean,
        PRIMARY KEY (session, seq)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS journal_entries_id ON journal_entries (session, id)",
    "CREATE INDEX IF NOT EXISTS journal_entries_pending ON journal_entries (created) WHERE pending",
)

TABLES = ("journal_entries", "journal_sessions", "journal_schema")


def check_schema_version(found: int, where: str) -> None:
    """Refuse a journal written by a newer Apiary (its layout may mean something else)."""
    if found > SCHEMA_VERSION:
        raise Unavailable(
            f"journal at {where} has schema version {found}; this apiaryd understands up to "
            f"{SCHEMA_VERSION} — upgrade apiaryd"
        )


__all__ = ["POSTGRES_DDL", "SCHEMA_VERSION", "SQLITE_DDL", "TABLES", "check_schema_version"]
