"""The keeper's local HTTP server for agents, against a real API on loopback.

First the server alone (tokens, forwarding, errors), then the whole path: a real node agent runs a
small SDK agent process that increments a Comb counter through ``ctx.comb``; the API shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from apiary.api import create_app
from apiary.client import AsyncApiClient
from apiary.comb import open_comb
from apiary.controllers import QueenSettings, run_controllers
from apiary.node.agent import NodeAgent, NodeSettings
from apiary.node.keeper import HeldSessions
from apiary.node.keeperhttp import KeeperHttpServer
from apiary.node.runner import RunnerSettings
from apiary.store import Store, open_store
from apiary.waggle import Message

TOKEN = "test-token"


@dataclass
class Api:
    store: Store
    client: AsyncApiClient
    url: str


@contextlib.asynccontextmanager
async def running_api(cell: str) -> AsyncIterator[Api]:
    store = open_store("memory://")
    comb = open_comb("memory://")
    async with store, comb:
        app = create_app(store, TOKEN, comb=comb)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
        )
        serving = asyncio.create_task(server._serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.005)
        client = AsyncApiClient(f"http://127.0.0.1:{port}", TOKEN, cell)
        try:
            yield Api(store, client, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 5)
            await client.aclose()
            sock.close()


def session(cell: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "apiary.io/v1", "kind": "Session",
            "metadata": {"name": name, "namespace": cell}, "spec": {"hiveRef": "h"}}  # fmt: skip


class FakeDrone:
    """What the server looks up: a spec (``memory``) and a keeper's held sessions."""

    def __init__(self, memory: str | None = None, *held: str) -> None:
        self.spec: dict[str, Any] = {"memory": memory} if memory else {}
        self.keeper = SimpleNamespace(held=HeldSessions())
        for s in held:
            self.keeper.held.add(s)


async def test_tokens_paths_and_forwarding(cell: str) -> None:
    async with running_api(cell) as api:
        await api.client.create(session(cell, "s1"))
        await api.client.create(session(cell, "nope"))
        running = {(cell, "d1"): FakeDrone("readwrite", f"{cell}/s1", "nope")}
        keeper = KeeperHttpServer(api.client, drones=lambda c, d: running.get((c, d)))
        async with keeper:
            env = keeper.drone_env(cell, "d1")
            base = env["APIARY_KEEPER_URL"]
            assert base == f"{keeper.url}/drones/{cell}/d1"
            auth = {"Authorization": f"Bearer {env['APIARY_KEEPER_TOKEN']}"}
            async with httpx.AsyncClient(headers=auth) as c:
                r = await c.post(f"{base}/comb/s1/hits/incr", json={"by": 2})
                assert r.json() == {"key": "hits", "value": 2}
                assert (await c.post(f"{base}/comb/s1/hits/incr")).json()["value"] == 3
                r = await c.put(f"{base}/comb/s1/note", json={"value": [1, "two"]})
                assert r.status_code == 200
                assert (await c.get(f"{base}/comb/s1?pattern=*")).json()["keys"] == ["hits", "note"]
                r = await c.post(f"{base}/lists/s1/conversation", json={"item": "hi"})
                assert r.json()["length"] == 1
                r = await c.post(f"{base}/memory", json={"text": "likes tea"})
                assert r.status_code == 201
                r = await c.get(f"{base}/memory/search", params={"q": "tea"})
                assert [i["text"] for i in r.json()["items"]] == ["likes tea"]
                # errors come back as the API's JSON
                await api.client.delete("Session", "nope")
                r = await c.get(f"{base}/comb/nope/k")
                assert r.status_code == 404 and "Session 'nope'" in r.json()["message"]
                r = await c.put(f"{base}/comb/s1/k", content=b"{not json")
                assert r.status_code == 400 and "malformed JSON" in r.json()["message"]
                r = await c.get(f"{keeper.url}/drones/{cell}/d1/nowhere")
                assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
                assert "reaches only comb/{session}" in r.json()["message"]
                # another drone's path with this token, no token, a drone not running here
                r = await c.get(f"{keeper.url}/drones/{cell}/d2/comb/s1")
                assert r.status_code == 401
            async with httpx.AsyncClient() as c:
                r = await c.get(f"{base}/comb/s1")
                assert r.status_code == 401 and "Bearer" in r.json()["message"]
                running.clear()
                r = await c.get(f"{base}/comb/s1", headers=auth)
                assert r.status_code == 403 and "does not run on this node" in r.json()["message"]
        # the API has what the drone wrote
        r = await api.client.request("GET", f"/api/v1/cells/{cell}/sessions/s1/comb/hits")
        assert r.body["value"] == 3
    assert keeper.drone_env(cell, "d1") == {}


