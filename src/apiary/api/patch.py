"""PATCH on every kind's object route and status subresource, as in Kubernetes.

Two patch formats, chosen by ``Content-Type`` (anything else is a 415 with ``Accept-Patch``):

- ``application/merge-patch+json`` — RFC 7386: an object merged into the stored one, ``null``
  deleting a key, lists replaced whole;
- ``application/json-patch+json`` — RFC 6902: a list of ``add|remove|replace|move|copy|test``
  operations, applied all or nothing by the ``jsonpatch`` library (JSON pointers, ``-`` for the
  end of a list and ``test`` are where hand-written versions go wrong).

A patch is only a way to write the whole object: the result goes through the same admission,
quota check, dry run and store update as a ``PUT``, so a patch can never store what a PUT could
not, and a refusal writes nothing. Optimistic concurrency follows Kubernetes: a patch that
carries ``metadata.resourceVersion`` (a merge patch's key, or any JSON-patch operation on
``/metadata/resourceVersion``) is applied only to that version (else 409); one that does not is
re-read and re-applied when another writer got in between. A malformed patch is a 400; one that
cannot be applied (a failed ``test``, a path that is not there) is a 422 naming the path, as
Kubernetes answers.

A Secret is patched in its redacted form, as a client sees it: a ``test`` cannot probe a value
the caller may not read, and ``<redacted>`` values left alone keep what is stored.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from apiary.api import params
from apiary.api.bodies import read_body
from apiary.api.handlers import (
    MethodNotAllowed,
    _as_updated,
    _authorize,
    _kind,
    _out,
    _reveal,
    admit_in_cell,
)
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import error_response, json_response
from apiary.api.secrets import has_redacted, keep_redacted, redact
from apiary.api.state import ApiState
from apiary.errors import (
    ApiaryError,
    BadRequest,
    Conflict,
    FieldDetail,
    Invalid,
    PayloadTooLarge,
)
from apiary.resources import KindInfo

Obj = dict[str, Any]

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
ACCEPT_PATCH = f"{MERGE}, {JSON_PATCH}"
RETRIES = 10
"""Re-reads of a patch without a resourceVersion that keeps meeting concurrent writers."""
_RV_POINTER = "/metadata/resourceVersion"
MAX_OPERATIONS = 10_000
"""Operations in one JSON patch (Kubernetes' bound)."""
MAX_COPIED_BYTES = 3 * 1024 * 1024
"""What ``copy`` operations may add up to (Kubernetes bounds copies the same way)."""


class UnsupportedPatchType(ApiaryError):
    status = 415
    code = "UnsupportedMediaType"


# ----------------------------------------------------------------------- patch documents


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def patch_type(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in (MERGE, JSON_PATCH):
        return media
    hint = ""
    if media == "application/json":
        hint = " (a PATCH says how to read it: add --type merge or --type json)"
    elif media in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
        hint = " (strategic merge and server-side apply are not supported)"
    raise UnsupportedPatchType(
        f"unsupported patch Content-Type {media!r}: use {MERGE} or {JSON_PATCH}{hint}"
    )


def decode(raw: bytes, media: str) -> Obj | list[Any]:
    """The patch document, checked for its shape (400 for anything malformed)."""
    if not raw.strip():
        raise BadRequest("request body is empty: send the patch")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON patch body: {exc}") from None
    if media == MERGE:
        if not isinstance(doc, dict):
            raise BadRequest("a merge patch must be a JSON object (the fields to change)")
        return doc
    if not isinstance(doc, list):
        raise BadRequest("a JSON patch must be a list of operations ([{op, path, value?}])")
    if len(doc) > MAX_OPERATIONS:
        raise BadRequest(f"a JSON patch may hold at most {MAX_OPERATIONS} operations")
    for index, op in enumerate(doc):
        _check_op(index, op)
    return doc


_OPS = {"add": ("value",), "replace": ("value",), "test": ("value",), "remove": ()}
_OPS_FROM = {"move", "copy"}


def _check_op(index: int, op: Any) -> None:
    where = f"[{index}]"
    if not isinstance(op, dict):
        raise BadRequest(f"JSON patch operation {where} must be an object")
    name = op.get("op")
    if not isinstance(name, str) or (name not in _OPS and name not in _OPS_FROM):
        known = ", ".join([*_OPS, *sorted(_OPS_FROM)])
        raise BadRequest(f"JSON patch operation {where}.op: {name!r} is not one of {known}")
    wanted = ("path", "from") if name in _OPS_FROM else ("path", *_OPS[name])
    for key in wanted:
        if key not in op:
            raise BadRequest(f"JSON patch operation {where} ({name}) needs {key!r}")
    for key in ("path", "from"):
        if key in op and not (isinstance(op[key], str) and (op[key] == "" or op[key][:1] == "/")):
            raise BadRequest(f"JSON patch operation {where}.{key}: {op[key]!r} is no JSON pointer")


def field_of(pointer: str) -> str:
    """``/spec/stages/0/replicas`` → ``spec.stages[0].replicas`` (how errors name fields)."""
    out = ""
    for part in pointer.split("/")[1:]:
        token = part.replace("~1", "/").replace("~0", "~")
        out += f"[{token}]" if token.isdigit() or token == "-" else f".{token}" if out else token
    return out


def apply(doc: Obj, patch: Obj | list[Any], media: str) -> Obj:
    """``doc`` patched (a new object); a patch that cannot be applied is a 422 naming the path."""
    if media == MERGE:
        result = merge_patch(doc, patch)
    else:
        assert isinstance(patch, list)
        result = _json_patch(doc, patch)
    if not isinstance(result, dict):
        raise Invalid("the patched object must stay an object", [FieldDetail("", "not an object")])
    return result


def _json_patch(doc: Obj, ops: list[Any]) -> Any:
    """Apply ``ops`` to a private copy, one at a time so an error names its operation; copies
    are bounded, since a ``copy`` is the one operation whose result outgrows the request."""
    out: Any = copy.deepcopy(doc)
    copied = 0
    for index, op in enumerate(ops):
        try:
            if op["op"] == "copy":
                copied += len(orjson.dumps(jsonpointer.resolve_pointer(out, op["from"])))
                if copied > MAX_COPIED_BYTES:
                    raise PayloadTooLarge(
                        f"JSON patch operation [{index}]: copies add up to more than "
                        f"{MAX_COPIED_BYTES} bytes"
                    )
            out = jsonpatch.JsonPatch([op]).apply(out, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            _refuse(index, op, "test failed: the value there is not the one given")
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            _refuse(index, op, str(exc))
        except (jsonpatch.InvalidJsonPatch, TypeError, ValueError) as exc:
            raise BadRequest(f"JSON patch operation [{index}]: {exc}") from None
    return out


def _refuse(index: int, op: Obj, why: str) -> None:
    field = field_of(op.get("path", ""))
    message = f"JSON patch operation [{index}] ({op.get('op')} {op.get('path')!r}): {why}"
    raise Invalid(message, [FieldDetail(field, why)])


def carries_rv(patch: Obj | list[Any], media: str) -> bool:
    """Whether the client made the patch conditional on a resourceVersion."""
    if media == MERGE:
        meta = patch.get("metadata") if isinstance(patch, dict) else None
        return isinstance(meta, dict) and meta.get("resourceVersion") is not None
    return any(isinstance(op, dict) and op.get("path") == _RV_POINTER for op in patch)


# ------------------------------------------------------------------------------ requests


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


async def _read_patch(request: Request) -> tuple[Obj | list[Any], str]:
    media = patch_type(request.headers.get("content-type"))
    raw = await read_body(request, _state(request).config.max_body_bytes)
    return decode(raw, media), media


def _target(request: Request, verb: str) -> tuple[KindInfo, str | None, str]:
    cell = request.path_params.get("cell")
    info = _kind(request.path_params["plural"], cell)
    if info.kind == "Token":
        raise MethodNotAllowed("tokens cannot be changed (revoke and create a new one)")
    _authorize(request, verb, info, cell)
    return info, cell, request.path_params["name"]


def _keep_identity(patched: Obj, current: Obj) -> None:
    """A patch may not rename, move or retype the object: 422 naming the field."""
    problems = []
    for field in ("apiVersion", "kind"):
        if patched.get(field) != current.get(field):
            problems.append(FieldDetail(field, f"is immutable (it is {current.get(field)!r})"))
    meta, cur = patched.get("metadata"), current["metadata"]
    if not isinstance(meta, dict):
        problems.append(FieldDetail("metadata", "must be a mapping"))
    else:
        for field in ("name", "namespace"):
            if meta.get(field) != cur.get(field):
                problems.append(
                    FieldDetail(f"metadata.{field}", f"is immutable (it is {cur.get(field)!r})")
                )
        rv = meta.get("resourceVersion")
        if rv is not None and (isinstance(rv, bool) or not isinstance(rv, str | int)):
            problems.append(FieldDetail("metadata.resourceVersion", "must be a string"))
        elif rv is not None:
            meta["resourceVersion"] = str(rv)
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise Invalid(f"{current['kind']} {cur['name']!r}: {summary}", problems)


def _stale(current: Obj, patched: Obj) -> None:
    want = patched["metadata"].get("resourceVersion")
    have = current["metadata"]["resourceVersion"]
    if want not in (None, "") and str(want) != have:
        raise Conflict(
            f"{current['kind']} {current['metadata']['name']!r} was modified: resourceVersion "
            f"{want} is stale (now {have}); read it again and retry"
        )


async def patch_object(request: Request) -> Response:
    try:
        info, cell, name = _target(request, "update")
        patch, media = await _read_patch(request)
    except UnsupportedPatchType as exc:
        return error_response(exc, {"Accept-Patch": ACCEPT_PATCH})
    state, q = _state(request), request.query_params
    strict, dry = params.flag(q, "strict"), params.dry_run(q)
    reveal = _reveal(request, info, cell)
    conditional = carries_rv(patch, media)
    for _ in range(RETRIES):
        current = await state.store.get(info.kind, cell or "", name)
        base = redact(current) if info.kind == "Secret" else copy.deepcopy(current)
        patched = apply(base, patch, media)
        _keep_identity(patched, current)
        _stale(current, patched)
        patched.pop("status", None)  # the object route never writes status
        if info.kind == "Secret" and has_redacted(patched):
            patched = keep_redacted(patched, current)
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        admitted, warnings = await admit_in_cell(state, patched, strict)
        try:
            async with state.quotas.admitting(admitted, creating=False):
                stored = (
                    _as_updated(admitted, current) if dry else await state.store.update(admitted)
                )
        except Conflict:
            if conditional:
                raise
            continue  # someone wrote in between: read again and re-apply the patch
        return json_response(_out(stored, reveal), 200, warnings)
    raise Conflict(f"{info.kind} {name!r} kept changing while patching it; try again")


async def patch_status(request: Request) -> Response:
    try:
        info, cell, name = _target(request, "update/status")
        patch, media = await _read_patch(request)
    except UnsupportedPatchType as exc:
        return error_response(exc, {"Accept-Patch": ACCEPT_PATCH})
    state, who = _state(request), request.scope[PRINCIPAL_KEY]
    reveal = _reveal(request, info, cell)
    conditional = carries_rv(patch, media)
    for _ in range(RETRIES):
        current = await state.store.get(info.kind, cell or "", name)
        state.authorizer.check_object(who, "update/status", info.kind, current)
        base = redact(current) if info.kind == "Secret" else copy.deepcopy(current)
        base["status"] = base.get("status") or {}
        patched = apply(base, patch, media)
        _keep_identity(patched, current)
        _stale(current, patched)
        status = patched.get("status") or {}
        if not isinstance(status, dict):
            raise Invalid(
                f"{info.kind} {name!r} is invalid: status must be a mapping",
                [FieldDetail("status", "must be a mapping")],
            )
        if params.dry_run(request.query_params):
            return json_response(_out({**current, "status": status}, reveal))
        update = {
            **{k: current[k] for k in ("apiVersion", "kind")},
            "metadata": {**current["metadata"]},
            "status": status,
        }
        try:
            stored = await state.store.update(update, subresource="status")
        except Conflict:
            if conditional:
                raise
            continue
        return json_response(_out(stored, reveal))
    raise Conflict(f"{info.kind} {name!r} kept changing while patching its status; try again")


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            MERGE: {"schema": {"type": "object"}},
            JSON_PATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
        },
    }
}


def patch_routes() -> APIRouter:
    """PATCH for the generic object routes (the OpenAPI document lists them per kind)."""
    r = APIRouter(tags=["objects"])
    cluster = "/api/v1/{plural}/{name}"
    celled = "/api/v1/cells/{cell}/{plural}/{name}"

    @r.patch(cluster + "/status", summary="Patch a cluster-scoped object's status",
             openapi_extra=_BODY)  # fmt: skip
    async def status(request: Request, plural: str, name: str) -> Response:
        return await patch_status(request)

    @r.patch(cluster, summary="Patch a cluster-scoped object", openapi_extra=_BODY)
    async def obj(request: Request, plural: str, name: str) -> Response:
        return await patch_object(request)

    @r.patch(celled + "/status", summary="Patch an object's status", openapi_extra=_BODY)
    async def status_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await patch_status(request)

    @r.patch(celled, summary="Patch an object in a cell", openapi_extra=_BODY)
    async def obj_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await patch_object(request)

    return r
