"""Cell resource quotas over drones: ``spec.resourceQuota`` of the Cell.

Choice: a drone over quota is still *created* (so the Hive's intent is visible and the drone
starts the moment room appears) but the scheduler does not place it: it stays ``Pending`` with
``status.reason: QuotaExceeded`` and a message naming the quota. Usage counts the drones that are
placed on a node (``spec.nodeName`` set), by requests. Limits:

* ``maxDronesPerHive`` — placed drones with the same ``apiary.io/hive`` label;
* ``maxTotalDrones`` — placed drones in the cell;
* ``maxCPU`` — millicores, sum of ``resources.requests.cpu``;
* ``maxMemoryGB`` — decimal gigabytes (10^9 bytes, as the seeds write memory in decimal bytes),
  sum of ``resources.requests.memory``.

During a rolling update the surge drone needs room too: a quota exactly at the wanted count holds
the new drone with this reason rather than overshoot, and the rollout, seeing that, replaces in
place instead (:mod:`apiary.controllers.rollout`). :mod:`apiary.controllers.cellusage` writes
the same counts to the Cell's ``status.used``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from apiary.controllers.meta import LABEL_HIVE, Obj


def _limit(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None  # absent or malformed (admission reports it): no limit
    return float(value)


@dataclass
class Quota:
    cell: str
    max_drones_per_hive: float | None = None
    max_total_drones: float | None = None
    max_cpu: float | None = None
    max_memory_bytes: float | None = None

    @classmethod
    def of(cls, cell: Obj | None, namespace: str) -> Quota:
        if cell is None:
            return cls(namespace)
        rq = (cell.get("spec") or {}).get("resourceQuota") or {}
        if not isinstance(rq, dict):
            return cls(namespace)
        mem = _limit(rq.get("maxMemoryGB"))
        return cls(
            namespace,
            _limit(rq.get("maxDronesPerHive")),
            _limit(rq.get("maxTotalDrones")),
            _limit(rq.get("maxCPU")),
            None if mem is None else mem * 1e9,
        )


@dataclass
class Usage:
    """What the placed drones of one cell use."""

    drones: int = 0
    per_hive: Counter[str] = field(default_factory=Counter)
    cpu: int = 0
    memory: int = 0

    def add(self, drone: Obj, cpu: int, memory: int) -> None:
        self.drones += 1
        hive = (drone["metadata"].get("labels") or {}).get(LABEL_HIVE)
        if hive:
            self.per_hive[hive] += 1
        self.cpu += cpu
        self.memory += memory


def counts_against_quota(drone: Obj) -> bool:
    """Whether ``drone`` uses its cell's quota: placed on a node and not ``Stopped``."""
    if not (drone.get("spec") or {}).get("nodeName"):
        return False
    return (drone.get("status") or {}).get("phase") != "Stopped"


def _fmt(n: float) -> str:
    return str(int(n)) if n == int(n) else f"{n:g}"


def check(quota: Quota, usage: Usage, drone: Obj, cpu: int, memory: int) -> str | None:
    """None if ``drone`` fits the quota, else a message naming the exhausted quota."""
    where = f"cell {quota.cell!r} quota"
    hive = (drone["metadata"].get("labels") or {}).get(LABEL_HIVE)
    if (
        hive
        and quota.max_drones_per_hive is not None
        and usage.per_hive[hive] + 1 > quota.max_drones_per_hive
    ):
        return (
            f"{where} maxDronesPerHive={_fmt(quota.max_drones_per_hive)} reached "
            f"(hive {hive!r} runs {usage.per_hive[hive]})"
        )
    if quota.max_total_drones is not None and usage.drones + 1 > quota.max_total_drones:
        return (
            f"{where} maxTotalDrones={_fmt(quota.max_total_drones)} reached "
            f"({usage.drones} running)"
        )
    if quota.max_cpu is not None and usage.cpu + cpu > quota.max_cpu:
        return (
            f"{where} maxCPU={_fmt(quota.max_cpu)} millicores exceeded "
            f"({usage.cpu} in use + {cpu} requested)"
        )
    if quota.max_memory_bytes is not None and usage.memory + memory > quota.max_memory_bytes:
        return (
            f"{where} maxMemoryGB={_fmt(quota.max_memory_bytes / 1e9)} exceeded "
            f"({usage.memory / 1e9:.3g} GB in use + {memory / 1e9:.3g} GB requested)"
        )
    return None
