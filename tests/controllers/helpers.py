"""Helpers for the controller tests: object builders, a fake clock, a fake node agent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from apiary.controllers import Queen
from apiary.store import Store

Obj = dict[str, Any]


class FakeClock:
    """A clock tests move by hand: lease expiry without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def agentspec(name: str, *, cpu: int = 100, memory: int = 128_000_000, **spec: Any) -> Obj:
    body: Obj = {
        "runtime": {"command": ["/bin/cat"]},
        "interface": {"type": "stdin"},
        "resources": {"requests": {"cpu": cpu, "memory": memory}},
    }
    body.update(spec)
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def hive(name: str, *stages: tuple[str, str, int], **spec: Any) -> Obj:
    body: Obj = {
        "pattern": "pipeline",
        "stages": [{"name": s, "agentRef": ref, "replicas": n} for s, ref, n in stages],
    }
    body.update(spec)
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def cell(name: str = "default", **quota: Any) -> Obj:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Cell",
        "metadata": {"name": name},
        "spec": {"resourceQuota": quota},
    }


class FakeNode:
    """A tiny stand-in for the node agent: registers a Node, renews its lease, and marks the
    drones assigned to it Running and Ready (controllers do not care who writes status)."""

    def __init__(
        self,
        store: Store,
        clock: FakeClock,
        name: str,
        *,
        cpu: int = 4000,
        memory: int = 8_000_000_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.cpu = cpu
        self.memory = memory
        self.auto_ready = True

    async def register(self) -> FakeNode:
        await self.store.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "Node",
                "metadata": {"name": self.name},
                "spec": {"capacity": {"cpu": self.cpu, "memory": self.memory}},
            }
        )
        await self.renew()
        return self

    async def renew(self) -> None:
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        def change(node: Obj) -> Obj:
            status = node.setdefault("status", {})
            status["lease"] = {"renewTime": now}
            status["allocatable"] = {"cpu": self.cpu, "memory": self.memory}
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
            status["conditions"] = [
                *conds,
                {"type": "Ready", "status": "True", "reason": "NodeAgentReady"},
            ]
            return node

        await self.store.update_with_retry("Node", "", self.name, change, subresource="status")

    async def assigned(self) -> list[Obj]:
        drones = (await self.store.list("Drone")).items
        return [d for d in drones if d["spec"].get("nodeName") == self.name]

    async def step(self, limit: int | None = None) -> int:
        """Mark up to ``limit`` assigned, not-yet-ready drones Running/Ready; how many changed."""
        if not self.auto_ready:
            return 0
        changed = 0
        for drone in await self.assigned():
            if drone["status"].get("ready") is True:
                continue
            if limit is not None and changed >= limit:
                break
            pid = 1000 + changed

            def mark(current: Obj, pid: int = pid) -> Obj | None:
                if current["spec"].get("nodeName") != self.name:
                    return None
                current["status"] = {
                    **current["status"],
                    "phase": "Running",
                    "ready": True,
                    "pid": pid,
                    "nodeName": self.name,
                }
                return current

            meta = drone["metadata"]
            await self.store.update_with_retry(
                "Drone", meta["namespace"], meta["name"], mark, subresource="status"
            )
            changed += 1
        return changed


async def settle(queen: Queen, nodes: list[FakeNode], rounds: int = 40) -> int:
    """Run full controller passes and node steps until the store stops changing."""
    store = queen.store
    for i in range(rounds):
        before = await store.resource_version()
        await queen.sync_once()
        for node in nodes:
            await node.step()
        if await store.resource_version() == before:
            return i
    raise AssertionError(f"did not settle in {rounds} rounds")


async def drones_of(store: Store, hive_name: str | None = None) -> list[Obj]:
    items = (await store.list("Drone", "default")).items
    if hive_name is None:
        return items
    return [d for d in items if d["metadata"]["labels"].get("apiary.io/hive") == hive_name]


async def until(store: Store, predicate: Any, timeout: float = 10.0) -> None:
    """Wait, by watching the store (no polling sleeps), until ``await predicate()`` is true."""

    async def loop() -> None:
        since = await store.resource_version()
        if await predicate():
            return
        async for _ in store.watch(since=since):
            if await predicate():
                return

    await asyncio.wait_for(loop(), timeout)


async def node_agent(node: FakeNode) -> None:
    """A background fake node agent: marks drones Ready as soon as they are assigned to it."""
    since = await node.store.resource_version()
    await node.step()
    async for change in node.store.watch("Drone", since=since):
        if change.type != "DELETED" and change.object["spec"].get("nodeName") == node.name:
            await node.step()
