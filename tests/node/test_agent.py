"""The node agent against a real API on loopback, with the Queen and real agent processes.

The stack runs in the test's event loop: the FastAPI app under uvicorn on an ephemeral port over a
memory store, the controllers, and a NodeAgent talking to the API over HTTP like any remote node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from apiary.waggle import Message
from stack import Stack, agentspec, running_stack
from stack import is_ready as _ready

Obj = dict[str, Any]
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell) as s:
        yield s


def hive(cell: str, name: str, agent: str, replicas: int) -> Obj:
    from stack import hive as make

    return make(cell, name, [("echo", agent, replicas)])


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
    out = await runner.keeper.deliver(Message("x"), timeout=5)
    assert out[-1].payload == "s3cret"
    await stack.client.delete("Hive", "sec")
    await stack.wait(lambda ds: not ds, 10, "drones gone")
