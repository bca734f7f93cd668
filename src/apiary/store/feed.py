"""One read of the change log for all of this process's watchers, not one each.

apiaryd runs half a dozen store watchers (the Queen's informers, the reference resolver, drone
notices, event metrics, API watches); a commit wakes them all, and each used to read and decode
the same new rows of the change log — on SQLite, each read a turn of the one connection thread
that the writes also wait for. ``ChangeFeed`` keeps the newest changes it has read (a contiguous
run of versions) and serves a watcher from them while they reach past its position; only a
watcher that has caught up with them reads the log, and watchers woken by the same notification
share that read.

Why that is exact: whatever is served is a contiguous run of versions straight after the
watcher's own, as a read would return. The one decision a watcher makes on it — "nothing new,
wait" — comes only from a read, own or shared: a watcher takes the store's current wake-up event
*before* it asks, every commit sets the event that is current when it finishes, and a shared read
is taken only by holders of the event its reader held. A read started by a holder of event E sees
every change committed before it started; a change committed later sets E (or a newer event,
which no holder of E waits on), so each watcher that took E's read is woken again. A watcher woken
by its poll timeout instead (a writer in another process that did not notify) reads on its own
(``fresh``). Watchers get the same ``Change`` objects, as the memory store always gave them:
they must not change what they are given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from apiary.store.model import Change

LIMIT = 1000
"""Most changes one read (or one answer) carries; a full read is not shared (there may be more)."""
KEEP = 2048
"""Most recent changes kept for watchers that are behind."""


class ChangeFeed:
    def __init__(self, read: Callable[[int, int], Awaitable[list[Change]]]) -> None:
        self._read = read
        self._recent: list[Change] = []  # contiguous versions, oldest first
        self._shared: tuple[asyncio.Event, int, asyncio.Future[list[Change] | None]] | None = None
        self.reads = 0
        """Reads of the change log made (every other answer came from what they read)."""

    async def since(self, last: int, woken: asyncio.Event, *, fresh: bool = False) -> list[Change]:
        """The changes after version ``last`` (at most ``LIMIT``), for a watcher that took the
        wake-up event ``woken`` before asking."""
        kept = self._after(last)
        if kept:
            return kept
        shared = self._shared
        if not fresh and shared is not None and shared[0] is woken and shared[1] <= last:
            got = await asyncio.shield(shared[2])
            if got is not None and len(got) < LIMIT:
                return [c for c in got if c.rv > last]
        result: asyncio.Future[list[Change] | None] = asyncio.get_running_loop().create_future()
        self._shared = (woken, last, result)
        self.reads += 1
        try:
            changes = await self._read(last, LIMIT)
        except BaseException:
            result.set_result(None)  # the others read on their own
            if self._shared is not None and self._shared[2] is result:
                self._shared = None
            raise
        self._keep(changes)
        result.set_result(changes)
        return changes

    def _after(self, last: int) -> list[Change]:
        recent = self._recent
        if not recent or not recent[0].rv <= last + 1 <= recent[-1].rv:
            return []
        start = last + 1 - recent[0].rv
        return recent[start : start + LIMIT]

    def _keep(self, changes: list[Change]) -> None:
        if not changes:
            return
        recent = self._recent
        if recent and changes[0].rv <= recent[-1].rv + 1 <= changes[-1].rv:
            recent.extend(changes[recent[-1].rv + 1 - changes[0].rv :])
        elif not recent or changes[0].rv > recent[-1].rv + 1:
            self._recent = recent = list(changes)  # newer, not adjoining: start over
        # (older than what is kept, or within it: a watcher far behind; nothing to keep)
        if len(recent) > KEEP:
            del recent[: len(recent) - KEEP]


__all__ = ["KEEP", "LIMIT", "ChangeFeed"]
