"""What the router holds back, and what people do about it: approval gates and dead letters.

A dispatch to a stage with ``approval: required`` (or caused by an output asking for approval) is
held in the session's state until :meth:`Holds.approve` or :meth:`Holds.reject`; a dispatch that
failed every attempt is held as dead-lettered — a ``DeadLetter`` object in the store says why —
until :meth:`Holds.replay` (a new attempt, after the agent was fixed) or :meth:`Holds.purge`
(its flow fails for good). Mixed into :class:`~apiary.router.service.Router`.

The router is also where a replay's fate is learnt: when the replayed dispatch is answered (no
retry left pending, not dead again), :meth:`Holds._settle_replay` marks its DeadLetter
``Resolved`` (the replay succeeded) or ``Failed`` (it was answered by an error that is not
retried, so nothing is held any more). The API's ``Replayed`` mark means "in flight" only.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson

from apiary.errors import AlreadyExists, Conflict, NotFound
from apiary.journal import Entry
from apiary.router.core import RouterCore
from apiary.router.plan import (
    APPROVAL,
    DEAD,
    DeadLetter,
    Plan,
    Send,
    held_for,
    join,
    note,
    split,
)
from apiary.router.policy import topic_subject
from apiary.router.sessions import SessionInfo
from apiary.store.base import now_rfc3339
from apiary.waggle import Message
from apiary.waggle.envelope import Outcome

log = logging.getLogger("apiary.router")

Obj = dict[str, Any]

RESOLVED = "Resolved"
"""A dead letter whose replay was answered: the flow went on (``status.resolvedAt``)."""
REPLAY_FAILED = "Failed"
"""A dead letter whose replay was answered by an error that is not retried (``status.failedAt``,
``reason``, ``message``): nothing is held any more, only a purge is left to do."""
SETTLED = frozenset({RESOLVED, REPLAY_FAILED})


class Holds(RouterCore):
    async def approve(self, cell: str, session: str, stage: str | None = None) -> int:
        """Release the dispatches held for approval (of ``stage``, or all); how many."""
        info = await self.sessions.get(cell, session)

        def plan(state: Obj) -> Plan | None:
            es, mine = split(state)
            held = held_for(mine, APPROVAL, stage)
            if not held:
                return None
            sends = []
            for d, h in held:
                del mine["held"][d]
                sends.append(Send(d, h["stage"], h.get("message") or {},
                                  int(mine["attempts"].get(d, 0))))  # fmt: skip
            notes = [note(info.key, f"{d}#approved", h["stage"], d, {"approved": h["stage"]})
                     for d, h in held]  # fmt: skip
            left = held_for(mine, APPROVAL)
            status: Obj = (
                {"phase": "Running", "pendingApproval": None}
                if not left
                else {"pendingApproval": ",".join(sorted({h["stage"] for _, h in left}))}
            )
            return Plan(join(es, mine), notes, sends, [], status)

        done = await self._run(info, plan)
        return len(done.send) if done is not None else 0

    async def reject(self, cell: str, session: str, stage: str | None = None,
                     reason: str = "rejected by a human") -> int:  # fmt: skip
        """Fail the flows whose dispatches wait for approval (of ``stage``, or all)."""
        return await self._fail_held(cell, session, APPROVAL, stage, ("Rejected", reason))

    async def replay(self, cell: str, session: str, dispatch: str) -> bool:
        """Put a dead-lettered dispatch back on the bus (a new attempt) — ``dlq replay``."""
        info = await self.sessions.get(cell, session)

        def plan(state: Obj) -> Plan | None:
            es, mine = split(state)
            held = mine["held"].get(dispatch)
            if held is None or held.get("reason") != DEAD:
                return None
            del mine["held"][dispatch]
            attempt = int(mine["attempts"].get(dispatch, 0)) + 1
            mine["attempts"][dispatch] = attempt
            send = Send(dispatch, held["stage"], held.get("message") or {}, attempt)
            replayed = note(info.key, f"{dispatch}#replay{attempt}", held["stage"], dispatch,
                            {"replayed": held["stage"], "attempt": attempt})  # fmt: skip
            status = {"phase": "Running", "reason": None, "message": None}
            return Plan(join(es, mine), [replayed], [send], [], status)

        return await self._run(info, plan) is not None

    async def purge(self, cell: str, session: str, dispatch: str) -> bool:
        """Give a dead-lettered dispatch up: its flow fails for good — ``dlq purge``."""
        n = await self._fail_held(
            cell, session, DEAD, None, ("DeadLetterPurged", "the dead letter was purged"), dispatch
        )
        return n > 0

    async def _fail_held(
        self, cell: str, session: str, reason: str, stage: str | None,
        error: tuple[str, str], only: str | None = None,
    ) -> int:  # fmt: skip
        info = await self.sessions.get(cell, session)
        engine, policy = await self.sessions.hive(info)

        def plan(state: Obj) -> Plan | None:
            es, mine = split(state)
            held = [(d, h) for d, h in held_for(mine, reason, stage) if only in (None, d)]
            if not held:
                return None
            entries: list[Entry] = []
            result: Plan | None = None
            for d, h in held:
                del mine["held"][d]
                step = engine.on_outcome(es, d, h["stage"], [], error)
                result = self._after_engine(info, policy, step, mine, entries)
                es, mine = split(result.state)
                entries = result.entries
            assert result is not None
            if not held_for(mine, APPROVAL):
                result.status.setdefault("pendingApproval", None)
                if reason == APPROVAL:  # nothing waits any more (a job's phase is set: Failed)
                    result.status.setdefault("phase", "Running")
            return result

        done = await self._run(info, plan)
        return 0 if done is None else len(done.entries)

    async def _file_dead_letter(self, info: SessionInfo, dead: DeadLetter) -> None:
        """A durable DeadLetter object in the store, announced on the hive's dead-letter topic."""
        _, policy = await self.sessions.hive(info)
        body = {
            "apiVersion": "apiary.io/v1", "kind": "DeadLetter",
            "metadata": {"name": f"dl-{dead.dispatch}", "namespace": info.cell,
                         "labels": {"apiary.io/hive": info.hive, "apiary.io/session": info.name}},
            "spec": {"hive": info.hive, "session": info.name, "stage": dead.stage,
                     "dispatch": dead.dispatch, "attempts": dead.attempts, "reason": dead.reason,
                     "message": dead.detail, "original": dead.message,
                     "topic": policy.dead_letter_topic},
        }  # fmt: skip
        try:
            await self.sessions.store.create(body)
        except AlreadyExists:  # the same dispatch died again after a replay: refresh it
            with contextlib.suppress(NotFound, Conflict):
                current = await self.sessions.store.get(
                    "DeadLetter", info.cell, f"dl-{dead.dispatch}"
                )
                current["spec"] = body["spec"]
                updated = await self.sessions.store.update(current)
                updated["status"] = {}  # no longer Replayed: it died again
                await self.sessions.store.update(updated, subresource="status")
        with contextlib.suppress(Exception):  # an announcement; the DeadLetter object is the record
            announce = Message(body["spec"], "event", metadata={"apiary.io/dead-letter": "true"})
            await self.bus.publish(topic_subject(info.cell, policy.dead_letter_topic),
                                   orjson.dumps(announce.to_dict()))  # fmt: skip
        log.warning(
            "dead-lettered",
            extra={
                **info.log_fields,
                "stage": dead.stage,
                "attempts": dead.attempts,
                "reason": dead.reason,
            },
        )

    async def _settle_replay(
        self, info: SessionInfo, outcome: Outcome, done: Plan, error: tuple[str, str] | None
    ) -> None:
        """After the step of a retried or replayed dispatch's outcome (``attempt`` > 0): if that
        was the answer to a ``dlq replay``, its DeadLetter is settled — ``Resolved``, or
        ``Failed`` with ``error``. A retry the step scheduled, or a new death (the letter was
        refreshed to Pending), leaves it alone; so does a dispatch that never was a dead letter
        (one store read per retried success). Never breaks routing: a failed write is logged."""
        d = outcome.dispatch
        if any(s.id == d for s in done.send) or any(x.dispatch == d for x in done.dead):
            return
        now = now_rfc3339(self.sessions.store.clock)

        def change(obj: Obj) -> Obj | None:
            status = dict(obj.get("status") or {})
            if (obj.get("spec") or {}).get("session") != info.name or status.get(
                "phase"
            ) in SETTLED:
                return None
            generation = int(obj["metadata"].get("generation") or 1)
            status.update(replayedGeneration=generation)
            if error is None:
                status.update(phase=RESOLVED, resolvedAt=now)
            else:
                status.update(phase=REPLAY_FAILED, failedAt=now, reason=error[0], message=error[1])
            return {**obj, "status": status}

        try:
            await self.sessions.store.update_with_retry(
                "DeadLetter", info.cell, f"dl-{d}", change, subresource="status"
            )
        except Exception as exc:  # the letter keeps saying Replayed; routing goes on
            log.warning(
                "could not settle a dead letter",
                extra={**info.log_fields, "dead_letter": f"dl-{d}", "error": str(exc)},
            )
