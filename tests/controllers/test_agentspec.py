"""Standalone drones of an AgentSpec: minReplicas, spec.replicas, maxReplicas, status."""

from __future__ import annotations

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, settle


async def standalone(store: Store, name: str) -> list[dict]:
    return [
        d
        for d in (await store.list("Drone", "default")).items
        if d["metadata"]["labels"].get("apiary.io/agentspec") == name
        and "apiary.io/hive" not in d["metadata"]["labels"]
    ]


async def test_min_replicas_run_standalone_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    spec = await store.create(agentspec("llm-agent", scaling={"minReplicas": 2, "maxReplicas": 20}))
    await settle(queen, [node])
    drones = await standalone(store, "llm-agent")
    assert len(drones) == 2
    assert all(
        d["metadata"]["ownerReferences"][0]["uid"] == spec["metadata"]["uid"] for d in drones
    )
    assert all(d["spec"]["agentSpec"] == "llm-agent" and "hive" not in d["spec"] for d in drones)
    status = (await store.get("AgentSpec", "default", "llm-agent"))["status"]
    assert status["replicas"] == 2 and status["readyReplicas"] == 2

    def scale(s: dict) -> dict:
        s["spec"]["replicas"] = 5
        return s

    await store.update_with_retry("AgentSpec", "default", "llm-agent", scale)
    await settle(queen, [node])
    assert len(await standalone(store, "llm-agent")) == 5

    def cap(s: dict) -> dict:
        s["spec"]["scaling"]["maxReplicas"] = 3
        return s

    await store.update_with_retry("AgentSpec", "default", "llm-agent", cap)
    await settle(queen, [node])
    assert sorted(d["spec"]["ordinal"] for d in await standalone(store, "llm-agent")) == [0, 1, 2]


async def test_no_scaling_means_no_standalone_drones(store: Store, queen: Queen) -> None:
    await store.create(agentspec("echo"))
    await queen.sync_once()
    assert await standalone(store, "echo") == []
    spec = await store.get("AgentSpec", "default", "echo")
    assert get_condition(spec, "Ready")["status"] == "True"


async def test_bad_replicas_names_the_field(store: Store, queen: Queen) -> None:
    await store.create(agentspec("echo", scaling={"minReplicas": "two"}))
    await queen.sync_once()
    cond = get_condition(await store.get("AgentSpec", "default", "echo"), "Ready")
    assert cond["status"] == "False" and "spec.scaling.minReplicas" in cond["message"]


async def test_bad_requests_name_the_field(store: Store, queen: Queen) -> None:
    bad = agentspec("echo", scaling={"minReplicas": 1})
    bad["spec"]["resources"]["requests"]["cpu"] = "lots"
    await store.create(bad)
    await queen.sync_once()
    cond = get_condition(await store.get("AgentSpec", "default", "echo"), "Ready")
    assert "spec.resources.requests.cpu" in cond["message"]
    assert await standalone(store, "echo") == []


async def test_deleted_agentspec_takes_its_drones(store: Store, queen: Queen) -> None:
    await store.create(agentspec("echo", scaling={"minReplicas": 2}))
    await queen.sync_once()
    assert len(await standalone(store, "echo")) == 2
    await store.delete("AgentSpec", "default", "echo")
    await queen.agentspecs.reconcile("default", "echo")
    assert await standalone(store, "echo") == []
