"""What the Hive and AgentSpec reconcilers say about a pass, as Events on the owner: scaling and
rolling, claims from and releases of the warm pool, and each drone failure once (not once per
resync)."""

from __future__ import annotations

from typing import Any

from apiary.controllers.events import WARNING, EventRecorder
from apiary.controllers.meta import Obj
from apiary.controllers.rollout import GroupResult
from apiary.controllers.warmpool import PoolPolicy, PoolResult


class FailureMemo:
    """Remembers which drone failures were already reported, so a Failed drone seen on every
    resync yields one DroneFailed event per failure (uid, restartCount), not one per pass."""

    def __init__(self, limit: int = 10_000) -> None:
        self._seen: dict[tuple[str, Any], None] = {}
        self._limit = limit

    def first_time(self, drone: Obj) -> bool:
        key = (str(drone["metadata"].get("uid")), (drone.get("status") or {}).get("restartCount"))
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._limit:
            self._seen.pop(next(iter(self._seen)))
        return True


async def report_group(
    events: EventRecorder,
    memo: FailureMemo,
    owner: Obj,
    stage: str,
    result: GroupResult,
    rolling: bool,
) -> None:
    label = f"stage {stage}" if stage else "standalone drones"
    if result.created:
        reason = "RollingUpdate" if rolling else "ScalingUp"
        await events.record(
            owner,
            reason,
            f"{label}: creating drones towards {result.wanted} (template {result.template_hash})",
        )
    if result.deleted and not rolling:
        await events.record(owner, "ScalingDown", f"{label}: scaled down to {result.wanted}")
    if result.quota_blocked and result.deleted:
        await events.record(
            owner,
            "RollingInPlace",
            f"{label}: the cell's quota leaves no room for a surge drone; "
            "replacing old drones in place (maxSurge 0)",
            type=WARNING,
        )
    if result.claimed:
        await events.record(
            owner,
            "ClaimedFromPool",
            f"{label}: {len(result.claimed)} drone(s) claimed from the warm pool "
            f"({', '.join(result.claimed)}): no process start",
        )
    for crashed_drone, successor in result.replaced:
        why = (crashed_drone.get("status") or {}).get("reason") or "crashed"
        await events.record(
            owner,
            "ReplacedFromPool",
            f"{label}: drone {crashed_drone['metadata']['name']} ({why}) replaced by warm "
            f"drone {successor}",
        )
    await report_failures(events, memo, owner, result.failed)


async def report_failures(
    events: EventRecorder, memo: FailureMemo, owner: Obj, failed: list[Obj]
) -> None:
    for drone in failed:
        if memo.first_time(drone):
            status = drone.get("status") or {}
            why = status.get("reason") or "unknown"
            detail = status.get("message")
            await events.record(
                owner,
                "DroneFailed",
                f"drone {drone['metadata']['name']} failed: {why}"
                + (f" ({detail})" if detail else "")
                + f", restarts {status.get('restartCount', 0)}",
                type=WARNING,
            )


async def report_pool(
    events: EventRecorder, memo: FailureMemo, owner: Obj, stage: str, policy: PoolPolicy,
    pool: PoolResult,
) -> None:  # fmt: skip
    if pool.deleted and pool.active is False:
        await events.record(
            owner,
            "WarmPoolReleased",
            f"stage {stage}: no traffic for {policy.idle_seconds:g}s; warm pool released "
            f"({len(pool.deleted)} drone(s))",
        )
    await report_failures(events, memo, owner, pool.failed)


__all__ = ["FailureMemo", "report_failures", "report_group", "report_pool"]
