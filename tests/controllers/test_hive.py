"""The Hive reconciler over real stores: drones appear, scale, roll, and report status."""

from __future__ import annotations

import copy

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, drones_of, hive, settle


async def setup_nodes(store: Store, clock: FakeClock, *names: str) -> list[FakeNode]:
    return [await FakeNode(store, clock, n).register() for n in names]


async def set_replicas(store: Store, name: str, stage: int, replicas: int) -> None:
    def change(h: dict) -> dict:
        h["spec"]["stages"][stage]["replicas"] = replicas
        return h

    await store.update_with_retry("Hive", "default", name, change)


async def test_three_replicas_become_three_ready_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    nodes = await setup_nodes(store, clock, "n1")
    await store.create(agentspec("echo", guardrails={"rateLimitPerMinute": 60}))
    h = await store.create(hive("h", ("s1", "echo", 3), guardrails={"rateLimitPerMinute": 100}))
    await settle(queen, nodes)

    drones = await drones_of(store, "h")
    assert len(drones) == 3
    ordinals = sorted(d["spec"]["ordinal"] for d in drones)
    assert ordinals == [0, 1, 2]
    d = drones[0]
    thash = d["spec"]["templateHash"]
    assert {x["metadata"]["name"] for x in drones} == {f"h-s1-{thash}-{i}" for i in range(3)}
    assert d["metadata"]["labels"]["apiary.io/hive"] == "h"
    assert d["metadata"]["labels"]["apiary.io/stage"] == "s1"
    assert d["metadata"]["labels"]["apiary.io/agentspec"] == "echo"
    ref = d["metadata"]["ownerReferences"][0]
    assert ref["uid"] == h["metadata"]["uid"] and ref["controller"] is True
    assert d["spec"]["runtime"] == {"command": ["/bin/cat"]}
    assert d["spec"]["resources"]["requests"]["cpu"] == 100
    assert d["spec"]["guardrails"]["rateLimitPerMinute"] == 100  # the Hive overrides
    assert d["spec"]["nodeName"] == "n1"

    status = (await store.get("Hive", "default", "h"))["status"]
    assert status["phase"] == "Running"
    assert status["readyReplicas"] == 3 and status["replicas"] == 3
    assert status["observedGeneration"] == 1
    assert status["stages"][0]["ready"] == 3 and status["stages"][0]["wanted"] == 3
    hv = await store.get("Hive", "default", "h")
    assert get_condition(hv, "Ready")["status"] == "True"
    assert get_condition(hv, "Progressing")["status"] == "False"
    assert get_condition(hv, "ResolvedRefs")["status"] == "True"
    events = (await store.list("Event", "default")).items
    assert any(e["reason"] == "ScalingUp" and e["involvedObject"]["name"] == "h" for e in events)


async def test_resync_twice_changes_nothing(store: Store, queen: Queen, clock: FakeClock) -> None:
    nodes = await setup_nodes(store, clock, "n1")
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s1", "echo", 2), ("s2", "echo", 1)))
    await settle(queen, nodes)
    rv = await store.resource_version()
    await queen.sync_once()
    await queen.sync_once()
    assert await store.resource_version() == rv


async def test_scale_3_to_10_to_0(store: Store, queen: Queen, clock: FakeClock) -> None:
    nodes = await setup_nodes(store, clock, "n1", "n2")
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s1", "echo", 3)))
    await settle(queen, nodes)
    assert len(await drones_of(store, "h")) == 3

    await set_replicas(store, "h", 0, 10)
    await settle(queen, nodes)
    drones = await drones_of(store, "h")
    assert sorted(d["spec"]["ordinal"] for d in drones) == list(range(10))
    assert all(d["status"]["ready"] for d in drones)
    status = (await store.get("Hive", "default", "h"))["status"]
    assert status["readyReplicas"] == 10 and status["observedGeneration"] == 2

    await set_replicas(store, "h", 0, 4)
    await queen.hives.reconcile("default", "h")
    assert sorted(d["spec"]["ordinal"] for d in await drones_of(store, "h")) == [0, 1, 2, 3]

    await set_replicas(store, "h", 0, 0)
    await settle(queen, nodes)
    assert await drones_of(store, "h") == []
    hv = await store.get("Hive", "default", "h")
    assert hv["status"]["phase"] == "Running" and hv["status"]["replicas"] == 0
    reasons = {e["reason"] for e in (await store.list("Event", "default")).items}
    assert {"ScalingUp", "ScalingDown"} <= reasons


