"""PostgreSQL takes the version last in a write: the races that makes possible are handled.

Two stores on one database stand for two apiaryd replicas, each with its own pool, so their
transactions really interleave on the server. A write first tries without a transaction (read,
then write if unchanged); the tests below also make another replica write in between, from a
thread of its own, so the lost race and its locking retry are certain to run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from apiary.errors import AlreadyExists, Conflict
from apiary.store import Store, StoreSettings, open_store
from apiary.store.model import Key, Obj
from replica import run_elsewhere
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


def meanwhile(url: str, write: Callable[[Store], Coroutine[Any, Any, object]]) -> None:
    """Run ``write`` on another replica (its own store, loop and thread) and wait for it: a
    writer that commits while the caller is between its read and its write."""

    async def other() -> None:
        async with open_store(url) as store:
            await write(store)

    run_elsewhere(other)


@pytest.mark.parametrize("race", ["update", "delete", "create"])
async def test_a_write_that_lost_its_race_runs_again_on_what_won(race: str) -> None:
    async with fresh_postgres_url() as url, open_store(url) as store:
        if race != "create":
            await store.create(spec("x", 1))
        start = await store.resource_version()
        seen: list[Obj | None] = []

        async def other_write(other: Store) -> None:
            if race == "create":
                await other.create(spec("x", 7))
            else:
                current = await other.get("AgentSpec", "default", "x")
                current["spec"] = {"value": 7}
                await other.update(current)

        def mutate(current: Obj | None, rv: int) -> Obj | None:
            seen.append(None if current is None else dict(current["spec"]))
            if len(seen) == 1:  # between our read and our write, another replica commits
                meanwhile(url, other_write)
            if race == "delete":
                return None
            body = current or spec("x")
            body["spec"] = {"value": (current or {"spec": {"value": 0}})["spec"]["value"] + 1}
            body.setdefault("metadata", {})["resourceVersion"] = str(rv)
            return body

        old, new = await store._transact(Key("AgentSpec", "default", "x"), mutate)
        first = None if race == "create" else {"value": 1}
        assert seen == [first, {"value": 7}]  # decided again, on the winner's write
        assert old is not None and old["spec"] == {"value": 7}
        stored = await store._get(Key("AgentSpec", "default", "x"))
        if race == "delete":
            assert new is None and stored is None
        else:
            assert new is not None and new["spec"] == {"value": 8}
            assert stored is not None and stored["spec"] == {"value": 8}
            assert stored["metadata"]["resourceVersion"] == new["metadata"]["resourceVersion"]
        changes = []
        async for change in store.watch(since=start):
            changes.append((change.rv, change.type))
            if len(changes) == 2:
                break
        kinds = ["ADDED" if race == "create" else "MODIFIED",
                 "DELETED" if race == "delete" else "MODIFIED"]  # fmt: skip
        assert changes == [(start + 1, kinds[0]), (start + 2, kinds[1])]
        assert await store.resource_version() == start + 2  # the lost try used no version


async def test_a_status_batch_that_lost_a_race_runs_item_by_item_on_what_won() -> None:
    async with fresh_postgres_url() as url, open_store(url) as store:
        for name in ("a", "b", "c"):
            await store.create(spec(name, 1))
        start = await store.resource_version()
        calls: list[str] = []

        def other_write(other: Store) -> Coroutine[Any, Any, object]:
            async def write() -> None:
                current = await other.get("AgentSpec", "default", "b")
                current["spec"] = {"value": 7}
                await other.update(current)

            return write()

        def mark(name: str) -> Callable[[Obj], Obj]:
            def change(obj: Obj) -> Obj:
                calls.append(name)
                if calls == ["a", "b"]:  # between the batch's read and its write
                    meanwhile(url, other_write)
                obj["status"] = {"seen": obj["spec"]["value"]}
                return obj

            return change

        out = await store.update_status_many(
            "AgentSpec", [("default", n, mark(n)) for n in ("a", "b", "c")]
        )
        assert calls == ["a", "b", "c", "a", "b", "c"]  # the batch, then item by item
        assert [o["status"] for o in out if o is not None] == [
            {"seen": 1}, {"seen": 7}, {"seen": 1},
        ]  # fmt: skip
        assert [int(o["metadata"]["resourceVersion"]) for o in out if o is not None] == [
            start + 2, start + 3, start + 4,
        ]  # fmt: skip  # start + 1: the other replica's; the lost batch took none
        stored = await store.get("AgentSpec", "default", "b")
        assert stored["spec"] == {"value": 7} and stored["status"] == {"seen": 7}
