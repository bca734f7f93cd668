"""Issue 13 point 1: a rolling update under a Cell quota with no room for a surge drone replaces
drones in place (Kubernetes' ``maxSurge: 0``) instead of waiting for ever, and the Hive's
``Progressing`` condition says so; issue 13 point 7: a Hive whose AgentSpec is gone says why it
is not Ready."""

from __future__ import annotations

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, cell, drones_of, hive, settle


async def _bump(store: Store, name: str, value: str) -> None:
    def change(spec: dict) -> dict:
        spec["spec"]["runtime"]["env"] = [{"name": "VERSION", "value": value}]
        return spec

    await store.update_with_retry("AgentSpec", "default", name, change)


async def test_rollout_under_a_full_cpu_quota_replaces_in_place(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    await store.create(cell(maxCPU=400))
    await store.create(agentspec("echo", cpu=100))
    await store.create(hive("h", ("s", "echo", 4)))
    await settle(queen, [node])
    old_hash = (await drones_of(store, "h"))[0]["spec"]["templateHash"]
    assert len([d for d in await drones_of(store, "h") if d["status"].get("ready")]) == 4

    await _bump(store, "echo", "2")
    saw_in_place = False
    for _ in range(60):
        await queen.sync_once()
        await node.step()
        drones = await drones_of(store, "h")
        placed = [d for d in drones if d["spec"].get("nodeName")]
        ready = [d for d in drones if d["status"].get("ready") is True]
        assert sum(d["spec"]["resources"]["requests"]["cpu"] for d in placed) <= 400
        assert len(ready) >= 3, "in place means one drone at a time, not an outage"
        assert len(drones) <= 5
        cond = get_condition(await store.get("Hive", "default", "h"), "Progressing")
        if cond["reason"] == "QuotaBlocksSurge":
            saw_in_place = True
            assert cond["status"] == "True"
            assert "replacing old drones in place" in cond["message"]
            assert "maxCPU=400" in cond["message"], cond["message"]
        if len(ready) == 4 and all(d["spec"]["templateHash"] != old_hash for d in drones):
            break
    else:
        raise AssertionError(f"rollout stalled: {[d['status'] for d in drones]}")
    assert saw_in_place
    await settle(queen, [node])
    hv = await store.get("Hive", "default", "h")
    assert hv["status"]["phase"] == "Running"
    assert get_condition(hv, "Progressing")["reason"] == "Complete"
    events = (await store.list("Event", "default")).items
    assert any(e["reason"] == "RollingInPlace" for e in events)


async def test_rollout_with_quota_room_still_surges(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    """Room for the surge drone: the rollout never dips below the wanted Ready count."""
    node = await FakeNode(store, clock, "n1").register()
    await store.create(cell(maxCPU=500))
    await store.create(agentspec("echo", cpu=100))
    await store.create(hive("h", ("s", "echo", 4)))
    await settle(queen, [node])
    await _bump(store, "echo", "2")
    for _ in range(60):
        await queen.sync_once()
        drones = await drones_of(store, "h")
        assert len([d for d in drones if d["status"].get("ready") is True]) >= 4
        cond = get_condition(await store.get("Hive", "default", "h"), "Progressing")
        assert cond["reason"] != "QuotaBlocksSurge"
        if cond["reason"] == "Complete":
            break
        await node.step(limit=1)
    else:
        raise AssertionError("rollout did not finish")


async def test_deleted_agentspec_makes_ready_false_with_a_true_message(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("s", "echo", 2)))
    await settle(queen, [node])
    await store.delete("AgentSpec", "default", "echo")
    await settle(queen, [node])
    ready = get_condition(await store.get("Hive", "default", "h"), "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "MissingReferences"
    assert ready["message"].startswith(
        "2/2 drones ready, but AgentSpec 'echo' not found (spec.stages[0].agentRef)"
    ), ready["message"]
