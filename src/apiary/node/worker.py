"""A drone's bus side: take dispatches for its stage, hand them to the agent, publish outcomes.

One subscription per ready drone, in the stage's queue group, so each dispatch reaches exactly
one replica. The order per dispatch is: deliver to the agent → publish the Outcome → ack. A crash
anywhere before the ack means redelivery; on a redelivery the worker first asks the control plane
whether the dispatch already has an outcome recorded, so the agent is not asked twice for work
whose answer exists (docs/sessions.md, "Effectively once").

While the agent works, the delivery is marked in progress every ``ack_wait / 3`` seconds, so a
long message is not redelivered to another drone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apiary.bus import Bus, Delivery, Subscription
from apiary.node.interfaces import AgentCrashed, AgentNotReady, AgentProtocolError, ResponseTimeout
from apiary.node.keeper import Keeper
from apiary.waggle import Message
from apiary.waggle.envelope import (
    Dispatch,
    EnvelopeError,
    Outcome,
    outcome_subject,
    stage_group,
    stage_subject,
)

log = logging.getLogger("apiary.node.worker")

AnsweredCheck = Callable[[str, str], Awaitable[bool]]
"""(session key, dispatch id) → True when the control plane already has its outcome."""

RETRY_DELAY = 0.05
"""Seconds before a dispatch this drone could not take is offered again (to any replica)."""


class StageWorker:
    def __init__(
        self,
        bus: Bus,
        keeper: Keeper,
        *,
        cell: str,
        hive: str,
        stage: str,
        drone: str,
        guardrails: dict[str, Any] | None = None,
        answered: AnsweredCheck | None = None,
        ack_wait: float = 30.0,
    ) -> None:
        self.bus = bus
        self.keeper = keeper
        self.cell, self.hive, self.stage, self.drone = cell, hive, stage, drone
        timeout = (guardrails or {}).get("responseTimeoutSeconds")
        self.timeout: float | None = float(timeout) if timeout else None
        self.answered = answered
        self.ack_wait = max(ack_wait, (self.timeout or 0) + 5)
        self._out = outcome_subject(cell, hive)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self.bus.subscribe(
                stage_subject(self.cell, self.hive, self.stage),
                stage_group(self.cell, self.hive, self.stage),
                self.handle,
                max_in_flight=self.keeper.config.concurrency,
                ack_wait=self.ack_wait,
            )

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.drain()

    async def handle(self, delivery: Delivery) -> None:
        try:
            dispatch = Dispatch.decode(delivery.data)
            message = Message.from_dict(dispatch.message)
        except (EnvelopeError, ValueError) as exc:
            log.warning("drone %s: dropping a malformed dispatch: %s", self.drone, exc)
            await delivery.term()
            return
        if (
            delivery.num_delivered > 1
            and self.answered is not None
            and await self.answered(dispatch.session, dispatch.dispatch)
        ):
            await delivery.ack()
            return
        t0 = time.perf_counter()
        error: tuple[str, str] | None = None
        outputs: list[Message] = []
        heartbeat = _KeepAlive(delivery, self.ack_wait / 3)
        try:
            outputs = await self.keeper.deliver(message, timeout=dispatch.timeout or self.timeout)
        except (AgentCrashed, AgentNotReady):
            await delivery.nak(RETRY_DELAY)  # another replica (or this one, restarted) takes it
            return
        except ResponseTimeout as exc:
            error = ("ResponseTimeout", str(exc))
        except AgentProtocolError as exc:
            error = ("AgentProtocolError", str(exc))
        finally:
            heartbeat.cancel()
        outcome = Outcome(
            dispatch.dispatch, dispatch.session, dispatch.hive, dispatch.stage, self.drone,
            [o.to_dict() for o in outputs], (time.perf_counter() - t0) * 1000.0, error,
            dispatch.attempt,
        )  # fmt: skip
        await self.bus.publish(self._out, outcome.encode(), msg_id=outcome.msg_id)
        await delivery.ack()


class _KeepAlive:
    """Marks a delivery in progress every ``period`` seconds until cancelled — a timer, not a
    task, so the common case (an answer well within the period) costs one ``call_later``."""

    __slots__ = ("delivery", "handle", "period", "tasks")

    def __init__(self, delivery: Delivery, period: float) -> None:
        self.delivery = delivery
        self.period = period
        self.tasks: set[asyncio.Task[None]] = set()
        self.handle = asyncio.get_running_loop().call_later(period, self._tick)

    def _tick(self) -> None:
        task = asyncio.ensure_future(self.delivery.in_progress())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.handle = asyncio.get_running_loop().call_later(self.period, self._tick)

    def cancel(self) -> None:
        self.handle.cancel()
