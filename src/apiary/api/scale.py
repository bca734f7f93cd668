"""The ``/scale`` subresource of Hives (per stage) and AgentSpecs.

``PUT {"replicas": N}`` (plus ``"stage": S`` for a hive with several stages) is an ordinary spec
update — the generation bumps, a stale ``resourceVersion`` is a 409, admission and quotas apply —
that writes the one field the controllers read: ``spec.stages[i].replicas``,
``spec.patternSegments[j].config.{subscribers|stages|agents}[k].replicas`` (stage names as the
controllers give them, :func:`apiary.controllers.templates.hive_stages`) or an AgentSpec's
``spec.replicas``. ``GET`` answers a ``Scale``: wanted replicas in ``spec``, and in ``status`` the
drones that exist and are Ready right now, counted from the drones themselves.

A manual scale must take effect, as ``kubectl scale`` does under an HPA. On a stage whose
AgentSpec has ``scaling`` the count is clamped to ``minReplicas..maxReplicas`` and written, in the
same update, into the autoscaler's annotation as where it carries on from; the answer's
``message`` says so (and why, when clamped). On any other stage the annotation's entry is dropped,
so the spec alone decides. The ``spec.stages[]`` rows of an autoscaled stage carry its
``minReplicas``/``maxReplicas``.

The count is bounded like any stage's (:mod:`apiary.resources.limits`): more than the server's
replicas-per-stage limit, or the one the Cell's quota lowers it to, is a 422 naming ``replicas``
before anything is read or clamped.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from apiary.api import params
from apiary.api.bodies import parse_body, read_body
from apiary.api.limits import limits_for
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.state import ApiState
from apiary.controllers.agentspec import wanted_replicas
from apiary.controllers.autoscaler import ScalingPolicy
from apiary.controllers.manual_scale import ManualScale, manual_scale
from apiary.controllers.templates import Stage, effective_replicas, hive_stages
from apiary.errors import BadRequest, Conflict, FieldDetail, Invalid, NotFound, QuotaExceeded
from apiary.resources import API_VERSION, ValidationFailed, admit
from apiary.resources.limits import AdmissionLimits, replicas_problem
from apiary.store import parse_selector

Obj = dict[str, Any]
_KINDS = {"hives": "Hive", "agentspecs": "AgentSpec"}
_STEP = re.compile(r"^([A-Za-z]+)(?:\[(\d+)\])?$")
_RETRIES = 10


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


def _target(request: Request, verb: str) -> tuple[str, str, str]:
    cell, plural, name = (request.path_params[k] for k in ("cell", "plural", "name"))
    kind = _KINDS[plural]
    _state(request).authorizer.authorize(request.scope[PRINCIPAL_KEY], verb, kind, cell)
    return kind, cell, name


# ------------------------------------------------------------------------------- stages


def _stages(hive: Obj) -> list[Stage]:
    stages, _ = hive_stages(hive)
    return stages


def pick_stage(hive: Obj, stage: str | None) -> Stage:
    """The stage ``stage`` names, or the only one; a clear 400/404 naming ``stage`` otherwise."""
    stages = _stages(hive)
    names = ", ".join(s.name for s in stages) or "none"
    hive_name = hive["metadata"]["name"]
    if stage is None:
        if len(stages) == 1:
            return stages[0]
        msg = f"hive {hive_name!r} has {len(stages)} stages ({names}): say which one"
        if not stages:
            msg = f"hive {hive_name!r} has no stages to scale"
        raise BadRequest(f"stage: {msg}", [FieldDetail("stage", msg)])
    for s in stages:
        if s.name == stage:
            return s
    msg = f"hive {hive_name!r} has no stage {stage!r} (stages: {names})"
    raise NotFound(f"stage: {msg}", [FieldDetail("stage", msg)])


def _set_path(obj: Obj, path: str, value: int) -> None:
    """Set ``obj[path]`` for a path like ``spec.patternSegments[0].config.stages[1]``."""
    node: Any = obj
    for step in path.split("."):
        m = _STEP.match(step)
        assert m is not None, path
        node = node[m.group(1)]
        if m.group(2) is not None:
            node = node[int(m.group(2))]
    node["replicas"] = value


# --------------------------------------------------------------------------------- views


async def _drones(state: ApiState, owner: Obj, selector: str) -> tuple[int, int]:
    """(existing, ready) drones the owner controls that match ``selector``."""
    meta = owner["metadata"]
    listed = await state.store.list("Drone", meta["namespace"], selector=parse_selector(selector))
    current = ready = 0
    for d in listed.items:
        refs = d["metadata"].get("ownerReferences") or []
        if d["metadata"].get("deletionTimestamp") or not any(
            r.get("uid") == meta["uid"] for r in refs
        ):
            continue
        current += 1
        ready += bool((d.get("status") or {}).get("ready"))
    return current, ready


async def _agentspec(state: ApiState, cell: str, name: str) -> Obj | None:
    try:
        return await state.store.get("AgentSpec", cell, name)
    except NotFound:
        return None


def _row(stage: Stage, agentspec: Obj | None) -> Obj:
    row: Obj = {"name": stage.name, "replicas": effective_replicas(stage, agentspec)}
    policy = ScalingPolicy.of(agentspec) if agentspec is not None else None
    if policy is not None:
        row.update(minReplicas=policy.min_replicas, maxReplicas=policy.max_replicas)
    return row


async def scale_view(state: ApiState, obj: Obj, stage: str | None) -> Obj:
    """The ``Scale`` of a Hive (one stage, or all of them) or an AgentSpec."""
    meta = obj["metadata"]
    out: Obj = {
        "apiVersion": API_VERSION,
        "kind": "Scale",
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
    }
    out["metadata"]["generation"] = meta.get("generation")
    if obj["kind"] == "AgentSpec":
        wanted, _ = wanted_replicas(obj)
        current, ready = await _drones(
            state, obj, f"apiary.io/agentspec={meta['name']},!apiary.io/hive"
        )
        out["spec"] = {"replicas": wanted}
        out["status"] = {"replicas": current, "readyReplicas": ready}
        return out
    stages = [pick_stage(obj, stage)] if stage is not None else _stages(obj)
    specs: dict[str, Obj | None] = {}
    rows, counts = [], []
    for s in stages:
        if s.agent_ref not in specs:
            specs[s.agent_ref] = await _agentspec(state, meta["namespace"], s.agent_ref)
        rows.append(_row(s, specs[s.agent_ref]))
        counts.append(
            await _drones(state, obj, f"apiary.io/hive={meta['name']},apiary.io/stage={s.name}")
        )
    out["spec"] = {"replicas": sum(r["replicas"] for r in rows), "stages": rows}
    out["status"] = {
        "replicas": sum(current for current, _ in counts),
        "readyReplicas": sum(ready for _, ready in counts),
        "stages": [
            {"name": r["name"], "replicas": current, "readyReplicas": ready}
            for r, (current, ready) in zip(rows, counts, strict=True)
        ],
    }
    if len(rows) == 1:
        out["spec"]["stage"] = out["status"]["stage"] = rows[0]["name"]
    return out


# ------------------------------------------------------------------------------ requests


def parse_scale_body(body: Obj) -> tuple[int, str | None, str | None]:
    """(replicas, stage, resourceVersion) from ``{"replicas", "stage"}`` or a Scale object."""
    raw_spec, raw_meta = body.get("spec"), body.get("metadata")
    spec: Obj = raw_spec if isinstance(raw_spec, dict) else body
    meta: Obj = raw_meta if isinstance(raw_meta, dict) else {}
    replicas, stage = spec.get("replicas"), spec.get("stage")
    rv = meta.get("resourceVersion", body.get("resourceVersion"))
    problems: list[FieldDetail] = []
    if replicas is None:
        problems.append(FieldDetail("replicas", "required: the number of drones wanted"))
    elif isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        problems.append(
            FieldDetail("replicas", f"must be a non-negative integer, got {replicas!r}")
        )
    if stage is not None and (not isinstance(stage, str) or not stage):
        problems.append(FieldDetail("stage", f"must be a stage name, got {stage!r}"))
    if rv is not None and not isinstance(rv, str | int):
        problems.append(FieldDetail("metadata.resourceVersion", "must be a string"))
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise Invalid(f"scale request is invalid: {summary}", problems)
    assert isinstance(replicas, int)
    return replicas, stage, None if rv in (None, "") else str(rv)


def _admitted(obj: Obj, limits: AdmissionLimits) -> Obj:
    try:
        return admit(obj, limits=limits).object
    except ValidationFailed as exc:
        details = [FieldDetail(f, m) for f, m in exc.details]
        summary = "; ".join(f"{d.field}: {d.message}" for d in details)
        raise Invalid(f"{obj['kind']} {obj['metadata']['name']!r}: {summary}", details) from None


async def _check_total(state: ApiState, obj: Obj, replicas: int) -> None:
    """An AgentSpec's standalone drones count against the cell's ``maxTotalDrones``."""
    try:
        cell = await state.store.get("Cell", "", obj["metadata"]["namespace"])
    except NotFound:
        return
    quota = (cell.get("spec") or {}).get("resourceQuota") or {}
    limit = quota.get("maxTotalDrones") if isinstance(quota, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and replicas > limit:
        raise QuotaExceeded(
            f"AgentSpec {obj['metadata']['name']!r} asks for {replicas} drones; cell "
            f"{obj['metadata']['namespace']!r} quota maxTotalDrones is {limit}"
        )


async def get_scale(request: Request) -> Response:
    kind, cell, name = _target(request, "get/scale")
    state = _state(request)
    obj = await state.store.get(kind, cell, name)
    stage = request.query_params.get("stage") or None
    if kind == "AgentSpec" and stage is not None:
        raise BadRequest("stage: an AgentSpec has no stages", [FieldDetail("stage", "not allowed")])
    return json_response(await scale_view(state, obj, stage))


async def put_scale(request: Request) -> Response:
    kind, cell, name = _target(request, "update/scale")
    state = _state(request)
    raw = await read_body(request, state.config.max_body_bytes)
    replicas, stage, want_rv = parse_scale_body(
        parse_body(raw, request.headers.get("content-type"))
    )
    stage = stage or request.query_params.get("stage") or None
    if kind == "AgentSpec" and stage is not None:
        raise BadRequest("stage: an AgentSpec has no stages", [FieldDetail("stage", "not allowed")])
    dry = params.dry_run(request.query_params)
    limits, _ = await limits_for(state, cell)
    problem = replicas_problem("replicas", replicas, limits)
    if problem is not None:
        raise Invalid(
            f"scale request is invalid: {problem[0]}: {problem[1]}", [FieldDetail(*problem)]
        )
    for _ in range(_RETRIES):
        current = await state.store.get(kind, cell, name)
        rv = current["metadata"]["resourceVersion"]
        if want_rv is not None and want_rv != rv:
            raise Conflict(
                f"{kind} {name!r} was modified: resourceVersion {want_rv} is stale (now {rv}); "
                "read it again and retry"
            )
        changed = copy.deepcopy(current)
        changed.pop("status", None)
        manual: ManualScale | None = None
        if kind == "Hive":
            picked = pick_stage(current, stage)
            manual = await _manual(state, changed, picked, replicas)
            _set_path(changed, picked.field, manual.replicas)
            stage = picked.name
        else:
            changed.setdefault("spec", {})["replicas"] = replicas
            await _check_total(state, current, replicas)
        admitted = _admitted(changed, limits)
        admitted["metadata"]["resourceVersion"] = rv
        if dry:
            admitted["status"] = current.get("status") or {}
            return await _answer(state, admitted, stage, manual)
        try:
            async with state.quotas.admitting(admitted, creating=False):
                stored = await state.store.update(admitted)
        except Conflict:
            if want_rv is not None:
                raise
            continue  # someone wrote in between: read again and re-apply the one field
        return await _answer(state, stored, stage, manual)
    raise Conflict(f"{kind} {name!r} kept changing while scaling it; try again")


async def _manual(state: ApiState, hive: Obj, stage: Stage, replicas: int) -> ManualScale:
    """Clamp and record the count in the autoscaler's annotation of ``hive`` (or drop its entry),
    so the scale takes effect whatever the autoscaler wrote before."""
    agentspec = await _agentspec(state, hive["metadata"]["namespace"], stage.agent_ref)
    return manual_scale(hive, stage, agentspec, replicas, datetime.now(UTC))


async def _answer(
    state: ApiState, obj: Obj, stage: str | None, manual: ManualScale | None
) -> Response:
    view = await scale_view(state, obj, stage)
    note = manual.message() if manual is not None else None
    if note is not None:
        view["message"] = note
    return json_response(view)


def scale_routes() -> APIRouter:
    r = APIRouter(tags=["scale"])
    path = "/api/v1/cells/{cell}/{plural}/{name}/scale"

    @r.get(path, summary="Wanted and actual replicas of a Hive (per stage) or AgentSpec")
    async def read_scale(request: Request, cell: str, plural: str, name: str) -> Response:
        _plural(plural)
        return await get_scale(request)

    @r.put(path, summary='Scale a Hive stage or an AgentSpec: {"replicas": N, "stage": S}')
    async def write_scale(request: Request, cell: str, plural: str, name: str) -> Response:
        _plural(plural)
        return await put_scale(request)

    return r


def _plural(plural: str) -> None:
    if plural not in _KINDS:
        raise NotFound(f"{plural} have no scale subresource (only hives and agentspecs)")
