"""Group commit: many concurrent ``commit`` calls, one transaction.

A transaction has a fixed cost (a thread hop and the write lock on SQLite, a few network round
trips on PostgreSQL) that dwarfs writing two rows. So callers queue their work here and a single
flusher takes everything queued so far and hands it to the backend as one batch; while that batch
is being written the next one accumulates. Under light load a batch is one call and the latency
is one transaction; under heavy load the cost per call shrinks with the batch size.

The flusher is a task that exists only while there is work, so an idle journal holds no task.
A caller cancelled before its batch was taken is dropped (nothing written); one cancelled later
may still be written, as with any request whose answer was not awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Queue items; ``flush(batch)`` writes a batch and returns one result per item, in order.

    If ``flush`` raises, every caller of that batch gets the exception — so flush must only fail
    for reasons that concern the whole batch (the database is gone), never for one bad item:
    items are checked before they are queued.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R]]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # how many flushes ran (for tests and benchmarks)
        self.items = 0  # how many items they carried

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, done))
        if self._task is None:
            self._task = loop.create_task(self._run(), name="journal-group-commit")
        return await done

    async def _run(self) -> None:
        try:
            while self._pending:
                taken = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                batch = [(item, done) for item, done in taken if not done.done()]
                if not batch:
                    continue
                try:
                    results = await self._flush([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, done in batch:
                        done.cancel()
                    raise
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                self.batches += 1
                self.items += len(batch)
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._task = None

    async def close(self) -> None:
        """Refuse new items and wait until everything queued is written."""
        self._closed = True
        while self._task is not None:
            await asyncio.shield(self._task)

    def reopen(self) -> None:
        self._closed = False


__all__ = ["GroupCommit"]
