"""Supervised background tasks: the first one to fail cancels the others and is re-raised.

The daemon runs the HTTP server and every controller under one supervisor, so a crashed
controller never leaves a half-alive control plane behind: the process exits with the error and
its service manager restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from apiary.logging import get_logger

log = get_logger("apiary.supervisor")

TaskFactory = Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(self) -> None:
        self._factories: list[tuple[str, TaskFactory]] = []
        self._tasks: dict[asyncio.Future[Any], str] = {}

    def add(self, name: str, factory: TaskFactory) -> None:
        """Register a task to run; call before :meth:`run`."""
        self._factories.append((name, factory))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._factories]

    async def run(self, until: asyncio.Event) -> None:
        """Run every task until ``until`` is set (clean stop) or one fails (re-raised).

        A task that returns on its own is done and simply dropped."""
        for name, factory in self._factories:
            task = asyncio.ensure_future(factory())
            if isinstance(task, asyncio.Task):
                task.set_name(name)
            self._tasks[task] = name
        stopper: asyncio.Future[Any] = asyncio.ensure_future(until.wait())
        try:
            while self._tasks:
                waiting: set[asyncio.Future[Any]] = {*self._tasks, stopper}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                for finished in done:
                    name = self._tasks.pop(finished)
                    if finished.cancelled():
                        raise asyncio.CancelledError(f"task {name} was cancelled")
                    exc = finished.exception()
                    if exc is not None:
                        log.error("background task failed", task=name, error=repr(exc))
                        raise exc
                    log.info("background task finished", task=name)
            await stopper
        finally:
            stopper.cancel()
            await self.cancel_all()

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
