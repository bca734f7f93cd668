"""The OpenAPI document at ``/openapi.json``: what the server really answers, per kind.

FastAPI's own document cannot say it: the object routes are generic (``/api/v1/cells/{cell}/
{plural}/{name}``, one set of handlers for every kind), handlers read their query parameters
themselves, and they answer plain ``Response`` objects. So the document is built here from
what the server is made of:

- the generic routes are listed **per kind** (``/api/v1/cells/{cell}/hives/{name}``...), each
  with the kind's schema generated from its pydantic model (``spec.stages[].replicas`` is an
  integer with its bounds) and ``{Kind}List`` for lists; ``{plural}`` in other routes (scale)
  is expanded the same way;
- request schemas are the kind's, loosened where the server fills in (``apiVersion``, ``kind``,
  the name from ``generateName``, a create's ``status``), so that what the document calls
  invalid the server refuses too;
- the query parameters and headers of every route (:mod:`apiary.api.openapi_params`), described
  as strictly as the server parses them;
- every error status with the body every error has, ``{code, reason, message, details[]}``;
- the bearer ``securitySchemes`` (``/healthz``, ``/readyz``, ``/version`` need none) and the
  real content types (``/metrics`` and logs are text, a watch is NDJSON, a stream SSE).

The document is built once per app, on first request.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from apiary.api.discovery import install_discovery
from apiary.api.openapi_params import (
    ALSO_OK,
    DELETE_RV,
    DRY_RUN,
    EVENT_PARAMS,
    HEADERS,
    LIST_PARAMS,
    NDJSON,
    QUERY,
    REVEAL,
    STRICT,
)
from apiary.resources import API_VERSION, KINDS, KindInfo
from apiary.resources.kinds import MODELS

Obj = dict[str, Any]
REF = "#/components/schemas/"
PUBLIC = ("/healthz", "/readyz", "/version")
DNS_LABEL = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
TEXT, SSE = "text/plain", "text/event-stream"

# ------------------------------------------------------------------------------- errors

ERRORS = {
    400: "Bad request: a parameter, header or body is malformed (named in message/details)",
    401: "No valid bearer token",
    403: "The token's role may not do this (or a quota is exceeded)",
    404: "No such object or route",
    405: "Method not allowed on this object",
    409: "Conflict: a stale resourceVersion, an existing name, or the wrong state",
    410: "Gone: the resourceVersion is too old to watch from",
    413: "The request body is over the server's limit",
    415: "Unsupported Content-Type",
    422: "Invalid: the object fails validation; details name each field",
    429: "Too many requests (see Retry-After)",
    503: "Unavailable: a backend the request needs does not answer",
}
_ALWAYS = (400, 401, 403, 404, 405, 409, 422, 429, 503)
_WITH_BODY = (413, 415)


def _error_responses(method: str, public: bool) -> Obj:
    codes = [c for c in _ALWAYS if not public or c in (400, 404, 405, 422, 429, 503)]
    if method in ("post", "put", "patch"):
        codes += _WITH_BODY
    if method == "get" and not public:
        codes += [410]
    ref = {"application/json": {"schema": {"$ref": REF + "Error"}}}
    return {str(c): {"description": ERRORS[c], "content": ref} for c in sorted(codes)}


ERROR_SCHEMA: Obj = {
    "type": "object",
    "description": "Every error: HTTP status, reason, a message and, when known, the fields.",
    "required": ["code", "reason", "message"],
    "properties": {
        "code": {"type": "integer", "description": "The HTTP status"},
        "reason": {"type": "string", "examples": ["Invalid", "NotFound", "Conflict"]},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {
                    "field": {"type": "string", "examples": ["spec.stages[1].agentRef"]},
                    "message": {"type": "string"},
                },
            },
        },
    },
}

# ------------------------------------------------------------------------------ schemas


def kind_schemas() -> Obj:
    """One schema per kind from its model, ``{Kind}List``, ``{Kind}Input`` for request bodies,
    and what they refer to (``HiveSpec``, ``Stage``, ``ObjectMeta``...)."""
    _, top = models_json_schema(
        [(model, "validation") for model in MODELS.values()], ref_template=REF + "{model}"
    )
    schemas: Obj = dict(top.get("$defs", {}))
    schemas["ObjectMeta"]["properties"]["name"].update(DNS_LABEL)  # checked by a validator
    meta_in = copy.deepcopy(schemas["ObjectMeta"])
    meta_in.update(required=[], title="ObjectMetaInput")  # a PUT's name may come from the path
    schemas["ObjectMetaInput"] = meta_in
    schemas["ObjectMetaCreate"] = {  # a create's may come from generateName
        **meta_in,
        "title": "ObjectMetaCreate",
        "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
    }
    for kind in MODELS:  # titles are what generated clients name their classes after
        schemas[f"{kind}Input"] = _input(schemas[kind], "ObjectMetaInput", f"{kind}Input")
        schemas[f"{kind}Create"] = _input(schemas[kind], "ObjectMetaCreate", f"{kind}Create")
        schemas[f"{kind}List"] = _list_schema(kind)
    schemas["Error"] = ERROR_SCHEMA
    schemas["WatchEvent"] = {
        "type": "object",
        "required": ["type", "object"],
        "properties": {
            "type": {"enum": ["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]},
            "object": {"type": "object"},
        },
    }
    schemas["ListMeta"] = {
        "type": "object",
        "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"}},
    }
    return schemas


def _input(schema: Obj, meta: str, title: str) -> Obj:
    """What a client may send: apiVersion and kind default from the path, status is ignored."""
    out = copy.deepcopy(schema)
    out["title"] = title
    out["required"] = [f for f in out.get("required", []) if f not in ("apiVersion", "kind")]
    props = out["properties"]
    props["metadata"] = {"$ref": REF + meta}
    props["status"] = {"description": "Ignored: status is written through /status."}
    return out


def _list_schema(kind: str) -> Obj:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "items"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": f"{kind}List"},
            "metadata": {"$ref": REF + "ListMeta"},
            "items": {"type": "array", "items": {"$ref": REF + kind}},
        },
    }


# -------------------------------------------------------------------------- object paths


EXAMPLE_NAME = "example"
_SPECS: dict[str, Obj] = {
    "Cell": {"spec": {}},
    "Node": {"spec": {}},
    "Secret": {"stringData": {"token": "s3cr3t"}},
    "AgentSpec": {"spec": {"runtime": {"command": ["cat"]}}},
    "Hive": {"spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "example"}]}},
    "Drone": {"spec": {"agentSpec": "example", "runtime": {"command": ["cat"]}}},
    "Session": {"spec": {"hiveRef": "example"}},
    "Event": {"involvedObject": {"kind": "Hive", "name": "example"}, "reason": "Example"},
}


def example(kind: str) -> Obj | None:
    """A small valid object of ``kind`` (what "Try it out" starts from); None: no example."""
    spec = _SPECS.get(kind)
    if spec is None:
        return None
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": EXAMPLE_NAME}, **spec}


def _path_param(name: str, text: str) -> Obj:
    sample = "default" if name == "cell" else EXAMPLE_NAME
    return {"name": name, "in": "path", "required": True, "schema": DNS_LABEL,
            "description": text, "example": sample}  # fmt: skip


def _json(ref: str) -> Obj:
    return {"application/json": {"schema": {"$ref": REF + ref}}}


def _body(kind: str, patch: bool = False, create: bool = False) -> Obj:
    if patch:
        merge = {"metadata": {"labels": {"example": "true"}}}
        content: Obj = {
            "application/merge-patch+json": {"schema": {"type": "object"}, "example": merge},
            "application/json-patch+json": {"schema": {"type": "array", "items": {
                "type": "object", "required": ["op", "path"]}}, "example": [
                {"op": "add", "path": "/metadata/labels", "value": {"example": "true"}}]},
        }  # fmt: skip
    else:
        schema = f"{kind}Create" if create else f"{kind}Input"
        content = {**_json(schema), "application/yaml": {"schema": {"type": "string"}}}
        if (sample := example(kind)) is not None:
            content["application/json"]["example"] = sample
    return {"required": True, "content": content}


def _op(
    op_id: str, summary: str, kind: str, info: KindInfo, *, status: int = 200, **extra: Any
) -> Obj:
    op: Obj = {
        "tags": [info.plural],
        "summary": summary,
        "operationId": op_id,
        "responses": {str(status): {"description": "OK", "content": _json(kind)}},
    }
    op.update(extra)
    return op


def kind_paths(info: KindInfo) -> dict[str, Obj]:
    """The object routes of one kind, as concrete paths."""
    k, plural = info.kind, info.plural
    ks = plural[:1].upper() + plural[1:]
    where = [_path_param("cell", "The cell (namespace).")] if info.namespaced else []
    base = f"/api/v1/cells/{{cell}}/{plural}" if info.namespaced else f"/api/v1/{plural}"
    name = [*where, _path_param("name", f"The {k}'s name.")]
    reveal = [REVEAL] if k == "Secret" else []
    listing = [*LIST_PARAMS, *(EVENT_PARAMS if k == "Event" else []), *reveal]
    write = [DRY_RUN, STRICT, *reveal]
    body: Obj = {"requestBody": _body(k)}
    create: Obj = {"requestBody": _body(k, create=True)}
    patch: Obj = {"requestBody": _body(k, patch=True)}

    def listed(op_id: str, summary: str, params: list[Obj]) -> Obj:
        watch = {**_json(f"{k}List"), NDJSON: {"schema": {"$ref": REF + "WatchEvent"}}}
        return _op(op_id, summary, f"{k}List", info, parameters=params,
                   responses={"200": {"description": "OK", "content": watch}})  # fmt: skip

    paths: dict[str, Obj] = {
        base: {
            "get": listed(f"list{ks}", f"List or watch {plural}", [*where, *listing]),
            "post": _op(
                f"create{k}",
                f"Create a {k}",
                k,
                info,
                status=201,
                parameters=[*where, *write],
                **create,
            ),
        },
        f"{base}/{{name}}": {
            "get": _op(f"read{k}", f"Read a {k}", k, info, parameters=[*name, *reveal]),
            "put": _op(
                f"replace{k}", f"Replace a {k}", k, info, parameters=[*name, *write], **body
            ),
            "patch": _op(f"patch{k}", f"Patch a {k}", k, info, parameters=[*name, *write], **patch),
            "delete": _op(
                f"delete{k}",
                f"Delete a {k} (cascading)",
                k,
                info,
                parameters=[*name, DRY_RUN, DELETE_RV, *reveal],
            ),
        },
        f"{base}/{{name}}/status": {
            "get": _op(
                f"read{k}Status", f"Read a {k}'s status", k, info, parameters=[*name, *reveal]
            ),
            "put": _op(
                f"replace{k}Status",
                f"Replace a {k}'s status",
                k,
                info,
                parameters=[*name, DRY_RUN],
                **body,
            ),
            "patch": _op(
                f"patch{k}Status",
                f"Patch a {k}'s status",
                k,
                info,
                parameters=[*name, DRY_RUN],
                **patch,
            ),
        },
    }
    if info.namespaced:  # a cell-scoped kind listed across every cell
        all_cells = listed(f"list{ks}AllCells", f"List or watch {plural} in every cell", listing)
        paths[f"/api/v1/{plural}"] = {"get": all_cells}
    return paths


# ------------------------------------------------------------------------------ assembly

_PLURAL = re.compile(r"\{plural\}")
_SCALE_PLURALS = ("hives", "agentspecs")
_TEXT_ROUTES = {
    "GET /metrics": TEXT,
    "GET /api/v1/cells/{cell}/drones/{name}/logs": TEXT,
    "GET /api/v1/cells/{cell}/hives/{name}/logs": TEXT,
    "GET /api/v1/cells/{cell}/sessions/{name}/stream": SSE,
}


def _fastapi_paths(app: FastAPI) -> dict[str, Obj]:
    """The document FastAPI derives from the routes, generic ``{plural}`` ones left out (they
    are listed per kind) and ``/scale`` expanded over the kinds that have it."""
    base = get_openapi(title=app.title, version=app.version, routes=app.routes)
    out: dict[str, Obj] = {}
    for path, ops in base.get("paths", {}).items():
        if "{plural}" not in path:
            out[path] = ops
        elif path.endswith("/scale"):
            for plural in _SCALE_PLURALS:
                out[_PLURAL.sub(plural, path)] = _without_plural(ops, plural)
    return out


def _without_plural(ops: Obj, plural: str) -> Obj:
    ops = copy.deepcopy(ops)
    for op in ops.values():
        op["operationId"] = f"{op.get('operationId', '')}_{plural}"
        op["parameters"] = [p for p in op.get("parameters", []) if p.get("name") != "plural"]
    return ops


def _finish(path: str, method: str, op: Obj) -> None:
    """Query parameters, error responses, security and content types of one operation."""
    key = f"{method.upper()} {path}"
    public = path in PUBLIC
    params = [p for p in op.get("parameters", []) if p.get("in") != "query"]
    op["parameters"] = [*params, *HEADERS.get(key, []), *QUERY.get(key, []), *_query_of(op)]
    responses = {c: r for c, r in op.get("responses", {}).items() if c != "422"}
    if (also := ALSO_OK.get(key)) is not None and responses:
        responses[also] = copy.deepcopy(next(iter(responses.values())))
    media = _TEXT_ROUTES.get(key)
    for code, resp in responses.items():
        if not code.startswith("2"):
            continue
        if media is not None:
            resp["content"] = {media: {"schema": {"type": "string"}}}
        elif _untyped(resp):  # FastAPI's guess for a handler that returns a plain Response
            resp["content"] = {"application/json": {"schema": {"type": "object"}}}
    op["responses"] = {**responses, **_error_responses(method, public)}
    if public:
        op["security"] = []
    if not op.get("operationId"):
        op["operationId"] = _operation_id(method, path)


def _untyped(resp: Obj) -> bool:
    schema = resp.get("content", {}).get("application/json", {}).get("schema")
    return schema is not None and schema in ({}, {"type": "string"})


def _query_of(op: Obj) -> list[Obj]:
    return [p for p in op.get("parameters", []) if p.get("in") == "query"]


def _operation_id(method: str, path: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", path.replace("/api/v1", ""))
    return method + "".join(w[:1].upper() + w[1:] for w in words if w)


def build_openapi(app: FastAPI) -> Obj:
    paths = _fastapi_paths(app)
    for info in KINDS:
        for path, ops in kind_paths(info).items():
            existing = paths.setdefault(path, {})
            for method, op in ops.items():
                if info.kind == "Token" and method not in existing:
                    continue  # the token routes say themselves what they allow
                existing.setdefault(method, op)
    for path, ops in paths.items():
        for method, op in ops.items():
            _finish(path, method, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": app.title, "version": app.version, "description": app.description},
        "paths": paths,
        "components": {
            "schemas": kind_schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An Apiary token (apiaryctl token create; admin.token).",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (what ``/openapi.json`` serves) this document, built once, and add
    ``/docs``, ``/version`` and discovery (:mod:`apiary.api.discovery`). Call it last."""
    install_discovery(app)
    built: list[Obj] = []

    def openapi() -> Obj:
        if not built:
            built.append(build_openapi(app))
        return built[0]

    app.openapi = openapi  # type: ignore[method-assign]
