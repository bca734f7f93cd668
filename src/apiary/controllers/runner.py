"""The Queen: every reconciler, driven by one store watch plus periodic resyncs.

``run_controllers(store, settings, stop)`` is what apiaryd supervises. Inside:

* a watcher follows ``store.watch`` from the version read before the initial listing (so nothing
  between the listing and the watch is missed) and maps changes to work: Hive → that Hive;
  AgentSpec → its standalone drones and every Hive of its Cell; Drone → its owner, and a
  scheduling pass; Node → scheduling and lease checks; Cell → everything in it. A 410 Gone
  re-lists everything.
* workers take keys from a de-duplicating queue (:mod:`apiary.controllers.workqueue`); a failed
  reconcile is retried with exponential backoff;
* the scheduler, the node lease monitor, the Cell usage writer (``status.used``, at most once per
  ``usage.min_interval``), the LLM usage writer (Cell and Hive ``status.usage`` from the budget
  ledgers, at most once per ``usage.llm_min_interval``) and the garbage collector run as periodic
  loops that a change can wake early;
* every ``loop.resync_period`` all Hives and AgentSpecs are queued again (level-triggered: a
  missed event costs latency, never correctness);
* every ``pools.period`` the warm pools' traffic memory (:class:`WarmPools`, fed by every Drone
  change and the router's ``backlog``) requeues the ``hybrid`` Hives whose pools must come or go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from apiary.controllers.agentspec import AgentSpecReconciler
from apiary.controllers.cache import Informer, cancel_and_wait
from apiary.controllers.cellusage import CellUsageController
from apiary.controllers.events import EventRecorder
from apiary.controllers.gc import GarbageCollector
from apiary.controllers.hive import HiveReconciler
from apiary.controllers.llmusage import KIND as LEDGER_KIND
from apiary.controllers.llmusage import LlmUsageController
from apiary.controllers.meta import Obj, controller_ref
from apiary.controllers.nodes import NodeController
from apiary.controllers.pooltraffic import Backlog, WarmPools
from apiary.controllers.scheduler import Scheduler
from apiary.controllers.settings import QueenSettings
from apiary.controllers.templates import AUTOSCALER_ANNOTATION, hive_stages
from apiary.controllers.workqueue import WorkQueue
from apiary.errors import Conflict, Gone
from apiary.store import Change, Store

log = logging.getLogger("apiary.controllers")

Key = tuple[str, str, str]  # (kind, namespace, name)


def _key_fields(key: Key) -> dict[str, str]:
    """A key's log fields (``name`` is taken by the stdlib's LogRecord: ``object``)."""
    return {"kind": key[0], "cell": key[1], "object": key[2]}


class Queen:
    """All controllers over one store. ``run`` drives them; ``sync_once`` is one full pass."""

    def __init__(
        self, store: Store, settings: QueenSettings | None = None, backlog: Backlog | None = None
    ) -> None:
        self.store = store
        self.settings = settings or QueenSettings()
        self.events = EventRecorder(store, self.settings)
        self.drones = Informer(store, ("Drone",))
        """Every Drone, fed by the watch below while the Queen runs: a pass lists none."""
        self.pools = WarmPools(
            self.settings, self.drones, backlog, requeue=self._requeue_hive, store=store
        )
        """Traffic per stage, for hybrid warm pools (``backlog``: this replica's router's)."""
        self.hives = HiveReconciler(store, self.settings, self.events, self.drones, self.pools)
        self.agentspecs = AgentSpecReconciler(store, self.settings, self.events, self.drones)
        self.scheduler = Scheduler(store, self.settings, self.events)
        self.nodes = NodeController(store, self.settings, self.events)
        self.gc = GarbageCollector(store, self.settings)
        self.usage = CellUsageController(store, self.settings, self.drones)
        self.llm_usage = LlmUsageController(store)
        self.queue: WorkQueue[Key] = WorkQueue()
        self._kick_scheduler = asyncio.Event()
        self._kick_nodes = asyncio.Event()
        self._kick_usage = asyncio.Event()
        self._kick_llm_usage = asyncio.Event()
        self._failures: dict[Key, int] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._seen_generation: dict[Key, tuple[object, object, object]] = {}
        """(generation, deletionTimestamp) of each Hive/AgentSpec as last dispatched."""

    # ------------------------------------------------------------------ one pass

    async def reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        if kind == "Hive":
            await self.hives.reconcile(namespace, name)
        elif kind == "AgentSpec":
            await self.agentspecs.reconcile(namespace, name)
            for hive in (await self.store.list("Hive", namespace)).items:
                if _references(hive, name):
                    self.queue.add(("Hive", namespace, hive["metadata"]["name"]))
        elif kind == "Cell":
            await self._enqueue_all(name)

    async def sync_once(self) -> None:
        """Reconcile every Hive and AgentSpec, check leases, schedule, collect garbage — once,
        in that order. Tests and tools use it; the running Queen does the same continuously."""
        await self.pools.observe_all()
        for kind in ("AgentSpec", "Hive"):
            for obj in (await self.store.list(kind)).items:
                key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
                with contextlib.suppress(Conflict):  # another controller acted: next pass
                    await self.reconcile(key)
        await self.nodes.run_once()
        await self.scheduler.run_once()
        await self.usage.run_once()
        await self.llm_usage.run_once()
        await self.gc.run_once()

    def _requeue_hive(self, namespace: str, name: str) -> None:
        self.queue.add(("Hive", namespace, name))

    async def _enqueue_all(self, namespace: str | None = None) -> None:
        for kind in ("AgentSpec", "Hive"):
            for obj in (await self.store.list(kind, namespace)).items:
                self.queue.add((kind, obj["metadata"]["namespace"], obj["metadata"]["name"]))
        self._kick_scheduler.set()

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled); leaves no task behind."""
        loop = self.settings.loop
        tasks = [
            asyncio.create_task(self._watch(), name="queen-watch"),
            asyncio.create_task(self._resync(), name="queen-resync"),
            asyncio.create_task(
                self._periodic(
                    self.scheduler.run_once, self.settings.scheduler.period, self._kick_scheduler
                ),
                name="queen-scheduler",
            ),
            asyncio.create_task(
                self._periodic(
                    self.nodes.run_once, self.settings.nodes.monitor_period, self._kick_nodes
                ),
                name="queen-nodes",
            ),
            asyncio.create_task(
                self._periodic(
                    self.usage.run_once,
                    self.settings.usage.period,
                    self._kick_usage,
                    self.settings.usage.min_interval,
                ),
                name="queen-cell-usage",
            ),
            asyncio.create_task(
                self._periodic(
                    self.llm_usage.run_once,
                    self.settings.usage.period,
                    self._kick_llm_usage,
                    self.settings.usage.llm_min_interval,
                ),
                name="queen-llm-usage",
            ),
            asyncio.create_task(
                self._periodic(self.gc.run_once, self.settings.gc.period, None), name="queen-gc"
            ),
            asyncio.create_task(
                self._periodic(self.pools.run_once, self.settings.pools.period, None),
                name="queen-warm-pools",
            ),
        ]
        tasks += [
            asyncio.create_task(self._worker(), name=f"queen-worker-{i}")
            for i in range(max(1, loop.workers))
        ]
        try:
            if stop is None:
                await asyncio.gather(*tasks)
            else:
                await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            for task in tasks:  # 3.11's wait_for can swallow a cancel: cancel until it ends
                await cancel_and_wait(task)
            self.drones.invalidate()  # no watch feeds it now: passes list the store again

    async def _watch(self) -> None:
        while True:
            since = await self.store.resource_version()
            self._seen_generation.clear()  # everything is queued again below
            await self.drones.refresh()
            await self.pools.observe_all()
            await self._enqueue_all()
            self._kick_nodes.set()
            try:
                async for change in self.store.watch(since=since):
                    self.drones.apply(change)
                    self._dispatch(change)
            except Gone:
                log.info("watch fell behind the change log; listing everything again")
            except Exception:
                log.exception("watch failed; restarting")
                await asyncio.sleep(self.settings.loop.watch_restart_delay)

    def _dispatch(self, change: Change) -> None:
        obj = change.object
        kind = obj["kind"]
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        if kind in ("Hive", "AgentSpec"):
            if change.type != "MODIFIED":
                self._kick_usage.set()  # one more or one fewer to count
            key = (kind, namespace, meta["name"])
            if change.type == "DELETED":
                self._seen_generation.pop(key, None)
            else:
                # Labels, annotations and status writes (ours, the resolver's, the API's) do not
                # change what a Hive or AgentSpec asks for: only the spec (generation) and a
                # deletion do. Skipping the rest saved ~17 % of the server's CPU per update.
                # Drones report through their own events; the resync covers anything else.
                seen = (
                    meta.get("generation"),
                    meta.get("deletionTimestamp"),
                    (meta.get("annotations") or {}).get(AUTOSCALER_ANNOTATION),
                )
                if change.type == "MODIFIED" and self._seen_generation.get(key) == seen:
                    return
                self._seen_generation[key] = seen
            self.queue.add(key)
        elif kind == "Cell":
            self._kick_usage.set()
            # its status (``used``, written by this Queen) changes what no Hive asks for
            key = ("Cell", "", meta["name"])
            seen = (meta.get("generation"), meta.get("deletionTimestamp"), None)
            if change.type == "MODIFIED" and self._seen_generation.get(key) == seen:
                return
            self._seen_generation[key] = seen
            self.queue.add(key)
        elif kind == "Drone":
            self._kick_usage.set()
            self.pools.observe(obj, deleted=change.type == "DELETED")
            ref = controller_ref(obj)
            if ref is not None and ref.get("kind") in ("Hive", "AgentSpec"):
                self.queue.add((str(ref["kind"]), namespace, str(ref.get("name"))))
            if change.type == "DELETED" or not (obj.get("spec") or {}).get("nodeName"):
                self._kick_scheduler.set()
        elif kind == "Node":
            self._kick_scheduler.set()
            self._kick_nodes.set()
        elif kind == LEDGER_KIND:
            self._kick_llm_usage.set()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.loop.resync_period)
            await self._enqueue_all()

    async def _periodic(
        self,
        action: Callable[[], Awaitable[object]],
        period: float,
        kick: asyncio.Event | None,
        min_interval: float = 0.0,
    ) -> None:
        while True:
            try:
                await action()
            except Exception:
                log.exception(
                    "periodic action failed; retrying next period",
                    extra={"action": getattr(action, "__qualname__", repr(action))},
                )
            if kick is None:
                await asyncio.sleep(period)
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: it can drop a cancel (3.11)
                async with asyncio.timeout(period):
                    await kick.wait()
            if min_interval > 0:
                await asyncio.sleep(min_interval)  # the kicks of a burst share one pass
            kick.clear()

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
                self._failures.pop(key, None)
            except Conflict:
                # another controller changed the object under us: look again shortly
                log.debug("reconcile hit a conflict; requeued", extra=_key_fields(key))
                self._retry_later(key, self.settings.loop.retry_base_delay)
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(
                    self.settings.loop.retry_base_delay * 2 ** (failures - 1),
                    self.settings.loop.retry_max_delay,
                )
                log.exception(
                    "reconcile failed; retrying",
                    extra={**_key_fields(key), "failures": failures, "delay": delay},
                )
                self._retry_later(key, delay)
            finally:
                self.queue.done(key)

    def _retry_later(self, key: Key, delay: float) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self.queue.add(key)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)


def _references(hive: Obj, agentspec: str) -> bool:
    stages, _ = hive_stages(hive)
    return any(s.agent_ref == agentspec for s in stages)


async def run_controllers(
    store: Store,
    settings: QueenSettings | None = None,
    stop: asyncio.Event | None = None,
    backlog: Backlog | None = None,
) -> None:
    """Run every controller of the Queen against ``store`` until ``stop`` is set; ``backlog``
    (the router's per-stage count) tells hybrid warm pools about traffic at once."""
    await Queen(store, settings, backlog).run(stop)
