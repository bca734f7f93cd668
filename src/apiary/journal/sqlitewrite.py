"""One group-commit batch on SQLite: decided in Python, written with a few ``executemany``.

Under the write lock (``BEGIN IMMEDIATE``) nothing else can change the rows, so the batch reads
its sessions once, decides every commit in order in Python (each with its own version check,
later commits of a session seeing earlier ones) and writes with ``executemany``: C loops instead
of four Python-level statements per commit. Runs on the writer connection's worker thread.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, TypeVar

from apiary import sqlitebackend
from apiary.journal.model import PendingCommit, Plan, models_json, plan_commit

T = TypeVar("T")

_INSERT = (
    "INSERT OR IGNORE INTO journal_entries (session, seq, id, kind, stage, parent, drone,"
    " latency_ms,"
    " prompt_tokens, completion_tokens, created, message, pending, models, cost_usd)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_SESSION_UPDATE = (
    "UPDATE journal_sessions SET version = ?, state = ?, last_seq = ?, messages = ?,"
    " prompt_tokens = ?, completion_tokens = ?, cost_usd = ? WHERE session = ?"
)
_SESSION_INSERT = (
    "INSERT INTO journal_sessions (version, state, last_seq, messages, prompt_tokens,"
    " completion_tokens, cost_usd, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_CLOSE = (
    "UPDATE journal_entries SET pending = NULL"
    " WHERE session = ? AND id = ? AND kind = 'dispatch' AND pending = 1"
)
_CHUNK = 400  # pairs per IN (...) query: well under SQLite's 32,766 bound variables


def _chunks(items: list[T], size: int = _CHUNK) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _sessions_of(conn: sqlite3.Connection, names: list[str]) -> dict[str, list[Any]]:
    """session -> [version, state, last_seq, messages, prompt, completion, cost] of those that
    exist."""
    out: dict[str, list[Any]] = {}
    for chunk in _chunks(names):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT session, version, state, last_seq, messages, prompt_tokens,"
            f" completion_tokens, cost_usd FROM journal_sessions WHERE session IN ({marks})",
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
            cur = sessions[c.session] = [0, "", 0, 0, 0, 0, 0.0]
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
                    models_json(e.models),
                    float(e.cost_usd) or None,
                )
            )
        out.closes.extend((c.session, d) for d in plan.close)
        cur[0] += 1
        cur[1] = c.state
        cur[2] = plan.last_seq
        cur[3] += len(plan.rows)
        cur[4] += plan.prompt_tokens
        cur[5] += plan.completion_tokens
        cur[6] += plan.cost_usd
        touched[c.session] = None
    for s in touched:
        (out.updates if s in known else out.inserts).append((*sessions[s], s))
    return out


def write_batch(
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
        sqlitebackend.rollback(conn)
        raise
    return decided.plans


__all__ = ["write_batch"]
