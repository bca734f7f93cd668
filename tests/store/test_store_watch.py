"""Watches: ordered, gap-free change streams from a version; 410 Gone once compacted."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from storekit import MakeStore, collect, hive, settings_for_tests

from apiary.errors import Gone
from apiary.store import Store, parse_selector


async def test_watch_sees_added_modified_deleted_with_versions(store: Store) -> None:
    since = await store.resource_version()
    created = await store.create(hive("a"))
    updated = await store.update(dict(created, spec={"v": 2}))
    await store.delete("Hive", "default", "a")
    changes = await collect(store, 3, since=since)
    assert [c.type for c in changes] == ["ADDED", "MODIFIED", "DELETED"]
    assert changes[0].object == created
    assert changes[1].object == updated
    assert [c.rv for c in changes] == [since + 1, since + 2, since + 3]
    for change in changes:
        assert change.object["metadata"]["resourceVersion"] == str(change.rv)


async def test_watch_filters_by_kind_namespace_and_selector(store: Store) -> None:
    since = await store.resource_version()
    await store.create(hive("skip-ns", "other", labels={"app": "x"}))
    await store.create(
        {
            "apiVersion": "apiary.io/v1",
            "kind": "AgentSpec",
            "metadata": {"name": "skip-kind", "namespace": "default", "labels": {"app": "x"}},
            "spec": {},
        }
    )
    await store.create(hive("skip-label", labels={"app": "y"}))
    await store.create(hive("match", labels={"app": "x"}))
    changes = await collect(
        store, 1, since=since, kind="Hive", namespace="default", selector=parse_selector("app=x")
    )
    assert changes[0].object["metadata"]["name"] == "match"


async def test_watch_waits_for_future_changes(store: Store) -> None:
    since = await store.resource_version()
    waiter = asyncio.create_task(collect(store, 1, since=since, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.create(hive("later"))
    (change,) = await waiter
    assert change.object["metadata"]["name"] == "later"


async def test_watch_sees_a_thousand_concurrent_changes_in_order(store: Store) -> None:
    since = await store.resource_version()
    total, writers = 1000, 4
    watcher = asyncio.create_task(collect(store, total, since=since, timeout=60))

    async def writer(w: int) -> None:
        per = total // writers
        obj = await store.create(hive(f"w{w}", spec={"n": 0}))
        for n in range(1, per):
            obj = await store.update(dict(obj, spec={"n": n}))

    await asyncio.gather(*(writer(w) for w in range(writers)))
    changes = await watcher
    assert [c.rv for c in changes] == list(range(since + 1, since + total + 1)), "no gap, in order"
    for w in range(writers):
        mine = [c.object["spec"]["n"] for c in changes if c.object["metadata"]["name"] == f"w{w}"]
        assert mine == list(range(total // writers)), f"writer {w}'s changes in its order"


async def test_watch_from_a_compacted_version_is_gone(store: Store) -> None:
    start = await store.resource_version()
    for i in range(10):
        await store.create(hive(f"o{i}"))
    await store._compact(3)
    newest = await store.resource_version()
    assert newest == start + 10, "compaction never moves the version"
    with pytest.raises(Gone, match="too old"):
        await collect(store, 1, since=start + 1)
    # from the horizon on, everything left is still there, in order
    kept = await collect(store, 3, since=newest - 3)
    assert [c.rv for c in kept] == [newest - 2, newest - 1, newest]
    # compaction is idempotent and never moves the horizon back
    await store._compact(5)
    with pytest.raises(Gone):
        await collect(store, 1, since=newest - 4)


async def test_compact_uses_retention_setting_and_keeps_versions_growing(
    make_store: MakeStore,
) -> None:
    store = await make_store(settings_for_tests(changelog_retention=0))
    await store.create(hive("a"))
    before = await store.resource_version()
    await store.compact()
    assert await store.resource_version() == before
    created = await store.create(hive("b"))
    assert int(created["metadata"]["resourceVersion"]) == before + 1
    (change,) = await collect(store, 1, since=before)
    assert change.object["metadata"]["name"] == "b"


async def test_background_compaction_runs(make_store: MakeStore) -> None:
    store = await make_store(settings_for_tests(changelog_retention=2, compact_interval=0.01))
    for i in range(6):
        await store.create(hive(f"o{i}"))
    newest = await store.resource_version()
    for _ in range(500):
        if await store._horizon() == newest - 2:
            break
        await asyncio.sleep(0.01)
    assert await store._horizon() == newest - 2


async def test_version_is_monotonic_across_close_and_reopen(
    backend: str, make_store: MakeStore
) -> None:
    if backend == "memory":
        pytest.skip("the memory store forgets everything on close by design")
    first = await make_store()
    for i in range(5):
        await first.create(hive(f"o{i}"))
    await first._compact(0)
    before = await first.resource_version()
    await first.close()

    second = await make_store()
    assert await second.resource_version() == before
    created = await second.create(hive("after"))
    assert int(created["metadata"]["resourceVersion"]) == before + 1
    assert len((await second.list("Hive")).items) == 6
    with pytest.raises(Gone):
        await collect(second, 1, since=before - 1)


async def test_an_abandoned_watch_closes_cleanly(store: Store) -> None:
    """A watch abandoned mid-stream is closed cleanly by aclosing (no task left behind)."""
    await store.create(hive("a"))
    gen = store.watch(since=0)
    async with contextlib.aclosing(gen):
        first = await anext(gen)
    assert first.type == "ADDED"


async def test_a_watch_cancelled_as_it_is_woken_ends(store: Store) -> None:
    """A cancel that lands in the loop turn a change wakes the watch must end it: with
    ``asyncio.wait_for`` (Python 3.11) the wake-up won and the cancel was lost, so the watch ran
    on and apiaryd's SIGTERM waited 10 s for a task stuck "cancelling" (CI saw it)."""

    async def follow() -> None:
        async for _ in store.watch(since=await store.resource_version()):
            pass

    for _ in range(3):
        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)  # waiting for a change
        store._notify()  # a write wakes every watcher...
        await asyncio.sleep(0)  # ...its wait is done, the watch not yet resumed...
        task.cancel()  # ...when the cancel comes
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)


