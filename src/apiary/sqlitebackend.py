"""What every SQLite backend (store, journal, Comb) shares: its URL and its thread plumbing.

The three backends parsed ``sqlite:///abs/path.db?…`` with three copies of the same checks and
ran functions on aiosqlite's worker thread and rolled back open transactions the same way; a
fix to one (a clearer message, a new pragma) had to be made in each. They differ only in the
word their errors use (``what``: "store", "journal", "comb") and in whether they take options.

aiosqlite is not imported here: callers hand in their own connection, so importing this module
never loads a driver.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from apiary.errors import BadRequest

T = TypeVar("T")

SYNCHRONOUS = ("off", "normal", "full", "extra")
"""The ``synchronous=`` values SQLite knows (WAL makes ``normal`` survive ``kill -9``)."""


def sqlite_path(url: str, what: str) -> tuple[Path, list[tuple[str, str]]]:
    """(database file, query parameters) of ``sqlite:///abs/path.db?…``; bad parts → 400."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise BadRequest(f"{what} URL {url!r}: scheme must be sqlite://")
    if parts.netloc:
        raise BadRequest(
            f"{what} URL {url!r}: expected sqlite:///absolute/path.db (three slashes), "
            f"got host {parts.netloc!r}"
        )
    if not parts.path or parts.path == "/":
        raise BadRequest(f"{what} URL {url!r}: missing database file path")
    return Path(parts.path), parse_qsl(parts.query, keep_blank_values=True)


def parse_sqlite_url(url: str, what: str) -> tuple[Path, str, int]:
    """(path, synchronous, busy_timeout_ms) from ``sqlite:///abs/path.db?…``; bad parts → 400.

    Options: ``synchronous`` (default ``normal``) and ``busy_timeout`` in ms (default 5000);
    anything else is refused by name, so a typo is not silently ignored.
    """
    path, params = sqlite_path(url, what)
    synchronous, busy_timeout = "normal", 5000
    for name, value in params:
        if name == "synchronous":
            if value.lower() not in SYNCHRONOUS:
                raise BadRequest(
                    f"{what} URL parameter synchronous={value!r}: "
                    f"use one of {', '.join(SYNCHRONOUS)}"
                )
            synchronous = value.lower()
        elif name == "busy_timeout":
            if not value.isdigit():
                raise BadRequest(
                    f"{what} URL parameter busy_timeout={value!r}: milliseconds as an integer"
                )
            busy_timeout = int(value)
        else:
            raise BadRequest(
                f"{what} URL parameter {name!r} is unknown (known: synchronous, busy_timeout)"
            )
    return path, synchronous, busy_timeout


async def run_on(db: Any, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
    """Run ``fn(raw connection)`` on an aiosqlite connection's worker thread, after earlier calls.

    aiosqlite's own ``execute`` is built on this: one function queued to the worker thread, so a
    whole transaction is one thread hop and never interleaves with another.
    """
    if db is None:
        raise RuntimeError(f"the SQLite {what} is not open")
    result: T = await db._execute(fn, db._conn)
    return result


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite may have rolled back on its own)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


__all__ = ["SYNCHRONOUS", "parse_sqlite_url", "rollback", "run_on", "sqlite_path"]