async def test_a_token_reaches_only_the_sessions_its_drone_holds(cell: str) -> None:
    async with running_api(cell) as api:
        for name in ("a", "b"):
            await api.client.create(session(cell, name))
        await api.client.request(
            "PUT", f"/api/v1/cells/{cell}/sessions/b/comb/secret", json_body={"value": "b's"}
        )
        drone = FakeDrone(None, f"{cell}/a")
        keeper = KeeperHttpServer(api.client, drones=lambda c, d: drone if d == "d1" else None)
        async with keeper:
            env = keeper.drone_env(cell, "d1")
            base = env["APIARY_KEEPER_URL"]
            auth = {"Authorization": f"Bearer {env['APIARY_KEEPER_TOKEN']}"}
            async with httpx.AsyncClient(headers=auth) as c:
                assert (await c.put(f"{base}/comb/a/k", json={"value": 1})).status_code == 200
                assert (await c.get(f"{base}/comb/a/k")).json()["value"] == 1
                assert (await c.post(f"{base}/lists/a/log", json={"item": 1})).status_code == 200
                for method, path in (
                    ("GET", "comb/b/secret"), ("PUT", "comb/b/secret"), ("GET", "comb/b"),
                    ("DELETE", "comb/b"), ("POST", "comb/b/n/incr"), ("GET", "lists/b/log"),
                    ("POST", "lists/b/log"),
                ):  # fmt: skip
                    body = {"value": "x", "item": "x"} if method in ("PUT", "POST") else None
                    r = await c.request(method, f"{base}/{path}", json=body)
                    assert r.status_code == 403, (method, path, r.text)
                    assert r.json()["message"] == f"drone {cell}/d1 holds no message of session b"
                # the message of session a is answered: a is out of reach too
                drone.keeper.held.release(f"{cell}/a")
                r = await c.get(f"{base}/comb/a/k")
                assert r.status_code == 403 and "holds no message of session a" in r.text
        got = await api.client.request("GET", f"/api/v1/cells/{cell}/sessions/b/comb/secret")
        assert got.body["value"] == "b's"


@pytest.mark.parametrize(
    ("memory", "search", "write"),
    [(None, 403, 403), ("none", 403, 403), ("read", 200, 403), ("readwrite", 200, 201)],
)
async def test_long_term_memory_is_as_far_as_spec_memory_allows(
    cell: str, memory: str | None, search: int, write: int
) -> None:
    async with running_api(cell) as api:
        drone = FakeDrone(memory)
        keeper = KeeperHttpServer(api.client, drones=lambda c, d: drone)
        async with keeper:
            env = keeper.drone_env(cell, "d1")
            base = env["APIARY_KEEPER_URL"]
            auth = {"Authorization": f"Bearer {env['APIARY_KEEPER_TOKEN']}"}
            async with httpx.AsyncClient(headers=auth) as c:
                r = await c.get(f"{base}/memory/search", params={"q": "tea"})
                assert r.status_code == search, r.text
                if search == 403:
                    assert "spec.memory" in r.json()["message"]
                r = await c.post(f"{base}/memory", json={"text": "likes tea"})
                assert r.status_code == write, r.text
                if write == 403:
                    assert "spec.memory" in r.json()["message"]
                    assert (await c.delete(f"{base}/memory/x")).status_code == 403
                else:
                    assert (await c.delete(f"{base}/memory/{r.json()['id']}")).status_code < 300


async def test_paths_that_could_leave_the_keepers_routes_are_refused(cell: str) -> None:
    async with running_api(cell) as api:
        for name in ("s1", "victim"):
            await api.client.create(session(cell, name))
        drone = FakeDrone("readwrite", f"{cell}/s1", "..", ".")
        keeper = KeeperHttpServer(api.client, drones=lambda c, d: drone)
        async with keeper:
            env = keeper.drone_env(cell, "d1")
            base = env["APIARY_KEEPER_URL"]
            auth = {"Authorization": f"Bearer {env['APIARY_KEEPER_TOKEN']}"}
            # raw paths: no client-side normalisation of '..' or of percent escapes
            async with httpx.AsyncClient(headers=auth) as c:
                for method, path in (
                    ("GET", "/comb/..%2Fvictim/secret"),
                    ("GET", "/comb/s1%2F..%2Fvictim/secret"),
                    ("GET", "/comb/s1/..%2F..%2Fvictim"),
                    ("DELETE", "/comb/s1/.."),
                    ("DELETE", "/comb/s1/%2E%2E"),
                    ("GET", "/comb/../comb/victim"),
                    ("DELETE", "/comb/%2e%2e"),
                    ("GET", "/lists/s1/..%5Cx"),
                    ("DELETE", "/memory/.."),
                    ("DELETE", "/memory/..%2F..%2F..%2Fcells%2Fdefault"),
                    ("GET", "/comb/s1/a%00b"),
                ):  # fmt: skip
                    url = httpx.URL(base + path)
                    raw = url.raw_path  # send exactly what we wrote
                    request = c.build_request(method, url)
                    request.url = url.copy_with(raw_path=raw)
                    r = await c.send(request)
                    assert r.status_code in (400, 403), (method, path, r.status_code, r.text)
        # nothing reached the API: s1 and victim are still there
        for name in ("s1", "victim"):
            assert (await api.client.get("Session", name, cell))["metadata"]["name"] == name


