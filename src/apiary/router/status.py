"""Session status from what the router decides: output, phase, reason, approvals, token usage
and its estimated cost.

Writing a Session object on every message would put a store write on the hot path; instead the
router reports the steps that change what a Session shows (a final output, a failure, a hold for
approval, a dead letter, a resumption) as a patch, and one task writes the newest state of each
such session (patches merged, writes coalesced), with counts and usage read from the journal.
Everything pending when the writer wakes goes to the store as one write
(``Store.update_status_many``: one transaction on SQLite, and the store's watchers woken once),
so 64 sessions answering together cost one status write, not 64 read-modify-write rounds.

Writes are also spaced in time: after a write the next waits until ``interval`` has passed since
the last one began, so a session answering hundreds of messages a second costs about
``1 / interval`` status writes a second, not one per message. And one session whose change is
only routine (a new ``output``; counts and usage come along) is written at most once per
``session_interval``: with many sessions each answering a few messages a second, the writer's
spacing alone would write each of them on every message. A change of phase, reason or approval
is never held back for that. The first change after a quiet spell is written at once, and what
is pending is always written in the end (a session's last output and final phase are never
skipped, only the intermediate ones); ``flush`` writes it now (at shutdown, after the router
stopped). A store that is unavailable (a PostgreSQL restart, a
lost connection) loses nothing either: what it refused is kept, under any newer change, and
written again after a back-off (``RETRY``); only at shutdown does the writer give up, after
``SHUTDOWN_TRIES``, with a warning that says how many sessions' status were not written. What it
gave up, and what a crash between a commit and its write lost, is re-derived from the journal at
the next start (:mod:`apiary.router.reconcile`, through ``update``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from apiary.errors import Unavailable
from apiary.journal import Journal, Totals
from apiary.router.sessions import SessionInfo
from apiary.store import Store
from apiary.store.model import StatusChange
from apiary.telemetry.prices import usd

log = logging.getLogger("apiary.router")

ENDED = frozenset({"Succeeded", "TimedOut", "Closed", "Failed"})
MAX_BATCH = 256
"""Most Sessions one store write carries (the rest go in the next)."""
INTERVAL = 0.1
"""Seconds from the start of one status write to the next, at the least (docs/sessions.md)."""
SESSION_INTERVAL = 1.0
"""Seconds between two writes of one session's status when all that changed is routine."""
ROUTINE = frozenset({"output"})
"""Patch fields that may wait for ``session_interval``; any other field is written at once."""
RETRY = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds before writing again what an unavailable store refused, by failures in a row."""
SHUTDOWN_TRIES = 3
"""Writes tried at shutdown (``flush``) while the store is unavailable, before giving up."""


_Item = tuple[SessionInfo, dict[str, Any]]
"""A session and its pending status change."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SessionStatusWriter:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        interval: float = INTERVAL,
        session_interval: float = SESSION_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        retry: Sequence[float] = RETRY,
    ) -> None:
        self.store = store
        self.journal = journal
        self.interval = interval
        """Least seconds between the starts of two status writes (0: write whenever woken)."""
        self.session_interval = session_interval
        """Least seconds between two writes of one session whose change is only :data:`ROUTINE`
        (0: no such wait)."""
        self.clock = clock
        self.retry = tuple(retry)
        """Seconds before writing again what an unavailable store refused, by failures in a
        row (the last one repeats)."""
        self.writes = 0
        """Store writes made (each carries every session pending at the time)."""
        self._pending: dict[str, _Item] = {}
        self._task: asyncio.Task[None] | None = None
        self._last = -float("inf")
        self._hurry = asyncio.Event()  # set by flush(): stop spacing, write what is pending
        self._nudge = asyncio.Event()  # set by a change that may not wait for its session
        self._written: OrderedDict[str, float] = OrderedDict()
        """When each session's status was last written, oldest first (only the last
        ``session_interval``'s)."""

    def update(self, info: SessionInfo, patch: dict[str, Any]) -> None:
        """Router callback (sync): merge the patch into what is pending, wake the writer.
        A ``None`` value removes the field."""
        change: dict[str, Any] = dict(self._pending.get(info.key, (info, {}))[1])
        change.update(patch)
        self._pending[info.key] = (info, change)
        if not ROUTINE.issuperset(patch):
            self._nudge.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="session-status")

    async def flush(self) -> None:
        """Write everything pending now and wait until it is written."""
        self._hurry.set()
        self._nudge.set()
        try:
            while self._task is not None and not self._task.done():
                await asyncio.shield(self._task)
        finally:
            self._hurry.clear()

    async def _flush(self) -> None:
        outage = 0  # writes in a row that found the store (or journal) unavailable
        while self._pending:
            if outage:
                if self._hurry.is_set() and outage >= SHUTDOWN_TRIES:
                    self._give_up()
                    return
                await asyncio.sleep(self.retry[min(outage, len(self.retry)) - 1])
            else:
                await self._spaced()
            batch = self._take_due()
            if not batch:  # only routine changes of sessions written a moment ago
                await self._until_due()
                continue
            self._last = self.clock()
            self.writes += 1
            kept, error = await self._write_all(batch)
            if not kept:
                if outage:
                    log.info("session status written again after the store came back")
                outage = 0
                continue
            if not outage:
                log.warning(
                    "session status not written: the store is unavailable; retrying",
                    extra={"sessions": len(kept), "error": error},
                )
            outage += 1
            self._keep(kept)

    async def _spaced(self) -> None:
        """Wait until ``interval`` has passed since the last write began (or ``flush`` hurries)."""
        wait = self._last + self.interval - self.clock()
        if wait > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._hurry.wait()

    def _take_due(self) -> list[_Item]:
        """Take from what is pending every change that may be written now: all of it when
        ``flush`` hurries, else all but routine changes of sessions written less than
        ``session_interval`` ago."""
        now, written = self.clock(), self._written
        while written and next(iter(written.values())) <= now - self.session_interval:
            written.popitem(last=False)
        if self._hurry.is_set() or not written:
            due, self._pending = list(self._pending.values()), {}
        else:
            due, wait = [], {}
            for key, item in self._pending.items():
                if key in written and ROUTINE.issuperset(item[1]):
                    wait[key] = item
                else:
                    due.append(item)
            self._pending = wait
        for info, _ in due:
            written[info.key] = now
            written.move_to_end(info.key)
        return due

    async def _until_due(self) -> None:
        """Wait until the first session held back may be written again, or a change that may
        not wait comes in (or ``flush`` hurries)."""
        self._nudge.clear()
        first = min(self._written[key] for key in self._pending)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, first + self.session_interval - self.clock())):
                await self._nudge.wait()

    async def _write_all(self, items: list[_Item]) -> tuple[list[_Item], str]:
        """Write ``items`` in batches; what an unavailable store refused, and why."""
        kept: list[_Item] = []
        error = "unavailable"
        for i in range(0, len(items), MAX_BATCH):
            chunk = items[i : i + MAX_BATCH]
            try:
                await self._write(chunk)
            except Unavailable as exc:  # away for everyone: not worth trying one by one
                kept += chunk
                error = str(exc)
            except Exception:  # one bad item must not lose the others: write them alone
                kept += [item for item in chunk if not await self._write_alone(item)]
        return kept, error

    def _keep(self, items: list[_Item]) -> None:
        """Put changes that could not be written back, under whatever came in since."""
        for info, change in items:
            newer = self._pending.get(info.key)
            self._pending[info.key] = (
                (newer[0], {**change, **newer[1]}) if newer else (info, change)
            )

    def _give_up(self) -> None:
        """At shutdown with the store still away: say what is lost rather than hang."""
        log.warning(
            "session status not written: the store stayed unavailable through shutdown",
            extra={"sessions": len(self._pending), "tries": SHUTDOWN_TRIES},
        )
        self._pending = {}

    async def _write_alone(self, item: _Item) -> bool:
        """Write one session's change; False when the store is unavailable (keep it)."""
        try:
            await self._write([item])
        except Unavailable:
            return False
        except Exception as exc:  # the session may be gone; status is best effort
            log.warning(
                "session status not written",
                extra={**item[0].log_fields, "error": str(exc)},
            )
        return True

    async def _write(self, items: list[_Item]) -> None:
        """One store write for every session in ``items`` (counts and usage from the journal)."""
        now = _now()
        usage = await self.journal.totals_many([info.key for info, _ in items])
        changes = [
            (info.cell, info.name, _status_change(info, change, usage[info.key], now))
            for info, change in items
        ]
        await self.store.update_status_many("Session", changes)


def _status_change(
    info: SessionInfo, change: dict[str, Any], usage: Totals, now: str
) -> StatusChange:
    messages, prompt, completion, cost = usage

    def update(obj: dict[str, Any]) -> dict[str, Any] | None:
        if obj["metadata"].get("uid") != info.uid:
            return None
        status = dict(obj.get("status") or {})
        patch = dict(change)
        if status.get("phase") in ENDED and status.get("reason") != "DeadLettered":
            patch.pop("phase", None)  # closed, expired or done meanwhile: that stands
        for k, v in patch.items():
            if v is None:
                status.pop(k, None)
            else:
                status[k] = v
        if status.get("phase") in ("Succeeded", "Failed"):
            status.setdefault("completionTime", now)
        status["messageCount"] = messages
        status["usage"] = {
            "promptTokens": prompt, "completionTokens": completion,
            "totalTokens": prompt + completion,
        }  # fmt: skip
        if cost > 0:  # estimated from the models that answered (docs/sessions.md)
            status["usage"]["costUsd"] = usd(cost)
        status["lastActivityTime"] = now
        obj["status"] = status
        return obj

    return update
