"""WAL checkpoints for the SQLite journal, run beside the writer instead of inside a commit.

SQLite's automatic checkpoint runs in whichever commit crosses the WAL size threshold: that
commit then copies the WAL into the database and, with ``synchronous=NORMAL``, fsyncs both — tens
of milliseconds on a busy disk, during which the writer, and every commit queued behind it,
waits. The journal turns the automatic checkpoint off on its writer connection and, every
``every`` commits, runs a ``PASSIVE`` checkpoint on another connection (another thread): it
copies the bulk of the WAL without blocking the writer or any reader while the next commits
append. Then the writer checkpoints (RESTART) the few frames committed meanwhile, between two
batches, so that its next transaction finds the WAL fully copied and starts it over —
without that step the WAL would grow for as long as commits keep coming.

Durability is unchanged: a commit is acknowledged once its transaction is in the WAL, as before;
the checkpoint is what makes the WAL's contents reach the database file either way.

The checkpoint task exists only while one runs, so an idle journal holds no task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("apiary.journal")

Outcome = tuple[int, int, int]
"""What ``PRAGMA wal_checkpoint`` answers: (busy, frames in the WAL, frames checkpointed)."""


class Checkpointer:
    """Start ``run()`` (one PASSIVE checkpoint) after every ``every`` committed calls."""

    def __init__(self, run: Callable[[], Awaitable[Outcome]], every: int, where: str) -> None:
        if every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._run = run
        self.every = every
        self.where = where
        self._since = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.runs = 0  # checkpoints finished (for tests and benchmarks)
        self.last: Outcome | None = None

    def committed(self, count: int) -> None:
        """Count ``count`` more commits; start a checkpoint when enough have accumulated."""
        self._since += count
        if self._since >= self.every and self._task is None and not self._closed:
            self._since = 0
            self._task = asyncio.get_running_loop().create_task(
                self._checkpoint(), name="journal-checkpoint"
            )

    async def _checkpoint(self) -> None:
        try:
            self.last = await self._run()
            self.runs += 1
        except Exception as exc:  # the next one retries; commits are unaffected
            log.warning(
                "SQLite journal checkpoint failed", extra={"path": self.where, "error": str(exc)}
            )
        finally:
            self._task = None

    async def idle(self) -> None:
        """Wait until no checkpoint runs."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Start no more checkpoints and wait for a running one."""
        self._closed = True
        await self.idle()

    def reopen(self) -> None:
        self._closed = False
        self._since = 0


__all__ = ["Checkpointer", "Outcome"]
