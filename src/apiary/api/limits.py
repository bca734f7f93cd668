"""The admission limits of one request: the server's, lowered by the quota of the object's Cell.

Admission itself is pure (:mod:`apiary.resources.limits`); this module does the one read it
needs — the Cell — and the quota side of "replicas per stage": a stage (or an AgentSpec's
``spec.replicas``) asking for more drones than the Cell's ``maxDronesPerHive`` or
``maxTotalDrones`` allows can never run, so it is refused with 403 QuotaExceeded naming the field
and the quota, as the other quotas are (:mod:`apiary.api.quotas`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from apiary.api.state import ApiState
from apiary.errors import FieldDetail, NotFound, QuotaExceeded
from apiary.resources.limits import (
    AdmissionLimits,
    agentspec_replicas,
    hive_replicas,
)

Obj = dict[str, Any]


def server_limits(state: ApiState) -> AdmissionLimits:
    """The server's limits (``ApiConfig.admission``)."""
    return state.config.admission


async def cell_quota(state: ApiState, cell: str | None) -> Mapping[str, Any] | None:
    """The Cell's ``spec.resourceQuota``, or None (no cell, no Cell object, no quota)."""
    if not cell:
        return None
    try:
        found = await state.store.get("Cell", "", cell)
    except NotFound:
        return None
    quota = (found.get("spec") or {}).get("resourceQuota")
    return quota if isinstance(quota, Mapping) else None


async def limits_for(state: ApiState, cell: str | None) -> tuple[AdmissionLimits, Obj]:
    """The limits for an object in ``cell`` (cluster-scoped: None), and the Cell's quota."""
    quota = await cell_quota(state, cell)
    limits = server_limits(state)
    if cell and quota:
        limits = limits.for_cell(cell, quota)
    return limits, dict(quota or {})


def check_replica_quota(obj: Obj, quota: Mapping[str, Any]) -> None:
    """403 when one stage (or an AgentSpec) asks for more drones than a quota allows at all."""
    kind = obj.get("kind")
    if kind == "Hive":
        counts: Iterator[tuple[str, Any]] = hive_replicas(obj.get("spec"))
        names: tuple[str, ...] = ("maxDronesPerHive", "maxTotalDrones")
    elif kind == "AgentSpec":
        counts = (c for c in agentspec_replicas(obj.get("spec")) if c[0] == "spec.replicas")
        names = ("maxTotalDrones",)
    else:
        return
    bounds = [(n, v) for n in names if _is_count(v := quota.get(n))]
    if not bounds:
        return
    details = [
        FieldDetail(field, f"{replicas} is more than {limit}, the cell's quota {name}")
        for field, replicas in counts
        if _is_count(replicas)
        for name, limit in bounds
        if replicas > limit
    ]
    if details:
        cell = obj["metadata"].get("namespace")
        first = details[0]
        raise QuotaExceeded(
            f"{kind} {obj['metadata'].get('name')!r} in cell {cell!r}: {first.field}: "
            f"{first.message}",
            details,
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
