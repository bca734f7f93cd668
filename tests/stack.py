"""A whole Apiary in the test's event loop: API under uvicorn on loopback, the Queen, a node agent
talking to the API over HTTP, and (optionally) the bus, journal and router — with real agent
processes. Faster to start than an apiaryd subprocess and lets a test reach every part."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from apiary.api import api_state, create_app
from apiary.bus import Bus, open_bus
from apiary.client import AsyncApiClient
from apiary.controllers import QueenSettings, run_controllers
from apiary.journal import Journal, open_journal
from apiary.node.agent import NodeAgent, NodeSettings
from apiary.node.backoff import BackoffPolicy
from apiary.node.runner import RunnerSettings
from apiary.router import Router, SessionDirectory
from apiary.store import Store, open_store

Obj = dict[str, Any]
TOKEN = "test-token"
APIARYCTL = str(Path(sys.executable).parent / "apiaryctl")


@dataclass
class Stack:
    store: Store
    client: AsyncApiClient
    node: NodeAgent
    cell: str
    url: str
    bus: Bus | None = None
    journal: Journal | None = None
    router: Router | None = None

    async def apply(self, obj: Obj) -> Obj:
        return (await self.client.apply(obj))[1]

    async def drones(self) -> list[Obj]:
        return list((await self.client.list("Drone", self.cell))["items"])

    async def wait(self, predicate: Any, timeout: float = 10.0, what: str = "") -> list[Obj]:
        deadline = time.monotonic() + timeout
        while True:
            drones = await self.drones()
            if predicate(drones):
                return drones
            if time.monotonic() > deadline:
                summary = [(d["metadata"]["name"], (d.get("status") or {}).get("phase"),
                            (d.get("status") or {}).get("reason"),
                            (d.get("status") or {}).get("message")) for d in drones]  # fmt: skip
                pytest.fail(f"timed out after {timeout}s waiting for {what}: {summary}")
            await asyncio.sleep(0.02)


async def apiaryctl(stack: Stack, *args: str) -> str:
    """The real ``apiaryctl`` against the stack's API, in its cell: what it printed (it must
    succeed)."""
    proc = await asyncio.create_subprocess_exec(
        APIARYCTL, "-s", stack.url, "--token", TOKEN, "-n", stack.cell, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def is_ready(d: Obj) -> bool:
    st = d.get("status") or {}
    return bool(st.get("ready")) and st.get("phase") == "Running"


@contextlib.asynccontextmanager
async def running_stack(
    tmp_path: Path, cell: str, *, messaging: bool = False, store_url: str = "memory://",
    queen: QueenSettings | None = None,
) -> AsyncIterator[Stack]:  # fmt: skip
    """``queen``: the controllers' settings (default: apiaryd's), e.g. shorter intervals."""
    async with contextlib.AsyncExitStack() as opened:
        store = await opened.enter_async_context(open_store(store_url))
        bus = journal = router = None
        app = create_app(store, TOKEN)
        if messaging:
            bus = await opened.enter_async_context(open_bus("memory://"))
            journal = await opened.enter_async_context(open_journal("memory://"))
            router = Router(journal, bus, SessionDirectory(store, ttl=0.2))
            state = api_state(app)
            state.router, state.journal = router, journal
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        opened.callback(sock.close)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.005)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_controllers(store, queen or QueenSettings(), stop))]
        if router is not None:
            tasks.append(asyncio.create_task(router.run(stop)))
        client = AsyncApiClient(url, TOKEN, cell)
        node = NodeAgent(
            client,
            NodeSettings(
                name="node-a",
                state_dir=str(tmp_path / "node"),
                heartbeat_seconds=0.5,
                runner=RunnerSettings(
                    state_dir=str(tmp_path / "node"),
                    grace_period_seconds=2.0,
                    backoff=BackoffPolicy(initial_seconds=0.05, factor=2.0, cap_seconds=0.4),
                ),
            ),
            bus,
        )
        tasks.append(asyncio.create_task(node.run(stop)))
        try:
            yield Stack(store, client, node, cell, url, bus, journal, router)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 5)
            await client.aclose()


def agentspec(cell: str, name: str, command: list[str], fmt: str = "text", **spec: Any) -> Obj:
    body: Obj = {
        "runtime": {"command": command},
        "interface": {"type": "stdin", "format": fmt},
        "resources": {"requests": {"cpu": 50, "memory": 16_000_000}},
    }
    body.update(spec)
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": name, "namespace": cell}, "spec": body}  # fmt: skip


def hive(cell: str, name: str, stages: list[tuple[str, str, int]], pattern: str = "pipeline",
         **spec: Any) -> Obj:  # fmt: skip
    body: Obj = {
        "pattern": pattern,
        "stages": [{"name": s, "agentRef": a, "replicas": r} for s, a, r in stages],
    }
    body.update(spec)
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": name, "namespace": cell}, "spec": body}  # fmt: skip


def session(cell: str, name: str, hive_name: str, **labels: str) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "Session",
            "metadata": {"name": name, "namespace": cell, "labels": labels},
            "spec": {"hiveRef": hive_name}}  # fmt: skip
