"""The scheduler: places Pending drones on nodes, within the Cell's quota.

One pass lists nodes and drones, computes what every node already carries (requests of the
drones assigned to it that are not ``Stopped``), and takes the unplaced drones by priority —
``spec.resolvedTier.priority`` high, normal (drones without a tier), low — and oldest first
within a priority, so when the nodes cannot take every pending drone the higher tiers get the
room. A drone that does not fit does not hold back smaller ones after it (no reservation, no
preemption: a placed drone is never evicted for a higher one):

1. requests unreadable → held with ``reason: InvalidResources``;
2. over the Cell quota (:mod:`apiary.controllers.quota`) → held with ``reason: QuotaExceeded``;
3. else the usable node (fresh lease, not ``Ready=False``, not ``unschedulable``) with room for
   its requests and the lowest allocation after placing it (spread: least allocated first;
   ties by drone count, then name) gets it: ``spec.nodeName`` is written with the drone's
   resourceVersion, so two schedulers cannot both place it;
4. nothing fits → held with ``reason: Unschedulable`` and a message such as
   ``0/2 nodes available: 2 insufficient cpu``.

Node room is ``status.allocatable`` (else ``spec.capacity``): ``cpu`` millicores, ``memory``
bytes, optional ``drones`` (max drones on the node). Held drones are re-examined every pass.

Warm pool drones (``spec.warm``, :mod:`apiary.controllers.warmpool`) come after every serving
drone, and in a Cell where a serving drone was just held by the quota they are held too: a pool
never takes the room a serving drone waits for.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from dataclasses import dataclass, field

from apiary.controllers.events import WARNING, EventRecorder
from apiary.controllers.meta import (
    Obj,
    QuantityError,
    controller_ref,
    parse_cpu,
    parse_memory,
    requests_of,
    set_condition,
    terminating,
)
from apiary.controllers.nodes import node_unusable_reason
from apiary.controllers.quota import Quota, Usage, check
from apiary.controllers.settings import QueenSettings
from apiary.errors import Conflict, NotFound
from apiary.resources.tiers import priority_rank
from apiary.store import Store

log = logging.getLogger("apiary.controllers.scheduler")

HELD_REASONS = ("Unschedulable", "QuotaExceeded", "InvalidResources", "Evicted")


@dataclass
class NodeRoom:
    name: str
    cpu: int
    memory: int
    max_drones: int | None
    unusable: str | None
    used_cpu: int = 0
    used_memory: int = 0
    drones: int = 0

    def misfit(self, cpu: int, memory: int) -> list[str]:
        why = []
        if self.used_cpu + cpu > self.cpu:
            why.append("insufficient cpu")
        if self.used_memory + memory > self.memory:
            why.append("insufficient memory")
        if self.max_drones is not None and self.drones + 1 > self.max_drones:
            why.append("too many drones")
        return why

    def load_after(self, cpu: int, memory: int) -> float:
        fractions = [
            (self.used_cpu + cpu) / self.cpu if self.cpu else 0.0,
            (self.used_memory + memory) / self.memory if self.memory else 0.0,
        ]
        return sum(fractions) / len(fractions)


def node_room(node: Obj, unusable: str | None) -> NodeRoom:
    name = node["metadata"]["name"]
    status = node.get("status") or {}
    room = status.get("allocatable") or (node.get("spec") or {}).get("capacity") or {}
    if not isinstance(room, dict):
        return NodeRoom(name, 0, 0, 0, unusable or "invalid capacity")
    try:
        cpu = parse_cpu(room.get("cpu"), "cpu")
        memory = parse_memory(room.get("memory"), "memory")
    except QuantityError:
        return NodeRoom(name, 0, 0, 0, unusable or "invalid capacity")
    max_drones = room.get("drones")
    if isinstance(max_drones, bool) or not isinstance(max_drones, int):
        max_drones = None
    return NodeRoom(name, cpu, memory, max_drones, unusable)


def requests(drone: Obj) -> tuple[int, int]:
    return requests_of(drone.get("spec") or {}, f"drone {drone['metadata']['name']!r}: spec")


def summarize(total: int, reasons: Counter[str]) -> str:
    if total == 0:
        return "0/0 nodes available: no nodes registered"
    parts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return f"0/{total} nodes available: {parts}"


@dataclass
class PassResult:
    placed: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)


class Scheduler:
    def __init__(self, store: Store, settings: QueenSettings, events: EventRecorder) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        self._lock = asyncio.Lock()

    async def run_once(self) -> PassResult:
        """One scheduling pass. Passes of one Scheduler never overlap (capacity is counted per
        pass); across processes, leader election keeps a single active scheduler."""
        async with self._lock:
            return await self._run_once()

    async def _run_once(self) -> PassResult:
        now = self.settings.clock()
        lease = self.settings.nodes.lease_duration
        rooms = {
            n["metadata"]["name"]: node_room(n, node_unusable_reason(n, now, lease))
            for n in (await self.store.list("Node")).items
        }
        drones = (await self.store.list("Drone")).items
        usage: dict[str, Usage] = {}
        pending: list[Obj] = []
        for drone in drones:
            node_name = (drone.get("spec") or {}).get("nodeName")
            if not node_name:
                if not terminating(drone):
                    pending.append(drone)
                continue
            if (drone.get("status") or {}).get("phase") == "Stopped":
                continue
            try:
                cpu, memory = requests(drone)
            except QuantityError:
                cpu, memory = 0, 0
            room = rooms.get(node_name)
            if room is not None:
                room.used_cpu += cpu
                room.used_memory += memory
                room.drones += 1
            usage.setdefault(drone["metadata"]["namespace"], Usage()).add(drone, cpu, memory)
        pending.sort(
            key=lambda d: (
                (d.get("spec") or {}).get("warm") is True,  # pools after serving drones
                priority_rank(d.get("spec") or {}),
                d["metadata"].get("creationTimestamp") or "",
                d["metadata"]["namespace"],
                d["metadata"]["name"],
            )
        )
        quotas: dict[str, Quota] = {}
        waiting: dict[str, str] = {}
        """Cell → the quota message of a serving drone held this pass."""
        result = PassResult()
        for drone in pending:
            namespace = drone["metadata"]["namespace"]
            if namespace not in quotas:
                quotas[namespace] = Quota.of(await self._cell(namespace), namespace)
            cell_usage = usage.setdefault(namespace, Usage())
            try:
                cpu, memory = requests(drone)
            except QuantityError as exc:
                await self._hold(drone, "InvalidResources", str(exc), result)
                continue
            warm = (drone.get("spec") or {}).get("warm") is True
            over = check(quotas[namespace], cell_usage, drone, cpu, memory)
            if over is None and warm and namespace in waiting:
                over = f"{waiting[namespace]}; a warm pool drone waits behind serving drones"
            if over is not None:
                if not warm:
                    waiting.setdefault(namespace, over)
                await self._hold(drone, "QuotaExceeded", over, result)
                continue
            target = self._choose(rooms, cpu, memory)
            if isinstance(target, str):
                await self._hold(drone, "Unschedulable", target, result)
                continue
            if await self._bind(drone, target.name):
                target.used_cpu += cpu
                target.used_memory += memory
                target.drones += 1
                cell_usage.add(drone, cpu, memory)
                result.placed[drone["metadata"]["name"]] = target.name
        return result

    async def _cell(self, namespace: str) -> Obj | None:
        try:
            return await self.store.get("Cell", "", namespace)
        except NotFound:
            return None

    @staticmethod
    def _choose(rooms: dict[str, NodeRoom], cpu: int, memory: int) -> NodeRoom | str:
        reasons: Counter[str] = Counter()
        fits: list[NodeRoom] = []
        for room in rooms.values():
            if room.unusable:
                reasons[room.unusable] += 1
                continue
            misfit = room.misfit(cpu, memory)
            if misfit:
                reasons.update(misfit)
            else:
                fits.append(room)
        if not fits:
            return summarize(len(rooms), reasons)
        return min(fits, key=lambda r: (r.load_after(cpu, memory), r.drones, r.name))

    async def _bind(self, drone: Obj, node: str) -> bool:
        placed = copy.deepcopy(drone)
        placed["spec"]["nodeName"] = node
        try:
            stored = await self.store.update(placed)  # conditioned on the rv we read
        except (Conflict, NotFound):
            return False
        status = dict(stored.get("status") or {})
        if status.get("reason") in HELD_REASONS:
            status.pop("reason", None)
            status.pop("message", None)
        status.setdefault("phase", "Pending")
        status["nodeName"] = node
        status["conditions"] = set_condition(
            list(status.get("conditions") or []),
            "Scheduled",
            True,
            "Scheduled",
            f"assigned to node {node}",
            self.settings.clock(),
        )
        stored["status"] = status
        try:
            await self.store.update(stored, subresource="status")
        except (Conflict, NotFound):
            pass  # the node agent wrote first; its status supersedes ours
        return True

    async def _hold(self, drone: Obj, reason: str, message: str, result: PassResult) -> None:
        result.held[drone["metadata"]["name"]] = message
        status = dict(drone.get("status") or {})
        if status.get("reason") == reason and status.get("message") == message:
            return
        status.update({"phase": "Pending", "ready": False, "reason": reason, "message": message})
        status["conditions"] = set_condition(
            list(status.get("conditions") or []),
            "Scheduled",
            False,
            reason,
            message,
            self.settings.clock(),
        )
        held = copy.deepcopy(drone)
        held["status"] = status
        try:
            await self.store.update(held, subresource="status")
        except (Conflict, NotFound):
            return
        event_reason = "FailedScheduling" if reason == "Unschedulable" else reason
        await self.events.record(drone, event_reason, message, type=WARNING)
        owner = controller_ref(drone)
        if owner is not None:  # so that `describe hive` shows why its drones wait
            involved = {
                "kind": owner.get("kind"),
                "apiVersion": owner.get("apiVersion"),
                "metadata": {
                    "name": owner.get("name"),
                    "uid": owner.get("uid"),
                    "namespace": drone["metadata"]["namespace"],
                },
            }
            await self.events.record(
                involved,
                event_reason,
                f"drone {drone['metadata']['name']}: {message}",
                type=WARNING,
            )
