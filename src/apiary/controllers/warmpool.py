"""Warm pools: already started drones a Hive stage keeps aside, claimed instead of started.

A Hive with ``poolMode: warm`` keeps ``warmPoolSize`` extra drones per stage; ``hybrid`` keeps
them only while the stage has had traffic in the last ``pool.idleSeconds`` (default 300; the
Hive's creation counts as traffic), ``cold`` (the default) none. A pool drone is a Drone like any
other — owned by the Hive, placed by the scheduler, started by its node, counted against the
Cell's quota — with three differences:

* ``spec.warm: true`` and no ``spec.ordinal``: its node starts the process and attaches the
  keeper but does not put it on the stage's queue, so it takes no traffic;
* the label ``apiary.io/warm-pool: <stage>`` instead of ``apiary.io/stage``, so nothing that
  counts a stage's drones (the Hive's status, ``/scale``, the autoscaler, ``run``'s diagnosis)
  counts it;
* its name ends in ``-w<N>`` instead of the ordinal.

**Claim.** Where the stage needs a drone — a scale-up (``apiaryctl scale``, the autoscaler, a
scale from zero), or the replacement of a serving drone whose process crashed — the rollout
(:func:`apiary.controllers.rollout.sync_group`) *claims* a pool drone instead of creating one:
one resourceVersion-conditioned update of that Drone gives it the stage label, the ordinal and
``warm`` gone. Its node sees the change and puts the running process on the stage's queue: no
process starts on the message path. A claimed drone keeps its ``-wN`` name (names are
immutable); ``spec.ordinal`` says which place it took. Two controllers cannot both claim one
drone (the second write conflicts); should they fill one ordinal twice (a claim and a create),
the next pass keeps the better drone and deletes the other.

What is claimed first: Ready pool drones, then started ones, then placed ones, then the rest
(oldest first) — never one that failed. A crash replacement takes a Ready one only, and the
crashed drone (``Failed``, or ``Starting`` again after a restart) is deleted once its successor
is in place; without a Ready pool drone the node restarts the crashed one as always.

**Ready**, for a pool drone, is what it is for every drone: its node says ``ready`` — the
process runs with the keeper attached (stdin agents), its health path answered (http agents),
its readiness probe passes (when the AgentSpec has one). A stdin agent still importing its
modules is Ready already; a message it is given then waits in its stdin pipe, nothing is lost.

**Refill.** After the claims, the same pass creates pool drones up to the pool's size (lowest
free ``-wN`` first) and deletes the rest: old-template pool drones at once (a rollout renews the
pool), a surplus starting with the least started. The new drones start in the background; the
claimed ones already serve.

**Hybrid.** :class:`~apiary.controllers.pooltraffic.WarmPools` (one per Queen) keeps, per
stage, the last time it saw traffic, and requeues the hybrid Hives whose stages' activity flipped
(idle for ``idleSeconds``, or traffic again); see that module.

Pools are per stage, not per AgentSpec (``AgentSpec.spec.warmPool`` is refused): a started
drone belongs to its hive and stage for good — both are in its process environment
(``APIARY_HIVE``, ``APIARY_STAGE``), its keeper token and its merged guardrails — so drones of
one AgentSpec in two hives are not interchangeable.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from apiary.controllers.meta import (
    LABEL_POOL,
    LABEL_STAGE,
    LABEL_TEMPLATE,
    Obj,
    dns_name,
    owner_reference,
    terminating,
)
from apiary.controllers.settings import RolloutSettings
from apiary.errors import AlreadyExists, Conflict, NotFound
from apiary.resources import API_VERSION
from apiary.resources.hive_parts import DEFAULT_POOL_IDLE_SECONDS
from apiary.store import Store

log = logging.getLogger("apiary.controllers.warmpool")

DEFAULT_IDLE_SECONDS = DEFAULT_POOL_IDLE_SECONDS


# ------------------------------------------------------------------------------ the policy


@dataclass(frozen=True)
class PoolPolicy:
    """A Hive's ``poolMode``, ``warmPoolSize`` and ``pool.idleSeconds``, defaults filled in."""

    mode: str = "cold"
    size: int = 0
    idle_seconds: float = DEFAULT_IDLE_SECONDS

    @classmethod
    def of(cls, hive: Obj) -> PoolPolicy:
        """Admission validated the fields; anything unreadable here counts as ``cold``."""
        spec = hive.get("spec") or {}
        mode = spec.get("poolMode")
        if mode not in ("warm", "hybrid"):
            return cls()
        size = spec.get("warmPoolSize", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            size = 1
        pool = spec.get("pool")
        idle = pool.get("idleSeconds") if isinstance(pool, dict) else None
        if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
            idle = DEFAULT_IDLE_SECONDS
        return cls(str(mode), size, float(idle))


def is_warm(drone: Obj) -> bool:
    """Whether ``drone`` sits in a warm pool (takes no traffic until claimed)."""
    return (drone.get("spec") or {}).get("warm") is True


def stage_of(drone: Obj) -> str | None:
    """The stage a drone serves, or waits for in its pool."""
    labels = (drone.get("metadata") or {}).get("labels") or {}
    value = labels.get(LABEL_STAGE) or labels.get(LABEL_POOL)
    return str(value) if value else None


def _ready(drone: Obj) -> bool:
    return (drone.get("status") or {}).get("ready") is True


def _phase(drone: Obj) -> str | None:
    return (drone.get("status") or {}).get("phase")


def crashed(drone: Obj) -> bool:
    """A serving drone whose process ended and is (to be) started again: ``Failed`` (the node
    backs off before the restart), or ``Starting`` after a restart."""
    status = drone.get("status") or {}
    phase = status.get("phase")
    restarts = status.get("restartCount")
    restarted = isinstance(restarts, int) and restarts > 0
    return phase == "Failed" or (phase == "Starting" and restarted)


def _claim_rank(drone: Obj) -> tuple[int, str, str]:
    status = drone.get("status") or {}
    if status.get("ready") is True:
        rank = 0
    elif status.get("phase") == "Running":
        rank = 1
    elif (drone.get("spec") or {}).get("nodeName"):
        rank = 2
    else:
        rank = 3
    meta = drone["metadata"]
    return rank, str(meta.get("creationTimestamp") or ""), str(meta["name"])


def _pool_index(name: str, prefix: str) -> int | None:
    tail = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def pool_prefix(parts: tuple[str, ...], thash: str) -> str:
    """Pool drones of a group are named ``{prefix}{N}``."""
    return dns_name(*parts, suffix=f"{thash}-w")


# ------------------------------------------------------------------------------ claims


class Claims:
    """The pool drones one pass may claim for a stage, best first (see the module doc)."""

    def __init__(self, store: Store, drones: Iterable[Obj], thash: str, labels: dict[str, str]):
        self.store = store
        self.labels = labels
        self._available = sorted(
            (
                d
                for d in drones
                if not terminating(d)
                and (d.get("spec") or {}).get("templateHash") == thash
                and _phase(d) != "Failed"
            ),
            key=_claim_rank,
        )
        self.claimed: list[Obj] = []
        """The drones claimed so far (as stored after the claim)."""

    def __len__(self) -> int:
        return len(self._available)

    @property
    def ready(self) -> int:
        return sum(1 for d in self._available if _ready(d))

    def _next(self, ready_only: bool) -> Obj | None:
        for i, drone in enumerate(self._available):
            if not ready_only or _ready(drone):
                return self._available.pop(i)
        return None

    async def claim(self, ordinals: Iterable[int], *, ready_only: bool = False) -> dict[int, Obj]:
        """Claim one pool drone per ordinal (concurrent writes; a claim that conflicts tries the
        next drone); the ordinals that got one, with the stored drone."""
        got: dict[int, Obj] = {}
        todo = list(ordinals)
        while todo:
            pairs = []
            for ordinal in todo:
                drone = self._next(ready_only)
                if drone is None:
                    break
                pairs.append((ordinal, drone))
            if not pairs:
                break
            outcomes = await asyncio.gather(*(self._claim(d, o) for o, d in pairs))
            todo = []
            for (ordinal, _), stored in zip(pairs, outcomes, strict=True):
                if stored is None:
                    todo.append(ordinal)
                else:
                    got[ordinal] = stored
        return got

    async def _claim(self, drone: Obj, ordinal: int) -> Obj | None:
        claimed = copy.deepcopy(drone)
        claimed.pop("status", None)  # an update keeps the stored status
        meta = claimed["metadata"]
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != LABEL_POOL}
        labels.update(self.labels)
        meta["labels"] = labels
        spec = claimed.setdefault("spec", {})
        spec.pop("warm", None)
        spec["ordinal"] = ordinal
        try:
            stored = await self.store.update(claimed)  # conditioned on the version we read
        except (Conflict, NotFound):
            log.debug(
                "pool drone changed before its claim; trying another",
                extra={"cell": meta.get("namespace"), "drone": meta["name"]},
            )
            return None
        self.claimed.append(stored)
        log.info(
            "drone claimed from the warm pool",
            extra={"cell": meta.get("namespace"), "drone": meta["name"], "ordinal": ordinal},
        )
        return stored


