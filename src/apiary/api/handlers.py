"""The generic object handlers: one set of functions for every kind, driven by the registry.

Each handler reads the path and query, authorizes, admits (``apiary.resources.admit`` within the
admission limits of the object's Cell, plus the server's own checks), talks to the store once or
twice, and answers with orjson — no per-request pydantic models on the hot path. A large body is
parsed and admitted on a worker thread, so it does not hold up everyone else's requests.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import secrets
import string
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from apiary.api import params
from apiary.api.bodies import OFF_LOOP_BYTES, parse_body_async, read_body
from apiary.api.cascade import cascade_delete
from apiary.api.comb import forget_deleted
from apiary.api.limits import check_replica_quota, limits_for
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.nodeauth import check_node_secret
from apiary.api.refwarnings import dangling_agent_refs, users_of_agentspec
from apiary.api.responses import JSON, error_body, json_response
from apiary.api.secrets import has_redacted, keep_redacted, redact
from apiary.api.state import ApiState
from apiary.api.watch import token_recheck, watch_response
from apiary.errors import AlreadyExists, BadRequest, Conflict, FieldDetail, Invalid, NotFound
from apiary.resources import API_VERSION, KindInfo, ValidationFailed, admit, kind_by_plural
from apiary.resources.limits import DEFAULT_LIMITS, AdmissionLimits
from apiary.resources.secret import fold_string_data
from apiary.store.base import now_rfc3339, replaced


class MethodNotAllowed(BadRequest):
    status = 405
    code = "MethodNotAllowed"


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


def _kind(plural: str, cell: str | None, *, listing_all: bool = False) -> KindInfo:
    if cell is not None:
        params.path_name(cell, "cell")
    info = kind_by_plural(plural)
    if info is None:
        raise NotFound(
            f"unknown resource type {plural!r} (known: cells, nodes, secrets, "
            "agentspecs, hives, drones, sessions, events)"
        )
    if cell is None and info.namespaced and not listing_all:
        raise NotFound(f"{plural} live in a cell: use /api/v1/cells/{{cell}}/{plural}")
    if cell is not None and not info.namespaced:
        raise NotFound(f"{plural} are cluster-scoped: use /api/v1/{plural}")
    return info


def _name(request: Request) -> str:
    """The object name in the path: a DNS-1123 label like every name, else a 400 naming it."""
    return params.path_name(request.path_params["name"], "name")


def _authorize(request: Request, verb: str, info: KindInfo, cell: str | None) -> None:
    name = request.path_params.get("name")  # a node may touch only its own Node
    _state(request).authorizer.authorize(request.scope[PRINCIPAL_KEY], verb, info.kind, cell, name)


def _out(obj: dict[str, Any], reveal: bool) -> dict[str, Any]:
    return obj if reveal else redact(obj)


def _reveal(request: Request, info: KindInfo, cell: str | None) -> bool:
    if info.kind != "Secret" or not params.flag(request.query_params, "reveal"):
        return False
    _authorize(request, "reveal", info, cell)
    return True


async def _body(
    request: Request, info: KindInfo, cell: str | None, name: str | None
) -> tuple[dict[str, Any], int]:
    """The request's object, with apiVersion/kind/namespace defaulted from the path, and the
    size of the body it came in."""
    state = _state(request)
    raw = await read_body(request, state.config.max_body_bytes)
    obj = await parse_body_async(raw, request.headers.get("content-type"))
    if obj.get("kind") is None:
        obj["kind"] = info.kind
    elif obj["kind"] != info.kind:
        raise BadRequest(f"kind: the body is a {obj['kind']!r} but the path is for {info.kind}")
    obj.setdefault("apiVersion", API_VERSION)
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise Invalid("metadata must be a mapping", [FieldDetail("metadata", "must be a mapping")])
    body_ns = meta.get("namespace")
    if cell is not None:
        if body_ns not in (None, "", cell):
            raise BadRequest(
                f"metadata.namespace: the body names cell {body_ns!r} but the path "
                f"names cell {cell!r}"
            )
        meta["namespace"] = cell
    elif body_ns not in (None, ""):
        raise BadRequest(f"metadata.namespace: {info.kind} is cluster-scoped and has no cell")
    else:
        meta.pop("namespace", None)
    if name is not None:
        if meta.get("name") in (None, ""):
            meta["name"] = name
        elif meta["name"] != name:
            raise BadRequest(
                f"metadata.name: the body names {meta['name']!r} but the path names {name!r}"
            )
    return obj, len(raw)


GENERATE_ATTEMPTS = 8
"""Names tried for a ``generateName`` create before a name collision is the client's 409: five
random characters collide by the birthday bound (~1 in 6 after 5,000 objects of one prefix)."""


def _generate_name(obj: dict[str, Any]) -> bool:
    """Give a body without a name one from its ``generateName``; whether it did."""
    meta = obj["metadata"]
    prefix = meta.get("generateName")
    if meta.get("name") or not isinstance(prefix, str):
        return False
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    meta["name"] = f"{prefix}{suffix}"
    return True


def _admit(
    obj: dict[str, Any], strict: bool, limits: AdmissionLimits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], list[str]]:
    try:
        admission = admit(obj, strict=strict, limits=limits)
    except ValidationFailed as exc:
        details = [FieldDetail(f, m) for f, m in exc.details]
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        what = f"{obj.get('kind')} {name!r}" if isinstance(name, str) else str(obj.get("kind"))
        summary = "; ".join(f"{d.field}: {d.message}" if d.field else d.message for d in details)
        raise Invalid(f"{what} is invalid: {summary}", details) from None
    return admission.object, list(admission.warnings)


async def admit_in_cell(
    state: ApiState, obj: dict[str, Any], strict: bool, size: int = 0
) -> tuple[dict[str, Any], list[str]]:
    """:func:`_admit` within the limits of the object's Cell (see :mod:`apiary.api.limits`), on a
    worker thread for a body over ``OFF_LOOP_BYTES``; a stage asking for more drones than a quota
    allows at all is a 403."""
    meta = obj.get("metadata")
    cell = meta.get("namespace") if isinstance(meta, dict) else None
    limits, quota = await limits_for(state, cell if isinstance(cell, str) else None)
    if size > OFF_LOOP_BYTES:
        admitted, warnings = await asyncio.to_thread(_admit, obj, strict, limits)
    else:
        admitted, warnings = _admit(obj, strict, limits)
    if quota:
        check_replica_quota(admitted, quota)
    return admitted, [*warnings, *await dangling_agent_refs(state.store, admitted)]


# ------------------------------------------------------------------------------------ reads


async def list_objects(request: Request) -> Response:
    cell = request.path_params.get("cell")
    plural = request.path_params["plural"]
    info = _kind(plural, cell, listing_all=cell is None)
    _authorize(
        request, "watch" if params.flag(request.query_params, "watch") else "list", info, cell
    )
    lp = params.list_params(request.query_params)
    reveal = _reveal(request, info, cell)
    namespace = cell if info.namespaced else None
    state = _state(request)
    if (view := state.authorizer.view(request.scope[PRINCIPAL_KEY], info.kind)) is not None:
        lp = dataclasses.replace(lp, view=view)  # a node sees only where others' drones are
    if lp.watch:  # a revoked or expired token's watch ends
        recheck = token_recheck(state, request.headers.get("authorization"))
        return await watch_response(state, info, namespace, lp, reveal, recheck)
    if lp.name is not None:
        try:
            found = [await state.store.get(info.kind, namespace or "", lp.name)]
        except NotFound:
            found = []
        rv = await state.store.resource_version()
        items, token = [o for o in found if lp.matches(o)], None
    else:
        listed = await state.store.list(
            info.kind,
            namespace,
            selector=lp.selector,
            limit=lp.limit,
            continue_token=lp.continue_token,
        )
        rv, token = listed.resource_version, listed.continue_token
        items = [o for o in listed.items if lp.matches(o)]
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    return json_response(
        {
            "apiVersion": API_VERSION,
            "kind": f"{info.kind}List",
            "metadata": meta,
            "items": [_out(lp.shown(o), reveal) for o in items],
        }
    )


async def get_object(request: Request) -> Response:
    cell = request.path_params.get("cell")
    info = _kind(request.path_params["plural"], cell)
    name = _name(request)
    _authorize(request, "get", info, cell)
    reveal = _reveal(request, info, cell)
    if info.kind == "Secret":
        await check_node_secret(
            _state(request).store, request.scope[PRINCIPAL_KEY], cell or "", name
        )
    obj = await _state(request).store.get(info.kind, cell or "", name)
    _state(request).authorizer.check_object(request.scope[PRINCIPAL_KEY], "get", info.kind, obj)
    return json_response(_out(obj, reveal))


# ----------------------------------------------------------------------------------- writes


async def create_object(request: Request) -> Response:
    cell = request.path_params.get("cell")
    plural = request.path_params["plural"]
    info = kind_by_plural(plural)
    if info is not None and info.namespaced and cell is None:
        return _not_allowed(f"create {plural} in a cell: POST /api/v1/cells/{{cell}}/{plural}")
    info = _kind(plural, cell)
    _authorize(request, "create", info, cell)
    state = _state(request)
    q = request.query_params
    strict, dry = params.flag(q, "strict"), params.dry_run(q)
    reveal = _reveal(request, info, cell)
    obj, size = await _body(request, info, cell, None)
    generated = _generate_name(obj)
    if info.kind == "Node":  # a node may create only its own Node: check the name in the body
        _state(request).authorizer.authorize(
            request.scope[PRINCIPAL_KEY], "create", info.kind, cell, obj["metadata"].get("name")
        )
    obj.pop("status", None)  # status is written through /status, never on create
    admitted, warnings = await admit_in_cell(state, obj, strict, size)
    admitted.pop("status", None)
    async with state.quotas.admitting(admitted, creating=True):
        if dry:
            meta = admitted["metadata"]
            try:
                await state.store.get(info.kind, meta.get("namespace") or "", meta["name"])
                raise AlreadyExists(f"{info.kind} {meta['name']!r} already exists")
            except NotFound:
                pass
            stored = _as_created(admitted, now_rfc3339(state.store.clock))
        else:
            for attempt in range(GENERATE_ATTEMPTS):
                try:
                    stored = await state.store.create(admitted)
                    break
                except AlreadyExists:
                    if not generated or attempt == GENERATE_ATTEMPTS - 1:
                        raise
                    del admitted["metadata"]["name"]
                    _generate_name(admitted)
    return json_response(_out(stored, reveal), 201, warnings)


def _as_created(obj: dict[str, Any], now: str) -> dict[str, Any]:
    """What ``store.create`` would store, for a dry run (no resourceVersion: nothing was stored)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now)
    for managed in ("resourceVersion", "deletionTimestamp"):
        meta.pop(managed, None)
    fold_string_data(out)
    out["status"] = {}
    return out


