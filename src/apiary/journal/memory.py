"""The in-memory journal: tests, ``apiaryd --store memory://`` and the reference semantics.

Plain dicts. Each primitive runs without an ``await`` in the middle, so on the event loop it is
atomic by construction and needs no lock. Messages and states are kept as JSON text, exactly as
the durable backends keep them, so a caller mutating a dict it passed in or got back can never
change what the journal holds — and the three backends return equal values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from apiary.journal.base import Clock, Journal
from apiary.journal.model import (
    Entry,
    PendingCommit,
    SessionState,
    Totals,
    load_json,
    plan_commit,
)


@dataclass
class _Stored:
    """One entry as kept: everything but the message, which stays JSON text."""

    entry: Entry
    message: str

    def copy(self) -> Entry:
        e = self.entry
        return Entry(
            session=e.session,
            id=e.id,
            kind=e.kind,
            message=load_json(self.message),
            stage=e.stage,
            parent=e.parent,
            drone=e.drone,
            latency_ms=e.latency_ms,
            prompt_tokens=e.prompt_tokens,
            completion_tokens=e.completion_tokens,
            seq=e.seq,
            created=e.created,
            models=e.models,
            cost_usd=e.cost_usd,
        )


@dataclass
class _Session:
    version: int = 0
    state: str = "{}"
    entries: list[_Stored] = field(default_factory=list)  # index = seq - 1
    by_id: dict[str, _Stored] = field(default_factory=dict)
    open: dict[str, _Stored] = field(default_factory=dict)  # unanswered dispatches
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def _frozen(entry: Entry, seq: int, created: float) -> Entry:
    """A private copy of the caller's entry (its message lives on as JSON text)."""
    return Entry(
        session=entry.session,
        id=entry.id,
        kind=entry.kind,
        message={},
        stage=entry.stage,
        parent=entry.parent,
        drone=entry.drone,
        latency_ms=None if entry.latency_ms is None else float(entry.latency_ms),
        prompt_tokens=entry.prompt_tokens,
        completion_tokens=entry.completion_tokens,
        seq=seq,
        created=created,
        models=tuple(entry.models),  # tuples of str and int: immutable once copied
        cost_usd=float(entry.cost_usd),
    )


class MemoryJournal(Journal):
    """Everything in this process's memory; gone when it exits."""

    def __init__(self, *, clock: Clock | None = None, poll_interval: float | None = None) -> None:
        super().__init__(clock=clock, poll_interval=poll_interval)
        self._sessions: dict[str, _Session] = {}

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    async def _load(self, session: str) -> SessionState:
        s = self._sessions.get(session)
        if s is None:
            return SessionState(0, {})
        return SessionState(s.version, load_json(s.state))

    async def _commit(self, pending: PendingCommit) -> int | None:
        s = self._sessions.get(pending.session)
        if (s.version if s is not None else 0) != pending.expect_version:
            return None
        if s is None:
            s = self._sessions[pending.session] = _Session()
        plan = plan_commit(pending, s.by_id, len(s.entries))
        created = self.clock()
        for row in plan.rows:
            stored = _Stored(_frozen(row.entry, row.seq, created), row.message)
            s.entries.append(stored)
            s.by_id[row.entry.id] = stored
            if row.pending:
                s.open[row.entry.id] = stored
        for dispatch in plan.close:
            s.open.pop(dispatch, None)
        s.prompt_tokens += plan.prompt_tokens
        s.completion_tokens += plan.completion_tokens
        s.cost_usd += plan.cost_usd
        s.version += 1
        s.state = pending.state
        plan.apply(created)
        pending.written = plan.rows
        return s.version

    async def _get(self, session: str, id: str) -> Entry | None:
        s = self._sessions.get(session)
        stored = s.by_id.get(id) if s is not None else None
        return stored.copy() if stored is not None else None

    async def _read(
        self, session: str, after_seq: int, limit: int, kinds: tuple[str, ...] | None
    ) -> list[Entry]:
        s = self._sessions.get(session)
        if s is None:
            return []
        out: list[Entry] = []
        for stored in s.entries[after_seq:]:
            if kinds is None or stored.entry.kind in kinds:
                out.append(stored.copy())
                if len(out) >= limit:
                    break
        return out

    async def _is_answered(self, session: str, dispatch_id: str) -> bool:
        s = self._sessions.get(session)
        if s is None:
            return False
        stored = s.by_id.get(dispatch_id)
        return stored is not None and stored.entry.kind == "dispatch" and dispatch_id not in s.open

    async def _open_dispatches(
        self, older_than: float, limit: int, after: tuple[float, str, int] | None
    ) -> list[Entry]:
        found = [
            stored
            for s in self._sessions.values()
            for stored in s.open.values()
            if stored.entry.created < older_than
            and (
                after is None
                or (stored.entry.created, stored.entry.session, stored.entry.seq) > after
            )
        ]
        found.sort(key=lambda st: (st.entry.created, st.entry.session, st.entry.seq))
        return [stored.copy() for stored in found[:limit]]

    async def _totals(self, session: str) -> Totals:
        s = self._sessions.get(session)
        if s is None:
            return Totals(0, 0, 0, 0.0)
        return Totals(len(s.entries), s.prompt_tokens, s.completion_tokens, s.cost_usd)

    async def _delete(self, session: str) -> None:
        self._sessions.pop(session, None)

    def dump(self) -> dict[str, Any]:
        """Everything held, as plain data (for debugging and tests)."""
        return {
            name: {"version": s.version, "state": orjson.loads(s.state), "entries": len(s.entries)}
            for name, s in self._sessions.items()
        }


__all__ = ["MemoryJournal"]
