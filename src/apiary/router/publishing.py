"""Putting a step's dispatches on the bus: the envelope, its trace headers, the backlog counts
the autoscaler reads, the token budget left, and retries published after their delay.

A mixin of :class:`~apiary.router.service.Router` (see :mod:`apiary.router.core`), apart so the
router's step logic and its publishing each stay readable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from apiary.bus import Publish
from apiary.router.core import RouterCore
from apiary.router.plan import Send
from apiary.router.sessions import SessionInfo
from apiary.telemetry import hops, tracing
from apiary.waggle.envelope import Dispatch, stage_subject

log = logging.getLogger("apiary.router")


class Publishing(RouterCore):
    def _publication(self, info: SessionInfo, send: Send, tokens_left: int | None) -> Publish:
        queue = self._queues.get((info.cell, info.hive))
        if queue is not None:
            queue.published(info.key, send.id, send.attempt)
        self.backlog.published(info.cell, info.hive, send.stage, info.key, send.id, send.attempt)
        # No timeout: the drone applies its own merged guardrails (responseTimeoutSeconds).
        env = Dispatch(send.id, info.key, info.hive, send.stage, send.message,
                       attempt=send.attempt, tokens_left=tokens_left)  # fmt: skip
        subject = stage_subject(info.cell, info.hive, send.stage)
        headers = None
        if tracing.TRACER is not None:
            headers = hops.dispatch_headers(subject, info.key, info.hive, send.stage, send.id,
                                            send.attempt, tokens_left, send.message)  # fmt: skip
        return Publish(subject, env.encode(), env.msg_id, headers)

    async def _tokens_left(self, info: SessionInfo) -> int | None:
        """What is left of the session's token budget (None without one): the LLM gateway of
        the drone stops an agent's calls when its message has used it up."""
        _, policy = await self.sessions.hive(info)
        budget = policy.session_token_budget
        if budget is None:
            return None
        _, prompt, completion = await self.journal.usage(info.key)
        return max(0, budget - prompt - completion)

    async def _publish_one(self, info: SessionInfo, send: Send) -> None:
        try:
            left = await self._tokens_left(info)
            await self.bus.publish_many([self._publication(info, send, left)])
        except Exception as exc:  # the sweep republishes open dispatches later
            log.warning("retry publish failed", extra={**info.log_fields, "error": str(exc)})

    def _later(self, delay: float, coro: Any) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)