async def replace_object(request: Request) -> Response:
    cell = request.path_params.get("cell")
    info = _kind(request.path_params["plural"], cell)
    name = _name(request)
    _authorize(request, "update", info, cell)
    state = _state(request)
    q = request.query_params
    strict, dry = params.flag(q, "strict"), params.dry_run(q)
    reveal = _reveal(request, info, cell)
    obj, size = await _body(request, info, cell, name)
    current: dict[str, Any] | None = None
    if info.kind == "Secret" and has_redacted(obj):  # before admission: "<redacted>" is no base64
        current = await state.store.get(info.kind, cell or "", name)
        obj = keep_redacted(obj, current)
    admitted, warnings = await admit_in_cell(state, obj, strict, size)
    async with state.quotas.admitting(admitted, creating=False):
        if dry:
            current = current or await state.store.get(info.kind, cell or "", name)
            stored = _as_updated(admitted, current)
        else:
            stored = await state.store.update(admitted)
    return json_response(_out(stored, reveal), 200, warnings)


def _as_updated(obj: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """What ``store.update`` would store, for a dry run; the same 409 checks apply."""
    cur_meta = current["metadata"]
    meta = obj.get("metadata") or {}
    want = meta.get("resourceVersion")
    if want not in (None, "", 0) and str(want) != cur_meta["resourceVersion"]:
        raise Conflict(
            f"{obj['kind']} {cur_meta['name']!r} was modified: resourceVersion {want} "
            f"is stale (now {cur_meta['resourceVersion']}); read it again and retry"
        )
    incoming = copy.deepcopy(obj)
    fold_string_data(incoming)  # as store.update does: the dry run shows what would be stored
    out = replaced(current, incoming)
    out["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]  # nothing was stored
    return out


async def delete_object(request: Request) -> Response:
    cell = request.path_params.get("cell")
    info = _kind(request.path_params["plural"], cell)
    name = _name(request)
    _authorize(request, "delete", info, cell)
    state = _state(request)
    q = request.query_params
    want_rv = params.resource_version(q)
    reveal = _reveal(request, info, cell)
    if params.dry_run(q):
        obj = await state.store.get(info.kind, cell or "", name)
        if want_rv and want_rv != obj["metadata"]["resourceVersion"]:
            raise Conflict(f"{info.kind} {name!r} was modified since resourceVersion {want_rv}")
        if obj["metadata"].get("finalizers"):
            obj["metadata"].setdefault("deletionTimestamp", now_rfc3339(state.store.clock))
        return json_response(_out(obj, reveal))
    last = await cascade_delete(
        state.store,
        info.kind,
        cell or "",
        name,
        resource_version=want_rv,
        on_deleted=functools.partial(_forget_deleted, state),
    )
    warnings = (
        await users_of_agentspec(state.store, cell or "", name) if info.kind == "AgentSpec" else []
    )
    return json_response(_out(last, reveal), 200, warnings)


async def _forget_deleted(state: ApiState, obj: dict[str, Any]) -> None:
    """What goes with a deleted object besides the object: a Session's Comb memory and its
    transcript (also when a Cell takes its sessions along)."""
    await forget_deleted(state.comb, obj)
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "Session" and state.journal is not None and not meta.get("finalizers"):
        await state.journal.delete(f"{meta.get('namespace') or 'default'}/{meta['name']}")


def _not_allowed(message: str) -> Response:
    """405 for a method the path has but this kind does not: the collection of a cell-scoped kind
    across all cells only lists (the ``Allow`` header says so)."""
    body = error_body(MethodNotAllowed.status, MethodNotAllowed.code, message)
    return JSON(body, status_code=405, headers={"Allow": "GET"})


def _is_version(rv: Any) -> bool:
    if isinstance(rv, int) and not isinstance(rv, bool):
        return 0 <= rv <= params.INT64_MAX
    return isinstance(rv, str) and rv.isascii() and rv.isdigit() and len(rv) <= 19


# ---------------------------------------------------------------------------------- status


async def get_status(request: Request) -> Response:
    return await get_object(request)


async def replace_status(request: Request) -> Response:
    cell = request.path_params.get("cell")
    info = _kind(request.path_params["plural"], cell)
    name = _name(request)
    _authorize(request, "update/status", info, cell)
    state = _state(request)
    if state.authorizer.needs_object(who := request.scope[PRINCIPAL_KEY], info.kind):
        current = await state.store.get(info.kind, cell or "", name)  # a node: its drones only
        state.authorizer.check_object(who, "update/status", info.kind, current)
    reveal = _reveal(request, info, cell)
    obj, _ = await _body(request, info, cell, name)
    status = obj.get("status", {})
    if not isinstance(status, dict):
        raise Invalid(
            f"{info.kind} {name!r} is invalid: status must be a mapping",
            [FieldDetail("status", "must be a mapping")],
        )
    rv = obj["metadata"].get("resourceVersion")
    if rv not in (None, "") and not _is_version(rv):
        message = f"{str(rv)[:40]!r} is not a resourceVersion (a number this server gave)"
        raise Invalid(
            f"{info.kind} {name!r} is invalid: metadata.resourceVersion: {message}",
            [FieldDetail("metadata.resourceVersion", message)],
        )
    if params.dry_run(request.query_params):
        current = await state.store.get(info.kind, cell or "", name)
        checked = _as_updated(
            {**current, "metadata": {**current["metadata"], "resourceVersion": rv}}, current
        )
        return json_response(_out({**checked, "status": status}, reveal))
    update = {
        "apiVersion": API_VERSION,
        "kind": info.kind,
        "metadata": {"name": name, "resourceVersion": rv, **({"namespace": cell} if cell else {})},
        "status": status,
    }
    stored = await state.store.update(update, subresource="status")
    return json_response(_out(stored, reveal))
