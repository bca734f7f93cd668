"""Overload protection (apiary.api.fairness) against a real app behind uvicorn: requests held in
flight by a body that has not arrived yet take slots; one more is refused with 429."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from apiary.api import ApiConfig
from apiary.api.fairness import OverloadLimits, long_running

from .conftest import AUTH, Api, path_of, sample, served_api


def config(**limits: int) -> ApiConfig:
    return ApiConfig(overload=OverloadLimits(**limits), bookmark_interval=0.2)


async def token(api: Api, name: str, role: str, **spec: str) -> dict[str, str]:
    r = await api.client.post(
        "/api/v1/tokens", json={"metadata": {"name": name}, "spec": {"role": role, **spec}}
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['status']['token']}"}


@contextlib.asynccontextmanager
async def held(
    api: Api, method: str, path: str, body: dict[str, Any], headers: dict[str, str] = AUTH
) -> AsyncIterator[asyncio.Task[httpx.Response]]:
    """A request whose body waits until the block ends: the server holds it in flight."""
    gate = asyncio.Event()

    async def content() -> AsyncIterator[bytes]:
        await gate.wait()
        yield orjson.dumps(body)

    async def send() -> httpx.Response:
        return await api.client.request(
            method, path, content=content(), headers={**headers, "content-type": "application/json"}
        )

    task = asyncio.create_task(send())
    try:
        yield task
    finally:
        gate.set()
        with contextlib.suppress(Exception):
            await task


async def refused(call: Callable[[], Any], timeout: float = 5.0) -> httpx.Response:
    """Repeat ``call`` until it is answered 429 (the held requests reach the server first)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r: httpx.Response = await call()
        if r.status_code == 429:
            return r
        assert asyncio.get_running_loop().time() < deadline, f"never refused: {r.status_code}"
        await asyncio.sleep(0.02)


def assert_429(r: httpx.Response, field: str) -> None:
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    body = r.json()
    assert body["code"] == 429 and body["reason"] == "TooManyRequests"
    assert body["message"].startswith("too many requests in flight: ")
    assert [d["field"] for d in body["details"]] == [field]


async def test_a_principal_over_its_bound_gets_429_with_retry_after_and_the_error_body() -> None:
    async with served_api(config=config(inflight_per_principal=2)) as api:
        c = api.client
        assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "a"))).status_code
        dev = await token(api, "dev", "developer", cell="default")
        one, two = sample("AgentSpec", "one"), sample("AgentSpec", "two")
        async with (
            held(api, "POST", path_of("AgentSpec"), one) as first,
            held(api, "POST", path_of("AgentSpec"), two) as second,
        ):
            # a plain route (the fast path's dispatcher serves it) and what FastAPI routes (an
            # unknown path, a 404 otherwise): both bounded
            r = await refused(lambda: c.get(path_of("AgentSpec", "a")))
            assert_429(r, "inflight_per_principal")
            assert 'user "admin"' in r.json()["details"][0]["message"]
            assert_429(await c.get("/api/v1/whoami"), "inflight_per_principal")
            assert_429(await c.get("/no/such/route"), "inflight_per_principal")
            # the bound is the principal's: another token is served meanwhile
            assert (await c.get(path_of("AgentSpec", "a"), headers=dev)).status_code == 200
            for public in ("/healthz", "/openapi.json"):  # no principal (served before auth)
                assert (await c.get(public)).status_code == 200
        assert first.result().status_code == 201 and second.result().status_code == 201
        assert (await c.get(path_of("AgentSpec", "a"))).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert 'apiary_api_inflight_requests{lane="user"} 1.0' in metrics  # this very request
        rejected = [ln for ln in metrics.splitlines() if ln.startswith("apiary_api_rejected")]
        assert any('lane="user"' in ln and float(ln.split()[-1]) >= 3 for ln in rejected)


