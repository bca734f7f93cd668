"""Keeping one group of identical drones at its wanted size, with rolling replacement.

A group is a Hive stage or an AgentSpec's standalone drones. Drones are named
``{owner}-{stage}-{templateHash}-{ordinal}``: deterministic, so two controllers racing to create
the same drone collide on the name (AlreadyExists, harmless) instead of making duplicates; and a
template change produces new names, so old and new drones coexist during a rollout.

Rules, applied on every pass (level-triggered, idempotent):

* current-template drones with ordinal ≥ wanted are deleted (scale down removes the highest);
* old-template drones that are not Ready are deleted at once (they serve nothing);
* an old-template Ready drone is deleted only while the Ready drones that remain are still at
  least ``wanted`` — a rollout never dips below the wanted count of Ready drones;
* missing current-template ordinals are created, but while old drones remain the group may not
  exceed ``wanted + surge`` drones (surge = ``max_surge_percent`` of wanted, at least one);
* when the Cell's quota holds the new drones (``Pending``, ``reason: QuotaExceeded``), old Ready
  drones fill the quota that the new ones wait for, and waiting would be for ever: the rollout
  then replaces *in place* — Kubernetes' ``maxSurge: 0`` — retiring one old Ready drone per held
  new one (never more than bring the group down to ``wanted`` drones) and creating no surge, so
  the group dips below ``wanted`` Ready by at most the held drones while the successor starts.
  ``GroupResult.quota_blocked`` carries the scheduler's message, for the owner's conditions.

No pass materialises unbounded work. It deletes at most ``max_deletes_per_pass`` drones and
creates at most ``max_creates_per_pass``, lowest missing ordinals first (found lazily: never a
list of ``range(wanted)``), in slow-start batches of 1, 2, 4, … as Kubernetes' ReplicaSet does —
each batch concurrently, the loop yielding between batches, and the first failed create ending
the pass (its error propagates, so the Queen retries with backoff) instead of a thousand doomed
writes. What is left is the next pass's: every drone created or deleted is a watch event that
queues the owner again, and the periodic resync covers the rest. A pass that reached a cap is
therefore not settled (``GroupResult.more``), and a scale-up to 1,000 drones is ten short passes
that leave the API responsive in between.

Before deleting a Ready drone the pass *claims* the owner with a resourceVersion-conditioned write,
so of two controllers looking at the same state only one deletes.

A group with a warm pool (``Group.pool``, :mod:`apiary.controllers.warmpool`) fills missing
ordinals by claiming pool drones before it creates any, and replaces a current drone whose process
crashed by a Ready pool drone (the crashed one is deleted). Should one ordinal be held twice (a
claim racing a create), the better drone — Ready, not crashed, fewer restarts, older — is kept.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from apiary.controllers.meta import (
    LABEL_TEMPLATE,
    Obj,
    dns_name,
    owner_reference,
    terminating,
)
from apiary.controllers.settings import RolloutSettings
from apiary.controllers.templates import template_hash
from apiary.controllers.warmpool import Claims, crashed
from apiary.errors import AlreadyExists, Conflict, NotFound
from apiary.resources import API_VERSION
from apiary.store import Store

log = logging.getLogger("apiary.controllers.rollout")

Claim = Callable[[], Awaitable[None]]


@dataclass
class Group:
    """What one group wants."""

    owner: Obj
    name_parts: tuple[str, ...]
    labels: dict[str, str]
    wanted: int
    template: Obj | None
    """None when the template cannot be resolved: existing drones are then left alone."""
    pool: Claims | None = None
    """The stage's warm pool drones the pass may claim instead of creating drones."""


@dataclass
class GroupResult:
    wanted: int
    ready: int = 0
    current: int = 0
    updated: int = 0
    template_hash: str | None = None
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[Obj] = field(default_factory=list)
    more: bool = False
    """The pass stopped at a per-pass cap with creations or deletions still to do."""
    quota_blocked: str | None = None
    """While old drones remain and the quota holds new ones: the scheduler's message (the rollout
    replaces in place, no surge)."""
    claimed: list[str] = field(default_factory=list)
    """Pool drones claimed for missing ordinals (no process started)."""
    replaced: list[tuple[Obj, str]] = field(default_factory=list)
    """(crashed drone, the pool drone claimed in its place)."""

    @property
    def settled(self) -> bool:
        """All wanted drones exist with the current template, are Ready, and nothing else."""
        return (
            not self.more
            and self.template_hash is not None
            and self.updated == self.wanted
            and self.current == self.wanted
            and self.ready >= self.wanted
        )


