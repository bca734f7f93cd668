"""The reference resolver re-checks only what a change can affect, never the whole cell.

A real in-memory store and a real resolver task; the store subclass only counts listings (the
work that used to grow with the cell), and the conditions are read back from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from apiary.api import EventRecorder, ReferenceResolver
from apiary.store import ObjectList, StoreSettings
from apiary.store.memory import MemoryStore

Obj = dict[str, Any]


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__(StoreSettings(watch_poll_interval=0.05))
        self.listed: list[str] = []

    async def list(self, kind: str, namespace: str | None = None, **kw: Any) -> ObjectList:
        self.listed.append(kind)
        return await super().list(kind, namespace, **kw)


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    s = CountingStore()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def spec(name: str, secret: str | None = None, key: str = "k") -> Obj:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]
    runtime: Obj = {"command": ["cat"], **({"env": env} if secret else {})}
    return {
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": "c"},
        "spec": {"runtime": runtime},
    }


def hive(name: str, *agents: str) -> Obj:
    stages = [{"name": f"s{i}", "agentRef": a} for i, a in enumerate(agents)]
    return {
        "kind": "Hive",
        "metadata": {"name": name, "namespace": "c"},
        "spec": {"stages": stages},
    }


def secret(name: str, *keys: str) -> Obj:
    return {
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "c"},
        "data": {k: "eA==" for k in keys},
    }


def resolved(obj: Obj) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "ResolvedRefs":
            return str(c["status"]) + ":" + str(c["message"])
    return None


async def until(store: CountingStore, kind: str, name: str, test: Callable[[str], bool]) -> str:
    for _ in range(400):
        got = resolved(await store.get(kind, "c", name))
        if got is not None and test(got):
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"{kind} {name}: {resolved(await store.get(kind, 'c', name))}")


async def test_changes_recheck_only_dependents_without_listing(store: CountingStore) -> None:
    for i in range(200):  # a big cell: none of these may be re-read per change
        await store.create(spec(f"bulk-{i}"))
    await store.create(hive("h", "a", "b"))
    await store.create(spec("a", secret="s", key="k"))
    passes: list[str] = []
    resolver = ReferenceResolver(
        store, EventRecorder(store, component="test"), resync_interval=60, on_pass=passes.append
    )
    task = asyncio.create_task(resolver.run())
    try:
        await until(store, "Hive", "h", lambda c: c.startswith("False") and "'b'" in c)
        await until(store, "AgentSpec", "a", lambda c: "Secret 's' not found" in c)
        store.listed.clear()

        await store.create(secret("s", "other"))
        await until(store, "AgentSpec", "a", lambda c: "has no key 'k'" in c)
        await store.update({**secret("s", "k")})
        await until(store, "AgentSpec", "a", lambda c: c.startswith("True"))
        await store.create(spec("b"))
        await until(store, "Hive", "h", lambda c: c.startswith("True"))
        await until(store, "AgentSpec", "b", lambda c: c.startswith("True"))

        current = await store.get("AgentSpec", "c", "a")  # the spec stops naming the secret...
        current["spec"] = spec("a")["spec"]
        await store.update(current)
        await store.delete("Secret", "c", "s")  # ...so deleting it leaves the spec resolved
        await store.delete("AgentSpec", "c", "b")
        await until(store, "Hive", "h", lambda c: c.startswith("False") and "'b'" in c)
        assert (resolved(await store.get("AgentSpec", "c", "a")) or "").startswith("True")
        assert (resolved(await store.get("AgentSpec", "c", "bulk-7")) or "").startswith("True")
        assert store.listed == []  # nothing listed the cell after the first pass
        assert passes and set(passes) == {"c"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_full_pass_rebuilds_the_index_from_listings(store: CountingStore) -> None:
    await store.create(hive("h", "a"))
    recorder = EventRecorder(store, component="test")
    resolver = ReferenceResolver(store, recorder)
    await resolver.reconcile_all()
    assert (resolved(await store.get("Hive", "c", "h")) or "").startswith("False")
    await store.create(spec("a"))
    await resolver.reconcile_cell("c")
    assert (resolved(await store.get("Hive", "c", "h")) or "").startswith("True")
    assert (resolved(await store.get("AgentSpec", "c", "a")) or "").startswith("True")
    rv = await store.resource_version()
    await resolver.reconcile_all()  # nothing changed: nothing written
    assert await store.resource_version() == rv
