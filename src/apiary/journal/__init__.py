"""The session journal, chosen by URL scheme: ``memory://``, ``sqlite:///path``, ``postgresql://…``.

See docs/sessions.md. Backends import their drivers only inside their modules, lazily, so using
the memory journal never loads aiosqlite or asyncpg.
"""

from __future__ import annotations

from typing import Any

from apiary.errors import BadRequest
from apiary.journal.base import Clock, Journal
from apiary.journal.model import ANSWER_KINDS, KINDS, Entry, SessionState, Totals


def open_journal(url: str, **kw: Any) -> Journal:
    """A journal for ``url`` (not yet opened: ``await j.open()`` or ``async with``).

    Keywords every backend takes: ``clock`` (epoch seconds, default ``time.time``) and
    ``poll_interval`` (longest a ``wait`` sleeps without being woken, default 0.5 s). SQLite and
    PostgreSQL also take ``max_batch`` (most commits per group-commit transaction); SQLite
    ``checkpoint_every`` (commits between two WAL checkpoints, run beside the writer).
    """
    if not isinstance(url, str) or ":" not in url:
        raise BadRequest(
            f"journal URL {url!r}: use memory://, sqlite:///path/journal.db or postgresql://…"
        )
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from apiary.journal.memory import MemoryJournal

        return MemoryJournal(**kw)
    if scheme == "sqlite":
        from apiary.journal.sqlite import SQLiteJournal

        return SQLiteJournal(url, **kw)
    if scheme in ("postgresql", "postgres"):
        from apiary.journal.postgres import PostgresJournal

        return PostgresJournal(url, **kw)
    raise BadRequest(
        f"unknown journal URL scheme {scheme!r} (use memory://, sqlite:// or postgresql://)"
    )


__all__ = [
    "ANSWER_KINDS",
    "KINDS",
    "Clock",
    "Entry",
    "Journal",
    "SessionState",
    "Totals",
    "open_journal",
]