async def test_rolling_update_never_drops_below_wanted_ready(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    nodes = await setup_nodes(store, clock, "n1", "n2")
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s1", "echo", 4)))
    await settle(queen, nodes)
    old = {d["metadata"]["name"] for d in await drones_of(store, "h")}
    old_hash = next(iter(await drones_of(store, "h")))["spec"]["templateHash"]

    def change(spec: dict) -> dict:
        spec["spec"]["runtime"]["env"] = [{"name": "VERSION", "value": "2"}]
        return spec

    await store.update_with_retry("AgentSpec", "default", "echo", change)
    steps = 0
    while True:
        steps += 1
        assert steps < 60, "rollout did not finish"
        await queen.sync_once()
        drones = await drones_of(store, "h")
        ready = [d for d in drones if d["status"].get("ready") is True]
        assert len(ready) >= 4, f"only {len(ready)} ready during rollout"
        assert len(drones) <= 5, "more than wanted + surge drones"
        if all(d["spec"]["templateHash"] != old_hash for d in drones) and len(ready) == 4:
            break
        for node in nodes:  # one drone becomes ready per node per step: slow rollout
            await node.step(limit=1)
    new = {d["metadata"]["name"] for d in await drones_of(store, "h")}
    assert not (new & old) and len(new) == 4
    assert all(d["spec"]["runtime"]["env"][0]["value"] == "2" for d in await drones_of(store, "h"))
    await settle(queen, nodes)
    hv = await store.get("Hive", "default", "h")
    assert hv["status"]["phase"] == "Running"
    assert get_condition(hv, "Progressing")["status"] == "False"


async def test_unready_old_drones_are_replaced_at_once(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    node.auto_ready = False  # the old template never becomes ready (a broken version)
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s1", "echo", 2)))
    await settle(queen, [node])

    def fix(spec: dict) -> dict:
        spec["spec"]["runtime"]["command"] = ["/bin/cat", "-u"]
        return spec

    await store.update_with_retry("AgentSpec", "default", "echo", fix)
    node.auto_ready = True
    await settle(queen, [node])
    drones = await drones_of(store, "h")
    assert len(drones) == 2
    assert all(d["spec"]["runtime"]["command"] == ["/bin/cat", "-u"] for d in drones)


async def test_missing_agentspec_then_created(store: Store, queen: Queen, clock: FakeClock) -> None:
    nodes = await setup_nodes(store, clock, "n1")
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("a", "echo", 1), ("b", "later", 2)))
    await settle(queen, nodes)
    hv = await store.get("Hive", "default", "h")
    cond = get_condition(hv, "ResolvedRefs")
    assert cond["status"] == "False"
    assert cond["message"] == "AgentSpec 'later' not found (spec.stages[1].agentRef)"
    assert cond["reason"] == "MissingReferences"
    drones = await drones_of(store, "h")
    assert [d["metadata"]["labels"]["apiary.io/stage"] for d in drones] == ["a"]
    assert hv["status"]["phase"] == "Degraded"

    await store.create(agentspec("later"))
    await settle(queen, nodes)
    assert len(await drones_of(store, "h")) == 3
    hv = await store.get("Hive", "default", "h")
    assert get_condition(hv, "ResolvedRefs")["status"] == "True"
    assert hv["status"]["phase"] == "Running"


async def test_nothing_resolved_is_pending(store: Store, queen: Queen) -> None:
    await store.create(hive("h", ("a", "nope", 1)))
    await queen.sync_once()
    hv = await store.get("Hive", "default", "h")
    assert hv["status"]["phase"] == "Pending"
    assert get_condition(hv, "Ready")["status"] == "False"


async def test_invalid_stage_is_reported_with_its_field(store: Store, queen: Queen) -> None:
    await store.create(agentspec("echo"))
    bad = hive("h", ("a", "echo", 1))
    bad["spec"]["stages"].append({"name": "b", "agentRef": "echo", "replicas": -2})
    await store.create(bad)
    await queen.sync_once()
    hv = await store.get("Hive", "default", "h")
    cond = get_condition(hv, "Ready")
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "spec.stages[1].replicas" in cond["message"]
    assert get_condition(hv, "ResolvedRefs")["status"] == "True"