def is_ready(drone: Obj) -> bool:
    return (drone.get("status") or {}).get("ready") is True


def quota_held(drone: Obj) -> str | None:
    """The scheduler's message when the Cell's quota holds ``drone`` unplaced, else None."""
    if (drone.get("spec") or {}).get("nodeName"):
        return None
    status = drone.get("status") or {}
    if status.get("reason") != "QuotaExceeded":
        return None
    return str(status.get("message") or "the cell's quota is full")


def ordinal_of(drone: Obj) -> int:
    value = (drone.get("spec") or {}).get("ordinal")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1 << 30


def _deletion_order(drone: Obj) -> tuple[int, str]:
    return (-ordinal_of(drone), str(drone["metadata"]["name"]))


def _worth(drone: Obj) -> tuple[bool, bool, int, str, str]:
    """Of two drones holding one ordinal, the smaller is kept."""
    status = drone.get("status") or {}
    restarts = status.get("restartCount")
    meta = drone["metadata"]
    return (
        not is_ready(drone),
        status.get("phase") == "Failed",
        restarts if isinstance(restarts, int) else 0,
        str(meta.get("creationTimestamp") or ""),
        str(meta["name"]),
    )


def drone_name(parts: tuple[str, ...], thash: str, ordinal: int) -> str:
    return dns_name(*parts, suffix=f"{thash}-{ordinal}")


async def sync_group(
    store: Store, group: Group, drones: list[Obj], *, rollout: RolloutSettings, claim: Claim
) -> GroupResult:
    """Act once towards the wanted state of ``group`` given its current ``drones``: at most
    ``rollout.max_deletes_per_pass`` deletions and ``rollout.max_creates_per_pass`` creations."""
    alive = [d for d in drones if not terminating(d)]
    result = GroupResult(
        wanted=group.wanted, current=len(alive), ready=sum(1 for d in alive if is_ready(d))
    )
    result.failed = [d for d in alive if (d.get("status") or {}).get("phase") == "Failed"]
    if group.template is None:
        return result
    thash = template_hash(group.template)
    result.template_hash = thash
    current: dict[int, Obj] = {}
    old: list[Obj] = []
    twice: list[Obj] = []
    for drone in alive:
        if (drone.get("spec") or {}).get("templateHash") == thash:
            ordinal = ordinal_of(drone)
            other = current.get(ordinal)
            if other is not None:  # a claim raced a create: keep the better one
                keep, drop = sorted((other, drone), key=_worth)
                current[ordinal] = keep
                twice.append(drop)
            else:
                current[ordinal] = drone
        else:
            old.append(drone)
    surplus = sorted((d for o, d in current.items() if o >= group.wanted), key=_deletion_order)
    surplus += twice
    kept = {o: d for o, d in current.items() if o < group.wanted}
    crashed_out = await _replace_crashed(group, kept, result)
    result.updated = len(kept)

    old_unready = sorted((d for d in old if not is_ready(d)), key=_deletion_order)
    old_ready = sorted((d for d in old if is_ready(d)), key=_deletion_order)
    new_ready = sum(1 for d in kept.values() if is_ready(d))
    retiring = max(0, new_ready + len(old_ready) - group.wanted)
    held = [m for m in map(quota_held, kept.values()) if m is not None] if old else []
    if held:
        # maxSurge 0: the quota has no room for a surge, so each held new drone takes the
        # place of an old one; the group never holds more than ``wanted`` drones this way
        result.quota_blocked = held[0]
        in_place = min(len(held), max(0, len(kept) + len(old_ready) - group.wanted))
        retiring = max(retiring, in_place)
    retire = old_ready[:retiring]

    doomed = [*surplus, *old_unready, *retire, *crashed_out]
    cap = max(0, rollout.max_deletes_per_pass)
    if len(doomed) > cap:
        doomed, result.more = doomed[:cap], True
    claimed = False
    for drone in doomed:
        if is_ready(drone) and not claimed:
            await claim()
            claimed = True
        if await _delete(store, drone):
            result.deleted.append(drone["metadata"]["name"])

    remaining_old = len(old) - sum(
        1 for d in doomed if (d.get("spec") or {}).get("templateHash") != thash
    )
    if remaining_old:
        surge = 0 if held else max(1, math.ceil(group.wanted * rollout.max_surge_percent / 100))
        budget = group.wanted + surge - len(kept) - remaining_old
    else:
        budget = group.wanted
    budget = min(max(0, budget), group.wanted - len(kept))
    cap = max(0, rollout.max_creates_per_pass)
    if budget > cap:
        budget, result.more = cap, True
    missing: Iterator[int] = itertools.islice(missing_ordinals(group.wanted, kept), budget)
    if group.pool is not None and len(group.pool):
        wanted = list(itertools.islice(missing, len(group.pool)))
        got = await group.pool.claim(wanted)
        result.claimed.extend(d["metadata"]["name"] for d in got.values())
        missing = itertools.chain((o for o in wanted if o not in got), missing)
    await _slow_start(store, group, thash, missing, result)
    return result


