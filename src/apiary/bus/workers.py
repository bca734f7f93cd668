"""The handler side of a subscription: ``max_in_flight`` long-lived workers, no task per message.

Each worker loops: reserve an in-flight slot, take the next item from the mailbox, turn it into a
:class:`Delivery` (the backend's ``deliver`` callback, which registers it with the tracker) and
await the handler. A handler that raises gets its delivery nak'ed after ``error_delay`` and the
error logged with the subject and message id — the worker itself never dies of a bad message.
Workers yield to the event loop every few messages even when nothing blocks, so a busy
subscription cannot starve publishers or other subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from apiary.bus.base import Delivery, Handler
from apiary.bus.inflight import InFlight
from apiary.bus.mailbox import Mailbox

log = logging.getLogger("apiary.bus")

T = TypeVar("T")
_YIELD_EVERY = 64


class WorkerPool(Generic[T]):
    def __init__(
        self,
        *,
        name: str,
        handler: Handler,
        mailbox: Mailbox[T],
        inflight: InFlight,
        deliver: Callable[[T], Delivery | None],
        give_back: Callable[[T], None],
        error_delay: float,
    ) -> None:
        self.name = name
        self._handler = handler
        self._mailbox = mailbox
        self._inflight = inflight
        self._deliver = deliver
        self._give_back = give_back
        self._error_delay = error_delay
        self._waiting: set[asyncio.Future[T | None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    def start(self, count: int) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"bus-worker:{self.name}") for _ in range(count)
        ]

    async def stop(self, *, cancel: bool = False) -> None:
        """Stop taking items; wait for running handlers (or cancel them)."""
        self.stopping = True
        self._inflight.close()
        Mailbox.release(self._waiting)
        if cancel:
            for task in self._tasks:
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self) -> None:
        inflight = self._inflight
        mailbox = self._mailbox
        handler = self._handler
        streak = 0
        while not self.stopping:
            if not await inflight.reserve():
                return
            item = mailbox.get_nowait()
            if item is None:
                streak = 0
                item = await mailbox.get(self._waiting)
                if item is None:
                    inflight.unreserve()
                    return
            elif streak >= _YIELD_EVERY:
                streak = 0
                await asyncio.sleep(0)
            if self.stopping:
                self._give_back(item)
                inflight.unreserve()
                return
            delivery = self._deliver(item)
            if delivery is None:
                inflight.unreserve()
                continue
            streak += 1
            try:
                await handler(delivery)
            except Exception:
                log.exception(
                    "bus handler failed; redelivering",
                    extra={"subject": delivery.subject, "msg_id": delivery.msg_id,
                           "delivery": delivery.num_delivered, "delay": self._error_delay},
                )  # fmt: skip
                try:
                    await delivery.nak(self._error_delay)
                except Exception:
                    log.exception(
                        "could not nak after a handler error",
                        extra={"subject": delivery.subject, "msg_id": delivery.msg_id},
                    )


__all__ = ["WorkerPool"]
