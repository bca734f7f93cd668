"""Node-side notices: what the Drone and Hive statuses say becomes ``crash_loop``,
``circuit_open`` and ``scaled`` notices (webhooks, Events, counters).

The router raises its notices on the message path; these three come from nowhere but the store:
the node agent writes a Drone's ``reason`` (``CrashLoopBackOff`` while it backs off between
crashes, ``CircuitOpen`` while its circuit breaker is open) and the Queen writes each Hive stage's
``wanted`` size. :class:`DroneNotices` follows the store's watch (plus a periodic re-list, so a
missed change costs latency, never the notice) and hands each *transition* to the
:class:`~apiary.server.notify.Notifier` — not each status write: the node rewrites a drone's
status many times while it stays in the same state, and a second leader, a resync or a replayed
watch must not send the same notice twice. So it remembers, per drone uid, the ``restartCount``
of the crash it last announced and whether its circuit was open, and per hive uid the wanted
size of each stage.

Why it runs on the leader only: every replica sees the same store, so every replica would send
the same webhook. What the first listing after start finds is taken as known (not announced): a
restart or a leader change must not replay every crash-looping drone of the cluster; a transition
that happens while no leader runs is lost (webhooks are best effort, the Events of the state
itself are in the Drone's status and conditions).

A drone of a hive notifies that hive (its ``spec.webhook`` and ``events`` filter, a Warning Event
on the Hive); a standalone drone (no hive) has no webhook: it gets the Warning Event on itself and
on its AgentSpec, and the counters. Every crash-loop and circuit notice is also a Warning Event on
the Drone itself, so ``apiaryctl describe drone`` shows it. See docs/notifications.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

from apiary.api.events import EventRecorder
from apiary.controllers.meta import controller_ref
from apiary.errors import ApiaryError, Gone
from apiary.logging import get_logger
from apiary.server.notify import MAX_EVENT_MESSAGE, Notifier
from apiary.store import Change, Store

log = get_logger("apiary.notify.drones")

Obj = dict[str, Any]

CRASH_LOOP_REASON = "CrashLoopBackOff"
CIRCUIT_OPEN_REASON = "CircuitOpen"
LABEL_HIVE = "apiary.io/hive"
LABEL_STAGE = "apiary.io/stage"

_VOLATILE = re.compile(r"; (?:restarting in|a trial message in) [0-9.]+s")
"""The parts of the node's messages that change on every write (the back-off delay, the
circuit's countdown): left out so repeats bump one Event instead of adding one per delay."""


@dataclass
class _DroneSeen:
    crash_restarts: int | None = None
    """``restartCount`` of the crash loop last announced (or seen at start); None: none yet."""
    circuit_open: bool = False