async def test_composed_hive_segments_become_stages(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    nodes = await setup_nodes(store, clock, "n1")
    await store.create(agentspec("echo-agent"))
    await store.create(agentspec("llm-agent"))
    composed = hive("composed-hive")
    del composed["spec"]["stages"]
    composed["spec"]["patternSegments"] = [
        {
            "name": "event-stage",
            "pattern": "event-driven",
            "config": {"subscribers": [{"agentRef": "echo-agent", "replicas": 2}]},
            "outputTopic": "events/output",
        },
        {
            "name": "pipeline-stage",
            "pattern": "pipeline",
            "config": {
                "stages": [
                    {"name": "stage1", "agentRef": "llm-agent", "replicas": 2},
                    {"name": "stage2", "agentRef": "echo-agent", "replicas": 1},
                ]
            },
        },
        {
            "name": "swarm-stage",
            "pattern": "swarm",
            "config": {"agents": [{"agentRef": "echo-agent", "replicas": 2}]},
        },
    ]
    await store.create(composed)
    await settle(queen, nodes)
    stages: dict[str, int] = {}
    for d in await drones_of(store, "composed-hive"):
        stage = d["metadata"]["labels"]["apiary.io/stage"]
        stages[stage] = stages.get(stage, 0) + 1
        assert d["spec"]["segment"] in ("event-stage", "pipeline-stage", "swarm-stage")
    assert stages == {
        "event-stage-0": 2,
        "pipeline-stage-stage1": 2,
        "pipeline-stage-stage2": 1,
        "swarm-stage-0": 2,
    }
    assert (await store.get("Hive", "default", "composed-hive"))["status"]["phase"] == "Running"


async def test_failed_drone_is_reported_once(store: Store, queen: Queen, clock: FakeClock) -> None:
    nodes = await setup_nodes(store, clock, "n1")
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s1", "echo", 2)))
    await settle(queen, nodes)
    drone = (await drones_of(store, "h"))[0]
    drone["status"] = {
        **drone["status"],
        "phase": "Failed",
        "ready": False,
        "reason": "CrashLoopBackOff",
        "message": "exit code 1",
        "restartCount": 3,
    }
    await store.update(drone, subresource="status")
    await queen.sync_once()
    await queen.sync_once()
    failed = [
        e for e in (await store.list("Event", "default")).items if e["reason"] == "DroneFailed"
    ]
    assert len(failed) == 1 and failed[0]["count"] == 1
    assert "CrashLoopBackOff" in failed[0]["message"] and failed[0]["type"] == "Warning"
    assert (await store.get("Hive", "default", "h"))["status"]["phase"] == "Degraded"


async def test_removed_stage_and_deleted_hive_lose_their_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    nodes = await setup_nodes(store, clock, "n1")
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("a", "echo", 1), ("b", "echo", 2)))
    await settle(queen, nodes)

    def drop_b(h: dict) -> dict:
        h["spec"]["stages"] = h["spec"]["stages"][:1]
        return h

    await store.update_with_retry("Hive", "default", "h", drop_b)
    await settle(queen, nodes)
    assert [d["metadata"]["labels"]["apiary.io/stage"] for d in await drones_of(store, "h")] == [
        "a"
    ]

    await store.delete("Hive", "default", "h")
    await queen.hives.reconcile("default", "h")
    assert await drones_of(store, "h") == []


async def test_gc_deletes_drones_whose_owner_uid_is_gone(store: Store, queen: Queen) -> None:
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("a", "echo", 2)))
    await queen.hives.reconcile("default", "h")
    assert len(await drones_of(store, "h")) == 2
    # an interrupted cascade: the hive is deleted and recreated under the same name
    old = await store.get("Hive", "default", "h")
    await store.delete("Hive", "default", "h")
    fresh = copy.deepcopy(old)
    fresh["metadata"] = {"name": "h", "namespace": "default"}
    await store.create(fresh)
    deleted = await queen.gc.run_once()
    assert len([d for d in deleted if d.startswith("Drone/")]) == 2
    await queen.hives.reconcile("default", "h")
    new_uid = (await store.get("Hive", "default", "h"))["metadata"]["uid"]
    drones = await drones_of(store, "h")
    assert len(drones) == 2
    assert all(d["metadata"]["ownerReferences"][0]["uid"] == new_uid for d in drones)