# ------------------------------------------------------------------------------ refill


@dataclass
class PoolResult:
    """What one stage's pool is and what a pass did to it."""

    mode: str
    wanted: int
    current: int = 0
    ready: int = 0
    active: bool | None = None
    """Hybrid only: whether the stage had traffic in its last ``idleSeconds``."""
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    """(crashed drone, the pool drone that took its place)."""
    failed: list[Obj] = field(default_factory=list)

    def status(self) -> Obj:
        """The stage's ``status.stages[].pool``."""
        out: Obj = {
            "mode": self.mode,
            "wanted": self.wanted,
            "current": self.current,
            "ready": self.ready,
        }
        if self.active is not None:
            out["active"] = self.active
        return out


async def sync_pool(
    store: Store,
    *,
    owner: Obj,
    name_parts: tuple[str, ...],
    labels: dict[str, str],
    stage: str,
    template: Obj | None,
    thash: str | None,
    drones: list[Obj],
    taken: set[str],
    result: PoolResult,
    rollout: RolloutSettings,
    creates_left: int,
) -> PoolResult:
    """Bring one stage's pool (``drones``, claimed ones already left out) to ``result.wanted``
    drones of the current template. ``taken``: names of every drone of the group (claimed
    drones keep their ``-wN`` names). With no template (AgentSpec missing) the pool is left
    alone."""
    alive = [d for d in drones if not terminating(d)]
    result.failed = [d for d in alive if _phase(d) == "Failed"]
    if template is None or thash is None:
        result.current = len(alive)
        result.ready = sum(1 for d in alive if _ready(d))
        return result
    current = [d for d in alive if (d.get("spec") or {}).get("templateHash") == thash]
    old = [d for d in alive if d not in current]
    result.current = len(current)
    result.ready = sum(1 for d in current if _ready(d))
    # the least useful first: unplaced, not started, not ready, then the newest
    surplus = sorted(current, key=_claim_rank, reverse=True)[: max(0, len(current) - result.wanted)]
    doomed = [*old, *surplus][: max(0, rollout.max_deletes_per_pass)]
    for drone in doomed:
        meta = drone["metadata"]
        try:
            await store.delete(
                "Drone", meta["namespace"], meta["name"], resource_version=meta["resourceVersion"]
            )
        except (NotFound, Conflict):
            continue
        result.deleted.append(meta["name"])
    missing = result.wanted - (len(current) - len(surplus))
    missing = min(missing, max(0, creates_left))
    if missing <= 0:
        return result
    prefix = pool_prefix(name_parts, thash)
    used = {i for i in (_pool_index(n, prefix) for n in taken) if i is not None}
    free = (i for i in itertools.count() if i not in used)
    names = [f"{prefix}{i}" for i in itertools.islice(free, missing)]
    body_labels = {k: v for k, v in labels.items() if k != LABEL_STAGE}
    body_labels.update({LABEL_POOL: stage, LABEL_TEMPLATE: thash})
    outcomes = await asyncio.gather(
        *(_create(store, owner, name, body_labels, template, thash) for name in names),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    result.created.extend(o for o in outcomes if isinstance(o, str))
    if errors:
        raise errors[0]
    return result


async def _create(
    store: Store, owner: Obj, name: str, labels: dict[str, str], template: Obj, thash: str
) -> str | None:
    drone: Obj = {
        "apiVersion": API_VERSION,
        "kind": "Drone",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": dict(labels),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {**template, "templateHash": thash, "warm": True},
        "status": {"phase": "Pending", "ready": False},
    }
    try:
        await store.create(drone)
        return name
    except AlreadyExists:
        return None


__all__ = [
    "DEFAULT_IDLE_SECONDS",
    "Claims",
    "PoolPolicy",
    "PoolResult",
    "crashed",
    "is_warm",
    "pool_prefix",
    "stage_of",
    "sync_pool",
]
