"""Node leases: expiry marks the node NotReady and its drones move; a returning node is Ready
again but gets nothing back that moved."""

from __future__ import annotations

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, drones_of, hive, settle


async def test_lease_expiry_moves_drones_to_the_other_node(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    a = await FakeNode(store, clock, "a").register()
    b = await FakeNode(store, clock, "b").register()
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s", "echo", 4)))
    await settle(queen, [a, b])
    on_a = {d["metadata"]["name"]: d["metadata"]["uid"] for d in await a.assigned()}
    assert len(on_a) == 2

    # 9 s later only b renews: a is still within its 10 s lease, nothing moves
    clock.advance(9)
    await b.renew()
    assert await queen.nodes.run_once() == 0
    # 2 s more: a's lease (10 s) has expired
    clock.advance(2)
    await b.renew()
    assert await queen.nodes.run_once() == 2
    node_a = await store.get("Node", "", "a")
    cond = get_condition(node_a, "Ready")
    assert cond["status"] == "False" and cond["reason"] == "NodeLeaseExpired"

    a.auto_ready = False  # node a is gone: it does nothing
    await settle(queen, [a, b])
    drones = await drones_of(store, "h")
    assert len(drones) == 4 and all(d["spec"]["nodeName"] == "b" for d in drones)
    assert all(d["status"]["ready"] for d in drones)
    # the recreated drones keep their deterministic names but are new objects
    for d in drones:
        if d["metadata"]["name"] in on_a:
            assert d["metadata"]["uid"] != on_a[d["metadata"]["name"]]
    assert (await store.get("Hive", "default", "h"))["status"]["phase"] == "Running"
    reasons = {e["reason"] for e in (await store.list("Event")).items}
    assert {"NodeNotReady", "Evicted"} <= reasons

    # a comes back: Ready again, but the drones it ran are not assigned to it any more
    # (a node agent stops every local drone whose uid is not assigned to it)
    a.auto_ready = True
    await a.renew()
    await settle(queen, [a, b])
    assert get_condition(await store.get("Node", "", "a"), "Ready")["status"] == "True"
    still = {d["metadata"]["uid"] for d in await a.assigned()}
    assert not (still & set(on_a.values()))


async def test_node_that_never_heartbeats_expires_from_creation(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await store.create(
        {
            "apiVersion": "apiary.io/v1",
            "kind": "Node",
            "metadata": {"name": "silent"},
            "spec": {"capacity": {"cpu": 1000, "memory": 1_000_000_000}},
        }
    )
    clock.advance(30)
    await queen.nodes.run_once()
    cond = get_condition(await store.get("Node", "", "silent"), "Ready")
    assert cond["status"] == "False" and "never" not in cond["message"]


async def test_a_node_may_declare_its_own_lease_duration(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "slow").register()

    def longer(n: dict) -> dict:
        n["status"]["lease"]["leaseDurationSeconds"] = 40
        return n

    await store.update_with_retry("Node", "", "slow", longer, subresource="status")
    clock.advance(30)
    await queen.nodes.run_once()
    assert get_condition(await store.get("Node", "", node.name), "Ready")["status"] == "True"
    clock.advance(11)
    await queen.nodes.run_once()
    assert get_condition(await store.get("Node", "", node.name), "Ready")["status"] == "False"


async def test_drones_on_a_vanished_node_are_evicted(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    a = await FakeNode(store, clock, "a").register()
    b = await FakeNode(store, clock, "b").register()
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s", "echo", 2)))
    await settle(queen, [a, b])
    await store.delete("Node", "", "a")
    await settle(queen, [b])
    assert all(d["spec"]["nodeName"] == "b" for d in await drones_of(store, "h"))


async def test_ownerless_drone_is_unbound_not_deleted(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    a = await FakeNode(store, clock, "a").register()
    await store.create(
        {
            "apiVersion": "apiary.io/v1",
            "kind": "Drone",
            "metadata": {"name": "manual", "namespace": "default"},
            "spec": {"runtime": {"command": ["cat"]}, "nodeName": "a"},
        }
    )
    clock.advance(11)
    await queen.nodes.run_once()
    drone = await store.get("Drone", "default", "manual")
    assert "nodeName" not in drone["spec"]
    assert drone["status"]["phase"] == "Pending" and drone["status"]["reason"] == "Evicted"
    await a.renew()
    await queen.scheduler.run_once()
    assert (await store.get("Drone", "default", "manual"))["spec"]["nodeName"] == "a"
