"""Leader election over the store: one replica runs the controllers at a time.

A Lease is a plain object in the store (kind ``Lease``, cluster-scoped, not served by the API)
holding ``holderIdentity``, ``renewTime`` and ``leaseDurationSeconds``. A candidate takes the lease
when it is absent or expired, and the leader renews it; every write is conditioned on the
resourceVersion it read, so of two candidates racing for an expired lease exactly one wins (the
other gets 409). This works the same on SQLite, PostgreSQL and memory — on PostgreSQL the
store's commit-ordered versions make it a real distributed lock among apiaryd replicas.

A leader that fails to renew before its lease runs out stops leading (its controllers are
cancelled) before anyone else may take over: it gives up at ``renew_deadline`` < duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apiary.errors import AlreadyExists, Conflict, NotFound
from apiary.store import Store

log = logging.getLogger("apiary.leader")

LEASE_KIND = "Lease"


@dataclass
class LeaderSettings:
    """How the controllers' leader is chosen."""

    name: str = "apiary-controllers"
    """The lease's name; one per group of controllers that must not run twice."""

    identity: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    """This candidate's identity, unique per process."""

    lease_seconds: float = 15.0
    """How long a lease holds without renewal."""

    renew_deadline_seconds: float = 10.0
    """A leader that could not renew for this long stops leading (must be < lease_seconds)."""

    retry_seconds: float = 2.0
    """How often a candidate tries to acquire, and a leader renews."""

    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """Time source; inject a fake one in tests."""


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


class LeaderElector:
    """Acquire, renew and release one lease in the store."""

    def __init__(self, store: Store, settings: LeaderSettings | None = None) -> None:
        self.store = store
        self.settings = settings or LeaderSettings()
        self.is_leader = False

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True while this candidate holds the lease."""
        s = self.settings
        now = s.clock()
        spec = {
            "holderIdentity": s.identity,
            "renewTime": _ts(now),
            "leaseDurationSeconds": s.lease_seconds,
        }
        try:
            lease = await self.store.get(LEASE_KIND, "", s.name)
        except NotFound:
            try:
                await self.store.create({
                    "apiVersion": "apiary.io/v1", "kind": LEASE_KIND,
                    "metadata": {"name": s.name}, "spec": spec | {"acquireTime": _ts(now)},
                })  # fmt: skip
                return self._became(True)
            except AlreadyExists:
                return self._became(False)
        held = lease.get("spec") or {}
        holder = held.get("holderIdentity")
        renewed = _parse(held.get("renewTime"))
        duration = float(held.get("leaseDurationSeconds") or s.lease_seconds)
        expired = renewed is None or now >= renewed + timedelta(seconds=duration)
        if holder != s.identity and not expired:
            return self._became(False)
        if holder != s.identity:
            spec["acquireTime"] = _ts(now)
            spec["transitions"] = int(held.get("transitions") or 0) + 1
        else:
            spec["acquireTime"] = held.get("acquireTime") or _ts(now)
            spec["transitions"] = int(held.get("transitions") or 0)
        lease["spec"] = spec
        try:
            await self.store.update(lease)  # conditioned on the resourceVersion we read
        except (Conflict, NotFound):
            return self._became(False)
        return self._became(True)

    def _became(self, leader: bool) -> bool:
        if leader != self.is_leader:
            log.info(
                "acquired leadership" if leader else "lost leadership",
                extra={"lease": self.settings.name},
            )
        self.is_leader = leader
        return leader

    async def release(self) -> None:
        """Give the lease up at once (graceful shutdown), so another replica need not wait."""
        if not self.is_leader:
            return
        with contextlib.suppress(Exception):
            lease = await self.store.get(LEASE_KIND, "", self.settings.name)
            if (lease.get("spec") or {}).get("holderIdentity") == self.settings.identity:
                lease["spec"]["renewTime"] = _ts(datetime(1970, 1, 1, tzinfo=UTC))
                await self.store.update(lease)
        self.is_leader = False

    async def run(
        self,
        lead: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
        stop: asyncio.Event | None = None,
    ) -> None:
        """Campaign until ``stop``; while leader, run ``lead(stop_leading)``.

        ``lead`` is started on acquiring and cancelled (after its stop event is set) when
        renewal fails for ``renew_deadline_seconds``; then the campaign goes on.
        """
        stop = stop or asyncio.Event()
        s = self.settings
        try:
            while not stop.is_set():
                if await self._attempt():
                    await self._lead(lead, stop)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), s.retry_seconds)
        finally:
            await self.release()

    async def _attempt(self) -> bool | None:
        """True/False as the lease says; None when the store could not be asked."""
        try:
            return await self.try_acquire_or_renew()
        except Exception as exc:  # the store is away: try again next round
            log.warning(
                "leader election failed", extra={"lease": self.settings.name, "error": str(exc)}
            )
            return None

    async def _lead(
        self, lead: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop: asyncio.Event
    ) -> None:
        s = self.settings
        stop_leading = asyncio.Event()
        task = asyncio.create_task(lead(stop_leading), name=f"leader:{s.name}")
        last_renewal = s.clock()
        try:
            while not stop.is_set() and not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), s.retry_seconds)
                if stop.is_set():
                    break
                held = await self._attempt()
                if held:
                    last_renewal = s.clock()
                elif held is False:
                    break  # another candidate holds it now
                elif (s.clock() - last_renewal).total_seconds() >= s.renew_deadline_seconds:
                    self._became(False)
                    break
        finally:
            stop_leading.set()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # a controller failure propagates
