"""The journal's tables, for SQLite and PostgreSQL.

``journal_sessions`` holds one row per session: the state document, its version (the optimistic
lock), the last seq handed out and running sums of tokens and estimated cost (so ``usage`` and
``totals`` are one row read, not a scan).
``journal_entries`` is the transcript, keyed by (session, seq) with a unique (session, id) index
that makes entry ids idempotency keys. ``pending`` is set only on an unanswered dispatch and NULL
otherwise, so the partial index behind ``open_dispatches`` holds just the open ones and stays small.

Table names carry a ``journal_`` prefix so a PostgreSQL deployment can keep the journal in the
same database as the object store without collisions. ``journal_schema`` records the layout
version: a newer layout than this code knows is refused instead of being misread.
"""

from __future__ import annotations

from typing import Any

from apiary.errors import Unavailable
from apiary.journal.model import Entry, load_json, models_from_json

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
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0
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
        models TEXT,
        cost_usd REAL,
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
        completion_tokens bigint NOT NULL DEFAULT 0,
        cost_usd double precision NOT NULL DEFAULT 0
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
        models text,
        cost_usd double precision,
        PRIMARY KEY (session, seq)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS journal_entries_id ON journal_entries (session, id)",
    "CREATE INDEX IF NOT EXISTS journal_entries_pending ON journal_entries (created) WHERE pending",
)

ADDED_COLUMNS = (
    ("journal_entries", "models", "TEXT", "text"),
    ("journal_entries", "cost_usd", "REAL", "double precision"),
    (
        "journal_sessions",
        "cost_usd",
        "REAL NOT NULL DEFAULT 0",
        "double precision NOT NULL DEFAULT 0",
    ),
)
"""Columns added after layout 1 shipped: (table, column, SQLite type, PostgreSQL type).

A database created before them gets them with ``ADD COLUMN`` when a journal opens it; its old
rows read as no models and no cost (NULL, or the default 0). Additions only, every one nullable
or defaulted, so the layout version stays 1: an older apiaryd still reads and writes such a
database correctly (its inserts name their columns and leave these NULL)."""

POSTGRES_MIGRATIONS = tuple(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {pg}"
    for table, column, _, pg in ADDED_COLUMNS
)


def sqlite_migrations(columns: dict[str, set[str]]) -> list[str]:
    """The ``ADD COLUMN`` statements a SQLite journal still needs, given each table's columns
    (SQLite has no ``ADD COLUMN IF NOT EXISTS``)."""
    return [
        f"ALTER TABLE {table} ADD COLUMN {column} {lite}"
        for table, column, lite, _ in ADDED_COLUMNS
        if column not in columns.get(table, set())
    ]


TABLES = ("journal_entries", "journal_sessions", "journal_schema")

ENTRY_COLUMNS = (
    "session, id, kind, message, stage, parent, drone, latency_ms,"
    " prompt_tokens, completion_tokens, seq, created, models, cost_usd"
)
"""The ``journal_entries`` columns every backend selects, in the order ``entry_from_row`` reads."""


def entry_from_row(row: Any) -> Entry:
    """An ``Entry`` from a row selected as ``ENTRY_COLUMNS`` (SQLite and PostgreSQL rows alike)."""
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
        models=models_from_json(row[12]),
        cost_usd=float(row[13] or 0.0),
    )


def check_schema_version(found: int, where: str) -> None:
    """Refuse a journal written by a newer Apiary (its layout may mean something else)."""
    if found > SCHEMA_VERSION:
        raise Unavailable(
            f"journal at {where} has schema version {found}; this apiaryd understands up to "
            f"{SCHEMA_VERSION} — upgrade apiaryd"
        )


__all__ = [
    "ADDED_COLUMNS",
    "ENTRY_COLUMNS",
    "POSTGRES_DDL",
    "POSTGRES_MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLITE_DDL",
    "TABLES",
    "check_schema_version",
    "entry_from_row",
    "sqlite_migrations",
]
