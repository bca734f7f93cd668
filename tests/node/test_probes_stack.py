"""Readiness and liveness probes through a whole Apiary with real http agents (node/probes.py):
an agent whose ``/healthz`` turns to 500 becomes unready and gets no new messages while another
replica takes them all, is ready and served again once it answers 200; an agent failing its
liveness probe is restarted, which its status says.

The two replicas are Drones of one stage made here with a port each: an http AgentSpec names
one fixed port, so two replicas of it cannot share a node."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apiary.waggle import Message
from services import free_port
from stack import Stack, hive, is_ready, running_stack, session

AGENT = Path(__file__).resolve().parents[1] / "fakes" / "health_agent.py"
FAST = {"periodSeconds": 0.2, "timeoutSeconds": 0.5, "failureThreshold": 1}

Obj = dict[str, Any]


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell, messaging=True) as s:
        await s.apply(hive(cell, "h", [("only", "flip", 0)]))  # the stage; its drones are ours
        yield s


def drone(stack: Stack, name: str, health: Path, **interface: Any) -> Obj:
    health.mkdir(exist_ok=True)
    env = {"HEALTH_DIR": str(health), "AGENT_NAME": name}
    return {
        "apiVersion": "apiary.io/v1", "kind": "Drone",
        "metadata": {"name": name, "namespace": stack.cell},
        "spec": {
            "agentSpec": "flip", "hive": "h", "stage": "only", "nodeName": "node-a",
            "runtime": {"command": [sys.executable, str(AGENT)],
                        "env": [{"name": k, "value": v} for k, v in env.items()]},
            "interface": {"type": "http", "port": free_port(), **interface},
        },
    }  # fmt: skip


def flip(health: Path, path: str, code: int) -> None:
    (health / path).write_text(str(code))


def named(drones: list[Obj], name: str) -> Obj:
    return next(d for d in drones if d["metadata"]["name"] == name)


def status_of(drones: list[Obj], name: str) -> Obj:
    return named(drones, name).get("status") or {}


def ready_condition(status: Obj) -> tuple[str, str]:
    cond = next(c for c in status.get("conditions") or [] if c["type"] == "Ready")
    return cond["status"], cond["reason"]


async def answered_by(stack: Stack, names: list[str], timeout: float = 20.0) -> list[str]:
    """Send one message per session name; who answered each (the agent's ``by``)."""
    assert stack.router is not None and stack.journal is not None
    for name in names:
        await stack.store.create(session(stack.cell, name, "h"))
        await stack.router.submit(stack.cell, name, Message(name))
    who = []
    deadline = time.monotonic() + timeout
    for name in names:
        key = f"{stack.cell}/{name}"
        while not (done := await stack.journal.read(key, kinds={"final", "error"})):
            if time.monotonic() > deadline:
                pytest.fail(f"session {key} got no answer: {await stack.journal.read(key)}")
            await asyncio.sleep(0.02)
        assert done[0].kind == "final", done[0].message
        who.append(done[0].message["payload"]["by"])
    return who


async def test_unready_drone_gets_no_messages_until_its_health_path_answers_again(
    stack: Stack, tmp_path: Path
) -> None:
    a, b = tmp_path / "health-a", tmp_path / "health-b"
    await stack.client.create(drone(stack, "a", a, readinessProbe=FAST))
    await stack.client.create(drone(stack, "b", b, readinessProbe=FAST))
    await stack.wait(lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 20, "both ready")
    await asyncio.sleep(0.1)  # workers subscribe right after Ready is reported

    flip(a, "healthz", 500)

    def a_unready(ds: list[Obj]) -> bool:
        return status_of(ds, "a").get("reason") == "ReadinessProbeFailed"

    drones = await stack.wait(a_unready, 10, "a unready")
    st = status_of(drones, "a")
    assert st["ready"] is False and st["phase"] == "Running" and st["restartCount"] == 0
    assert st["message"] == "Readiness probe failed: HTTP GET /healthz answered 500"
    assert ready_condition(st) == ("False", "ReadinessProbeFailed")
    assert set(await answered_by(stack, [f"s{i}" for i in range(8)])) == {"b"}

    flip(a, "healthz", 200)
    await stack.wait(lambda ds: all(map(is_ready, ds)), 10, "a ready again")
    assert ready_condition(status_of(await stack.drones(), "a")) == ("True", "AgentReady")
    await asyncio.sleep(0.1)  # a joins the queue group again
    flip(b, "healthz", 500)  # now only a may take them
    await stack.wait(lambda ds: not is_ready(named(ds, "b")), 10, "b unready")
    assert set(await answered_by(stack, [f"t{i}" for i in range(4)])) == {"a"}


async def test_a_drone_failing_its_liveness_probe_is_restarted(
    stack: Stack, tmp_path: Path
) -> None:
    health = tmp_path / "health"
    live = {"httpGet": {"path": "/livez"}, **FAST, "failureThreshold": 2}
    await stack.client.create(drone(stack, "a", health, livenessProbe=live))
    (first,) = await stack.wait(lambda ds: len(ds) == 1 and is_ready(ds[0]), 20, "ready")
    pid = first["status"]["pid"]

    flip(health, "livez", 500)

    def restarted(ds: list[Obj]) -> bool:
        return bool(ds[0].get("status", {}).get("restartCount"))

    await stack.wait(restarted, 15, "a restart")
    flip(health, "livez", 200)  # the new process stays up

    def back(ds: list[Obj]) -> bool:
        return is_ready(ds[0]) and ds[0]["status"].get("pid") not in (None, pid)

    (again,) = await stack.wait(back, 15, "ready again as a new process")
    st = again["status"]
    ended = st["lastState"]["terminated"]
    assert ended["reason"] == "LivenessProbeFailed"
    assert ended["message"].startswith(
        "Liveness probe failed: HTTP GET /livez answered 500 (2 times in a row); "
    )
    assert ended["finishedAt"].endswith("Z")
    assert st["restartCount"] >= 1
    assert await answered_by(stack, ["s"]) == ["a"]
