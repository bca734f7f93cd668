"""Closing a session stops its work: what is queued or in flight is cancelled, and recorded.

:meth:`Cancelling.cancel` ends every flow of the session in one step — each open dispatch and
each input in progress gets an ``error`` record (reason ``Cancelled``), approval holds are
dropped (dead letters stay: they are the DLQ's) — so nothing more is dispatched and a sweep never
sends the cancelled dispatches again. Then it tells the drones of every stage that had one open
(a :class:`~apiary.waggle.envelope.Cancel` on the stage's cancel subject, a copy per drone): they
drop the session's queued dispatches and send the agent holding one of its messages a cancel
notice on the Waggle channel (``type: event``, ``metadata.cancel: "true"``). Outcomes that come
after are duplicates, recorded nowhere. Mixed into :class:`~apiary.router.service.Router`.
"""

from __future__ import annotations

import logging
from typing import Any

from apiary.bus import Publish
from apiary.errors import NotFound
from apiary.router.core import RouterCore
from apiary.router.plan import DEAD, Plan, join, split
from apiary.router.sessions import SessionInfo
from apiary.waggle.envelope import Cancel, cancel_subject

log = logging.getLogger("apiary.router")

Obj = dict[str, Any]


class Cancelling(RouterCore):
    async def cancel_ended(self, session: Obj) -> int:
        """Cancel the work of a Session object that just ended another way (the reaper timed it
        out); its status says why."""
        info = self.sessions.remember(session)
        status = session.get("status") or {}
        why = f"the session ended ({status.get('phase')}: {status.get('message') or ''})"
        try:
            return await self.cancel(info, "Cancelled", why.replace(": )", ")"))
        except NotFound:  # its hive is gone: nothing of it runs
            return 0

    async def cancel(
        self, info: SessionInfo, reason: str = "Cancelled", message: str = "the session was closed"
    ) -> int:
        """End the session's flows and cancel its open dispatches; returns how many there were."""
        engine, _ = await self.sessions.hive(info)
        stages: dict[str, list[str]] = {}

        def plan(state: Obj) -> Plan | None:
            es, mine = split(state)
            stages.clear()
            for d, entry in (es.get("open") or {}).items():
                stages.setdefault(entry["stage"], []).append(d)
            step = engine.cancel(es, reason, message)
            if not step.records:
                return None
            mine["held"] = {d: h for d, h in mine["held"].items() if h.get("reason") == DEAD}
            mine["attempts"] = {}
            return Plan(join(step.state, mine), self._entries(info, step, None), step=step)

        if await self._run(info, plan) is None:
            return 0
        notices = [
            Publish(cancel_subject(info.cell, info.hive, stage), c.encode(), c.msg_id)
            for stage, ids in stages.items()
            for c in (Cancel(info.key, ids, reason, message),)
        ]
        try:
            await self.bus.publish_many(notices)
        except Exception as exc:  # the step is committed: late answers are duplicates anyway
            log.warning("cancel notices not sent", extra={**info.log_fields, "error": str(exc)})
        return sum(len(ids) for ids in stages.values())