class DroneNotices:
    """Watches Drones and Hives and raises ``crash_loop``, ``circuit_open`` and ``scaled``."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        recorder: EventRecorder | None = None,
        resync_interval: float = 30.0,
        retry_delay: float = 1.0,
    ) -> None:
        if resync_interval <= 0:
            raise ValueError(f"resync_interval must be positive, got {resync_interval!r}")
        self.store = store
        self.notifier = notifier
        self.recorder = recorder or EventRecorder(store, component="apiary-drone-notices")
        self.resync_interval = resync_interval
        self.retry_delay = retry_delay
        self.rv = 0
        """The store version handled so far (tests wait on it with :meth:`caught_up`)."""
        self._drones: dict[str, _DroneSeen] = {}
        self._hives: dict[str, dict[str, int]] = {}
        self._seeded = False
        self._advanced = asyncio.Event()

    # ------------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the store until ``stop`` is set; leaves no task behind."""
        task = asyncio.create_task(self._follow_forever(), name="drone-notices")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stopper):
                t.cancel()
            for t in (task, stopper):
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _follow_forever(self) -> None:
        while True:
            try:
                since = await self.sync()
                await self._follow(since)
            except Gone:
                log.info("drone notices: watch too old, listing again")
            except ApiaryError as exc:  # the store is away: list again soon
                log.warning("drone notices: store error", error=str(exc))
                await asyncio.sleep(self.retry_delay)
            except Exception:  # a bug must not stop the leader's other controllers
                log.exception("drone notices failed; listing again")
                await asyncio.sleep(self.retry_delay)

    async def _follow(self, since: int) -> None:
        """Handle changes after ``since`` for one resync period, then return (to list again)."""
        # Store.watch is an async generator (typed as an iterator): close it when we stop.
        watch = cast(AsyncGenerator[Change, None], self.store.watch(since=since))
        async with contextlib.aclosing(watch):
            try:
                async with asyncio.timeout(self.resync_interval):
                    async for change in watch:
                        await self.apply(change)
            except TimeoutError:
                return

    async def caught_up(self, rv: int) -> None:
        """Wait until every change up to version ``rv`` has been handled."""
        while self.rv < rv:
            await self._advanced.wait()

    def _advance(self, rv: int) -> None:
        if rv > self.rv:
            self.rv = rv
            woken, self._advanced = self._advanced, asyncio.Event()
            woken.set()

    # ------------------------------------------------------------------ level-triggered

    async def sync(self) -> int:
        """List every Drone and Hive and act on what changed since last seen; the version to
        watch from. The first listing only learns: what it finds is not announced."""
        announce = self._seeded
        drones = await self.store.list("Drone")
        hives = await self.store.list("Hive")
        listed: set[str] = set()
        for drone in drones.items:
            listed.add(str(drone["metadata"].get("uid")))
            await self.observe_drone(drone, announce=announce)
        for uid in set(self._drones) - listed:
            del self._drones[uid]
        listed.clear()
        for hive in hives.items:
            listed.add(str(hive["metadata"].get("uid")))
            self.observe_hive(hive, announce=announce)
        for uid in set(self._hives) - listed:
            del self._hives[uid]
        self._seeded = True
        self._advance(drones.resource_version)
        return drones.resource_version

    async def apply(self, change: Change) -> None:
        """One change from the watch."""
        obj = change.object
        uid = str((obj.get("metadata") or {}).get("uid"))
        if change.kind == "Drone":
            if change.type == "DELETED":
                self._drones.pop(uid, None)
            else:
                await self.observe_drone(obj, announce=True)
        elif change.kind == "Hive":
            if change.type == "DELETED":
                self._hives.pop(uid, None)
            else:
                self.observe_hive(obj, announce=True)
        self._advance(change.rv)

    # ------------------------------------------------------------------------- drones

    async def observe_drone(self, drone: Obj, *, announce: bool) -> None:
        meta = drone.get("metadata") or {}
        status = drone.get("status")
        uid = meta.get("uid")
        if not uid or not isinstance(status, dict) or meta.get("deletionTimestamp"):
            return
        seen = self._drones.setdefault(str(uid), _DroneSeen())
        reason = status.get("reason")
        restarts = _count(status.get("restartCount"))
        if seen.crash_restarts is not None and restarts < seen.crash_restarts:
            seen.crash_restarts = None  # the count went back: a new node started it afresh
        if reason == CRASH_LOOP_REASON and seen.crash_restarts != restarts:
            seen.crash_restarts = restarts
            if announce:
                await self._announce(drone, "crash_loop", self._crash_detail(drone, status))
        is_open = reason == CIRCUIT_OPEN_REASON
        if is_open and not seen.circuit_open and announce:
            await self._announce(drone, "circuit_open", self._circuit_detail(drone, status))
        seen.circuit_open = is_open

    def _crash_detail(self, drone: Obj, status: Obj) -> Obj:
        detail = _base_detail(drone, status, CRASH_LOOP_REASON)
        detail["restartCount"] = _count(status.get("restartCount"))
        detail["exitCode"] = _int_or_none(status.get("exitCode"))
        if isinstance(status.get("signal"), int | str) and status.get("signal") != "":
            detail["signal"] = status["signal"]
        if isinstance(status.get("nextRestartAt"), str):
            detail["nextRestartAt"] = status["nextRestartAt"]
        return detail

    def _circuit_detail(self, drone: Obj, status: Obj) -> Obj:
        detail = _base_detail(drone, status, CIRCUIT_OPEN_REASON)
        detail["restartCount"] = _count(status.get("restartCount"))
        return detail

    async def _announce(self, drone: Obj, event: str, detail: Obj) -> None:
        """The notice (webhook and Hive Event through the notifier), and the Drone's own Event;
        a standalone drone's AgentSpec gets one too (it has no hive to carry it)."""
        meta = drone["metadata"]
        cell = str(meta.get("namespace") or "default")
        hive, _ = hive_and_stage(drone)
        self.notifier.notice(cell, hive or "", event, detail)
        reason, message = str(detail["reason"]), str(detail["message"])[:MAX_EVENT_MESSAGE]
        await self.recorder.try_record(drone, "Warning", reason, message)
        owner = controller_ref(drone)
        if not hive and owner is not None and owner.get("kind") == "AgentSpec":
            involved = {
                "kind": "AgentSpec",
                "metadata": {"name": owner.get("name"), "namespace": cell, "uid": owner.get("uid")},
            }
            text = f"drone {meta.get('name')}: {message}"[:MAX_EVENT_MESSAGE]
            await self.recorder.try_record(involved, "Warning", reason, text)
        log.info("drone notice", notice=event, cell=cell, drone=meta.get("name"), hive=hive)

    # -------------------------------------------------------------------------- hives

    def observe_hive(self, hive: Obj, *, announce: bool) -> None:
        meta = hive.get("metadata") or {}
        status = hive.get("status")
        uid = meta.get("uid")
        if not uid or not isinstance(status, dict) or meta.get("deletionTimestamp"):
            return
        stages = status.get("stages")
        if not isinstance(stages, list):
            return  # no stage sizes written yet (a new hive): nothing to compare
        before = self._hives.get(str(uid))
        wanted: dict[str, int] = {}
        for entry in stages:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            size = _int_or_none(entry.get("wanted"))
            if size is None or size < 0:  # unreadable: keep what we knew
                size = (before or {}).get(entry["name"])
            if size is not None:
                wanted[entry["name"]] = size
        self._hives[str(uid)] = wanted
        if before is None or not announce:
            return  # the first sizes seen are where the hive starts, not a scale
        changed = {
            name: {"from": before.get(name, 0), "to": wanted.get(name, 0)}
            for name in sorted(before.keys() | wanted.keys())
            if before.get(name, 0) != wanted.get(name, 0)
        }
        if not changed:
            return
        detail: Obj = {
            "stages": changed,
            "replicas": {"from": sum(before.values()), "to": sum(wanted.values())},
            "message": "; ".join(f"stage {n}: {c['from']} → {c['to']}" for n, c in changed.items()),
        }
        cell = str(meta.get("namespace") or "default")
        self.notifier.notice(cell, str(meta.get("name")), "scaled", detail)


def hive_and_stage(drone: Obj) -> tuple[str | None, str | None]:
    """The hive and stage a drone serves (its spec, as the node reads it, else its labels)."""
    spec = drone.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    labels = (drone.get("metadata") or {}).get("labels") or {}
    hive = spec.get("hive") or labels.get(LABEL_HIVE)
    stage = spec.get("stage") or labels.get(LABEL_STAGE)
    return (str(hive) if hive else None), (str(stage) if stage else None)


def stable_message(message: object, reason: str) -> str:
    """The node's message without its countdowns (the same crash reads the same each time)."""
    text = _VOLATILE.sub("", message) if isinstance(message, str) else ""
    return text.strip() or reason


def _base_detail(drone: Obj, status: Obj, reason: str) -> Obj:
    _, stage = hive_and_stage(drone)
    detail: Obj = {
        "drone": drone["metadata"].get("name"),
        "reason": reason,
        "message": stable_message(status.get("message"), reason),
    }
    if stage:
        detail["stage"] = stage
    if isinstance(status.get("nodeName"), str):
        detail["node"] = status["nodeName"]
    return detail


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: object) -> int:
    """A restart count as written by the node; anything else counts as 0."""
    number = _int_or_none(value)
    return number if number is not None and number >= 0 else 0
