"""Issue 13 point 8: a Cell's ``status.used`` counts what its quota counts, under the quota's
names, and is written only when it changes."""

from __future__ import annotations

from apiary.controllers import Queen
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, cell, hive, settle


async def test_status_used_counts_placed_drones_hives_and_agentspecs(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    await store.create(cell(maxCPU=300, maxHives=5))
    await store.create(agentspec("echo", cpu=100, memory=128_000_000))
    await store.create(agentspec("spare"))
    await store.create(hive("h", ("a", "echo", 2)))
    await store.create(hive("g", ("a", "echo", 2)))
    await settle(queen, [node])
    c = await store.get("Cell", "", "default")
    # 4 drones wanted, the quota places 3 (300 millicores): the held one uses nothing
    assert c["status"]["used"] == {
        "maxCPU": 300,
        "maxMemoryGB": 0.384,
        "maxTotalDrones": 3,
        "maxDronesPerHive": 2,
        "maxHives": 2,
        "maxAgentSpecs": 2,
    }
    before = await store.resource_version()
    await queen.sync_once()
    assert await store.resource_version() == before, "an unchanged usage is not written again"

    await store.delete("Hive", "default", "h")
    await store.delete("Hive", "default", "g")
    await settle(queen, [node])
    used = (await store.get("Cell", "", "default"))["status"]["used"]
    assert used == {
        "maxCPU": 0,
        "maxMemoryGB": 0.0,
        "maxTotalDrones": 0,
        "maxDronesPerHive": 0,
        "maxHives": 0,
        "maxAgentSpecs": 2,
    }


async def test_a_cell_without_quota_gets_usage_too(store: Store, queen: Queen) -> None:
    await store.create(
        {"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "empty"}}
    )
    await queen.sync_once()
    used = (await store.get("Cell", "", "empty"))["status"]["used"]
    assert used["maxTotalDrones"] == 0 and used["maxHives"] == 0
