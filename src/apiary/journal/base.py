"""The Journal contract: per session, an append-only transcript plus one versioned state document.

Every message hop in a session is one ``commit``: the router read the state (``load``), ran the
pattern engine, and now writes the new state and the entries it produced — atomically, and only
if nobody committed in between (``expect_version``). Entry ids are idempotency keys, so redoing a
step after a crash or a duplicate delivery writes nothing twice. See docs/sessions.md.

A backend is a thin subclass with one primitive per operation (``_commit``, ``_read`` …). The
public methods here check their arguments once (a clear ``Invalid`` naming the field, never a
driver traceback) and implement the long-poll ``wait`` over ``_read`` for every backend: waiters
register per session and are woken by ``_wake`` when a commit to that session lands in this
process, by a backend's cross-process signal (PostgreSQL LISTEN/NOTIFY), or at the latest after
``poll_interval`` seconds, when they simply read again. A commit in this process hands the
waiters the entries it wrote (when they continue right where the waiter is), so the common
long-poll — "tell me when the next entries of this session are in" — costs no read at all.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from typing import Any

from apiary.journal.model import (
    Entry,
    PendingCommit,
    Row,
    SessionState,
    Totals,
    check_id,
    check_int,
    check_kinds,
    check_limit,
    check_seconds,
    check_session,
    prepare_commit,
    written_entries,
)

Waiter = asyncio.Future[list[Entry] | None]
"""A long-poll's future: the entries a commit handed over, or None (read again)."""

Clock = Callable[[], float]
"""Epoch seconds; tests inject a fake one to make ``created`` and ``open_dispatches`` exact."""

DEFAULT_POLL_INTERVAL = 0.5


