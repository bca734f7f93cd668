"""What a client finds before it knows anything: ``/version``, API discovery, and ``/docs``.

- ``GET /version`` answers as Kubernetes' does (``major``, ``minor``, ``gitVersion``,
  ``platform``...), without a token — it is what ``kubectl version`` shows of a server.
- ``GET /api`` (``APIVersions``) and ``GET /api/v1`` (``APIResourceList``: every kind's plural,
  singular, short names, scope, verbs, and its subresources as ``hives/status``...) answer as
  Kubernetes' discovery does, to any authenticated caller.
- ``/docs`` (Swagger UI) and ``/redoc`` work with no internet: FastAPI's pages load their
  JavaScript from a CDN, so an air-gapped install got a blank page. The assets come from the
  ``fastapi-offline`` package (Swagger UI 5, which renders OpenAPI 3.1; ``swagger-ui-bundle`` on
  PyPI ships 4.x, which does not) and are served under ``/docs/static``. The pages and
  ``/openapi.json`` are public — a browser cannot send a bearer token to open a page — and the
  calls made from the page carry the token entered in its Authorize dialog.

Public pages are served by :class:`PublicDocs`, an ASGI layer outside authentication, from a
small app of their own; everything else passes through untouched.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from apiary import __version__
from apiary.api.responses import JSON, error_body, json_response
from apiary.resources import API_VERSION, KINDS, KindInfo

ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC = "/docs/static"
PUBLIC_PAGES = frozenset({"/docs", "/redoc", "/openapi.json", "/version"})

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_SUBRESOURCES: dict[str, list[tuple[str, list[str]]]] = {
    "Hive": [("scale", ["get", "update"]), ("logs", ["get"])],
    "AgentSpec": [("scale", ["get", "update"])],
    "Drone": [("logs", ["get", "create"])],
    "Session": [(s, ["get"]) for s in ("messages", "stream", "transcript")]
    + [(s, ["create"]) for s in ("close", "approve", "reject")],
}


def version_info() -> dict[str, str]:
    """Kubernetes' ``version.Info``, with the Python runtime where it names Go's."""
    major, _, rest = __version__.partition(".")
    minor = rest.split(".", 1)[0]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{__version__}",
        "pythonVersion": platform.python_version(),
        "compiler": sys.implementation.name,
        "platform": f"{sys.platform}/{platform.machine()}",
    }


def _resources(info: KindInfo) -> list[dict[str, Any]]:
    verbs = ["create", "delete", "get", "list"] if info.kind == "Token" else _VERBS
    main: dict[str, Any] = {
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": verbs,
        "shortNames": list(info.short),
    }
    subs = [] if info.kind == "Token" else [("status", ["get", "patch", "update"])]
    subs += _SUBRESOURCES.get(info.kind, [])
    return [main] + [
        {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
         "kind": info.kind, "verbs": verbs_of}
        for sub, verbs_of in subs
    ]  # fmt: skip


def resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [r for info in KINDS for r in _resources(info)],
    }


def discovery_routes() -> APIRouter:
    r = APIRouter(tags=["discovery"])

    @r.get("/version", summary="The server's version, as Kubernetes answers it (no auth)")
    async def version() -> Response:
        return json_response(version_info())

    @r.get("/api", summary="The API versions served (APIVersions)")
    async def api_versions() -> Response:
        return json_response({"kind": "APIVersions", "versions": ["v1"]})

    @r.get("/api/v1", summary="Every kind and subresource, their scope and verbs")
    async def resources() -> Response:
        return json_response(resource_list())

    return r


# ----------------------------------------------------------------------------- public pages


def _pages(app: FastAPI) -> Starlette:
    title = f"{app.title} {app.version}"

    async def swagger(_: Request) -> Response:
        page: HTMLResponse = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=title,
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        )
        return page

    async def redoc(_: Request) -> Response:
        page: HTMLResponse = get_redoc_html(
            openapi_url="/openapi.json",
            title=title,
            redoc_js_url=f"{STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC}/favicon.png",
            with_google_fonts=False,
        )
        return page

    async def openapi(_: Request) -> Response:
        return JSON(app.openapi())

    async def version(_: Request) -> Response:
        return json_response(version_info())

    async def not_found(_: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 404
        return JSON(error_body(code, "NotFound", "no such file"), status_code=code)

    return Starlette(
        routes=[
            Route("/docs", swagger),
            Route("/redoc", redoc),
            Route("/openapi.json", openapi),
            Route("/version", version),
            Mount(STATIC, StaticFiles(directory=ASSETS)),
        ],
        exception_handlers={HTTPException: not_found},
    )


class PublicDocs:
    """Serves the public pages (GET/HEAD) before authentication; passes the rest on."""

    def __init__(self, app: ASGIApp, pages: Starlette) -> None:
        self.app = app
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and _public(scope):
            await self.pages(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _public(scope: Scope) -> bool:
    path: str = scope["path"]
    return path in PUBLIC_PAGES or path.startswith(STATIC + "/")


def install_discovery(app: FastAPI) -> None:
    """Add the routes and the public layer; call after every other middleware is added."""
    app.include_router(discovery_routes())
    app.add_middleware(PublicDocs, pages=_pages(app))
