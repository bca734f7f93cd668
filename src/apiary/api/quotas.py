"""Cell quotas enforced at admission: a create that would exceed one is refused with 403.

Counting and creating happen under a per-(cell, kind) lock so concurrent creates in this process
cannot both squeeze under the limit. (With several replicas on PostgreSQL the last few may race;
the controllers re-check what they act on.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from apiary.api.references import total_replicas
from apiary.errors import NotFound, QuotaExceeded
from apiary.store import Store

# kind → the quota that limits how many exist in a cell
_COUNTED = {"AgentSpec": "maxAgentSpecs", "Hive": "maxHives", "Drone": "maxTotalDrones"}


class QuotaGuard:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def applies(self, kind: str) -> bool:
        return kind in _COUNTED

    @contextlib.asynccontextmanager
    async def admitting(self, obj: dict[str, Any], *, creating: bool) -> AsyncIterator[None]:
        """Check ``obj`` against its cell's quota; hold the lock while the caller stores it."""
        kind = obj["kind"]
        cell = obj["metadata"].get("namespace") or ""
        if kind not in _COUNTED or not cell:
            yield
            return
        lock = self._locks.setdefault((cell, kind), asyncio.Lock())
        async with lock:
            await self._check(kind, cell, obj, creating)
            yield

    async def _check(self, kind: str, cell: str, obj: dict[str, Any], creating: bool) -> None:
        quota = await self._quota(cell)
        if not quota:
            return
        if kind == "Hive":
            per_hive = _limit(quota, "maxDronesPerHive")
            wanted = total_replicas(obj.get("spec"))
            if per_hive is not None and wanted > per_hive:
                raise QuotaExceeded(
                    f"Hive {obj['metadata']['name']!r} asks for {wanted} drones; cell {cell!r} "
                    f"quota maxDronesPerHive is {per_hive}"
                )
        name = _COUNTED[kind]
        limit = _limit(quota, name)
        if not creating or limit is None:
            return
        existing = await self.store.list(kind, cell)
        count = len(existing.items)
        if count >= limit:
            raise QuotaExceeded(
                f"cell {cell!r} quota {name} is {limit} and {count} {kind}s exist: "
                f"cannot create {kind} {obj['metadata']['name']!r}"
            )

    async def _quota(self, cell: str) -> dict[str, Any] | None:
        try:
            found = await self.store.get("Cell", "", cell)
        except NotFound:
            return None
        quota = (found.get("spec") or {}).get("resourceQuota")
        return quota if isinstance(quota, dict) else None


def _limit(quota: dict[str, Any], name: str) -> int | None:
    value = quota.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)
