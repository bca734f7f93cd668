"""The FastAPI application: routes over the kinds registry, errors as JSON, auth and metrics.

``create_app`` builds an ASGI app around a store that the caller owns (opens and closes); the
daemon (:mod:`apiary.server`) runs it under uvicorn next to the background controllers.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from apiary import __version__
from apiary.a2a import a2a_routes
from apiary.api import handlers
from apiary.api.allow import AllowHeaders
from apiary.api.approvals import approval_routes
from apiary.api.audit import AuditLog, AuditMiddleware, audit_routes
from apiary.api.auth import DENIED_KEY, Authenticator
from apiary.api.budgets import budget_routes
from apiary.api.cassettes import cassette_routes
from apiary.api.comb import comb_routes
from apiary.api.dlq import dlq_routes
from apiary.api.fairness import FairDispatcher, FairnessMiddleware, Limiter
from apiary.api.logs import LogStore, logs_routes
from apiary.api.middleware import PRINCIPAL_KEY, ApiMiddleware
from apiary.api.openapi import install_openapi
from apiary.api.patch import patch_routes
from apiary.api.responses import JSON, error_body, error_response, json_response
from apiary.api.scale import scale_routes
from apiary.api.sessions import session_routes
from apiary.api.state import ApiConfig, ApiState
from apiary.api.tokens import store_lookup, token_routes
from apiary.comb import Comb
from apiary.errors import ApiaryError, Unavailable
from apiary.mcp.routes import mcp_routes
from apiary.mcp.toolcalls import toolcall_routes
from apiary.security.roles import METRICS
from apiary.store import Store
from apiary.ui import install_console

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
}

_OBJECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def create_app(
    store: Store,
    token: str,
    config: ApiConfig | None = None,
    *,
    comb: Comb | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    audit: AuditLog | None = None,
) -> FastAPI:
    """``log_dir``: where drone logs pushed by the nodes are kept (``<data-dir>/logs``); without
    it the log endpoints answer 503. ``audit``: where mutating requests are recorded (the caller
    owns it); without it nothing is recorded and ``/api/v1/audit`` answers 503."""
    state = ApiState(
        store=store,
        config=config or ApiConfig(),
        authenticator=Authenticator.admin(token, store_lookup(store)),
    )
    if comb is not None:  # the caller owns it (opens and closes), like the store
        state.comb = comb
    app = FastAPI(
        title="Apiary API",
        version=__version__,
        default_response_class=JSON,
        description="Kubernetes-style API for agents, hives and sessions. Every endpoint but "
        "/healthz, /readyz, /version and these docs needs a bearer token (Authorize).",
        docs_url=None,  # served by apiary.api.discovery from the package: no CDN
        redoc_url=None,
    )
    app.state.apiary = state
    app.state.apiary_logs = LogStore(log_dir) if log_dir is not None else None
    app.state.apiary_audit = audit
    # Plain routes are served by the dispatcher right after authentication (no FastAPI routing
    # on the hot path); FastAPI keeps them for /openapi.json and /docs, and handles every request
    # the dispatcher leaves to it. A middleware added BEFORE this line would sit inside
    # ApiMiddleware and be skipped by directly served requests: add new ones after it.
    # The one exception is the overload limiter, which needs the principal: it sits inside
    # (FairnessMiddleware) and wraps the dispatcher, one Limiter for both (apiary.api.fairness).
    limiter = Limiter(state.config.overload, state.metrics.registry)
    app.add_middleware(FairnessMiddleware, limiter=limiter)
    dispatcher = FairDispatcher(limiter)
    app.add_middleware(
        ApiMiddleware,
        authenticator=state.authenticator,
        metrics=state.metrics,
        dispatcher=dispatcher,
    )
    app.add_middleware(AllowHeaders)  # a 405 lists every method of the path
    if audit is not None:  # outermost: it sees refusals too, and the principal once known
        app.add_middleware(AuditMiddleware, audit=audit)
    _install_error_handlers(app)
    app.include_router(_system_routes())
    app.include_router(audit_routes())  # before the generic /api/v1/{plural}
    app.include_router(logs_routes())
    app.include_router(scale_routes())
    app.include_router(session_routes())  # before the generic routes: it overrides two
    app.include_router(approval_routes())
    app.include_router(budget_routes())  # the LLM gateways' reservations (docs/gateway.md)
    app.include_router(cassette_routes())  # the LLM gateways' record and replay
    app.include_router(a2a_routes())  # /a2a/…: every exposed Hive an A2A agent (docs/interop.md)
    app.include_router(mcp_routes())  # /mcp/cells/{cell}: exposed hives as MCP tools (same doc)
    app.include_router(toolcall_routes())  # before the generic routes: keepers' MCP tool calls
    app.include_router(dlq_routes())
    app.include_router(comb_routes())  # before the generic routes: /cells/{c}/memory
    app.include_router(token_routes())  # before the generic routes: a Token's hash stays inside
    app.include_router(patch_routes())
    app.include_router(_object_routes())
    install_openapi(app)  # /openapi.json per kind, /docs, /version, discovery
    install_console(app)  # last, outermost: the web console's files at /ui (apiary.ui)
    return app


def api_state(app: FastAPI) -> ApiState:
    state: ApiState = app.state.apiary
    return state


def _install_error_handlers(app: FastAPI) -> None:
    async def apiary_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiaryError)
        if exc.status in (401, 403):
            request.scope[DENIED_KEY] = exc.message  # the audit log records why
        return error_response(exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = _REASONS.get(exc.status_code, "Error")
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail)
        )
        return JSON(
            error_body(exc.status_code, reason, message),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "path"),
                "message": str(err.get("msg", "invalid")),
            }
            for err in exc.errors()
        ]
        return JSON(error_body(400, "BadRequest", "invalid request", details), status_code=400)

    app.add_exception_handler(ApiaryError, apiary_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _system_routes() -> APIRouter:
    router = APIRouter(tags=["system"])

    @router.get("/healthz", summary="The process is up (no auth)")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @router.get("/readyz", summary="The store answers (no auth)")
    async def readyz(request: Request) -> Response:
        state: ApiState = request.app.state.apiary
        try:
            rv = await asyncio.wait_for(state.store.resource_version(), state.config.ready_timeout)
        except Exception as exc:
            raise Unavailable(f"the store does not answer: {type(exc).__name__}: {exc}") from None
        return json_response({"status": "ok", "resourceVersion": str(rv)})

    @router.get("/metrics", summary="Prometheus metrics (role metrics-reader)")
    async def metrics(request: Request) -> Response:
        state: ApiState = request.app.state.apiary
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "get", METRICS, None)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @router.get("/api/v1/whoami", summary="Who the token belongs to")
    async def whoami(request: Request) -> Response:
        who = request.scope[PRINCIPAL_KEY]
        body = {"user": who.user, "role": "cluster-admin" if who.cluster_admin else who.role}
        if who.cell:
            body["cell"] = who.cell
        if who.node:
            body["node"] = who.node
        return json_response(body)

    return router


def _object_routes() -> APIRouter:
    """Generic routes; status routes first so ``/api/v1/cells/x/status`` is Cell x's status."""
    r = APIRouter(tags=["objects"])
    cluster = "/api/v1/{plural}"
    celled = "/api/v1/cells/{cell}/{plural}"

    @r.get(cluster + "/{name}/status", summary="Read a cluster-scoped object's status")
    async def get_status(request: Request, plural: str, name: str) -> Response:
        return await handlers.get_status(request)

    @r.put(
        cluster + "/{name}/status",
        summary="Replace a cluster-scoped object's status",
        openapi_extra=_OBJECT_BODY,
    )
    async def put_status(request: Request, plural: str, name: str) -> Response:
        return await handlers.replace_status(request)

    @r.get(cluster, summary="List or watch (cluster-scoped kinds; cell-scoped across all cells)")
    async def list_all(request: Request, plural: str) -> Response:
        return await handlers.list_objects(request)

    @r.post(
        cluster,
        status_code=201,
        summary="Create a cluster-scoped object",
        openapi_extra=_OBJECT_BODY,
    )
    async def create(request: Request, plural: str) -> Response:
        return await handlers.create_object(request)

    @r.get(cluster + "/{name}", summary="Read a cluster-scoped object")
    async def get(request: Request, plural: str, name: str) -> Response:
        return await handlers.get_object(request)

    @r.put(
        cluster + "/{name}", summary="Replace a cluster-scoped object", openapi_extra=_OBJECT_BODY
    )
    async def put(request: Request, plural: str, name: str) -> Response:
        return await handlers.replace_object(request)

    @r.delete(cluster + "/{name}", summary="Delete a cluster-scoped object (cascading)")
    async def delete(request: Request, plural: str, name: str) -> Response:
        return await handlers.delete_object(request)

    @r.get(celled + "/{name}/status", summary="Read an object's status")
    async def get_status_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await handlers.get_status(request)

    @r.put(
        celled + "/{name}/status", summary="Replace an object's status", openapi_extra=_OBJECT_BODY
    )
    async def put_status_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await handlers.replace_status(request)

    @r.get(celled, summary="List or watch objects in a cell")
    async def list_in_cell(request: Request, cell: str, plural: str) -> Response:
        return await handlers.list_objects(request)

    @r.post(
        celled, status_code=201, summary="Create an object in a cell", openapi_extra=_OBJECT_BODY
    )
    async def create_in_cell(request: Request, cell: str, plural: str) -> Response:
        return await handlers.create_object(request)

    @r.get(celled + "/{name}", summary="Read an object in a cell")
    async def get_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await handlers.get_object(request)

    @r.put(celled + "/{name}", summary="Replace an object in a cell", openapi_extra=_OBJECT_BODY)
    async def put_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await handlers.replace_object(request)

    @r.delete(celled + "/{name}", summary="Delete an object in a cell (cascading)")
    async def delete_in_cell(request: Request, cell: str, plural: str, name: str) -> Response:
        return await handlers.delete_object(request)

    return r
