"""Schema migrations for the durable backends: an ordered list of SQL steps per backend.

A step is never edited once released: a schema change is a new step appended to the list, so a
database created by any earlier version is brought forward on open. Each backend applies the
steps it has not recorded in ``schema_migrations`` inside one transaction (all or nothing), so a
crash mid-migration leaves the previous schema intact and the next open simply tries again.
The steps are written to be idempotent too (``IF NOT EXISTS``, ``ON CONFLICT DO NOTHING``), so a
hand-repaired database whose bookkeeping is off does not fail to open.

Objects and changes keep their body as JSON text: the store never queries inside a body (label
selectors run in Python after decoding), and on PostgreSQL a text column round-trips faster than
JSONB with orjson because the server need not parse and re-serialise it. Measured on the project
machine (asyncpg, one connection, a 1.5 kB Hive): upsert 337 µs text vs 368 µs JSONB, point read
116 µs vs 153 µs, 100-row scan 1.21 ms vs 1.24 ms.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "objects, change log, compaction horizon",
        (
            """CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                body TEXT NOT NULL,
                rv INTEGER NOT NULL,
                PRIMARY KEY (kind, namespace, name)
            ) WITHOUT ROWID""",
            """CREATE TABLE IF NOT EXISTS changes (
                rv INTEGER PRIMARY KEY,
                type TEXT NOT NULL,
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                body TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS meta (
                key TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )""",
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('horizon', 0)",
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "objects, change log, commit-ordered version counter, compaction horizon",
        (
            # COLLATE "C": ordering by bytes, the same as Python's str ordering, so continue
            # tokens (namespace, name) compare identically in the database and in the store.
            """CREATE TABLE IF NOT EXISTS objects (
                kind TEXT COLLATE "C" NOT NULL,
                namespace TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                body TEXT NOT NULL,
                rv BIGINT NOT NULL,
                PRIMARY KEY (kind, namespace, name)
            )""",
            """CREATE TABLE IF NOT EXISTS changes (
                rv BIGINT PRIMARY KEY,
                type TEXT NOT NULL,
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                body TEXT NOT NULL
            )""",
            # One row whose lock serializes writers: commit order == version order.
            """CREATE TABLE IF NOT EXISTS rv_counter (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                v BIGINT NOT NULL
            )""",
            "INSERT INTO rv_counter (id, v) VALUES (1, 0) ON CONFLICT DO NOTHING",
            """CREATE TABLE IF NOT EXISTS meta (
                key TEXT PRIMARY KEY,
                value BIGINT NOT NULL
            )""",
            "INSERT INTO meta (key, value) VALUES ('horizon', 0) ON CONFLICT DO NOTHING",
        ),
    ),
)

SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
"""The bookkeeping table, the same on both backends."""


def pending(steps: tuple[Migration, ...], applied: set[int]) -> list[Migration]:
    """The steps not yet applied, in order. Refuses a database newer than this code."""
    known = {m.version for m in steps}
    unknown = sorted(applied - known)
    if unknown:
        raise RuntimeError(
            f"the database has schema version(s) {unknown} that this Apiary does not know; "
            "it was written by a newer release — upgrade Apiary to open it"
        )
    return [m for m in steps if m.version not in applied]


__all__ = ["POSTGRES", "SCHEMA_MIGRATIONS_DDL", "SQLITE", "Migration", "pending"]
