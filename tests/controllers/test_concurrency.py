"""Two Queens at once, and the real run loop driven by watches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from apiary.controllers import Queen, QueenSettings, run_controllers
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, drones_of, hive, node_agent, settle, until


def assert_no_duplicates(drones: list[dict], wanted: dict[str, int]) -> None:
    per_stage = Counter(d["metadata"]["labels"]["apiary.io/stage"] for d in drones)
    assert dict(per_stage) == wanted
    ordinals = Counter(
        (d["metadata"]["labels"]["apiary.io/stage"], d["spec"]["ordinal"]) for d in drones
    )
    assert max(ordinals.values()) == 1


async def test_two_queens_passing_concurrently_make_no_duplicates(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await FakeNode(store, clock, "n1").register()
    other = Queen(store, queen.settings)
    await store.create(agentspec("echo"))
    await store.create(hive("h", ("a", "echo", 3), ("b", "echo", 2)))
    for _ in range(6):
        await asyncio.gather(queen.sync_once(), other.sync_once())
        await node.step()
    assert_no_duplicates(await drones_of(store, "h"), {"a": 3, "b": 2})

    def change(spec: dict) -> dict:  # a concurrent rolling update
        spec["spec"]["runtime"]["command"] = ["/bin/cat", "-v"]
        return spec

    await store.update_with_retry("AgentSpec", "default", "echo", change)
    for _ in range(20):
        await asyncio.gather(queen.sync_once(), other.sync_once())
        ready = [d for d in await drones_of(store, "h") if d["status"].get("ready")]
        assert len(ready) >= 5
        await node.step()
    await settle(queen, [node])
    drones = await drones_of(store, "h")
    assert_no_duplicates(drones, {"a": 3, "b": 2})
    assert all(d["spec"]["runtime"]["command"] == ["/bin/cat", "-v"] for d in drones)


async def run_queens(store: Store, settings: QueenSettings, clock: FakeClock) -> None:
    """Two run_controllers loops and a fake node agent; converge, scale, converge, stop."""
    node = await FakeNode(store, clock, "n1").register()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_controllers(store, settings, stop)),
        asyncio.create_task(run_controllers(store, settings, stop)),
        asyncio.create_task(node_agent(node)),
    ]
    try:
        await store.create(hive("h", ("a", "echo", 3), ("b", "echo", 2)))
        await store.create(agentspec("echo"))  # after the Hive: ResolvedRefs heals by watch

        async def ready(n: int) -> bool:
            st = (await store.get("Hive", "default", "h")).get("status") or {}
            return st.get("phase") == "Running" and st.get("readyReplicas") == n

        await until(store, lambda: ready(5))
        assert_no_duplicates(await drones_of(store, "h"), {"a": 3, "b": 2})

        def grow(h: dict) -> dict:
            h["spec"]["stages"][1]["replicas"] = 6
            return h

        await store.update_with_retry("Hive", "default", "h", grow)
        await until(store, lambda: ready(9))
        assert_no_duplicates(await drones_of(store, "h"), {"a": 3, "b": 6})
    finally:
        stop.set()
        await asyncio.gather(*tasks[:2])
        tasks[2].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[2]
    assert all(t.done() for t in tasks)


async def test_run_controllers_twice_converges_by_watch(
    store: Store, settings: QueenSettings, clock: FakeClock
) -> None:
    await run_queens(store, settings, clock)
