"""What the router does after a crash: publish again what the bus may have lost.

The journal outlives the in-process bus (and a retry waiting on a timer): :meth:`Recovery.sweep`
republishes every open, not held dispatch older than a moment, at its current attempt, and
:meth:`Recovery._redrive` does the same for one session when a re-sent input or a redelivered
outcome shows a publish may have been lost. Republishing is harmless: ids are the same, the bus
drops a copy inside its dedupe window and the router records only the first answer. A session
whose hive is gone ends Failed instead of stopping the sweep. Mixed into
:class:`~apiary.router.service.Router`.
"""

from __future__ import annotations

import logging
from typing import Any

from apiary.errors import NotFound
from apiary.journal import Entry
from apiary.router.core import RouterCore
from apiary.router.plan import Send, split
from apiary.router.sessions import SessionInfo

log = logging.getLogger("apiary.router")

Obj = dict[str, Any]


class Recovery(RouterCore):
    async def sweep(self, older_than: float) -> int:
        """Publish again every dispatch that has no outcome, is older than ``older_than`` and is
        not held (approval, dead letter) — at its current attempt.

        After a crash of an embedded apiaryd the in-process bus lost what it held; the journal did
        not. Republishing is harmless: ids are the same, duplicates are dropped by the router."""
        count = 0
        after: Entry | None = None
        while True:
            entries = await self.journal.open_dispatches(older_than, limit=1000, after=after)
            fresh = [e for e in entries if e.created <= older_than]
            if not fresh:
                return count
            after = entries[-1]
            states: dict[str, Obj] = {}
            lefts: dict[str, int | None] = {}
            items = []
            for e in fresh:
                info = await self.sessions.get_by_key(e.session)
                if info is None or e.session in self._orphaned:
                    continue
                if e.session not in states:
                    try:
                        lefts[e.session] = await self._tokens_left(info)
                    except NotFound as exc:  # its hive was deleted under it: end it, go on
                        self._end_orphaned(info, exc)
                        continue
                    states[e.session] = split((await self.journal.load(e.session)).state)[1]
                mine = states[e.session]
                if e.id in mine["held"]:
                    continue
                send = Send(e.id, e.stage or "", e.message, int(mine["attempts"].get(e.id, 0)))
                items.append(self._publication(info, send, lefts[e.session]))
            if items:
                await self.bus.publish_many(items)
            count += len(items)
            if len(entries) < 1000:
                return count

    def _end_orphaned(self, info: SessionInfo, exc: NotFound) -> None:
        """A session whose hive is gone cannot go on: it ends Failed with the reason (once per
        process), and its open work is left in the journal for ``dlq``/transcript readers. The
        sweep must never stop the router over it (that stopped apiaryd on every start)."""
        self._orphaned.add(info.key)
        log.warning(
            "session's hive not found; ending it", extra={**info.log_fields, "error": exc.message}
        )
        if self.on_status is not None:
            self.on_status(info, {"phase": "Failed", "reason": "HiveNotFound",
                                  "message": exc.message})  # fmt: skip

    async def _redrive(self, info: SessionInfo) -> int:
        """Publish again the session's open, not held dispatches at their current attempt.

        For the moments a step's publish may have been lost (a crash between commit and
        publish shows up as a re-sent input or a redelivered outcome): the same ``msg_id`` is
        dropped by the bus inside its dedupe window, and a copy that still gets through is
        answered twice at worst — the router records only the first answer."""
        engine, _ = await self.sessions.hive(info)
        es, mine = split((await self.journal.load(info.key)).state)
        sends = []
        for d in engine.open_dispatches(es):
            entry = None if d in mine["held"] else await self.journal.get(info.key, d)
            if entry is not None and entry.kind == "dispatch":
                attempt = int(mine["attempts"].get(d, 0))
                sends.append(Send(d, entry.stage or "", entry.message, attempt))
        left = await self._tokens_left(info) if sends else None
        items = [self._publication(info, send, left) for send in sends]
        if items:
            await self.bus.publish_many(items)
            log.info(
                "republished open dispatches", extra={**info.log_fields, "dispatches": len(items)}
            )
        return len(items)
