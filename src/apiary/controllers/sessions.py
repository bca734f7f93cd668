"""The session reaper: idle timeout, maximum duration, and what happens to an ended session.

Level-triggered over every open Session (periodic, cheap: memory reads and some arithmetic — the
Sessions and Hives come from a watch-fed cache, :class:`apiary.controllers.cache.Informer`,
listed once when ``run`` starts and again after a 410 Gone, never per pass):

* ``timeoutMinutes`` — no activity (last message settled, or creation) for that long → phase
  ``TimedOut``, reason ``IdleTimeout``;
* ``maxDurationMinutes`` — alive that long since creation → ``TimedOut``, reason ``MaxDuration``.

The Session's own ``spec`` values win over its Hive's ``spec.session``. An ended session (any phase
but the open ones) whose Hive says ``persistOnTerminate: false`` is deleted with its transcript
after ``retention`` — long enough for ``apiaryctl run`` and job clients to read the result.

The cache may be a moment behind the store, so nothing is decided from it alone: a time-out is a
read-modify-write of the fresh Session (which must still be open), and a deletion is conditioned
on the resourceVersion the pass saw (a Session changed or re-created since is left to the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apiary.controllers.cache import Informer
from apiary.errors import Conflict, NotFound
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
    KINDS = frozenset({"Session", "Hive"})
    """What a pass reads (from :attr:`cache`)."""

    def __init__(
        self,
        store: Store,
        journal: Journal | None = None,
        settings: ReaperSettings | None = None,
        *,
        on_deleted: Callable[[Obj], Awaitable[None]] | None = None,
        on_ended: Callable[[Obj], Awaitable[None]] | None = None,
        cache: Informer | None = None,
    ) -> None:
        self.store = store
        self.cache = cache if cache is not None else Informer(store, self.KINDS)
        """The Sessions and Hives a pass reads; may be shared (apiaryd gives the reaper and the
        autoscaler one)."""
        if not self.KINDS.issubset(self.cache.kinds):
            raise ValueError(f"the session reaper's cache must hold {sorted(self.KINDS)}")
        self.journal = journal
        self.settings = settings or ReaperSettings()
        self.on_deleted = on_deleted
        """Called with each Session the reaper deletes (apiaryd clears its Comb memory)."""
        self.on_ended = on_ended
        """Called with each Session the reaper timed out (apiaryd's router cancels its work, as
        a close does)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop``, over the cache (run meanwhile)."""
        await self.cache.run_passes(self.run_once, self.settings.period, stop, "session reaper")

    async def run_once(self) -> None:
        """One pass over every Session. Outside ``run`` (no cache running) the pass lists the
        Sessions and Hives once, as a one-off."""
        await self.cache.prepare()
        now = self.settings.clock()
        for s in self.cache.list("Session"):
            meta = s["metadata"]
            cell = meta.get("namespace") or "default"
            hive = self.cache.get("Hive", cell, str((s.get("spec") or {}).get("hiveRef", "")))
            limits = dict((((hive or {}).get("spec") or {}).get("session")) or {})
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
        log.info(
            "session timed out",
            extra={"cell": meta.get("namespace"), "session": meta["name"], "reason": reason[0],
                   "detail": reason[1]},
        )  # fmt: skip
        ended = (updated or {}).get("status") or {}
        if self.on_ended is not None and updated and ended.get("completionTime") == _ts(now):
            try:
                await self.on_ended(updated)
            except Exception:  # the status is written; the sweep of late answers is harmless
                log.exception(
                    "cancelling a timed-out session's work failed",
                    extra={"cell": meta.get("namespace"), "session": meta["name"]},
                )

    async def _forget(self, s: Obj) -> None:
        meta = s["metadata"]
        cell = meta.get("namespace") or "default"
        try:
            await self.store.delete(
                "Session", cell, meta["name"], resource_version=meta.get("resourceVersion")
            )
        except NotFound:
            pass  # deleted already: the transcript and the memory go all the same
        except Conflict:
            return  # changed (or re-created) since the pass saw it: the next pass decides
        if self.journal is not None:
            await self.journal.delete(f"{cell}/{meta['name']}")
        if self.on_deleted is not None:
            await self.on_deleted(s)