AGENT = textwrap.dedent(
    """
    from apiary.agent import agent

    @agent
    def count(msg, ctx):
        n = ctx.comb.incr("counter", msg.payload["by"])
        ctx.comb.append("conversation", msg.payload)
        return {"counter": n, "seen": ctx.comb.get("counter"), "missing": ctx.comb.get("x", "-")}

    count.run()
    """
)


async def test_an_sdk_agent_increments_a_counter_the_api_shows(cell: str, tmp_path: Path) -> None:
    async with running_api(cell) as api:
        stop = asyncio.Event()
        queen = asyncio.create_task(run_controllers(api.store, QueenSettings(), stop))
        state = str(tmp_path / "node")
        node = NodeAgent(
            api.client,
            NodeSettings(
                name="node-k",
                state_dir=state,
                heartbeat_seconds=0.5,
                runner=RunnerSettings(state_dir=state, grace_period_seconds=2.0),
            ),
        )
        node_task = asyncio.create_task(node.run(stop))
        try:
            await api.client.create(session(cell, "chat"))
            await api.client.apply(
                {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                 "metadata": {"name": "counter", "namespace": cell},
                 "spec": {"runtime": {"command": [sys.executable, "-c", AGENT]},
                          "interface": {"type": "stdin"},
                          "resources": {"requests": {"cpu": 100, "memory": 16_000_000}}}}
            )  # fmt: skip
            await api.client.apply(
                {"apiVersion": "apiary.io/v1", "kind": "Hive",
                 "metadata": {"name": "h", "namespace": cell},
                 "spec": {"pattern": "pipeline",
                          "stages": [{"name": "count", "agentRef": "counter", "replicas": 1}]}}
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while True:
                drones = (await api.client.list("Drone", cell))["items"]
                if drones and (drones[0].get("status") or {}).get("ready"):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"the drone never became ready: {drones}")
                await asyncio.sleep(0.02)
            runner = node.find(cell, drones[0]["metadata"]["name"])
            assert runner is not None
            for by, expected in ((1, 1), (41, 42)):
                out = await runner.keeper.deliver(
                    Message({"by": by}, "task", session_id="chat"), timeout=10
                )
                assert out[-1].payload == {"counter": expected, "seen": expected, "missing": "-"}
            r = await api.client.request("GET", f"/api/v1/cells/{cell}/sessions/chat/comb/counter")
            assert r.body["value"] == 42
            path = f"/api/v1/cells/{cell}/sessions/chat/lists/conversation"
            assert (await api.client.request("GET", path)).body["items"] == [{"by": 1}, {"by": 41}]
            await api.client.delete("Hive", "h")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(node_task, queen, return_exceptions=True), 15)


PROBE = textwrap.dedent(
    """
    import json, os, sys, urllib.error, urllib.request

    URL, TOKEN = os.environ["APIARY_KEEPER_URL"], os.environ["APIARY_KEEPER_TOKEN"]

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(URL + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + TOKEN)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    for line in sys.stdin:
        msg = json.loads(line)
        own = msg["sessionId"].rsplit("/", 1)[-1]
        other = msg["payload"]["other"]
        print(json.dumps({
            "own:write": call("PUT", f"/comb/{own}/k", {"value": 1}),
            "own:read": call("GET", f"/comb/{own}/k"),
            "own:list": call("POST", f"/lists/{own}/log", {"item": 1}),
            "other:read": call("GET", f"/comb/{other}/secret"),
            "other:write": call("PUT", f"/comb/{other}/secret", {"value": "x"}),
            "other:keys": call("GET", f"/comb/{other}"),
            "other:list": call("GET", f"/lists/{other}/log"),
            "other:dotdot": call("GET", f"/comb/..%2F{other}/secret"),
            "own:dotdot": call("DELETE", f"/comb/{own}/%2E%2E"),
            "memory:search": call("GET", "/memory/search?q=plan"),
            "memory:write": call("POST", "/memory", {"text": "a plan"}),
        }), flush=True)
    """
)


