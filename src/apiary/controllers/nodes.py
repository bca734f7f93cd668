"""Node lifecycle: leases, readiness and eviction.

The node agent renews its Node's lease every few seconds by writing ``status.lease.renewTime``
(or ``status.heartbeatTime``; either is read) and keeps ``status.conditions[Ready]``. When the
lease is older than ``nodes.lease_duration`` (clock injected), this controller marks the Node
``Ready=False`` (reason ``NodeLeaseExpired``) and evicts its drones:

* a drone with a controlling owner (Hive/AgentSpec) is *deleted*; the owner's reconciler
  recreates it (same deterministic name, new uid) and the scheduler places it on a live node;
* a drone without an owner has ``spec.nodeName`` cleared and its status reset to ``Pending``.

Either way, a node that comes back finds drones it ran either gone, or with a different uid or
``nodeName``: the node agent must stop every local process whose drone (by uid) is not assigned
to it. When the lease is renewed, the controller restores ``Ready=True`` if it was the one that
set it False; a ``Ready=False`` the node agent wrote itself is left to the node agent.
Drones assigned to a Node object that no longer exists are evicted the same way.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta

from apiary.controllers.events import NORMAL, WARNING, EventRecorder
from apiary.controllers.meta import (
    Obj,
    controller_ref,
    get_condition,
    parse_time,
    set_condition,
    terminating,
)
from apiary.controllers.settings import QueenSettings
from apiary.errors import Conflict, NotFound
from apiary.store import Store

log = logging.getLogger("apiary.controllers.nodes")

LEASE_EXPIRED = "NodeLeaseExpired"


def renew_time(node: Obj) -> datetime | None:
    """When the node last proved it is alive (lease renewal, heartbeat, or its creation)."""
    status = node.get("status") or {}
    lease = status.get("lease")
    if not isinstance(lease, dict):
        lease = {}
    for value in (lease.get("renewTime"), status.get("heartbeatTime")):
        moment = parse_time(value)
        if moment is not None:
            return moment
    return parse_time((node.get("metadata") or {}).get("creationTimestamp"))


def lease_fresh(node: Obj, now: datetime, duration: float) -> bool:
    """Renewed within ``duration`` seconds — or within the node's own
    ``status.lease.leaseDurationSeconds`` when it declares one."""
    renewed = renew_time(node)
    lease = (node.get("status") or {}).get("lease")
    own = lease.get("leaseDurationSeconds") if isinstance(lease, dict) else None
    if isinstance(own, int | float) and not isinstance(own, bool) and own > 0:
        duration = float(own)
    return renewed is not None and now - renewed <= timedelta(seconds=duration)


def node_unusable_reason(node: Obj, now: datetime, duration: float) -> str | None:
    """Why the scheduler must not place drones here, or None when it may."""
    if not lease_fresh(node, now, duration):
        return "not ready"
    ready = get_condition(node, "Ready")
    if ready is not None and ready.get("status") != "True":
        return "not ready"
    if (node.get("spec") or {}).get("unschedulable"):
        return "unschedulable"
    if terminating(node):
        return "being deleted"
    return None


class NodeController:
    def __init__(self, store: Store, settings: QueenSettings, events: EventRecorder) -> None:
        self.store = store
        self.settings = settings
        self.events = events

    async def run_once(self) -> int:
        """Check every lease once; returns how many drones were evicted."""
        now = self.settings.clock()
        duration = self.settings.nodes.lease_duration
        nodes = {n["metadata"]["name"]: n for n in (await self.store.list("Node")).items}
        lost: dict[str, str] = {}
        for name, node in nodes.items():
            if lease_fresh(node, now, duration):
                await self._mark(node, ready=True, now=now)
            else:
                renewed = renew_time(node)
                lost[name] = (
                    f"node lease expired (last renewed {renewed.isoformat()})"
                    if renewed
                    else "node never renewed its lease"
                )
                await self._mark(node, ready=False, now=now, message=lost[name])
        evicted = 0
        for drone in (await self.store.list("Drone")).items:
            node_name = (drone.get("spec") or {}).get("nodeName")
            if not node_name or terminating(drone):
                continue
            if node_name not in nodes:
                lost.setdefault(node_name, f"node {node_name!r} no longer exists")
            if node_name in lost and await self._evict(drone, node_name, lost[node_name]):
                evicted += 1
        return evicted

    async def _mark(self, node: Obj, *, ready: bool, now: datetime, message: str = "") -> None:
        cond = get_condition(node, "Ready")
        if ready and not (
            cond and cond.get("status") == "False" and cond.get("reason") == LEASE_EXPIRED
        ):
            return  # fresh lease and no verdict of ours to undo
        if (
            not ready
            and cond
            and cond.get("status") == "False"
            and cond.get("reason") == LEASE_EXPIRED
        ):
            return  # already marked
        new = copy.deepcopy(node)
        status = new.setdefault("status", {})
        status["conditions"] = set_condition(
            list(status.get("conditions") or []),
            "Ready",
            ready,
            "NodeLeaseRenewed" if ready else LEASE_EXPIRED,
            "node lease renewed" if ready else message,
            now,
        )
        try:
            await self.store.update(new, subresource="status")
        except (Conflict, NotFound):
            return  # the node agent just wrote (probably a renewal): judge again next period
        await self.events.record(
            node,
            "NodeReady" if ready else "NodeNotReady",
            "node lease renewed" if ready else message,
            type=NORMAL if ready else WARNING,
        )

    async def _evict(self, drone: Obj, node_name: str, why: str) -> bool:
        meta = drone["metadata"]
        owner = controller_ref(drone)
        try:
            if owner is not None:
                await self.store.delete(
                    "Drone",
                    meta["namespace"],
                    meta["name"],
                    resource_version=meta["resourceVersion"],
                )
            else:
                moved = copy.deepcopy(drone)
                moved["spec"].pop("nodeName", None)
                placed = await self.store.update(moved)
                placed["status"] = {
                    "phase": "Pending",
                    "ready": False,
                    "reason": "Evicted",
                    "message": f"evicted from {node_name}: {why}",
                }
                await self.store.update(placed, subresource="status")
        except (Conflict, NotFound):
            return False
        involved = (
            drone
            if owner is None
            else {
                "kind": owner.get("kind"),
                "apiVersion": owner.get("apiVersion"),
                "metadata": {
                    "name": owner.get("name"),
                    "namespace": meta["namespace"],
                    "uid": owner.get("uid"),
                },
            }
        )
        await self.events.record(
            involved,
            "Evicted",
            f"drone {meta['name']} evicted from {node_name}: {why}",
            type=WARNING,
        )
        return True
