"""A FIFO hand-off between producers and the workers of one or more subscriptions.

``asyncio.Queue`` would do, but this is on every message's path: a put hands the item straight to
the longest-waiting worker (that is what load-balances a queue group's members fairly), and a get
with items ready returns without suspending. Workers register their waiting futures in a set
their pool owns, so one member can be stopped (``release``) without disturbing the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T | None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, *, front: bool = False) -> None:
        """Hand ``item`` to a waiting worker, else queue it (redeliveries go to the front)."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(item)
                return
        if front:
            self._items.appendleft(item)
        else:
            self._items.append(item)

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self, waiting: set[asyncio.Future[T | None]]) -> T | None:
        """The next item, or None when the caller's pool released its waiters."""
        if self._items:
            return self._items.popleft()
        fut: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        waiting.add(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                item = fut.result()
                if item is not None:
                    self.put(item, front=True)
            raise
        finally:
            waiting.discard(fut)

    def drain_items(self) -> list[T]:
        """Remove and return everything queued."""
        items = list(self._items)
        self._items.clear()
        return items

    @staticmethod
    def release(waiting: set[asyncio.Future[T | None]]) -> None:
        """Wake the given waiters with None (their pool is stopping)."""
        for fut in list(waiting):
            if not fut.done():
                fut.set_result(None)


__all__ = ["Mailbox"]
