"""The session reaper: idle timeout, maximum duration, and what happens to an ended session.

Level-triggered over every open Session (periodic, cheap: a list and some arithmetic):

* ``timeoutMinutes`` — no activity (last message settled, or creation) for that long → phase
  ``TimedOut``, reason ``IdleTimeout``;
* ``maxDurationMinutes`` — alive that long since creation → ``TimedOut``, reason ``MaxDuration``.

The Session's own ``spec`` values win over its Hive's ``spec.session``. An ended session (any phase
but the open ones) whose Hive says ``persistOnTerminate: false`` is deleted with its transcript
after ``retention`` — long enough for ``apiaryctl run`` and job clients to read the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apiary.errors import NotFound
from apiary.journal import Journal
from apiary.router.sessions import OPEN_PHASES
from apiary.store import Store

log = logging.getLogger("apiary.sessions")

Obj = dict[str, Any]


@dataclass
class ReaperSettings:
    period: float = 5.0
    """Seconds between passes."""

    retention: timedelta = timedelta(minutes=10)
    """How long an ended non-persistent session stays readable before it is deleted."""

    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """Time source; inject a fake one in tests."""


def _parse(ts: Any) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return None


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SessionReaper:
    def __init__(
        self,
        store: Store,
        journal: Journal | None = None,
        settings: ReaperSettings | None = None,
        *,
        on_deleted: Callable[[Obj], Awaitable[None]] | None = None,
        on_ended: Callable[[Obj], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.settings = settings or ReaperSettings()
        self.on_deleted = on_deleted
        """Called with each Session the reaper deletes (apiaryd clears its Comb memory)."""
        self.on_ended = on_ended
        """Called with each Session the reaper timed out (apiaryd's router cancels its work, as
        a close does)."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # retried next period; a controller must not die of one object
                log.exception("session reaper pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.period)

    async def run_once(self) -> None:
        now = self.settings.clock()
        hives: dict[tuple[str, str], Obj] = {}
        for s in (await self.store.list("Session")).items:
            meta = s["metadata"]
            cell, hive_name = (
                meta.get("namespace") or "default",
                (s.get("spec") or {}).get("hiveRef", ""),
            )
            if (cell, hive_name) not in hives:
                try:
                    hives[(cell, hive_name)] = await self.store.get("Hive", cell, hive_name)
                except NotFound:
                    hives[(cell, hive_name)] = {}
            limits = dict(((hives[(cell, hive_name)].get("spec") or {}).get("session")) or {})
            await self._reconcile(s, limits, now)

    async def _reconcile(self, s: Obj, limits: Obj, now: datetime) -> None:
        spec, status, meta = s.get("spec") or {}, s.get("status") or {}, s["metadata"]
        phase = status.get("phase") or ""
        created = _parse(meta.get("creationTimestamp")) or now
        if phase in OPEN_PHASES:
            idle = spec.get("timeoutMinutes") or limits.get("timeoutMinutes")
            longest = spec.get("maxDurationMinutes") or limits.get("maxDurationMinutes")
            active = _parse(status.get("lastActivityTime")) or created
            reason = None
            if longest and now - created >= timedelta(minutes=float(longest)):
                reason = ("MaxDuration", f"the session reached its maximum of {longest} minutes")
            elif idle and now - active >= timedelta(minutes=float(idle)):
                reason = ("IdleTimeout", f"no activity for {idle} minutes")
            if reason is not None:
                await self._end(s, reason, now)
            return
        if limits.get("persistOnTerminate") is False:
            ended = _parse(status.get("completionTime")) or created
            if now - ended >= self.settings.retention:
                await self._forget(s)

    async def _end(self, s: Obj, reason: tuple[str, str], now: datetime) -> None:
        meta = s["metadata"]

        def change(obj: Obj) -> Obj | None:
            status = dict(obj.get("status") or {})
            if (status.get("phase") or "") not in OPEN_PHASES:
                return None
            status.update(phase="TimedOut", reason=reason[0], message=reason[1],
                          completionTime=_ts(now))  # fmt: skip
            obj["status"] = status
            return obj

        updated = await self.store.update_with_retry(
            "Session", meta.get("namespace") or "default", meta["name"], change,
            subresource="status",
        )  # fmt: skip
        log.info("session %s/%s timed out: %s", meta.get("namespace"), meta["name"], reason[1])
        ended = (updated or {}).get("status") or {}
        if self.on_ended is not None and updated and ended.get("completionTime") == _ts(now):
            try:
                await self.on_ended(updated)
            except Exception:  # the status is written; the sweep of late answers is harmless
                log.exception("session %s/%s: cancelling its work failed", meta.get("namespace"),
                              meta["name"])  # fmt: skip

    async def _forget(self, s: Obj) -> None:
        meta = s["metadata"]
        cell = meta.get("namespace") or "default"
        with contextlib.suppress(NotFound):
            await self.store.delete("Session", cell, meta["name"])
        if self.journal is not None:
            await self.journal.delete(f"{cell}/{meta['name']}")
        if self.on_deleted is not None:
            await self.on_deleted(s)
