"""Human approval gates: approve or reject what a session holds for a human.

A dispatch to a stage with ``approval: required`` (or caused by an output that asked for
approval) is held by the router in the session's journal state — durable, so it survives any
restart of apiaryd — and the Session says ``WaitingForApproval`` with ``pendingApproval`` naming
the stages. ``POST …/sessions/{s}/approve`` releases the held dispatches (of one stage, or all);
``POST …/sessions/{s}/reject`` fails their flows with reason ``Rejected``. Nothing waiting is a
409 (the client's view is stale), an unknown session a 404, an unknown stage a 422 naming
``stage``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api.bodies import parse_body, read_body
from apiary.api.responses import json_response
from apiary.api.session_create import authorize, state_of
from apiary.api.session_ops import SessionOps, session_key
from apiary.controllers.templates import hive_stages
from apiary.errors import Conflict, FieldDetail, Invalid, NotFound
from apiary.router import SessionInfo
from apiary.router.plan import APPROVAL, held_for, split

Obj = dict[str, Any]
SESSION = "/api/v1/cells/{cell}/sessions/{name}"
MAX_REASON = 1024

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", [FieldDetail(field, message)])


async def _body(request: Request, allowed: frozenset[str]) -> Obj:
    """The optional JSON body; unknown fields and wrong types are 422s naming the field."""
    raw = await read_body(request, state_of(request).config.max_body_bytes)
    if not raw.strip():
        return {}
    body = parse_body(raw, request.headers.get("content-type"))
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise Invalid(
            f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})",
            [FieldDetail(k, "unknown field") for k in unknown],
        )
    for key in allowed:
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _invalid(key, "must be a non-empty string")
    reason = body.get("reason")
    if isinstance(reason, str) and len(reason) > MAX_REASON:
        raise _invalid("reason", f"at most {MAX_REASON} characters")
    return body


async def _check_stage(ops: SessionOps, info: SessionInfo, stage: str | None) -> None:
    if stage is None:
        return
    try:
        hive = await ops.store.get("Hive", info.cell, info.hive)
    except NotFound:
        return  # the hive is gone: whatever is held still names its stage
    names = [s.name for s in hive_stages(hive)[0]]
    if stage not in names:
        known = ", ".join(names)
        raise _invalid("stage", f"hive {info.hive!r} has no stage {stage!r} (has {known})")


async def _waiting(ops: SessionOps, info: SessionInfo, stage: str | None) -> int:
    """How many dispatches of the session wait for approval (of ``stage``, or all)."""
    state = (await ops.journal.load(session_key(info.cell, info.name))).state
    return len(held_for(split(state)[1], APPROVAL, stage))


def _nothing(info: SessionInfo, stage: str | None) -> Conflict:
    where = f" at stage {stage!r}" if stage else ""
    phase = info.phase or "Pending"
    return Conflict(f"session {info.name!r} ({phase}) has nothing waiting for approval{where}")


async def _prepare(
    request: Request, allowed: frozenset[str]
) -> tuple[SessionOps, SessionInfo, Obj]:
    cell, name = request.path_params["cell"], request.path_params["name"]
    authorize(request, "update", cell)
    ops = SessionOps(state_of(request))
    body = await _body(request, allowed)
    info = await ops.info(cell, name)
    await _check_stage(ops, info, body.get("stage"))
    return ops, info, body


def approval_routes() -> APIRouter:
    r = APIRouter(tags=["sessions"])

    @r.post(
        SESSION + "/approve",
        summary="Release what waits for approval {stage?} → {released: n}; 409 when nothing waits",
        openapi_extra=_BODY,
    )
    async def approve(request: Request, cell: str, name: str) -> Response:
        ops, info, body = await _prepare(request, frozenset({"stage"}))
        stage = body.get("stage")
        released = await ops.router.approve(info.cell, info.name, stage)
        if released == 0:
            raise _nothing(info, stage)
        return json_response({"session": info.name, "stage": stage, "released": released})

    @r.post(
        SESSION + "/reject",
        summary="Fail what waits for approval {stage?, reason?} → {rejected: n}",
        openapi_extra=_BODY,
    )
    async def reject(request: Request, cell: str, name: str) -> Response:
        ops, info, body = await _prepare(request, frozenset({"stage", "reason"}))
        stage = body.get("stage")
        reason = body.get("reason") or "rejected by a human"
        waiting = await _waiting(ops, info, stage)
        if waiting == 0 or await ops.router.reject(info.cell, info.name, stage, reason) == 0:
            raise _nothing(info, stage)
        body = {"session": info.name, "stage": stage, "rejected": waiting, "reason": reason}
        return json_response(body)

    return r
