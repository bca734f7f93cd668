"""What the router's mixins (holds, recovery, late outputs, cancels, publishing) may rely on:
the attributes and the step machinery :class:`~apiary.router.service.Router` provides. Declared
once here (for the type checker only), so that each mixin lives in its own module without
importing the router that mixes it in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from apiary.bus import Bus, Publish
from apiary.journal import Entry, Journal
from apiary.router.plan import Plan, Send
from apiary.router.policy import HiveQueue, StageBacklog
from apiary.router.sessions import SessionDirectory, SessionInfo

if TYPE_CHECKING:
    from apiary.patterns import Step
    from apiary.router.policy import HivePolicy
    from apiary.waggle.envelope import Outcome

Obj = dict[str, Any]


class RouterCore:
    sessions: SessionDirectory
    journal: Journal
    bus: Bus
    on_status: Callable[[SessionInfo, Obj], None] | None
    _orphaned: set[str]
    _queues: dict[tuple[str, str], HiveQueue]
    backlog: StageBacklog
    _timers: set[asyncio.TimerHandle]
    _tasks: set[asyncio.Task[None]]

    if TYPE_CHECKING:

        async def _run(
            self, info: SessionInfo, make: Callable[[Obj], Plan | None]
        ) -> Plan | None: ...

        def _after_engine(
            self, info: SessionInfo, policy: HivePolicy, step: Step, mine: Obj,
            extra: list[Entry], outcome: Outcome | None = None,
        ) -> Plan: ...  # fmt: skip

        @staticmethod
        def _entries(info: SessionInfo, step: Step, outcome: Outcome | None) -> list[Entry]: ...

        async def _tokens_left(self, info: SessionInfo) -> int | None: ...

        def _publication(
            self, info: SessionInfo, send: Send, tokens_left: int | None
        ) -> Publish: ...
