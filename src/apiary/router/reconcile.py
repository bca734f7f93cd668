"""Session status re-derived from the journal, once at apiaryd's start (level-triggered).

The router reports status changes as patches and :class:`~apiary.router.status.SessionStatusWriter`
writes them later (spaced, batched). Two moments lose a patch for good: a store that stays
unavailable through shutdown (the writer gives up after ``SHUTDOWN_TRIES``), and a kill -9
between a journal commit and the status write that follows it. Nothing would ever report that
session again, so a job whose journal holds its final answer would show ``Running`` forever, or
an open session a stale ``output``. The journal is the record and status follows it
(docs/sessions.md): at start :class:`StatusReconciler` reads every Session in pages, works out
from the journal what the router's patches would have left in its status, and hands what
differs to the same writer (``update``), so one code path writes status and the writer's rules
hold — counts and usage come from the journal, and a phase that ended another way meanwhile
(Closed, TimedOut) stands.

What the journal says, as the router's patches say it:

- ``output``: the payload of the newest ``final`` entry (every session);
- a dispatch held dead-lettered in the session's state: phase ``Failed``, reason
  ``DeadLettered`` and the router's message (every session, like the router's dead-letter patch);
- for a job (``SessionInfo.job``) the newest ``final`` or ``error`` entry: ``Succeeded`` after a
  final, ``Failed`` with the error's reason and message after a failure; a job shown
  dead-lettered that holds no dead letter any more was replayed: ``Running`` again;
- dispatches held for approval: ``WaitingForApproval`` and ``pendingApproval``; none held any
  more: ``Running`` again.

Only sessions whose status can still change that way (an open phase, or a job shown
dead-lettered) have their journal state read. An ended session's phase, reason and message stand;
its ``output`` and counts are checked only when the journal's running totals (one batched read
per page) differ from its ``messageCount``/``usage``, which is what a lost write leaves behind. A
session without journal entries, or one that already shows what its journal says, costs no
write. A session that committed again while its status was being worked out is worked out anew
(the router's own patch for that commit may already have been written).

A session that cannot be reconciled is named in a warning and skipped; a store or journal that
is unavailable holds the pass on that page, retried after the writer's back-off (``RETRY``)
until it comes back or apiaryd stops. Nothing of this runs on the message path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from apiary.errors import Unavailable
from apiary.journal import Entry, Journal, Totals
from apiary.router.plan import APPROVAL, DEAD, dead_letter_message, held_for, split
from apiary.router.sessions import OPEN_PHASES, SessionInfo, session_info
from apiary.router.status import SessionStatusWriter
from apiary.store import Store

log = logging.getLogger("apiary.router")

Obj = dict[str, Any]

PAGE = 500
"""Sessions read from the store at a time (and their journal totals in one read)."""
TAIL = 64
"""Newest entries searched first for the last final (the window grows eightfold until found)."""
READ = 1000
"""Entries one journal read returns at most while searching."""
ROUNDS = 5
"""Times a session that keeps committing meanwhile is worked out again before it is left."""


@dataclass
class Reconciled:
    """What one pass did."""

    sessions: int = 0
    """Sessions read from the store."""
    read: int = 0
    """Sessions whose journal state or entries were read (not just their running totals)."""
    written: int = 0
    """Sessions whose status was handed to the writer."""
    failed: int = 0
    """Sessions skipped after an error (each named in a warning)."""
    seconds: float = 0.0

    def add(self, other: Reconciled) -> None:
        self.sessions += other.sessions
        self.read += other.read
        self.written += other.written
        self.failed += other.failed


class StatusReconciler:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        writer: SessionStatusWriter,
        *,
        page: int = PAGE,
    ) -> None:
        self.store = store
        self.journal = journal
        self.writer = writer
        self.page = page

    async def run(self) -> None:
        """One pass, logged (apiaryd's supervised start-up step: it never raises)."""
        try:
            done = await self.run_once()
        except Exception:  # never stop apiaryd over status: the next start tries again
            log.exception("session status reconcile failed")
            return
        log.info(
            "session status reconciled from the journal",
            extra={"sessions": done.sessions, "read": done.read, "written": done.written,
                   "failed": done.failed, "seconds": round(done.seconds, 3)},
        )  # fmt: skip

    async def run_once(self) -> Reconciled:
        """Every Session, page by page; returns once all are handed to the writer."""
        started = time.monotonic()
        done = Reconciled()
        token: str | None = None
        outage = 0  # tries in a row that found the store or the journal unavailable
        while True:
            here = Reconciled()
            try:
                page = await self.store.list("Session", None, limit=self.page, continue_token=token)
                await self._page(page.items, here)
            except Unavailable as exc:  # the page again, after the writer's back-off
                outage += 1
                if outage == 1:
                    log.warning(
                        "session status reconcile waits: the store is unavailable; retrying",
                        extra={"error": str(exc)},
                    )
                retry = self.writer.retry
                await asyncio.sleep(retry[min(outage, len(retry)) - 1])
                continue
            if outage:
                log.info("session status reconcile goes on: the store came back")
                outage = 0
            done.add(here)
            token = page.continue_token
            if token is None:
                done.seconds = time.monotonic() - started
                return done

    async def _page(self, items: list[Obj], done: Reconciled) -> None:
        infos = []
        for obj in items:
            done.sessions += 1
            try:
                infos.append((session_info(obj, 0.0), dict(obj.get("status") or {})))
            except Exception as exc:  # not a Session the router could run either
                done.failed += 1
                meta = obj.get("metadata") or {}
                log.warning(
                    "session status not reconciled",
                    extra={"cell": meta.get("namespace"), "session": meta.get("name"),
                           "error": repr(exc)},
                )  # fmt: skip
        totals = await self.journal.totals_many([info.key for info, _ in infos])
        for info, status in infos:
            try:
                await self._session(info, status, totals[info.key], done)
            except Unavailable:
                raise
            except Exception as exc:  # one bad session must not stop the pass
                done.failed += 1
                log.warning(
                    "session status not reconciled",
                    extra={**info.log_fields, "error": repr(exc)},
                )

    async def _session(
        self, info: SessionInfo, status: Obj, totals: Totals, done: Reconciled
    ) -> None:
        if totals.entries == 0:
            return  # nothing journaled: nothing to show
        settled = _settled(info, status)
        if settled and _counts_match(status, totals):
            return  # its last status write saw everything the journal holds
        done.read += 1
        current = await self.journal.load(info.key)
        for round in range(ROUNDS):
            want = await self._wanted(info, status, current.state, totals.entries, settled)
            # The first round against what the store showed; later ones (the session committed
            # meanwhile, over what this pass handed the writer) all of it again.
            patch = want if round else {k: v for k, v in want.items() if status.get(k) != v}
            if not patch and not settled and not round:
                return  # shows what its journal says
            self.writer.update(info, patch)  # settled: for the counts at least
            if not round:
                done.written += 1
            again = await self.journal.load(info.key)
            if again.version == current.version:
                return
            current, totals = again, await self.journal.totals(info.key)
        log.warning(
            "session status left to the router: the session kept changing",
            extra={**info.log_fields, "rounds": ROUNDS},
        )

    async def _wanted(
        self, info: SessionInfo, status: Obj, state: Obj, last_seq: int, settled: bool
    ) -> Obj:
        """The fields the router's patches would have set, from the journal."""
        want: Obj = {}
        job_end = (
            await self._newest(info.key, last_seq, ("final", "error"))
            if info.job and not settled
            else None
        )
        final = job_end if job_end is not None and job_end.kind == "final" else None
        if final is None:
            final = await self._newest(info.key, last_seq, ("final",))
        if final is not None:
            want["output"] = final.message.get("payload")
        if settled:
            return want  # ended another way: its phase, reason and message stand
        phase = status.get("phase") or ""
        shown_dead = phase == "Failed" and status.get("reason") == DEAD
        mine = split(state)[1]
        dead = held_for(mine, DEAD)
        waiting = sorted({str(h["stage"]) for _, h in held_for(mine, APPROVAL)})
        want["pendingApproval"] = ",".join(waiting) or None
        if dead:
            want.update(phase="Failed", reason=DEAD, message=dead_letter_message(dead[-1][1]))
            if shown_dead:
                del want["message"]  # shown dead-lettered already, whichever letter it names
        elif job_end is not None and job_end.kind == "final":
            want["phase"] = "Succeeded"
        elif job_end is not None:
            payload = job_end.message.get("payload")
            why = payload if isinstance(payload, dict) else {}
            want.update(
                phase="Failed", reason=str(why.get("reason")), message=str(why.get("message"))
            )
        elif waiting:
            want["phase"] = APPROVAL
        elif shown_dead:  # replayed, and not dead again: what the replay's patch said
            want.update(phase="Running", reason=None, message=None)
        elif phase == APPROVAL:
            want["phase"] = "Running"
        return want

    async def _newest(self, key: str, last_seq: int, kinds: tuple[str, ...]) -> Entry | None:
        """The session's newest entry of ``kinds``: the last ``TAIL`` entries searched first,
        then windows eight times as long further back (seqs are gap-free, 1..entries)."""
        high, window = last_seq, TAIL
        while high > 0:
            low = max(0, high - window)
            newest: Entry | None = None
            after = low
            while True:  # to the end: entries committed since ``last_seq`` are newer still
                got = await self.journal.read(key, after, limit=READ, kinds=kinds)
                if got:
                    newest, after = got[-1], got[-1].seq
                if len(got) < READ:
                    break
            if newest is not None:
                return newest
            high, window = low, window * 8
        return None


def _settled(info: SessionInfo, status: Obj) -> bool:
    """Whether the session's phase stands whatever its journal says: ended, except a job shown
    dead-lettered (a replay may have taken it on)."""
    phase = status.get("phase") or ""
    if phase in OPEN_PHASES:
        return False
    return not (info.job and phase == "Failed" and status.get("reason") == DEAD)


def _counts_match(status: Obj, totals: Totals) -> bool:
    usage = status.get("usage") or {}
    return (
        status.get("messageCount") == totals.entries
        and usage.get("promptTokens") == totals.prompt_tokens
        and usage.get("completionTokens") == totals.completion_tokens
    )


__all__ = ["Reconciled", "StatusReconciler"]
