"""The direct dispatcher picks exactly the route FastAPI would, or leaves the request to it."""

from __future__ import annotations

import itertools

import pytest
from fastapi import FastAPI, Request
from starlette.responses import Response

from apiary.api import create_app
from apiary.api.fastpath import Dispatcher, flatten
from apiary.api.middleware import ApiMiddleware
from apiary.store.memory import MemoryStore

from .conftest import TOKEN, Api

SEGMENTS = ["cells", "c", "agentspecs", "sessions", "hives", "status", "scale", "memory"]
SEGMENTS += ["logs", "dlq", "audit", "whoami"]
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def dispatcher_of(app: object) -> Dispatcher:
    stack = app.user_middleware  # type: ignore[attr-defined]
    found = [m.kwargs["dispatcher"] for m in stack if m.cls is ApiMiddleware]
    assert len(found) == 1
    dispatcher = found[0]
    assert isinstance(dispatcher, Dispatcher)
    return dispatcher


def fastapi_choice(routes: list[object], method: str, path: str) -> object | None:
    """Starlette's rule over the flattened routes: the first full (path + method) match wins."""
    for route, original in flatten(routes):
        regex = getattr(route, "path_regex", None)
        methods = getattr(route, "methods", None)
        if regex is not None and regex.match(path) and (methods is None or method in methods):
            return original
    return None


def test_every_directly_served_path_is_the_route_fastapi_picks() -> None:
    app = create_app(MemoryStore(), TOKEN)
    routes = list(app.router.routes)
    dispatcher = dispatcher_of(app)
    direct = 0
    shapes = [itertools.product(SEGMENTS, repeat=n) for n in range(1, 5)]
    shapes.append(itertools.product(["cells"], *[SEGMENTS] * 4))  # 5 segments: only under cells
    for parts in itertools.chain(*shapes):
        path = "/api/v1/" + "/".join(parts)
        for method in METHODS:
            found = dispatcher.lookup(method, path, routes)
            if found is None:
                continue
            direct += 1
            target, params = found
            assert target.route is fastapi_choice(routes, method, path), (method, path)
            assert target.regex.match(path).groupdict() == params, (method, path)
    assert direct > 5_000
    for method, path in [  # plain routes of every router are served directly...
        ("POST", "/api/v1/cells/c/sessions"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/whoami"),
        ("GET", "/api/v1/cells/c/agentspecs/a"),
        ("PUT", "/api/v1/cells/c/status"),
        ("PUT", "/api/v1/cells/c/hives/h/status"),
        ("DELETE", "/api/v1/nodes/n"),
        ("PATCH", "/api/v1/cells/c/hives/h"),
    ]:
        assert dispatcher.lookup(method, path, routes) is not None, (method, path)
    for method, path in [  # ...unknown methods and paths are FastAPI's (405, 404, redirects)
        ("POST", "/api/v1/cells/c/hives/h"),
        ("GET", "/api/v1/cells/c/hives/"),
        ("GET", "/nowhere"),
    ]:
        assert dispatcher.lookup(method, path, routes) is None, (method, path)


def test_routes_that_need_fastapi_are_left_to_it() -> None:
    app = FastAPI()

    @app.get("/q/{name}")
    async def with_query(request: Request, name: str, limit: int = 5) -> Response:
        return Response(f"{name}{limit}")

    @app.get("/i/{n:int}")
    async def with_int(request: Request, n: int) -> Response:
        return Response(str(n))

    @app.get("/d/{name}")
    async def returns_data(request: Request, name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/p/{name}")
    async def plain(request: Request, name: str) -> Response:
        return Response(name)

    d = Dispatcher()
    routes = list(app.router.routes)
    assert [d.lookup("GET", p, routes) is not None for p in ("/q/a", "/i/1", "/d/a", "/p/a")] == [
        False,
        False,
        False,
        True,
    ]


async def test_direct_requests_behave_like_routed_ones(mem_api: Api) -> None:
    c = mem_api.client
    spec = {"kind": "AgentSpec", "metadata": {"name": "a"}, "spec": {"runtime": {"command": ["x"]}}}
    r = await c.post("/api/v1/cells/default/agentspecs", json=spec)
    assert r.status_code == 201, r.text
    r = await c.get("/api/v1/cells/default/agentspecs/a", headers={"Authorization": "Bearer no"})
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await c.get("/api/v1/cells/default/gizmos/a")
    assert r.status_code == 404 and "unknown resource type 'gizmos'" in r.json()["message"]
    r = await c.post("/api/v1/cells/default/agentspecs/a", json={})
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    r = await c.get("/api/v1/cells/default/agentspecs", params={"limit": "x"})
    assert r.status_code == 400 and "limit" in r.json()["message"]
    metrics = (await c.get("/metrics")).text
    assert 'route="/api/v1/cells/{cell}/{plural}/{name}",status="404"' in metrics
    assert 'route="/api/v1/cells/{cell}/{plural}",status="201"' in metrics


@pytest.mark.parametrize(
    "template",
    [
        "/api/v1/hives",
        "/api/v1/cells/{name}",
        "/api/v1/nodes/{name}/status",
        "/api/v1/cells/{cell}/hives",
        "/api/v1/cells/{cell}/hives/{name}",
        "/api/v1/cells/{cell}/drones/{name}/status",
    ],
)
async def test_openapi_still_describes_the_object_routes(mem_api: Api, template: str) -> None:
    doc = (await mem_api.client.get("/openapi.json")).json()
    assert template in doc["paths"]
    assert (await mem_api.client.get("/docs")).status_code == 200