async def _replace_crashed(group: Group, kept: dict[int, Obj], result: GroupResult) -> list[Obj]:
    """Give each kept drone whose process crashed a Ready pool drone's place (claimed first, so
    the ordinal is never empty); the crashed drones, to be deleted."""
    pool = group.pool
    if pool is None or not pool.ready:
        return []
    broken = sorted(o for o, d in kept.items() if crashed(d))
    if not broken:
        return []
    got = await pool.claim(broken[: pool.ready], ready_only=True)
    out = []
    for ordinal, successor in sorted(got.items()):
        out.append(kept[ordinal])
        result.replaced.append((kept[ordinal], successor["metadata"]["name"]))
        kept[ordinal] = successor
    return out


def missing_ordinals(wanted: int, kept: dict[int, Obj]) -> Iterator[int]:
    """The ordinals below ``wanted`` that ``kept`` lacks, lowest first, computed as they are
    taken: taking ``n`` of them looks at no more than ``len(kept) + n`` numbers."""
    return (o for o in range(wanted) if o not in kept)


async def _slow_start(
    store: Store, group: Group, thash: str, ordinals: Iterator[int], result: GroupResult
) -> None:
    """Create the drones of ``ordinals`` in batches of 1, 2, 4, …, each batch concurrently; a
    batch with a failed create is the last (its first error is raised once the batch is done),
    so a create that cannot succeed costs one write, not ``wanted`` of them."""
    size = 1
    while batch := list(itertools.islice(ordinals, size)):
        outcomes = await asyncio.gather(
            *(_create(store, group, thash, o) for o in batch), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        result.created.extend(o for o in outcomes if isinstance(o, str))
        if errors:
            result.more = True
            raise errors[0]
        size *= 2
        await asyncio.sleep(0)  # let the API answer between batches


async def _delete(store: Store, drone: Obj) -> bool:
    meta = drone["metadata"]
    try:
        await store.delete(
            "Drone", meta["namespace"], meta["name"], resource_version=meta["resourceVersion"]
        )
        return True
    except NotFound:
        return False
    except Conflict:
        # it changed since we looked (became Ready, got placed...): the next pass decides again
        log.debug(
            "drone changed before deletion; deferring",
            extra={"cell": meta.get("namespace"), "drone": meta["name"]},
        )
        return False


async def _create(store: Store, group: Group, thash: str, ordinal: int) -> str | None:
    assert group.template is not None
    owner = group.owner
    name = drone_name(group.name_parts, thash, ordinal)
    drone: Obj = {
        "apiVersion": API_VERSION,
        "kind": "Drone",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": {**group.labels, LABEL_TEMPLATE: thash},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {**group.template, "templateHash": thash, "ordinal": ordinal},
        "status": {"phase": "Pending", "ready": False},
    }
    try:
        await store.create(drone)
        return name
    except AlreadyExists:
        return None
