"""Late outputs: the lines an agent prints for a message after its answer (docs/waggle.md, "Turns").

A drone reports them as further Outcomes of the dispatch, marked ``late`` with an ``offset``
(their index among the dispatch's outputs). They are always recorded; a flow that listens to the
dispatch (a hierarchical supervisor's) routes them like an answer — tasks to workers, or the
final answer.
Outcomes may be taken out of order across router replicas or in-flight slots: a late part that
arrives before its answer, or before the lines printed ahead of it, is handed back to the bus for
a moment (the flow sees an agent's lines in the order printed), and an old attempt's lines are
recorded only. Mixed into :class:`~apiary.router.service.Router`.
"""

from __future__ import annotations

import logging
from typing import Any

from apiary.bus import Delivery
from apiary.router.core import RouterCore
from apiary.router.plan import Plan, split
from apiary.router.sessions import SessionInfo
from apiary.telemetry import hops, tracing
from apiary.waggle import Message
from apiary.waggle.envelope import Outcome

log = logging.getLogger("apiary.router")

Obj = dict[str, Any]

EARLY_RETRY = 0.05
"""Seconds before a late part whose answer is not in yet is offered again."""

EARLY_GIVE_UP = 100
"""Deliveries after which such a part is recorded without its answer (and a warning logged)."""


class LateOutputs(RouterCore):
    async def _late_outcome(self, info: SessionInfo, outcome: Outcome, delivery: Delivery) -> None:
        engine, policy = await self.sessions.hive(info)
        outputs = [Message.from_dict(o, default_type="result") for o in outcome.outputs]
        d = outcome.dispatch
        early = False
        patient = delivery.num_delivered < EARLY_GIVE_UP

        def plan(state: Obj) -> Plan | None:
            nonlocal early
            early = False  # run again on the journal's state: decide afresh
            es, mine = split(state)
            if d in engine.open_dispatches(es) and d not in mine["held"]:
                if int(mine["attempts"].get(d, 0)) != outcome.attempt:
                    return None  # lines of an attempt that failed and is being retried
                if patient:
                    early = True  # its answer is not in yet
                    return None
                log.warning("recording late outputs without their answer",
                            extra={**info.log_fields, "dispatch": d})  # fmt: skip
            elif engine.late_gap(es, d, outcome.offset) and patient:
                early = True  # lines printed before these are not in yet
                return None
            step = engine.on_late(es, d, outcome.stage, outcome.offset, outputs)
            if not step.records:
                return None  # seen before
            return self._after_engine(info, policy, step, mine, [], outcome)

        if tracing.TRACER is None:
            await self._run(info, plan)
        else:  # a child of the agent's delivery, whose traceparent the lines carry
            with hops.outcome_step(delivery.headers, outcome.outputs, info.key, info.hive,
                                   outcome.stage, d, outcome.attempt, "late outcome"):  # fmt: skip
                await self._run(info, plan)
        if early:
            await delivery.nak(EARLY_RETRY)
        else:
            await delivery.ack()