async def test_real_drones_reach_only_what_they_hold_and_their_spec_allows(
    cell: str, tmp_path: Path
) -> None:
    """Three real agent processes (spec.memory unset, read, readwrite) on a real node agent, each
    holding a message of session a while session b lives in the same cell."""
    async with running_api(cell) as api:
        stop = asyncio.Event()
        queen = asyncio.create_task(run_controllers(api.store, QueenSettings(), stop))
        state = str(tmp_path / "node")
        node = NodeAgent(
            api.client,
            NodeSettings(
                name="node-p", state_dir=state, heartbeat_seconds=0.5,
                runner=RunnerSettings(state_dir=state, grace_period_seconds=2.0),
            ),
        )  # fmt: skip
        node_task = asyncio.create_task(node.run(stop))
        try:
            for name in ("a", "b"):
                await api.client.create(session(cell, name))
            b_secret = f"/api/v1/cells/{cell}/sessions/b/comb/secret"
            await api.client.request("PUT", b_secret, json_body={"value": "b's"})
            modes = {"plain": None, "reader": "read", "writer": "readwrite"}
            for agent_name, memory in modes.items():
                spec: dict[str, Any] = {
                    "runtime": {"command": [sys.executable, "-c", PROBE]},
                    "interface": {"type": "stdin"},
                    "resources": {"requests": {"cpu": 100, "memory": 16_000_000}},
                }
                if memory:
                    spec["memory"] = memory
                await api.client.apply(
                    {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                     "metadata": {"name": agent_name, "namespace": cell}, "spec": spec}
                )  # fmt: skip
            await api.client.apply(
                {"apiVersion": "apiary.io/v1", "kind": "Hive",
                 "metadata": {"name": "h", "namespace": cell},
                 "spec": {"pattern": "pipeline",
                          "stages": [{"name": n, "agentRef": n, "replicas": 1} for n in modes]}}
            )  # fmt: skip
            deadline = time.monotonic() + 20
            while True:
                drones = (await api.client.list("Drone", cell))["items"]
                ready = [d for d in drones if (d.get("status") or {}).get("ready")]
                if len(ready) == len(modes):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"the drones never became ready: {drones}")
                await asyncio.sleep(0.02)
            found: dict[str, dict[str, int]] = {}
            for d in ready:
                agent_name = d["spec"]["agentSpec"]
                assert d["spec"].get("memory") == modes[agent_name]  # from the template
                runner = node.find(cell, d["metadata"]["name"])
                assert runner is not None
                out = await runner.keeper.deliver(
                    Message({"other": "b"}, "task", session_id=f"{cell}/a"), timeout=15
                )
                found[agent_name] = out[-1].payload
                assert len(runner.keeper.held) == 0  # the answer is taken: a is not held
                # the same token, now that the drone holds nothing, reaches nothing
                env = node.keeper_http.drone_env(cell, runner.name)
                auth = {"Authorization": f"Bearer {env['APIARY_KEEPER_TOKEN']}"}
                async with httpx.AsyncClient(headers=auth) as c:
                    r = await c.get(env["APIARY_KEEPER_URL"] + "/comb/a/k")
                    assert r.status_code == 403, r.text
                    assert "holds no message of session a" in r.json()["message"]
            print(found)
            for agent_name, got in found.items():
                assert (got["own:write"], got["own:read"], got["own:list"]) == (200, 200, 200)
                for attack in ("other:read", "other:write", "other:keys", "other:list"):
                    assert got[attack] == 403, (agent_name, attack, got[attack])
                assert got["other:dotdot"] in (400, 403) and got["own:dotdot"] in (400, 403)
            assert (found["plain"]["memory:search"], found["plain"]["memory:write"]) == (403, 403)
            assert (found["reader"]["memory:search"], found["reader"]["memory:write"]) == (200, 403)
            assert (found["writer"]["memory:search"], found["writer"]["memory:write"]) == (200, 201)
            assert (await api.client.request("GET", b_secret)).body["value"] == "b's"
            assert (await api.client.get("Session", "a", cell))["metadata"]["name"] == "a"
            await api.client.delete("Hive", "h")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(node_task, queen, return_exceptions=True), 15)
