"""Standalone drones of an AgentSpec: an agent that runs on its own, outside any Hive.

Where the replica count lives (what ``apiaryctl scale agentspec/NAME --replicas N`` and the
autoscaler write): ``spec.replicas``. Without it the AgentSpec runs ``spec.scaling.minReplicas``
drones (0 when there is no ``scaling``); ``spec.scaling.maxReplicas``, when set, caps either.
The drones are labelled ``apiary.io/agentspec`` (and no ``apiary.io/hive``), owned by the
AgentSpec, and replaced by the same rolling rules as Hive stages. The AgentSpec's status gets
``replicas``, ``readyReplicas``, ``updatedReplicas``, ``observedGeneration``
and a ``Ready`` condition.
"""

from __future__ import annotations

import copy

from apiary.controllers.cache import Informer
from apiary.controllers.events import EventRecorder
from apiary.controllers.hive import claimer, get_or_none, list_drones
from apiary.controllers.meta import (
    LABEL_AGENTSPEC,
    LABEL_HIVE,
    Obj,
    QuantityError,
    controller_ref,
    is_owned_by,
    set_condition,
    terminating,
)
from apiary.controllers.reports import FailureMemo, report_group
from apiary.controllers.rollout import Group, sync_group
from apiary.controllers.settings import QueenSettings
from apiary.controllers.templates import drone_template
from apiary.errors import NotFound
from apiary.store import Store, parse_selector


def wanted_replicas(agentspec: Obj) -> tuple[int, str | None]:
    """(standalone replicas wanted, problem naming the field or None)."""
    spec = agentspec.get("spec") or {}
    scaling = spec.get("scaling") or {}
    if not isinstance(scaling, dict):
        return 0, "spec.scaling: must be a mapping"
    if spec.get("replicas") is not None:
        field, value = "spec.replicas", spec.get("replicas")
    else:
        field, value = "spec.scaling.minReplicas", scaling.get("minReplicas", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0, f"{field}: must be a non-negative integer, got {value!r}"
    cap = scaling.get("maxReplicas")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0:
        value = min(value, cap)
    return value, None


class AgentSpecReconciler:
    def __init__(
        self,
        store: Store,
        settings: QueenSettings,
        events: EventRecorder,
        drones: Informer | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        self.drones = drones
        """Where a pass reads drones from (see :func:`apiary.controllers.hive.list_drones`)."""
        self.failures = FailureMemo()

    async def reconcile(self, namespace: str, name: str) -> None:
        agentspec = await get_or_none(self.store, "AgentSpec", namespace, name)
        selector = parse_selector(f"{LABEL_AGENTSPEC}={name},!{LABEL_HIVE}")
        drones = await list_drones(self.store, self.drones, namespace, selector)
        if agentspec is None:
            for drone in drones:  # orphans; the GC would find them too, this is just sooner
                ref = controller_ref(drone) or {}
                if ref.get("kind") == "AgentSpec" and ref.get("name") == name:
                    await _delete_quietly(self.store, drone)
            return
        if terminating(agentspec):
            return
        owned = [d for d in drones if is_owned_by(d, agentspec)]
        cell = await get_or_none(self.store, "Cell", "", namespace)
        wanted, problem = wanted_replicas(agentspec)
        template: Obj | None = None
        try:
            template = drone_template(agentspec, cell=cell, tiers=self.settings.tiers)
        except QuantityError as exc:
            problem = str(exc)
        group = Group(
            owner=agentspec,
            name_parts=(name,),
            labels={LABEL_AGENTSPEC: name},
            wanted=wanted,
            template=template,
        )
        result = await sync_group(
            self.store,
            group,
            owned,
            rollout=self.settings.rollout,
            claim=claimer(self.store, "AgentSpec", agentspec),
        )
        rolling = any(
            (d.get("spec") or {}).get("templateHash") != result.template_hash
            for d in owned
            if not terminating(d)
        )
        await report_group(self.events, self.failures, agentspec, "", result, rolling)
        now = self.settings.clock()
        ready = min(result.ready, wanted)

        def change(current: Obj) -> Obj | None:
            status = copy.deepcopy(current.get("status") or {})
            ok = ready >= wanted and problem is None
            message = problem or f"{ready}/{wanted} standalone drones ready"
            conds = set_condition(
                list(status.get("conditions") or []),
                "Ready",
                ok,
                "AllDronesReady" if ok else ("InvalidSpec" if problem else "DronesNotReady"),
                message,
                now,
            )
            status.update(
                {
                    "replicas": wanted,
                    "readyReplicas": ready,
                    "updatedReplicas": result.updated,
                    "observedGeneration": agentspec["metadata"]["generation"],
                    "conditions": conds,
                }
            )
            if status == current.get("status"):
                return None
            current["status"] = status
            return current

        await self.store.update_with_retry(
            "AgentSpec", namespace, name, change, subresource="status"
        )


async def _delete_quietly(store: Store, drone: Obj) -> None:
    try:
        await store.delete("Drone", drone["metadata"]["namespace"], drone["metadata"]["name"])
    except NotFound:
        pass
