"""The Hive reconciler: a Hive becomes drones, one group per stage, and reports how that goes.

Per pass: read the Hive, its Cell, the AgentSpecs its stages name, and the drones it owns;
sync each stage group (:mod:`apiary.controllers.rollout`); delete drones of stages that no longer
exist; write ``status`` only when it differs. A stage whose AgentSpec does not exist (yet) gets no
new drones and turns ``ResolvedRefs`` False — not an error: the AgentSpec's creation requeues the
Hive. Drones an existing stage already runs are left alone when its AgentSpec disappears (they
carry their own copy of it), just as deleting a ConfigMap does not kill pods.

A stage runs the autoscaler's count (``status.apiary.io/autoscaler``) only while its AgentSpec
has ``scaling``: once ``scaling`` is gone the spec's ``replicas`` decides at once, and the pass
removes the stage's entry from the annotation (and those of stages no longer in the spec) — the
leftover would otherwise come back to life the day ``scaling`` does.

Status: ``phase`` Pending (nothing Ready yet) | Running (every wanted drone Ready) | Degraded
(partly Ready, a drone Failed, or a stage unresolved); ``replicas``/``readyReplicas``;
``stages[]`` with ``wanted``/``ready``/``current``/``updated``/``templateHash``; conditions
``Ready`` (reason ``MissingReferences`` while an AgentSpec is missing, whatever the drones do),
``Progressing`` (reason ``QuotaBlocksSurge`` while a rollout replaces in place because the Cell's
quota holds its new drones), ``ResolvedRefs``; ``observedGeneration``.

Warm pools (``poolMode`` warm/hybrid, :mod:`apiary.controllers.warmpool`): each stage's group
claims from its pool before creating drones, then the pool is refilled; ``stages[].pool`` says
``{mode, wanted, current, ready}`` (and ``active`` for hybrid). Pool drones count in no stage
figure above and do not make the Hive Ready or not.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from apiary.controllers.cache import Informer
from apiary.controllers.events import EventRecorder
from apiary.controllers.meta import (
    LABEL_AGENTSPEC,
    LABEL_HIVE,
    LABEL_POOL,
    LABEL_STAGE,
    Obj,
    QuantityError,
    controller_ref,
    is_owned_by,
    set_condition,
    terminating,
)
from apiary.controllers.pooltraffic import WarmPools
from apiary.controllers.reports import FailureMemo, report_group, report_pool
from apiary.controllers.rollout import Group, GroupResult, sync_group
from apiary.controllers.settings import QueenSettings
from apiary.controllers.templates import (
    Stage,
    autoscaler_notes,
    drone_template,
    effective_replicas,
    hive_stages,
    is_autoscaled,
    set_autoscaler_notes,
    template_hash,
)
from apiary.controllers.warmpool import (
    Claims,
    PoolPolicy,
    PoolResult,
    is_warm,
    stage_of,
    sync_pool,
)
from apiary.errors import Conflict, NotFound
from apiary.store import Selector, Store, parse_selector

log = logging.getLogger("apiary.controllers.hive")


async def get_or_none(store: Store, kind: str, namespace: str, name: str) -> Obj | None:
    try:
        return await store.get(kind, namespace, name)
    except NotFound:
        return None


def claimer(store: Store, kind: str, owner: Obj) -> Any:
    """A claim callable: a resourceVersion-conditioned no-op status write of the owner, which
    fails with Conflict when another controller acted on the owner since we read it."""

    async def claim() -> None:
        await store.update(
            {
                "apiVersion": owner.get("apiVersion"),
                "kind": kind,
                "metadata": {
                    "name": owner["metadata"]["name"],
                    "namespace": owner["metadata"]["namespace"],
                    "resourceVersion": owner["metadata"]["resourceVersion"],
                },
                "status": owner.get("status") or {},
            },
            subresource="status",
        )

    return claim


async def list_drones(
    store: Store, cache: Informer | None, namespace: str, selector: Selector | None
) -> list[Obj]:
    """The drones of ``selector``: from ``cache`` (the running Queen's, fed by its watch) once it
    has listed, else from the store. A pass over a 1,000-drone group then decodes nothing; the
    cache holds at least every change that queued the pass, and a pass acting on a drone a
    moment out of date is safe — creates collide on names, deletes carry resourceVersions."""
    if cache is not None and cache.has_synced:
        return cache.list("Drone", namespace, selector=selector)
    return (await store.list("Drone", namespace, selector=selector)).items


class HiveReconciler:
    def __init__(
        self,
        store: Store,
        settings: QueenSettings,
        events: EventRecorder,
        drones: Informer | None = None,
        pools: WarmPools | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        self.drones = drones
        """Where a pass reads drones from (see :func:`list_drones`)."""
        self.failures = FailureMemo()
        self.pools = pools if pools is not None else WarmPools(settings, drones, store=store)
        """What the stages' warm pools should hold (hybrid: their traffic)."""

    async def reconcile(self, namespace: str, name: str) -> None:
        hive = await get_or_none(self.store, "Hive", namespace, name)
        selector = parse_selector(f"{LABEL_HIVE}={name}")
        drones = await list_drones(self.store, self.drones, namespace, selector)
        if hive is None:
            self.pools.forget(namespace, name)
            await self._collect_orphans(drones, name)
            return
        if terminating(hive):
            self.pools.forget(namespace, name)
            return
        owned = [d for d in drones if is_owned_by(d, hive)]
        cell = await get_or_none(self.store, "Cell", "", namespace)
        stages, problems = hive_stages(hive)
        policy = PoolPolicy.of(hive)
        specs: dict[str, Obj | None] = {}
        results: list[tuple[Stage, GroupResult]] = []
        pools: dict[str, PoolResult] = {}
        missing: dict[str, list[str]] = {}
        invalid: list[str] = [f"{f}: {m}" for f, m in problems]
        claim = claimer(self.store, "Hive", hive)
        for stage in stages:
            if stage.agent_ref not in specs:
                specs[stage.agent_ref] = await get_or_none(
                    self.store, "AgentSpec", namespace, stage.agent_ref
                )
            agentspec = specs[stage.agent_ref]
            template: Obj | None = None
            if agentspec is None:
                missing.setdefault(stage.agent_ref, []).append(f"{stage.field}.agentRef")
            else:
                try:
                    template = drone_template(
                        agentspec, cell=cell, hive=hive, stage=stage, tiers=self.settings.tiers
                    )
                except QuantityError as exc:
                    invalid.append(f"{stage.field}: {exc}")
            mine, pooled = [], []
            for d in owned:
                on = d["metadata"].get("labels") or {}
                if on.get(LABEL_STAGE) == stage.name and not is_warm(d):
                    mine.append(d)
                elif on.get(LABEL_POOL) == stage.name:
                    pooled.append(d)
            labels = {LABEL_HIVE: name, LABEL_STAGE: stage.name, LABEL_AGENTSPEC: stage.agent_ref}
            thash = template_hash(template) if template is not None else None
            size, active = self.pools.wanted(hive, stage.name, policy)
            group = Group(
                owner=hive,
                name_parts=(name, stage.name),
                labels=labels,
                wanted=effective_replicas(stage, agentspec),
                template=template,
                pool=Claims(self.store, pooled, thash, labels) if pooled and thash else None,
            )
            result = await sync_group(
                self.store,
                group,
                mine,
                rollout=self.settings.rollout,
                claim=claim,
            )
            rolling = any(
                (d.get("spec") or {}).get("templateHash") != result.template_hash
                for d in mine
                if not terminating(d)
            )
            await report_group(self.events, self.failures, hive, stage.name, result, rolling)
            results.append((stage, result))
            if policy.mode != "cold" or pooled:
                pools[stage.name] = await self._sync_pool(
                    hive, group, stage, policy, PoolResult(policy.mode, size, active=active),
                    mine, pooled, result,
                )  # fmt: skip
        if policy.mode == "hybrid":
            self.pools.forget(namespace, name, keep=[s.name for s in stages])
        else:
            self.pools.forget(namespace, name)
        await self._drop_removed_stages(hive, owned, {s.name for s in stages})
        unresolved = [f"AgentSpec {n!r} not found ({', '.join(p)})" for n, p in missing.items()]
        await self._write_status(hive, results, unresolved, invalid, pools)
        await self._prune_notes(hive, stale_notes(hive, stages, specs))

    async def _sync_pool(
        self, hive: Obj, group: Group, stage: Stage, policy: PoolPolicy, pool: PoolResult,
        mine: list[Obj], pooled: list[Obj], result: GroupResult,
    ) -> PoolResult:  # fmt: skip
        """Refill (or shrink) the stage's pool after the group's claims."""
        gone = (
            {d["metadata"]["uid"] for d in group.pool.claimed} if group.pool is not None else set()
        )
        left = [d for d in pooled if d["metadata"]["uid"] not in gone]
        await sync_pool(
            self.store,
            owner=hive,
            name_parts=group.name_parts,
            labels=group.labels,
            stage=stage.name,
            template=group.template,
            thash=result.template_hash,
            drones=left,
            taken={d["metadata"]["name"] for d in (*mine, *pooled)},
            result=pool,
            rollout=self.settings.rollout,
            creates_left=self.settings.rollout.max_creates_per_pass
            - len(result.created)
            - len(result.claimed),
        )
        await report_pool(self.events, self.failures, hive, stage.name, policy, pool)
        return pool

    async def _prune_notes(self, hive: Obj, stale: set[str]) -> None:
        """Drop the autoscaler's entries of ``stale`` stages (last, so the resourceVersion the
        pass claimed with is not moved under it); a concurrent write is retried on fresh data."""
        if not stale:
            return

        def change(current: Obj) -> Obj | None:
            notes = autoscaler_notes(current)
            if not stale & notes.keys():
                return None
            set_autoscaler_notes(current, {k: v for k, v in notes.items() if k not in stale})
            return current

        meta = hive["metadata"]
        await self.store.update_with_retry("Hive", meta["namespace"], meta["name"], change)
        log.info(
            "dropped autoscaler counts of removed stages",
            extra={"cell": meta.get("namespace"), "hive": meta["name"], "stages": sorted(stale)},
        )

    async def _drop_removed_stages(self, hive: Obj, owned: list[Obj], names: set[str]) -> None:
        gone = [d for d in owned if stage_of(d) not in names and not terminating(d)]
        for drone in gone:
            try:
                await self.store.delete(
                    "Drone", drone["metadata"]["namespace"], drone["metadata"]["name"]
                )
            except NotFound:
                pass
        if gone:
            await self.events.record(
                hive, "ScalingDown", f"removed {len(gone)} drones of stages no longer in the spec"
            )

    async def _collect_orphans(self, drones: list[Obj], hive_name: str) -> None:
        """The Hive is gone: delete the drones it controlled (the API's cascade may have been
        interrupted)."""
        for drone in drones:
            ref = controller_ref(drone)
            if ref is None or ref.get("kind") != "Hive" or ref.get("name") != hive_name:
                continue
            try:
                await self.store.delete(
                    "Drone", drone["metadata"]["namespace"], drone["metadata"]["name"]
                )
            except NotFound:
                pass

    async def _write_status(
        self,
        hive: Obj,
        results: list[tuple[Stage, GroupResult]],
        unresolved: list[str],
        invalid: list[str],
        pools: dict[str, PoolResult] | None = None,
    ) -> None:
        """``unresolved``: missing AgentSpecs, worded exactly as the API's reference resolver
        words them, so the two never fight over ``ResolvedRefs``; ``invalid``: spec problems,
        reported through ``Ready`` (reason ``InvalidSpec``)."""
        now = self.settings.clock()
        problems = unresolved + invalid
        wanted = sum(r.wanted for _, r in results)
        ready = sum(min(r.ready, r.wanted) for _, r in results)
        failed = sum(len(r.failed) for _, r in results)
        settled = all(r.settled for _, r in results) and not problems
        if problems and ready == 0 and wanted > 0:
            phase = "Pending"
        elif settled and failed == 0:
            phase = "Running"
        elif ready == 0 and failed == 0 and not problems:
            phase = "Pending"
        else:
            phase = "Degraded"
        stages_status: list[Obj] = [
            {
                "name": s.name,
                "agentRef": s.agent_ref,
                "wanted": r.wanted,
                "ready": r.ready,
                "current": r.current,
                "updated": r.updated,
                "templateHash": r.template_hash,
            }
            for s, r in results
        ]
        for entry in stages_status:
            pool = (pools or {}).get(str(entry["name"]))
            if pool is not None:
                entry["pool"] = pool.status()

        def change(current: Obj) -> Obj | None:
            status = copy.deepcopy(current.get("status") or {})
            conds = list(status.get("conditions") or [])
            conds = set_condition(
                conds,
                "ResolvedRefs",
                not unresolved,
                "MissingReferences" if unresolved else "AllResolved",
                "; ".join(unresolved) if unresolved else "all references resolved",
                now,
            )
            ready_ok = ready >= wanted and not problems
            conds = set_condition(
                conds, "Ready", ready_ok, *ready_reason(ready, wanted, unresolved, invalid), now
            )
            conds = set_condition(
                conds, "Progressing", not settled, *progressing_reason(settled, results), now
            )
            status.update(
                {
                    "phase": phase,
                    "observedGeneration": hive["metadata"]["generation"],
                    "replicas": wanted,
                    "readyReplicas": ready,
                    "stages": stages_status,
                    "conditions": conds,
                }
            )
            if status == current.get("status"):
                return None
            current["status"] = status
            return current

        try:
            await self.store.update_with_retry(
                "Hive",
                hive["metadata"]["namespace"],
                hive["metadata"]["name"],
                change,
                subresource="status",
            )
        except Conflict:  # pragma: no cover - 20 conflicts in a row: the next pass writes it
            log.warning(
                "hive status write kept conflicting",
                extra={"cell": hive["metadata"].get("namespace"), "hive": hive["metadata"]["name"]},
            )


def ready_reason(
    ready: int, wanted: int, unresolved: list[str], invalid: list[str]
) -> tuple[str, str]:
    """The ``Ready`` condition's reason and a message that is true: a Hive whose drones are all
    Ready but whose AgentSpec is gone is not Ready because of the reference, and says so."""
    if invalid:
        return "InvalidSpec", "; ".join(invalid)
    counted = f"{ready}/{wanted} drones ready"
    if ready >= wanted and not unresolved:
        return "AllDronesReady", counted
    if unresolved:
        return "MissingReferences", (
            f"{counted}, but {'; '.join(unresolved)}: "
            "its stages start no drone until it exists again"
        )
    return "DronesNotReady", counted


def progressing_reason(settled: bool, results: list[tuple[Stage, GroupResult]]) -> tuple[str, str]:
    """The ``Progressing`` condition's reason and message; a rollout the Cell's quota leaves no
    room to surge says that it replaces drones in place, and which quota holds it."""
    if settled:
        return "Complete", "all stages at their wanted template and size"
    blocked = [(s.name, r.quota_blocked) for s, r in results if r.quota_blocked]
    if blocked:
        stages = ", ".join(name for name, _ in blocked)
        return "QuotaBlocksSurge", (
            f"stage {stages}: no quota room for a surge drone ({blocked[0][1]}); "
            "replacing old drones in place, one at a time"
        )
    return "Updating", "creating, replacing or waiting for drones"


def stale_notes(hive: Obj, stages: list[Stage], specs: dict[str, Obj | None]) -> set[str]:
    """Stages whose autoscaler entry no longer means anything: gone from the spec, or their
    AgentSpec exists without ``scaling``. (A missing AgentSpec keeps its entry: it may be on
    its way back, and its stage starts no drones meanwhile.)"""
    by_name = {s.name: s for s in stages}
    stale = set()
    for name in autoscaler_notes(hive):
        stage = by_name.get(name)
        if stage is None:
            stale.add(name)
            continue
        agentspec = specs.get(stage.agent_ref)
        if agentspec is not None and not is_autoscaled(agentspec):
            stale.add(name)
    return stale


__all__ = [
    "FailureMemo",
    "HiveReconciler",
    "claimer",
    "get_or_none",
    "list_drones",
    "progressing_reason",
    "ready_reason",
    "report_group",
    "stale_notes",
]
