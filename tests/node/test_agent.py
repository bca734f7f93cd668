"""The node agent against a real API on loopback, with the Queen and real agent processes.

The stack runs in the test's event loop: the FastAPI app under uvicorn on an ephemeral port over a
memory store, the controllers, and a NodeAgent talking to the API over HTTP like any remote node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvicorn

from apiary.api import create_app
from apiary.client import AsyncApiClient
from apiary.controllers import QueenSettings, run_controllers
from apiary.node.agent import NodeAgent, NodeSettings
from apiary.node.backoff import BackoffPolicy
from apiary.node.runner import RunnerSettings
from apiary.store import Store, open_store

Obj = dict[str, Any]
TOKEN = "test-token"
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


@dataclass
class Stack:
    store: Store
    client: AsyncApiClient
    node: NodeAgent
    cell: str

    async def apply(self, obj: Obj) -> Obj:
        return (await self.client.apply(obj))[1]

    async def drones(self) -> list[Obj]:
        listing = await self.client.list("Drone", self.cell)
        return list(listing["items"])

    async def wait(self, predicate: Any, timeout: float = 10.0, what: str = "") -> list[Obj]:
        deadline = time.monotonic() + timeout
        while True:
            drones = await self.drones()
            if predicate(drones):
                return drones
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}: {_summary(drones)}")
            await asyncio.sleep(0.02)


def _summary(drones: list[Obj]) -> list[tuple[str, Any, Any, Any]]:
    return [
        (d["metadata"]["name"], (d.get("status") or {}).get("phase"),
         (d.get("status") or {}).get("reason"), (d.get("status") or {}).get("message"))
        for d in drones
    ]  # fmt: skip


def _ready(d: Obj) -> bool:
    st = d.get("status") or {}
    return bool(st.get("ready")) and st.get("phase") == "Running"


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    store = open_store("memory://")
    await store.open()
    app = create_app(store, TOKEN)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    stop = asyncio.Event()
    queen_settings = QueenSettings()
    queen = asyncio.create_task(run_controllers(store, queen_settings, stop))
    client = AsyncApiClient(f"http://127.0.0.1:{port}", TOKEN, cell)
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
    )
    node_task = asyncio.create_task(node.run(stop))
    try:
        yield Stack(store, client, node, cell)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(node_task, queen, return_exceptions=True), 15)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 5)
        await client.aclose()
        await store.close()
        sock.close()


def agentspec(cell: str, name: str, command: list[str], **spec: Any) -> Obj:
    body: Obj = {
        "runtime": {"command": command},
        "interface": {"type": "stdin", "format": "text"},
        "resources": {"requests": {"cpu": 100, "memory": 16_000_000}},
    }
    body.update(spec)
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": name, "namespace": cell}, "spec": body}  # fmt: skip


def hive(cell: str, name: str, agent: str, replicas: int) -> Obj:
    return {
        "apiVersion": "apiary.io/v1", "kind": "Hive",
        "metadata": {"name": name, "namespace": cell},
        "spec": {"pattern": "pipeline",
                 "stages": [{"name": "echo", "agentRef": agent, "replicas": replicas}]},
    }  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_three_echo_drones_run_ready_fast_and_leave_nothing(stack: Stack) -> None:
    await stack.apply(agentspec(stack.cell, "echo-agent", ECHO))
    t0 = time.monotonic()
    await stack.apply(hive(stack.cell, "echoes", "echo-agent", 3))
    drones = await stack.wait(lambda ds: len(ds) == 3 and all(map(_ready, ds)), 5, "3 ready")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"3 drones took {elapsed:.2f}s to be Ready"
    pids = [d["status"]["pid"] for d in drones]
    for d in drones:
        assert d["status"]["nodeName"] == "node-a"
        assert d["status"]["restartCount"] == 0
        assert _alive(d["status"]["pid"])
    # The keeper really relays to the shell loop.
    runner = stack.node.find(stack.cell, drones[0]["metadata"]["name"])
    assert runner is not None
    from apiary.waggle import Message

    out = await runner.keeper.deliver(Message("hello"), timeout=5)
    assert out[-1].payload == "Echo: hello"
    # Deleting the hive leaves no agent process behind.
    await stack.client.delete("Hive", "echoes")
    await stack.wait(lambda ds: not ds, 10, "drones gone")
    deadline = time.monotonic() + 5
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not any(map(_alive, pids))


async def test_killed_drone_restarts_and_counts(stack: Stack) -> None:
    await stack.apply(agentspec(stack.cell, "echo-agent", ECHO))
    await stack.apply(hive(stack.cell, "one", "echo-agent", 1))
    (drone,) = await stack.wait(lambda ds: len(ds) == 1 and _ready(ds[0]), 5, "ready")
    old_pid = drone["status"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    (drone,) = await stack.wait(
        lambda ds: len(ds) == 1 and _ready(ds[0]) and ds[0]["status"]["pid"] != old_pid,
        10, "restarted",
    )  # fmt: skip
    assert drone["status"]["restartCount"] >= 1
    await stack.client.delete("Hive", "one")
    await stack.wait(lambda ds: not ds, 10, "drones gone")


async def test_crashing_command_goes_into_crash_loop_with_a_reason(stack: Stack) -> None:
    await stack.apply(agentspec(stack.cell, "crasher", ["/bin/sh", "-c", "echo boom >&2; exit 3"]))
    await stack.apply(hive(stack.cell, "crash", "crasher", 1))
    (drone,) = await stack.wait(
        lambda ds: len(ds) == 1 and (ds[0].get("status") or {}).get("reason") == "CrashLoopBackOff",
        10, "CrashLoopBackOff",
    )  # fmt: skip
    st = drone["status"]
    assert st["exitCode"] == 3
    assert "boom" in st["message"]
    assert st["ready"] is False
    await stack.client.delete("Hive", "crash")
    await stack.wait(lambda ds: not ds, 10, "drones gone")


async def test_missing_working_dir_fails_clearly_and_harms_nothing_else(stack: Stack) -> None:
    await stack.apply(agentspec(stack.cell, "echo-agent", ECHO))
    await stack.apply(
        agentspec(stack.cell, "llm-agent", ["python", "agent.py"],
                  runtime={"command": ["python", "agent.py"], "workingDir": "/app"})
    )  # fmt: skip
    await stack.apply(hive(stack.cell, "good", "echo-agent", 1))
    await stack.apply(hive(stack.cell, "bad", "llm-agent", 1))

    def settled(ds: list[Obj]) -> bool:
        by = {d["spec"].get("hive"): d for d in ds}
        return (
            len(ds) == 2
            and _ready(by.get("good", {}))
            and (by.get("bad", {}).get("status") or {}).get("phase") == "Failed"
        )

    drones = await stack.wait(settled, 10, "good ready, bad failed")
    bad = next(d for d in drones if d["spec"]["hive"] == "bad")
    assert "/app" in bad["status"]["message"]
    for name in ("good", "bad"):
        await stack.client.delete("Hive", name)
    await stack.wait(lambda ds: not ds, 10, "drones gone")


async def test_secret_env_is_resolved_and_a_missing_one_is_named(stack: Stack) -> None:
    spec = agentspec(stack.cell, "needs-secret", ["/bin/sh", "-c",
                     'while IFS= read -r line; do echo "$API_KEY"; done'])  # fmt: skip
    spec["spec"]["runtime"]["env"] = [
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}}
    ]
    await stack.apply(spec)
    await stack.apply(hive(stack.cell, "sec", "needs-secret", 1))
    (drone,) = await stack.wait(
        lambda ds: len(ds) == 1 and (ds[0].get("status") or {}).get("reason") == "SecretNotFound",
        10, "SecretNotFound",
    )  # fmt: skip
    assert "keys" in drone["status"]["message"]
    await stack.apply({"apiVersion": "apiary.io/v1", "kind": "Secret",
                       "metadata": {"name": "keys", "namespace": stack.cell},
                       "stringData": {"api": "s3cret"}})  # fmt: skip
    (drone,) = await stack.wait(lambda ds: len(ds) == 1 and _ready(ds[0]), 10, "ready")
    runner = stack.node.find(stack.cell, drone["metadata"]["name"])
    assert runner is not None
    from apiary.waggle import Message

    out = await runner.keeper.deliver(Message("x"), timeout=5)
    assert out[-1].payload == "s3cret"
    await stack.client.delete("Hive", "sec")
    await stack.wait(lambda ds: not ds, 10, "drones gone")
