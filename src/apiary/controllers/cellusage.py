"""Each Cell's ``status.used``: what its quota counts, under the quota's own names.

``{maxCPU: millicores, maxMemoryGB: decimal GB, maxTotalDrones: n, maxDronesPerHive: n of the
fullest hive, maxHives: n, maxAgentSpecs: n}``. CPU, memory and drones count what the scheduler
counts against the quota (:mod:`apiary.controllers.quota`): drones placed on a node and not
``Stopped``, by their requests; Hives and AgentSpecs count every object, as admission does. Every
key is written whether or not the Cell sets that quota (``apiaryctl describe cell`` shows the
rows of the quotas it sets).

Level-triggered: a pass recomputes every Cell from the listing (drones from the Queen's cache
while it runs) and writes ``status.used`` only where it differs, with the Cell's
resourceVersion (a conflict is the next pass's). The Queen runs a pass when a Drone, Hive,
AgentSpec or Cell changes, at most once per ``usage.min_interval``, and every ``usage.period``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from apiary.controllers.cache import Informer
from apiary.controllers.meta import Obj, QuantityError, requests_of
from apiary.controllers.quota import Usage, counts_against_quota
from apiary.controllers.settings import QueenSettings
from apiary.errors import Conflict, NotFound
from apiary.store import Store

log = logging.getLogger("apiary.controllers.cellusage")


def cell_usage(drones: list[Obj]) -> dict[str, Usage]:
    """Per cell, what its placed drones use (the scheduler's :class:`Usage`)."""
    usage: dict[str, Usage] = {}
    for drone in drones:
        namespace = drone["metadata"].get("namespace") or ""
        cell = usage.setdefault(namespace, Usage())
        if not counts_against_quota(drone):
            continue
        try:
            cpu, memory = requests_of(drone.get("spec") or {}, "spec")
        except QuantityError:
            cpu, memory = 0, 0
        cell.add(drone, cpu, memory)
    return usage


def used_of(usage: Usage, hives: int, agentspecs: int) -> dict[str, Any]:
    """``status.used`` for one cell."""
    return {
        "maxCPU": usage.cpu,
        "maxMemoryGB": round(usage.memory / 1e9, 3),
        "maxTotalDrones": usage.drones,
        "maxDronesPerHive": max(usage.per_hive.values(), default=0),
        "maxHives": hives,
        "maxAgentSpecs": agentspecs,
    }


class CellUsageController:
    def __init__(
        self, store: Store, settings: QueenSettings, drones: Informer | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.drones = drones
        """Where a pass reads drones from: the Queen's cache once it has listed, else the store."""

    async def _drones(self) -> list[Obj]:
        if self.drones is not None and self.drones.has_synced:
            return self.drones.list("Drone")
        return (await self.store.list("Drone")).items

    async def run_once(self) -> dict[str, dict[str, Any]]:
        """One pass; returns the ``status.used`` written, by cell (unchanged cells left out)."""
        cells = (await self.store.list("Cell")).items
        if not cells:
            return {}
        drones = await self._drones()
        hives = (await self.store.list("Hive")).items
        agentspecs = (await self.store.list("AgentSpec")).items
        usage = cell_usage(drones)
        n_hives: dict[str, int] = {}
        for h in hives:
            ns = h["metadata"].get("namespace") or ""
            n_hives[ns] = n_hives.get(ns, 0) + 1
        n_specs: dict[str, int] = {}
        for a in agentspecs:
            ns = a["metadata"].get("namespace") or ""
            n_specs[ns] = n_specs.get(ns, 0) + 1
        written: dict[str, dict[str, Any]] = {}
        for cell in cells:
            name = cell["metadata"]["name"]
            used = used_of(usage.get(name, Usage()), n_hives.get(name, 0), n_specs.get(name, 0))
            if (cell.get("status") or {}).get("used") == used:
                continue
            if await self._write(cell, used):
                written[name] = used
        return written

    async def _write(self, cell: Obj, used: dict[str, Any]) -> bool:
        body = copy.deepcopy(cell)
        body["status"] = {**(cell.get("status") or {}), "used": used}
        try:
            await self.store.update(body, subresource="status")  # conditioned on the rv read
        except (Conflict, NotFound):
            log.debug(
                "cell changed before its usage was written; next pass",
                extra={"cell": cell["metadata"]["name"]},
            )
            return False
        return True


__all__ = ["CellUsageController", "cell_usage", "used_of"]
