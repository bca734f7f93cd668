"""PostgreSQL takes the version last in a write: the races that makes possible are handled.

Two stores on one database stand for two apiaryd replicas, each with its own pool, so their
transactions really interleave on the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from apiary.errors import AlreadyExists, Conflict
from apiary.store import Store, StoreSettings, open_store
from services import fresh_postgres_url


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Store, Store]]:
    async with fresh_postgres_url() as url:
        settings = StoreSettings(watch_poll_interval=0.05)
        a, b = open_store(url, settings), open_store(url, settings)
        await a.open()
        await b.open()
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()


def spec(name: str, value: int = 0) -> dict[str, object]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"value": value},
    }


async def test_concurrent_creates_of_one_name_one_wins(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    for round_ in range(10):
        name = f"race-{round_}"
        results = await asyncio.gather(
            *(s.create(spec(name, i)) for i, s in enumerate((a, b, a, b))), return_exceptions=True
        )
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1, results
        assert all(isinstance(e, AlreadyExists) for e in lost), lost
        stored = await b.get("AgentSpec", "default", name)
        assert stored == won[0]  # nobody overwrote the winner afterwards


async def test_versions_are_gap_free_in_commit_order_and_stamped(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    start = await a.resource_version()
    for s, name in ((a, "x"), (b, "y")):
        await s.create(spec(name))
    seen: list[int] = []

    async def follow() -> None:
        async for change in a.watch(since=start):
            assert change.object["metadata"]["resourceVersion"] == str(change.rv)
            seen.append(change.rv)
            if len(seen) == 202:
                return

    async def bump(store: Store, name: str) -> None:
        for i in range(100):
            while True:
                current = await store.get("AgentSpec", "default", name)
                current["spec"] = {"value": i + 1}
                try:
                    updated = await store.update(current)
                    break
                except Conflict:
                    continue
            assert int(updated["metadata"]["resourceVersion"]) > start
            again = await store.get("AgentSpec", "default", name)
            assert int(again["metadata"]["resourceVersion"]) >= int(
                updated["metadata"]["resourceVersion"]
            )

    watcher = asyncio.create_task(follow())
    try:
        await asyncio.gather(bump(a, "x"), bump(b, "y"), bump(a, "y"), bump(b, "x"))
        await asyncio.wait_for(watcher, 10)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert seen[:202] == list(range(start + 1, start + 203))
    assert await b.resource_version() >= start + 202
    deleted = await b.delete("AgentSpec", "default", "x")
    assert int(deleted["metadata"]["resourceVersion"]) < await a.resource_version()
