"""Scheduling and quotas: spread, capacity, unschedulable and quota reasons."""

from __future__ import annotations

import asyncio
from collections import Counter

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, cell, drones_of, hive, settle


async def test_spreads_over_two_nodes_and_respects_capacity(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    a = await FakeNode(store, clock, "a", cpu=1000, memory=8_000_000_000).register()
    b = await FakeNode(store, clock, "b", cpu=1000, memory=8_000_000_000).register()
    await store.create(agentspec("echo", cpu=300))
    await store.create(hive("h", ("s", "echo", 4)))
    await settle(queen, [a, b])
    placement = Counter(d["spec"]["nodeName"] for d in await drones_of(store, "h"))
    assert placement == {"a": 2, "b": 2}

    # 7 drones of 300m on 2 nodes of 1000m: 3 fit per node, the 7th cannot be placed
    def grow(h: dict) -> dict:
        h["spec"]["stages"][0]["replicas"] = 7
        return h

    await store.update_with_retry("Hive", "default", "h", grow)
    await settle(queen, [a, b])
    drones = await drones_of(store, "h")
    placement = Counter(d["spec"].get("nodeName") for d in drones)
    assert placement == {"a": 3, "b": 3, None: 1}
    waiting = next(d for d in drones if not d["spec"].get("nodeName"))
    assert waiting["status"]["phase"] == "Pending"
    assert waiting["status"]["reason"] == "Unschedulable"
    assert waiting["status"]["message"] == "0/2 nodes available: 2 insufficient cpu"
    assert get_condition(waiting, "Scheduled")["status"] == "False"
    events = (await store.list("Event", "default")).items
    failed = [e for e in events if e["reason"] == "FailedScheduling"]
    assert {e["involvedObject"]["kind"] for e in failed} == {"Drone", "Hive"}
    hv = await store.get("Hive", "default", "h")
    assert hv["status"]["phase"] == "Degraded" and hv["status"]["readyReplicas"] == 6

    # room appears (a third node): the held drone is placed and its reason cleared
    c = await FakeNode(store, clock, "c", cpu=1000).register()
    await settle(queen, [a, b, c])
    placed = await store.get("Drone", "default", waiting["metadata"]["name"])
    assert placed["spec"]["nodeName"] == "c"
    assert "reason" not in placed["status"] and placed["status"]["ready"] is True
    assert (await store.get("Hive", "default", "h"))["status"]["phase"] == "Running"


async def test_memory_and_not_ready_nodes_in_the_message(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    small = await FakeNode(store, clock, "small", memory=100_000_000).register()
    dead = await FakeNode(store, clock, "dead").register()
    clock.advance(60)
    await small.renew()  # only "small" renews its lease
    await store.create(agentspec("echo", memory=500_000_000))
    await store.create(hive("h", ("s", "echo", 1)))
    await settle(queen, [small, dead])
    (drone,) = await drones_of(store, "h")
    assert drone["status"]["reason"] == "Unschedulable"
    assert drone["status"]["message"] == "0/2 nodes available: 1 insufficient memory, 1 not ready"


async def test_no_nodes(store: Store, queen: Queen) -> None:
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s", "echo", 1)))
    await queen.sync_once()
    (drone,) = await drones_of(store, "h")
    assert drone["status"]["message"] == "0/0 nodes available: no nodes registered"


async def test_quota_holds_drones_with_the_reason(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    await store.create(cell(maxDronesPerHive=3, maxTotalDrones=4))
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s", "echo", 5)))
    await settle(queen, [node])
    drones = await drones_of(store, "h")
    assert len(drones) == 5  # created, but only 3 placed
    held = [d for d in drones if not d["spec"].get("nodeName")]
    assert len(held) == 2
    for d in held:
        assert d["status"]["phase"] == "Pending"
        assert d["status"]["reason"] == "QuotaExceeded"
        assert "maxDronesPerHive=3" in d["status"]["message"]
    assert sorted(d["spec"]["ordinal"] for d in held) == [3, 4]

    await store.create(hive("other", ("s", "echo", 2)))
    await settle(queen, [node])
    other = await drones_of(store, "other")
    held = [d for d in other if not d["spec"].get("nodeName")]
    assert len(held) == 1 and "maxTotalDrones=4" in held[0]["status"]["message"]
    reasons = {e["reason"] for e in (await store.list("Event", "default")).items}
    assert "QuotaExceeded" in reasons

    # shrinking the first hive frees room: the held drone of the other hive is placed
    def shrink(h: dict) -> dict:
        h["spec"]["stages"][0]["replicas"] = 1
        return h

    await store.update_with_retry("Hive", "default", "h", shrink)
    await settle(queen, [node])
    assert all(d["spec"].get("nodeName") for d in await drones_of(store, "other"))


async def test_cpu_and_memory_quota(store: Store, queen: Queen, clock: FakeClock) -> None:
    node = await FakeNode(store, clock, "n1", memory=500_000_000_000).register()
    await store.create(cell(maxCPU=1000, maxMemoryGB=100))
    await store.create(agentspec("big", cpu=500, memory=512_000_000))
    await store.create(agentspec("fat", cpu=0, memory=60_000_000_000))
    await store.create(hive("h", ("s", "big", 3), ("m", "fat", 2)))
    await settle(queen, [node])
    held = {
        d["metadata"]["labels"]["apiary.io/stage"]: d["status"]["message"]
        for d in await drones_of(store, "h")
        if not d["spec"].get("nodeName")
    }
    assert "maxCPU=1000 millicores exceeded" in held["s"]
    assert "maxMemoryGB=100 exceeded" in held["m"]


async def test_two_schedulers_never_double_place(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await FakeNode(store, clock, "a", cpu=1000).register()
    await FakeNode(store, clock, "b", cpu=1000).register()
    await store.create(agentspec("echo", cpu=400))
    await store.create(hive("h", ("s", "echo", 5)))
    await queen.hives.reconcile("default", "h")
    other = Queen(store, queen.settings)
    first, second = await asyncio.gather(queen.scheduler.run_once(), other.scheduler.run_once())
    # each drone is bound by exactly one scheduler, to the node that scheduler chose
    assert not (set(first.placed) & set(second.placed))
    bound = {**first.placed, **second.placed}
    for d in await drones_of(store, "h"):
        assert d["spec"].get("nodeName") == bound.get(d["metadata"]["name"])
