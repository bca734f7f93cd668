"""The cluster-state collector: what it counts from the store, and that scrapes close together
share one snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from apiary.store import Store, open_store
from apiary.telemetry.cluster import ClusterCollector, ClusterSettings

Obj = dict[str, Any]
V1 = "apiary.io/v1"


async def drone(
    store: Store, name: str, stage: str, phase: str, restarts: int, *, warm: bool = False
) -> None:
    spec = {"agentSpec": "a", "runtime": {"command": ["cat"]}, "hive": "h", "stage": stage}
    obj = await store.create({
        "apiVersion": V1, "kind": "Drone", "metadata": {"name": name, "namespace": "c"},
        "spec": {**spec, "warm": True} if warm else spec,
    })  # fmt: skip
    status = {"phase": phase, "restartCount": restarts,
              "usage": {"inFlight": 2, "cpuMillicores": 250, "memoryBytes": 1 << 20}}  # fmt: skip
    await store.update({**obj, "status": status}, subresource="status")


async def session(store: Store, name: str, status: Obj) -> None:
    obj = await store.create({"apiVersion": V1, "kind": "Session",
                              "metadata": {"name": name, "namespace": "c"},
                              "spec": {"hiveRef": "h"}})  # fmt: skip
    await store.update({**obj, "status": status}, subresource="status")


async def test_drones_sessions_approvals_and_the_backlog_are_counted() -> None:
    now = [0.0]
    async with open_store("memory://") as store:
        await store.create({"apiVersion": V1, "kind": "Cell", "metadata": {"name": "c"}})
        await drone(store, "d1", "work", "Running", 2)
        await drone(store, "d2", "work", "Running", 0)
        await drone(store, "d3", "check", "Failed", 5)
        await drone(store, "d4", "work", "Running", 0, warm=True)
        await session(store, "s1", {"phase": "Running"})
        await session(store, "s2", {"phase": "WaitingForApproval", "pendingApproval": "check,work"})
        backlog = {("c", "h", "work"): 4}
        settings = ClusterSettings(min_interval=5)
        cluster = ClusterCollector(store, lambda: backlog, settings, clock=lambda: now[0])
        await asyncio.gather(cluster.refresh(), cluster.refresh())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(cluster)

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        work = {"cell": "c", "hive": "h", "stage": "work"}
        assert value("apiary_drones", **work, phase="Running") == 2
        assert value("apiary_drones", **work, phase="Warm") == 1  # a pool drone serves nothing
        assert value("apiary_drones", cell="c", hive="h", stage="check", phase="Failed") == 1
        assert value("apiary_drone_restarts_total", **work, drone="d1") == 2
        assert value("apiary_drone_cpu_cores", **work, drone="d1") == 0.25
        assert value("apiary_drone_in_flight_messages", **work, drone="d2") == 2
        assert value("apiary_sessions", cell="c", hive="h", phase="WaitingForApproval") == 1
        assert value("apiary_approvals_waiting", **work) == 1
        assert value("apiary_approvals_waiting", cell="c", hive="h", stage="check") == 1
        assert value("apiary_stage_backlog_messages", **work) == 4

        await session(store, "s3", {"phase": "Running"})
        now[0] = 4.0
        await cluster.refresh()  # younger than min_interval: the same snapshot
        assert value("apiary_sessions", cell="c", hive="h", phase="Running") == 1
        now[0] = 6.0
        await cluster.refresh()
        assert value("apiary_sessions", cell="c", hive="h", phase="Running") == 2
