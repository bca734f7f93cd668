"""Issue 10 point 2, the listing half: the watch-fed cache (:class:`Informer`) and the two periodic
controllers that read it — the autoscaler and the session reaper list nothing per pass once it has
synced, see creations and deletions through the watch, and recover from a 410 Gone by listing
again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from apiary.controllers import Queen
from apiary.controllers.autoscaler import Autoscaler, AutoscalerSettings
from apiary.controllers.cache import Informer
from apiary.controllers.sessions import ReaperSettings, SessionReaper
from apiary.controllers.templates import hive_stages
from apiary.errors import Gone
from apiary.store import Change, Store, open_store

from .helpers import FakeClock, FakeNode, agentspec, hive, settle

Obj = dict[str, Any]
T = TypeVar("T")


class Lists:
    """Counts ``store.list`` calls by kind."""

    def __init__(self, store: Store) -> None:
        self.real = store.list
        self.calls: list[str] = []
        self.selected: list[str] = []
        """Kinds listed with a label selector (how the Hive reconciler lists its drones)."""
        store.list = self.list  # type: ignore[method-assign]

    async def list(self, kind: str, *args: Any, **kw: Any) -> Any:
        self.calls.append(kind)
        if kw.get("selector") is not None:
            self.selected.append(kind)
        return await self.real(kind, *args, **kw)

    async def none_in(self, work: Awaitable[T]) -> T:
        """``await work``, asserting that it lists nothing."""
        before = len(self.calls)
        result = await work
        assert self.calls[before:] == [], self.calls[before:]
        return result


class FlakyWatch:
    """Wraps ``store.watch``: once ``gone()`` is called, the next change a watch would deliver
    is dropped and the watch ends with 410 Gone, as when the log was compacted under it."""

    def __init__(self, store: Store) -> None:
        self.real: Callable[..., AsyncIterator[Change]] = store.watch
        self._gone = False
        store.watch = self.watch  # type: ignore[method-assign]

    def gone(self) -> None:
        self._gone = True

    async def watch(self, *args: Any, **kw: Any) -> AsyncIterator[Change]:
        async for change in self.real(*args, **kw):
            if self._gone:
                self._gone = False
                raise Gone("resourceVersion too old")
            yield change


def drone_obj(name: str, **labels: str) -> Obj:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Drone",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"agentSpec": "x"},
    }


def names(objs: list[Obj]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


# ---------------------------------------------------------------------------- the cache


async def test_the_cache_lists_once_then_follows_the_watch(store: Store) -> None:
    await store.create(drone_obj("a", tier="x"))
    await store.create(agentspec("spec"))  # a kind the cache does not hold
    cache = Informer(store, ["Drone"])
    lists = Lists(store)
    async with cache.started():
        await cache.synced()
        assert cache.has_synced and lists.calls == ["Drone"]
        assert names(cache.list("Drone")) == {"a"}
        await store.create(drone_obj("b", tier="y"))
        changed = await store.get("Drone", "default", "a")
        changed["metadata"]["labels"]["tier"] = "z"
        await store.update(changed)
        await store.delete("Drone", "default", "b")
        await store.create(drone_obj("c"))
        await cache.caught_up()
        assert names(cache.list("Drone")) == {"a", "c"}
        a = cache.get("Drone", "default", "a")
        assert a is not None and a["metadata"]["labels"]["tier"] == "z"
        assert cache.get("Drone", "default", "b") is None
        assert cache.resource_version == await store.resource_version()
        assert lists.calls == ["Drone"]  # everything since came through the watch
    assert not cache.running and not cache.has_synced  # stopped: the next run lists afresh


async def test_a_gone_watch_lists_again_and_drops_what_was_missed(store: Store) -> None:
    await store.create(drone_obj("a"))
    await store.create(drone_obj("b"))
    flaky = FlakyWatch(store)
    cache = Informer(store, ["Drone"], restart_delay=0.01)
    async with cache.started():
        await cache.synced()
        flaky.gone()
        await store.delete("Drone", "default", "a")  # the change the Gone watch loses
        await store.create(drone_obj("c"))
        await cache.caught_up()
        assert cache.relists == 2
        assert names(cache.list("Drone")) == {"b", "c"}
        await store.create(drone_obj("d"))  # and the new watch carries on
        await cache.caught_up()
        assert names(cache.list("Drone")) == {"b", "c", "d"} and cache.relists == 2


async def test_a_compacted_change_log_is_a_gone_and_a_fresh_listing(tmp_path: Any) -> None:
    async with open_store("memory://") as store:
        await store.create(drone_obj("a"))
        cache = Informer(store, ["Drone"])
        async with cache.started():
            await cache.synced()
            # memory writes do not yield: the watcher sees all of this only afterwards, with
            # the change log trimmed to the last entry — a gap behind where it stood
            await store.delete("Drone", "default", "a")
            await store.create(drone_obj("b"))
            await store.create(drone_obj("c"))
            store.settings.changelog_retention = 1
            await store.compact()
            await cache.caught_up()
            assert cache.relists == 2
            assert names(cache.list("Drone")) == {"b", "c"}


# ---------------------------------------------------------------------------- the autoscaler


class Backlog:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}

    def __call__(self) -> dict[tuple[str, str, str], int]:
        return self.counts


async def effective(store: Store, name: str) -> list[int]:
    return [s.replicas for s in hive_stages(await store.get("Hive", "default", name))[0]]


async def test_autoscaler_passes_read_the_cache_not_the_store(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    scaling = {"minReplicas": 0, "maxReplicas": 4, "cooldownSeconds": 30}
    await store.create(agentspec("auto", scaling=scaling))
    await store.create(hive("h", ("s", "auto", 1)))
    node = await FakeNode(store, clock, "n1").register()
    await settle(queen, [node])
    backlog = Backlog()
    scaler = Autoscaler(store, backlog, AutoscalerSettings(clock=clock))
    lists = Lists(store)
    async with scaler.cache.started():
        await scaler.cache.synced()
        assert sorted(lists.calls) == ["AgentSpec", "Drone", "Hive"]
        assert await lists.none_in(scaler.run_once()) == {}
        backlog.counts[("default", "h", "s")] = 3
        made = await lists.none_in(scaler.run_once())
        assert [d.replicas for d in made.values()] == [4]
        await settle(queen, [node])  # four Ready drones, as the watch tells the cache
        # a Hive created after the listing is seen through the watch
        await store.create(hive("g", ("t", "auto", 1)))
        await settle(queen, [node])
        await scaler.cache.caught_up()
        backlog.counts[("default", "g", "t")] = 2
        made = await lists.none_in(scaler.run_once())
        assert [(k, d.replicas) for k, d in made.items()] == [(("default", "g", "t"), 3)]
        # the drones' deletion is seen too: with none Ready the stage's load has no capacity
        for d in [d for d in await drone_list(store) if d["spec"]["stage"] == "t"]:
            await store.delete("Drone", "default", d["metadata"]["name"])
        await scaler.cache.caught_up()
        assert not [d for d in scaler.cache.list("Drone") if d["spec"]["stage"] == "t"]
        assert len([d for d in scaler.cache.list("Drone") if d["spec"]["stage"] == "s"]) == 4
        # and an AgentSpec losing scaling drops out of the pass at once
        spec = await store.get("AgentSpec", "default", "auto")
        del spec["spec"]["scaling"]
        await store.update(spec)
        await scaler.cache.caught_up()
        backlog.counts[("default", "h", "s")] = 50
        assert await lists.none_in(scaler.run_once()) == {}
    assert scaler.cache.relists == 1


async def drone_list(store: Store) -> list[Obj]:
    return (await store.list("Drone", "default")).items


async def test_autoscaler_run_lists_once_and_recovers_after_a_gone(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    scaling = {"minReplicas": 0, "maxReplicas": 4, "cooldownSeconds": 30}
    await store.create(agentspec("auto", scaling=scaling))
    node = await FakeNode(store, clock, "n1").register()
    flaky = FlakyWatch(store)
    backlog = Backlog()
    scaler = Autoscaler(store, backlog, AutoscalerSettings(period=0.01, clock=clock))
    scaler.cache.restart_delay = 0.01
    stop = asyncio.Event()
    task = asyncio.create_task(scaler.run(stop))
    try:
        await asyncio.wait_for(scaler.cache.synced(), 5)
        flaky.gone()  # the Hive's creation is lost with the watch: only a new listing has it
        await store.create(hive("h", ("s", "auto", 1)))
        await settle(queen, [node])
        backlog.counts[("default", "h", "s")] = 2
        for _ in range(500):
            if await effective(store, "h") == [3]:
                break
            await asyncio.sleep(0.01)
        assert await effective(store, "h") == [3]
        assert scaler.cache.relists == 2  # at the start and after the Gone, whatever the passes
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)
    assert not scaler.cache.running


# ---------------------------------------------------------------------------- the reaper


def _hive(name: str, session: Obj) -> Obj:
    body = hive(name, ("a", "x", 1))
    body["spec"]["session"] = session
    return body


def _session(name: str, hive_name: str = "h", **spec: Any) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "Session",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hiveRef": hive_name, **spec}}  # fmt: skip


async def _phase(store: Store, name: str) -> str:
    return str(((await store.get("Session", "default", name)).get("status") or {}).get("phase"))


async def test_reaper_passes_read_the_cache_and_recover_after_a_gone(
    store: Store, clock: FakeClock
) -> None:
    store.clock = clock
    await store.create(_hive("h", {"timeoutMinutes": 5}))
    await store.create(_session("early"))
    flaky = FlakyWatch(store)
    reaper = SessionReaper(store, settings=ReaperSettings(clock=clock))
    reaper.cache.restart_delay = 0.01
    lists = Lists(store)
    async with reaper.cache.started():
        await reaper.cache.synced()
        assert sorted(lists.calls) == ["Hive", "Session"]
        lists.calls.clear()  # nothing below lists but the reaper's cache
        # created after the listing: the pass knows them through the watch
        await store.create(_hive("g", {"timeoutMinutes": 60}))
        await store.create(_session("late"))
        await store.create(_session("patient", "g"))
        await reaper.cache.caught_up()
        clock.advance(6 * 60)
        await reaper.run_once()
        assert [await _phase(store, n) for n in ("early", "late", "patient")] == [
            "TimedOut",
            "TimedOut",
            "None",
        ]
        # a Hive deleted is seen too: its sessions lose its limits
        await store.delete("Hive", "default", "g")
        await reaper.cache.caught_up()
        assert reaper.cache.get("Hive", "default", "g") is None
        assert lists.calls == []
        # a Gone: the new Hive's creation is lost with the watch, the new listing has it
        flaky.gone()
        await store.create(_hive("g", {"timeoutMinutes": 1}))
        await reaper.cache.caught_up()
        assert reaper.cache.relists == 2
        await reaper.run_once()
        assert await _phase(store, "patient") == "TimedOut"
        assert sorted(lists.calls) == ["Hive", "Session"]  # the one listing after the Gone


async def test_reaper_run_lists_only_when_it_starts(store: Store, clock: FakeClock) -> None:
    store.clock = clock
    await store.create(_hive("h", {"timeoutMinutes": 5}))
    reaper = SessionReaper(store, settings=ReaperSettings(period=0.01, clock=clock))
    lists = Lists(store)
    stop = asyncio.Event()
    task = asyncio.create_task(reaper.run(stop))
    try:
        await asyncio.wait_for(reaper.cache.synced(), 5)
        await store.create(_session("s"))
        clock.advance(6 * 60)
        for _ in range(500):
            if await _phase(store, "s") == "TimedOut":
                break
            await asyncio.sleep(0.01)
        assert await _phase(store, "s") == "TimedOut"
        assert sorted(lists.calls) == ["Hive", "Session"]  # dozens of passes, one listing
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


# ---------------------------------------------------------------------------- the Queen


async def test_the_running_queen_reads_drones_from_its_watch_not_the_store(
    store: Store, settings: Any
) -> None:
    await store.create(agentspec("echo"))
    queen = Queen(store, settings)
    lists = Lists(store)
    stop = asyncio.Event()
    task = asyncio.create_task(queen.run(stop))
    try:
        await store.create(hive("h", ("s", "echo", 250)))
        for _ in range(1000):
            if len(queen.drones.list("Drone")) == 250 and queen.queue.idle:
                break
            await asyncio.sleep(0.01)
        drones = (await store.list("Drone", "default")).items
        assert len(drones) == 250  # three passes of at most 100
        # the Hive's passes took their drones from the cache (the scheduler still lists)
        assert lists.selected == [], lists.selected
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not queen.drones.has_synced  # stopped: a one-off pass lists the store again
    await queen.hives.reconcile("default", "h")
