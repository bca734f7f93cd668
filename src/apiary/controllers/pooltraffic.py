"""Traffic per Hive stage, for ``poolMode: hybrid``: the Queen's memory of when each stage last
had work, so a hybrid pool is kept while the stage is busy and released once it has been idle for
``pool.idleSeconds`` (:mod:`apiary.controllers.warmpool` says what a pool is and how a claim
works; this module only decides *whether* a hybrid stage wants its pool now).

Traffic is a backlog in this replica's router, a serving drone with messages in flight, or one
whose ``status.usage.messages`` grew. The memory lives in the leader only: a new leader counts its
own start as traffic, so after a failover an idle hybrid pool comes back for ``idleSeconds``
rather than a busy one being released.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from apiary.controllers.cache import Informer
from apiary.controllers.meta import LABEL_HIVE, LABEL_STAGE, Obj, parse_time
from apiary.controllers.settings import QueenSettings
from apiary.controllers.warmpool import PoolPolicy, is_warm
from apiary.store import Store

log = logging.getLogger("apiary.controllers.pooltraffic")

StageKey = tuple[str, str, str]
"""(cell, hive, stage)."""
Backlog = Callable[[], Mapping[StageKey, int]]
"""The router's backlog per stage (messages waiting for a drone)."""


@dataclass
class _Hybrid:
    """What the last pass of one hybrid Hive decided, per stage: (active, idle seconds)."""

    created: float | None
    stages: dict[str, tuple[bool, float]] = field(default_factory=dict)


class WarmPools:
    """The Queen's memory of traffic per stage, for ``hybrid`` pools (see the module doc).

    ``observe(drone)`` is fed every Drone change the Queen sees; ``run_once`` (every
    ``pools.period``) reads the router's backlog and requeues the Hives whose hybrid stages
    flipped between active and idle."""

    def __init__(
        self,
        settings: QueenSettings,
        drones: Informer | None = None,
        backlog: Backlog | None = None,
        requeue: Callable[[str, str], None] | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.drones = drones
        self.backlog = backlog
        self.requeue = requeue
        self.store = store
        self.started = self._now()
        """Counts as traffic: a new leader does not know what happened before it."""
        self.last: dict[StageKey, float] = {}
        """Epoch seconds of the last traffic seen per stage."""
        self._messages: dict[str, int] = {}
        self._hybrid: dict[tuple[str, str], _Hybrid] = {}

    def _now(self) -> float:
        return self.settings.clock().timestamp()

    # -------------------------------------------------------------- what the Hive pass asks

    def wanted(self, hive: Obj, stage: str, policy: PoolPolicy) -> tuple[int, bool | None]:
        """The pool size a stage should have now, and (hybrid only) whether it is active."""
        if policy.mode == "warm":
            return policy.size, None
        if policy.mode != "hybrid":
            return 0, None
        meta = hive["metadata"]
        key = (str(meta.get("namespace")), str(meta["name"]))
        created = parse_time(meta.get("creationTimestamp"))
        entry = self._hybrid.setdefault(key, _Hybrid(created.timestamp() if created else None))
        active = self._active((*key, stage), policy.idle_seconds, entry.created)
        entry.stages[stage] = (active, policy.idle_seconds)
        return (policy.size if active else 0), active

    def forget(self, cell: str, hive: str, keep: Iterable[str] = ()) -> None:
        """The Hive is gone or no longer hybrid (``keep``: its hybrid stages, if any)."""
        kept = set(keep)
        entry = self._hybrid.get((cell, hive))
        if entry is None:
            return
        entry.stages = {s: v for s, v in entry.stages.items() if s in kept}
        if not entry.stages:
            del self._hybrid[(cell, hive)]

    def last_traffic(self, key: StageKey, created: float | None = None) -> float:
        return max(self.last.get(key, -math.inf), created or -math.inf, self.started)

    def _active(self, key: StageKey, idle: float, created: float | None) -> bool:
        return self._now() - self.last_traffic(key, created) < idle

    # -------------------------------------------------------------- what traffic looks like

    def observe(self, drone: Obj, deleted: bool = False) -> None:
        """One Drone as it is now: traffic when its messages in flight or its message count
        grew since it was last seen (a drone seen for the first time only sets the base)."""
        meta = drone.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if deleted:
            self._messages.pop(uid, None)
            return
        labels = meta.get("labels") or {}
        if is_warm(drone) or not labels.get(LABEL_STAGE) or not labels.get(LABEL_HIVE):
            return
        if (str(meta.get("namespace")), str(labels[LABEL_HIVE])) not in self._hybrid:
            return  # only hybrid stages need this memory
        usage = (drone.get("status") or {}).get("usage") or {}
        messages, in_flight = usage.get("messages"), usage.get("inFlight")
        key = (str(meta.get("namespace")), str(labels[LABEL_HIVE]), str(labels[LABEL_STAGE]))
        busy = isinstance(in_flight, int) and not isinstance(in_flight, bool) and in_flight > 0
        if isinstance(messages, int) and not isinstance(messages, bool):
            before = self._messages.get(uid)
            busy = busy or (before is not None and messages > before)
            self._messages[uid] = messages
        if busy:
            self.traffic(key)

    def traffic(self, key: StageKey) -> None:
        self.last[key] = self._now()

    def _observe_backlog(self) -> None:
        if self.backlog is None:
            return
        try:
            backlog = dict(self.backlog())
        except Exception:  # the router is not up (yet): nothing to learn from it this time
            log.debug("no router backlog to read", exc_info=True)
            return
        for key, count in backlog.items():
            if count > 0 and (key[0], key[1]) in self._hybrid:
                self.traffic(key)

    async def observe_all(self) -> None:
        """Look at every drone once (a one-off pass, or after a relist)."""
        if not self._hybrid:
            return
        if self.drones is not None and self.drones.has_synced:
            items = self.drones.list("Drone")
        elif self.store is not None:
            items = (await self.store.list("Drone")).items
        else:
            return
        for drone in items:
            self.observe(drone)

    async def run_once(self) -> list[tuple[str, str]]:
        """Read the backlog; requeue (and return) the hybrid Hives a stage of which flipped."""
        if not self._hybrid:
            return []
        self._observe_backlog()
        flipped = []
        for (cell, hive), entry in self._hybrid.items():
            for stage, (active, idle) in entry.stages.items():
                if self._active((cell, hive, stage), idle, entry.created) != active:
                    flipped.append((cell, hive))
                    break
        for cell, hive in flipped:
            if self.requeue is not None:
                self.requeue(cell, hive)
        return flipped


__all__ = ["Backlog", "StageKey", "WarmPools"]