async def test_watchers_woken_together_share_one_read_and_see_the_same_changes(
    store: Store,
) -> None:
    since = await store.resource_version()
    watchers, total = 6, 40
    tasks = [asyncio.create_task(collect(store, total, since=since)) for _ in range(watchers)]
    await asyncio.sleep(0.05)  # all six watching (and waiting) before the first write
    reads = store._feed.reads
    for i in range(total):
        await store.create(hive(f"w{i}"))
        await asyncio.sleep(0.01)  # each write wakes all six
    seen = await asyncio.gather(*tasks)
    assert all([c.rv for c in s] == list(range(since + 1, since + total + 1)) for s in seen)
    # Unshared, every wake-up of every watcher would be a read: >= 6 x 40.
    assert store._feed.reads - reads < watchers * total / 2


async def test_a_watch_sees_a_write_made_without_a_notification(
    backend: str, make_store: MakeStore
) -> None:
    """Another process writing the same SQLite file wakes nobody here: the poll finds it, and
    reads on its own even when another watcher's shared read is at hand."""
    if backend == "memory":
        pytest.skip("a memory store has no other process")
    first = await make_store(settings_for_tests(watch_poll_interval=0.1))
    other = await make_store()
    since = await first.resource_version()
    a = asyncio.create_task(collect(first, 1, since=since, timeout=5))
    b = asyncio.create_task(collect(first, 1, since=since, timeout=5))
    await asyncio.sleep(0.15)
    await other.create(hive("elsewhere"))
    for got in await asyncio.gather(a, b):
        assert got[0].object["metadata"]["name"] == "elsewhere"


async def test_a_watcher_behind_is_served_from_what_the_others_read(store: Store) -> None:
    since = await store.resource_version()
    ahead = asyncio.create_task(collect(store, 30, since=since))
    for i in range(30):
        await store.create(hive(f"r{i}"))
        await asyncio.sleep(0.005)
    await ahead
    reads = store._feed.reads
    behind = await collect(store, 30, since=since)  # starts late: everything is kept already
    assert [c.rv for c in behind] == list(range(since + 1, since + 31))
    assert store._feed.reads == reads


async def test_a_write_wakes_its_watchers_once(store: Store) -> None:
    """One read of the change log per write, not two: on PostgreSQL the commit's NOTIFY comes
    back to this store too, often before the writer has its answer, and it alone wakes."""
    since = await store.resource_version()
    watchers, total = 6, 30
    tasks = [asyncio.create_task(collect(store, total, since=since)) for _ in range(watchers)]
    await asyncio.sleep(0.05)
    reads = store._feed.reads
    for i in range(total):
        await store.create(hive(f"once{i}"))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert store._feed.reads - reads <= total * 1.3


async def test_postgres_writes_still_wake_watchers_while_the_listener_is_down(
    backend: str, make_store: MakeStore
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL leaves the wake-up to the database's echo")
    store = await make_store(settings_for_tests(watch_poll_interval=30))
    await store._listener.close()  # type: ignore[attr-defined]  # no echo will come
    since = await store.resource_version()
    watching = asyncio.create_task(collect(store, 1, since=since, timeout=2))
    await asyncio.sleep(0.05)
    await store.create(hive("while-down"))
    (got,) = await watching  # long before the 30 s poll
    assert got.object["metadata"]["name"] == "while-down"
