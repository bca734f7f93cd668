"""A de-duplicating work queue, as in client-go: a key waiting in the queue is not added twice,
and a key being processed is never handed to a second worker — a change arriving meanwhile
marks it dirty and it is queued again when the first reconcile is done. Many watch events for
one Hive therefore cost at most one extra reconcile, and two workers never race on one object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def __len__(self) -> int:
        return len(self._dirty)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being processed."""
        return not self._dirty and not self._processing
