"""Comb routes: a session's memory (keys, counters, lists) and a cell's long-term memory.

    GET    /api/v1/cells/{cell}/sessions/{s}/comb?pattern=*     keys (+ bytes used and limit)
    DELETE /api/v1/cells/{cell}/sessions/{s}/comb               clear the session's memory
    GET    /api/v1/cells/{cell}/sessions/{s}/comb/{key}         {"key", "value"}
    PUT    /api/v1/cells/{cell}/sessions/{s}/comb/{key}         {"value": any, "ttlSeconds": n?}
    DELETE /api/v1/cells/{cell}/sessions/{s}/comb/{key}
    POST   /api/v1/cells/{cell}/sessions/{s}/comb/{key}/incr    {"by": n} (optional, default 1)
    GET    /api/v1/cells/{cell}/sessions/{s}/lists/{name}?start=0&stop=-1
    POST   /api/v1/cells/{cell}/sessions/{s}/lists/{name}       {"item": any} → {"length"}
    POST   /api/v1/cells/{cell}/memory                          {"text", "metadata"?} → 201 {"id"}
    GET    /api/v1/cells/{cell}/memory/search?q=…&limit=10      ranked {"items": […]}
    DELETE /api/v1/cells/{cell}/memory/{id}

The session must exist as a Session object (404 otherwise): memory belongs to a conversation and
goes with it — :func:`forget_deleted` is the delete hook that clears it. A node (relaying its
drones' calls) reaches sessions and long-term memory only of a Cell where it runs a drone
(:class:`apiary.api.nodeauth.NodeServes`); which session a drone may reach is the keeper's
"one drone, one message" rule (docs/security.md).
These routes are registered before the generic object routes, which would otherwise take
``/cells/{c}/memory`` for a list of kind "memory".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api.bodies import parse_body, read_body
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.state import ApiState
from apiary.comb import Comb
from apiary.errors import BadRequest, FieldDetail, Invalid, NotFound

_SESSION = "/api/v1/cells/{cell}/sessions/{session}"
_MEMORY = "/api/v1/cells/{cell}/memory"


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


def _comb(request: Request) -> Comb:
    comb = _state(request).comb
    assert comb is not None  # ApiState always has one (memory:// unless configured)
    return comb


async def _session(request: Request, verb: str) -> str:
    """Authorize, check the Session exists, and return ``"<cell>/<session>"``."""
    cell, name = request.path_params["cell"], request.path_params["session"]
    state = _state(request)
    principal = request.scope[PRINCIPAL_KEY]
    state.authorizer.authorize(principal, verb, "Session", cell)
    await state.store.get("Session", cell, name)  # 404 naming the session when it is missing
    # a node relays only in cells it runs drones of (not per hive: a composed hive's segments
    # are drones of other hives working on the same session)
    await state.node_serves.check(state.store, principal, cell, None)
    return f"{cell}/{name}"


async def _cell(request: Request, verb: str) -> str:
    cell: str = request.path_params["cell"]
    state = _state(request)
    principal = request.scope[PRINCIPAL_KEY]
    state.authorizer.authorize(principal, verb, "Memory", cell)
    await state.node_serves.check(state.store, principal, cell, None)  # a node: only its cells
    return cell


async def _body(request: Request, allowed: tuple[str, ...], *, optional: bool = False) -> Any:
    raw = await read_body(request, _state(request).config.max_body_bytes)
    if optional and not raw.strip():
        return {}
    body = parse_body(raw, request.headers.get("content-type"))
    unknown = [k for k in body if k not in allowed]
    if unknown:
        details = [FieldDetail(k, f"unknown field (known: {', '.join(allowed)})") for k in unknown]
        raise Invalid(f"unknown field {unknown[0]!r} in the request body", details)
    return body


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name}={raw!r}: expected an integer") from None


def comb_routes() -> APIRouter:
    r = APIRouter(tags=["comb"])

    @r.get(_SESSION + "/comb", summary="List a session's comb keys (glob ?pattern=)")
    async def list_keys(request: Request, cell: str, session: str) -> Response:
        s = await _session(request, "get/comb")
        comb = _comb(request)
        pattern = request.query_params.get("pattern") or "*"
        keys = await comb.keys(s, pattern)
        return json_response(
            {"keys": keys, "usageBytes": await comb.usage(s), "limitBytes": comb.limit}
        )

    @r.delete(_SESSION + "/comb", summary="Clear a session's comb (keys and lists)")
    async def clear(request: Request, cell: str, session: str) -> Response:
        s = await _session(request, "update/comb")
        return json_response({"cleared": await _comb(request).clear(s)})

    @r.get(_SESSION + "/comb/{key}", summary="Read one comb key")
    async def get_key(request: Request, cell: str, session: str, key: str) -> Response:
        s = await _session(request, "get/comb")
        return json_response({"key": key, "value": await _comb(request).get(s, key)})

    @r.put(_SESSION + "/comb/{key}", summary='Set one comb key: {"value": …, "ttlSeconds": n?}')
    async def put_key(request: Request, cell: str, session: str, key: str) -> Response:
        s = await _session(request, "update/comb")
        body = await _body(request, ("value", "ttlSeconds"))
        if "value" not in body:
            raise Invalid("value is required", [FieldDetail("value", "required")])
        await _comb(request).set(s, key, body["value"], body.get("ttlSeconds"))
        out: dict[str, Any] = {"key": key, "value": body["value"]}
        if body.get("ttlSeconds") is not None:
            out["ttlSeconds"] = body["ttlSeconds"]
        return json_response(out)

    @r.delete(_SESSION + "/comb/{key}", summary="Delete one comb key")
    async def delete_key(request: Request, cell: str, session: str, key: str) -> Response:
        s = await _session(request, "update/comb")
        if not await _comb(request).delete(s, key):
            raise NotFound(f"comb key {key!r} not found in session {s!r}")
        return json_response({"key": key, "deleted": True})

    @r.post(_SESSION + "/comb/{key}/incr", summary='Add to a number atomically: {"by": n}')
    async def incr(request: Request, cell: str, session: str, key: str) -> Response:
        s = await _session(request, "update/comb")
        body = await _body(request, ("by",), optional=True)
        value = await _comb(request).incr(s, key, body.get("by", 1))
        return json_response({"key": key, "value": value})

    @r.get(_SESSION + "/lists/{name}", summary="Items of a session list (?start=0&stop=-1)")
    async def list_items(request: Request, cell: str, session: str, name: str) -> Response:
        s = await _session(request, "get/comb")
        start = _int_param(request, "start", 0)
        stop = _int_param(request, "stop", -1)
        items = await _comb(request).list_range(s, name, start, stop)
        return json_response({"name": name, "items": items})

    @r.post(_SESSION + "/lists/{name}", summary='Append to a session list: {"item": …}')
    async def append(request: Request, cell: str, session: str, name: str) -> Response:
        s = await _session(request, "update/comb")
        body = await _body(request, ("item",))
        if "item" not in body:
            raise Invalid("item is required", [FieldDetail("item", "required")])
        length = await _comb(request).append(s, name, body["item"])
        return json_response({"name": name, "length": length})

    @r.post(_MEMORY, status_code=201, summary='Remember a text: {"text", "metadata"?} → {"id"}')
    async def remember(request: Request, cell: str) -> Response:
        c = await _cell(request, "create")
        body = await _body(request, ("text", "metadata"))
        memory_id = await _comb(request).remember(c, body.get("text"), body.get("metadata"))
        return json_response({"id": memory_id}, 201)

    @r.get(_MEMORY + "/search", summary="Search long-term memory (?q=…&limit=10), best first")
    async def search(request: Request, cell: str) -> Response:
        c = await _cell(request, "get")
        q = request.query_params.get("q")
        if q is None:
            raise BadRequest("query parameter q is required: what to search for")
        limit = _int_param(request, "limit", 10)
        hits = await _comb(request).search(c, q, limit)
        return json_response({"items": [h._asdict() for h in hits]})

    @r.delete(_MEMORY + "/{memory_id}", summary="Forget one remembered text")
    async def forget(request: Request, cell: str, memory_id: str) -> Response:
        c = await _cell(request, "delete")
        if not await _comb(request).forget(c, memory_id):
            raise NotFound(f"memory {memory_id!r} not found in cell {c!r}")
        return json_response({"id": memory_id, "deleted": True})

    return r


async def forget_deleted(comb: Comb, obj: dict[str, Any]) -> None:
    """Delete hook: a Session that is gone takes its comb along; a Cell, everything of the cell.

    An object still held by finalizers is not gone yet, so its memory stays."""
    meta = obj.get("metadata") or {}
    if meta.get("finalizers"):
        return
    if obj.get("kind") == "Session" and meta.get("namespace"):
        await comb.clear(f"{meta['namespace']}/{meta['name']}")
    elif obj.get("kind") == "Cell":
        await comb.forget_cell(str(meta["name"]))
