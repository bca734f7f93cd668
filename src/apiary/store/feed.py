"""One read of the change log for all the watchers that one commit wakes.

apiaryd runs half a dozen store watchers (the Queen's informers, the reference resolver, drone
notices, event metrics, API watches); a commit wakes them all in the same turn of the loop, and
each used to read and decode the same new rows of the change log — on SQLite, each read a turn
of the one connection thread that the writes also wait for. ``ChangeFeed.since`` shares one read
between the watchers woken by the same notification: the first starts it, the others take its
result (the changes after their own position).

Why that is exact: a watcher takes the store's current wake-up event *before* it reads, and every
commit sets the event that is current when it finishes. A read started by a holder of event E
sees every change committed before it started; a change committed later sets E (or a newer
event, which only a watcher that started after it can hold — and that watcher does not share E's
read), so every watcher that took E's read is woken again and reads anew. A watcher woken by its
poll timeout instead of a notification (a writer in another process that did not notify) reads
on its own (``fresh``). Readers get the same ``Change`` objects, as the memory store always
gave them: watchers must not change what they are given.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable

from apiary.store.model import Change

LIMIT = 1000
"""Most changes one read returns; a full read is not shared (there may be more)."""


class ChangeFeed:
    def __init__(self, read: Callable[[int, int], Awaitable[list[Change]]]) -> None:
        self._read = read
        self._shared: tuple[asyncio.Event, int, asyncio.Future[list[Change] | None]] | None = None
        self.reads = 0
        """Reads of the change log made (the rest were shared)."""

    async def since(self, last: int, woken: asyncio.Event, *, fresh: bool = False) -> list[Change]:
        """The changes after version ``last`` (at most ``LIMIT``), for a watcher that took the
        wake-up event ``woken`` before asking."""
        shared = self._shared
        if not fresh and shared is not None and shared[0] is woken and shared[1] <= last:
            got = await asyncio.shield(shared[2])
            if got is not None and len(got) < LIMIT:
                return got[bisect.bisect_right(got, last, key=_rv) :]
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
        result.set_result(changes)
        return changes


def _rv(change: Change) -> int:
    return change.rv


__all__ = ["LIMIT", "ChangeFeed"]