async def test_node_heartbeats_and_status_writes_have_a_lane_no_user_flood_takes() -> None:
    limits = config(inflight_per_principal=1, inflight_total=2, node_inflight_per_node=1)
    async with served_api(config=limits) as api:
        c = api.client
        assert (await c.post("/api/v1/nodes", json=sample("Node", "n1"))).status_code == 201
        dev = await token(api, "dev", "developer", cell="default")
        viewer = await token(api, "view", "viewer", cell="default")
        node = await token(api, "n1", "node", node="n1")
        async with (
            held(api, "POST", path_of("AgentSpec"), sample("AgentSpec", "x")),
            held(api, "POST", path_of("AgentSpec"), sample("AgentSpec", "y"), dev),
        ):
            # every user slot is taken: a third principal is refused by the total...
            r = await refused(lambda: c.get(path_of("AgentSpec", "x"), headers=viewer))
            assert_429(r, "inflight_total")
            # ...while the node renews its lease as it always does: read the Node, write status
            for _ in range(3):
                got = await c.get("/api/v1/nodes/n1", headers=node)
                assert got.status_code == 200, got.text
                obj = got.json()
                obj["status"] = {"lease": {"renewTime": "2030-01-01T00:00:00Z"}}
                put = await c.put("/api/v1/nodes/n1/status", json=obj, headers=node)
                assert put.status_code == 200, put.text
            # a node is bounded too, in its own lane
            obj = (await c.get("/api/v1/nodes/n1", headers=node)).json()
            async with held(api, "PUT", "/api/v1/nodes/n1/status", obj, node) as write:
                r = await refused(lambda: c.get("/api/v1/nodes/n1", headers=node))
                assert_429(r, "node_inflight_per_node")
            assert write.result().status_code == 200


async def test_watches_are_not_in_the_short_lane_and_have_a_bound_of_their_own() -> None:
    limits = config(inflight_per_principal=1, long_running_per_principal=2)
    async with served_api(config=limits) as api:
        c = api.client
        url = path_of("AgentSpec")

        @contextlib.asynccontextmanager
        async def watch() -> AsyncIterator[httpx.Response]:
            async with c.stream("GET", url, params={"watch": "true"}) as r:
                if r.status_code == 200:  # (the lines kept: an iterator dropped closes the stream)
                    lines = r.aiter_lines()
                    assert orjson.loads(await anext(lines))["type"] == "BOOKMARK"
                else:
                    await r.aread()
                yield r

        async with watch() as w1, watch() as w2:
            assert w1.status_code == w2.status_code == 200
            for _ in range(3):  # one short slot, two watches open: reads still go through
                assert (await c.get(url)).status_code == 200
            async with watch() as w3:
                assert_429(w3, "long_running_per_principal")
        # the watches' slots come back when their clients go away
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            async with watch() as w4, watch() as w5:
                if w4.status_code == w5.status_code == 200:
                    break
            assert asyncio.get_running_loop().time() < deadline, "watch slots never released"
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("method", "path", "query", "kind", "long"),
    [
        ("GET", "/api/v1/cells/c/hives", b"watch=true", "http", True),
        ("GET", "/api/v1/cells/c/hives", b"watch=1&resourceVersion=4", "http", True),
        ("GET", "/api/v1/cells/c/hives", b"watch=false", "http", False),
        ("GET", "/api/v1/cells/c/hives", b"limit=10", "http", False),
        ("POST", "/api/v1/cells/c/hives", b"watch=true", "http", False),
        ("GET", "/api/v1/cells/c/drones/d/logs", b"follow=true&tail=5", "http", True),
        ("GET", "/api/v1/cells/c/drones/d/logs", b"tail=5", "http", False),
        ("GET", "/api/v1/cells/c/sessions/s/stream", b"", "http", True),
        ("GET", "/api/v1/cells/c/sessions/s/messages", b"after=3&wait=30", "http", True),
        ("GET", "/api/v1/cells/c/sessions/s/messages", b"wait=0", "http", False),
        ("GET", "/api/v1/cells/c/sessions/s/messages", b"wait=2.5s", "http", True),
        ("GET", "/api/v1/cells/c/sessions/s/messages", b"wait=soon", "http", False),
        ("GET", "/anything", b"", "websocket", True),
        ("POST", "/a2a/cells/c/hives/h", b"", "http", True),  # may stream or block
        ("POST", "/mcp/cells/c", b"", "http", True),
        ("GET", "/a2a/cells/c/hives/h/.well-known/agent-card.json", b"", "http", False),
    ],
)
def test_what_counts_as_long_running(
    method: str, path: str, query: bytes, kind: str, long: bool
) -> None:
    scope = {"type": kind, "method": method, "path": path, "query_string": query}
    assert long_running(scope) is long
