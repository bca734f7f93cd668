"""Token routes: create (the plaintext answered once), list, read, revoke.

    POST   /api/v1/tokens           {metadata.name, spec: {role, cell?, node?, expiresAt?}}
                                    (or spec.ttlSeconds: expiresAt = now + ttl, server clock)
    GET    /api/v1/tokens[/{name}]  never the hash, never the plaintext
    DELETE /api/v1/tokens/{name}    revoke: the token stops working (401) at once on this server,
                                    within the authenticator's cache TTL on other replicas

Only cluster-admins manage tokens: a token is authority, and one that may mint tokens may mint
any role. These routes sit before the generic object routes, so a Token never goes through
generic CRUD (which would show its hash); ``PUT`` is refused: revoke and create a new one.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from apiary.api import params
from apiary.api.bodies import parse_body, read_body
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.state import ApiState
from apiary.errors import BadRequest, FieldDetail, Invalid, NotFound
from apiary.resources import API_VERSION, ValidationFailed, admit
from apiary.security import binding_problems, generate_token
from apiary.security.authn import Lookup, parse_time
from apiary.store import Store

KIND = "Token"
BASE = "/api/v1/tokens"
MAX_TTL_SECONDS = 10 * 365 * 86400
Obj = dict[str, Any]

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


class MethodNotAllowed(BadRequest):
    status = 405
    code = "MethodNotAllowed"


def store_lookup(store: Store) -> Lookup:
    """How the authenticator finds a Token object by name."""

    async def lookup(name: str) -> Obj | None:
        try:
            return await store.get(KIND, "", name)
        except NotFound:
            return None

    return lookup


def _state(request: Request, verb: str) -> ApiState:
    state: ApiState = request.app.state.apiary
    state.authorizer.authorize(
        request.scope[PRINCIPAL_KEY], verb, KIND, None, request.path_params.get("name")
    )
    return state


def public(obj: Obj, state: ApiState) -> Obj:
    """A Token as the API shows it: no hash; ``status.phase`` Active or Expired."""
    out = copy.deepcopy(obj)
    spec = out.get("spec") or {}
    spec.pop("hash", None)
    expires = spec.get("expiresAt")
    expired = bool(expires) and state.authenticator.now() >= parse_time(str(expires))
    out["status"] = {**(out.get("status") or {}), "phase": "Expired" if expired else "Active"}
    return out


def _ttl(spec: Obj) -> float | None:
    raw = spec.pop("ttlSeconds", None)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_TTL_SECONDS:
        detail = FieldDetail("spec.ttlSeconds", f"must be a number in (0, {MAX_TTL_SECONDS}]")
        raise Invalid("spec.ttlSeconds: must be a positive number of seconds", [detail])
    return float(raw)


async def create_token(request: Request) -> Response:
    state = _state(request, "create")
    body = parse_body(
        await read_body(request, state.config.max_body_bytes), request.headers.get("content-type")
    )
    body.setdefault("apiVersion", API_VERSION)
    body.setdefault("kind", KIND)
    body.pop("status", None)
    spec = body.get("spec")
    if body.get("kind") != KIND or not isinstance(spec, dict):
        raise BadRequest("POST /api/v1/tokens takes a Token: {metadata: {name}, spec: {role}}")
    if spec.get("hash") is not None:
        raise Invalid(
            "spec.hash is set by the server", [FieldDetail("spec.hash", "set by the server")]
        )
    ttl = _ttl(spec)
    if ttl is not None:
        if spec.get("expiresAt"):
            raise Invalid(
                "set spec.ttlSeconds or spec.expiresAt, not both",
                [FieldDetail("spec.ttlSeconds", "may not be set together with expiresAt")],
            )
        expires = state.authenticator.now() + timedelta(seconds=ttl)
        spec["expiresAt"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        admitted = admit(body, strict=True).object
    except ValidationFailed as exc:
        details = [FieldDetail(f, m) for f, m in exc.details]
        summary = "; ".join(f"{d.field}: {d.message}" if d.field else d.message for d in details)
        raise Invalid(f"Token is invalid: {summary}", details) from None
    aspec = admitted["spec"]
    problems = binding_problems(str(aspec.get("role")), aspec.get("cell"), aspec.get("node"))
    if problems:
        details = [FieldDetail(f, m) for f, m in problems]
        raise Invalid("Token is invalid: " + "; ".join(m for _, m in problems), details)
    name = admitted["metadata"]["name"]
    plaintext, digest = generate_token(name)
    aspec["hash"] = digest
    admitted["metadata"].pop("namespace", None)
    stored = await state.store.create(admitted)
    state.authenticator.invalidate(name)
    out = public(stored, state)
    out["status"]["token"] = plaintext  # the one and only time it is shown
    return json_response(out, 201)


async def list_tokens(request: Request) -> Response:
    state = _state(request, "list")
    q = request.query_params
    if params.flag(q, "watch"):
        raise BadRequest("tokens cannot be watched")
    lp = params.list_params(q)
    listed = await state.store.list(
        KIND, None, selector=lp.selector, limit=lp.limit, continue_token=lp.continue_token
    )
    meta: Obj = {"resourceVersion": str(listed.resource_version)}
    if listed.continue_token:
        meta["continue"] = listed.continue_token
    items = [public(o, state) for o in listed.items if lp.matches(o)]
    return json_response(
        {"apiVersion": API_VERSION, "kind": "TokenList", "metadata": meta, "items": items}
    )


async def get_token(request: Request, name: str) -> Response:
    state = _state(request, "get")
    return json_response(public(await state.store.get(KIND, "", name), state))


async def revoke_token(request: Request, name: str) -> Response:
    state = _state(request, "delete")
    try:
        gone = await state.store.delete(KIND, "", name)
    finally:
        state.authenticator.invalidate(name)
    return json_response(public(gone, state))


def token_routes() -> APIRouter:
    r = APIRouter(tags=["tokens"])

    @r.post(
        BASE,
        status_code=201,
        summary="Create a token (its plaintext is in status.token, once)",
        openapi_extra=_BODY,
    )
    async def create(request: Request) -> Response:
        return await create_token(request)

    @r.get(BASE, summary="List tokens (never their secrets)")
    async def listing(request: Request) -> Response:
        return await list_tokens(request)

    @r.get(BASE + "/{name}", summary="Read a token (never its secret)")
    async def get(request: Request, name: str) -> Response:
        return await get_token(request, name)

    @r.delete(BASE + "/{name}", summary="Revoke a token")
    async def revoke(request: Request, name: str) -> Response:
        return await revoke_token(request, name)

    @r.put(BASE + "/{name}", summary="Tokens cannot be changed (revoke and create a new one)")
    async def put(request: Request, name: str) -> Response:
        _state(request, "update")
        raise MethodNotAllowed("a token cannot be changed: revoke it and create a new one")

    @r.get(BASE + "/{name}/status", summary="Tokens have no status subresource")
    async def get_status(request: Request, name: str) -> Response:
        raise MethodNotAllowed("tokens have no status subresource")

    @r.put(BASE + "/{name}/status", summary="Tokens have no status subresource")
    async def put_status(request: Request, name: str) -> Response:
        raise MethodNotAllowed("tokens have no status subresource")

    return r