class Journal(ABC):
    """Session transcripts and state; open with ``open_journal(url)``."""

    def __init__(self, *, clock: Clock | None = None, poll_interval: float | None = None) -> None:
        self.clock: Clock = clock or time.time
        self.poll_interval = check_seconds(
            DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval, "poll_interval"
        )
        self._waiters: dict[str, dict[Waiter, tuple[int, int]]] = {}
        """session → each waiter's future and its (after_seq, limit)."""
        self._is_open = False

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect and create the tables if needed (idempotent)."""
        if not self._is_open:
            await self._open()
            self._is_open = True

    async def close(self) -> None:
        """Finish queued commits, wake every waiter, release connections (idempotent)."""
        if self._is_open:
            self._is_open = False
            await self._close()
        for session in list(self._waiters):
            self._wake(session)

    async def __aenter__(self) -> Journal:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._is_open:
            raise RuntimeError(f"the journal {type(self).__name__} is not open")

    # -------------------------------------------------------------------- public API

    async def load(self, session: str) -> SessionState:
        """The session's state and version (``SessionState(0, {})`` for a new session)."""
        self._check_open()
        return await self._load(check_session(session))

    async def commit(
        self,
        session: str,
        *,
        expect_version: int,
        state: dict[str, Any],
        entries: Sequence[Entry],
    ) -> int | None:
        """Write ``state`` as version ``expect_version + 1`` and append the new entries, atomically.

        None (nothing written) when the stored version is not ``expect_version`` — another writer
        got there first: reload and redo the step. Entries whose id the session already has are
        skipped silently; those written get ``seq`` and ``created`` filled in place. An output or
        error entry whose ``parent`` names a dispatch marks that dispatch answered.
        """
        self._check_open()
        pending = prepare_commit(session, expect_version, state, entries)
        version = await self._commit(pending)
        if version is not None:
            self._wake(session, pending.written)
        return version

    async def get(self, session: str, id: str) -> Entry | None:
        """One entry by id, or None."""
        self._check_open()
        return await self._get(check_session(session), check_id(id))

    async def read(
        self,
        session: str,
        after_seq: int = 0,
        limit: int = 1000,
        kinds: Collection[str] | None = None,
    ) -> list[Entry]:
        """Entries with ``seq > after_seq`` in seq order, at most ``limit``, optionally by kind."""
        self._check_open()
        check_session(session)
        check_int(after_seq, "after_seq")
        return await self._read(session, after_seq, check_limit(limit), check_kinds(kinds))

    async def wait(
        self, session: str, after_seq: int, timeout: float, *, limit: int = 1000
    ) -> list[Entry]:
        """Long-poll: the entries after ``after_seq``, waiting up to ``timeout`` s for the first.

        Returns ``[]`` on timeout (or when the journal closes while waiting).
        """
        self._check_open()
        check_session(session)
        check_int(after_seq, "after_seq")
        timeout = check_seconds(timeout, "timeout")
        limit = check_limit(limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Register before reading: a commit landing between the read and the sleep still
            # finds this waiter and wakes it.
            woken: Waiter = loop.create_future()
            self._waiters.setdefault(session, {})[woken] = (after_seq, limit)
            timer: asyncio.TimerHandle | None = None
            try:
                got = await self._read(session, after_seq, limit, None)
                remaining = deadline - loop.time()
                if got or remaining <= 0 or not self._is_open:
                    return got
                timer = loop.call_later(min(remaining, self.poll_interval), _expire, woken)
                handed = await woken
                if handed and self._is_open:
                    return handed
            finally:
                if timer is not None:
                    timer.cancel()
                waiting = self._waiters.get(session)
                if waiting is not None:
                    waiting.pop(woken, None)
                    if not waiting:
                        del self._waiters[session]
                if not woken.done():
                    woken.cancel()
            if not self._is_open:
                return []

    async def is_answered(self, session: str, dispatch_id: str) -> bool:
        """True when the dispatch is journaled and an output or error answered it."""
        self._check_open()
        return await self._is_answered(check_session(session), check_id(dispatch_id, "dispatch_id"))

    async def open_dispatches(
        self, older_than: float, limit: int = 1000, after: Entry | None = None
    ) -> list[Entry]:
        """Across all sessions: unanswered dispatches created before ``older_than``, oldest first
        (by created, session, seq); ``after`` = the last entry of the previous page.

        The recovery sweep republishes these (a crash between commit and publish, a lost drone).
        """
        self._check_open()
        cursor = None if after is None else (after.created, after.session, after.seq)
        return await self._open_dispatches(
            check_seconds(older_than, "older_than"), check_limit(limit), cursor
        )

    async def usage(self, session: str) -> tuple[int, int, int]:
        """(entries, prompt tokens, completion tokens) of the session, kept as running sums."""
        entries, prompt, completion, _ = await self.totals(session)
        return entries, prompt, completion

    async def totals(self, session: str) -> Totals:
        """``usage`` and the estimated cost (USD) of the session's entries: the same one-row
        read of the running sums."""
        self._check_open()
        return await self._totals(check_session(session))

    async def totals_many(self, sessions: Sequence[str]) -> dict[str, Totals]:
        """``totals`` of each of ``sessions`` (zeros for one the journal does not hold), in one
        read where the backend can: what a status writer with many sessions to update wants."""
        self._check_open()
        return await self._totals_many([check_session(s) for s in sessions])

    async def delete(self, session: str) -> None:
        """Forget the session: its state and every entry (a no-op for an unknown session)."""
        self._check_open()
        await self._delete(check_session(session))

    # --------------------------------------------------------------------- wakeups

    def _wake(self, session: str, written: Sequence[Row] | None = None) -> None:
        """Wake this process's waiters on ``session``: with the entries of ``written`` (the rows
        a commit just wrote, in seq order) where they continue a waiter's ``after_seq``, else
        with None — that waiter reads again."""
        waiting = self._waiters.pop(session, None)
        if not waiting:
            return
        for woken, (after_seq, limit) in waiting.items():
            if not woken.done():
                woken.set_result(written_entries(written, after_seq, limit) if written else None)

    def _wake_all(self) -> None:
        for session in list(self._waiters):
            self._wake(session)

    # ------------------------------------------------------------------ primitives

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _load(self, session: str) -> SessionState: ...

    @abstractmethod
    async def _commit(self, pending: PendingCommit) -> int | None: ...

    @abstractmethod
    async def _get(self, session: str, id: str) -> Entry | None: ...

    @abstractmethod
    async def _read(
        self, session: str, after_seq: int, limit: int, kinds: tuple[str, ...] | None
    ) -> list[Entry]: ...

    @abstractmethod
    async def _is_answered(self, session: str, dispatch_id: str) -> bool: ...

    @abstractmethod
    async def _open_dispatches(
        self, older_than: float, limit: int, after: tuple[float, str, int] | None
    ) -> list[Entry]: ...

    @abstractmethod
    async def _totals(self, session: str) -> Totals: ...

    async def _totals_many(self, sessions: list[str]) -> dict[str, Totals]:
        """One ``_totals`` per session; a backend with a cheaper way overrides it."""
        return {session: await self._totals(session) for session in sessions}

    @abstractmethod
    async def _delete(self, session: str) -> None: ...


def _expire(woken: Waiter) -> None:
    if not woken.done():
        woken.set_result(None)


__all__ = ["DEFAULT_POLL_INTERVAL", "Clock", "Journal"]
