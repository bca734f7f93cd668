"""Cluster-state metrics, read at scrape time from what the store and the router already hold.

Why at scrape time: drones, dead letters and approvals are objects in the store, and what a node
knows of a drone (phase, restarts, in flight, CPU, memory) already travels to the API in its
``status`` — so remote nodes need no port of their own for it. A scrape lists Drones, DeadLetters,
Sessions and Hives once (no more often than :attr:`ClusterSettings.min_interval`) and the
collector renders that snapshot; the router's backlog is read as it is at that moment.

These gauges describe the cluster, not the process: with several apiaryd replicas each reports the
same values (aggregate with ``max``, not ``sum``), except the backlog, which is per replica.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apiary.api.dlq import HIVE_LABEL, PENDING, REPLAYED, phase_of
from apiary.controllers.autoscaler import read_history
from apiary.store import Store

Obj = dict[str, Any]
Backlog = Callable[[], dict[tuple[str, str, str], int]]


@dataclass
class ClusterSettings:
    """How the cluster-state snapshot is taken."""

    min_interval: float = 5.0
    """Seconds a snapshot is reused: scrapes closer together than this read no store."""

    page: int = 1000
    """Objects per list call while taking a snapshot."""


@dataclass
class Snapshot:
    """What one refresh counted (label tuples → values)."""

    drone_phases: Tally[tuple[str, ...]] = field(default_factory=Tally)
    drones: list[tuple[tuple[str, ...], Obj]] = field(default_factory=list)
    """(cell, hive, stage, drone) → the drone's status, for per-drone series."""
    dead_letters: Tally[tuple[str, ...]] = field(default_factory=Tally)
    sessions: Tally[tuple[str, ...]] = field(default_factory=Tally)
    approvals: Tally[tuple[str, ...]] = field(default_factory=Tally)
    autoscaled: dict[tuple[str, ...], float] = field(default_factory=dict)
    taken: float | None = None
    """When it was taken (the collector's clock); None: never."""
    seconds: float = 0.0


class ClusterCollector(Collector):
    """Renders the last :class:`Snapshot` and the router's backlog."""

    def __init__(
        self,
        store: Store,
        backlog: Backlog | None = None,
        settings: ClusterSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.backlog = backlog
        self.settings = settings or ClusterSettings()
        self.clock = clock
        self.snapshot = Snapshot()
        self._taking = asyncio.Lock()

    async def refresh(self) -> None:
        """Take a new snapshot unless the last is younger than ``min_interval`` (scrapes at the
        same moment wait for one snapshot instead of each taking its own)."""
        async with self._taking:
            now = self.clock()
            taken = self.snapshot.taken
            if taken is not None and now - taken < self.settings.min_interval:
                return
            await self._take(now)

    async def _take(self, now: float) -> None:
        snap = Snapshot(taken=now)
        async for d in self._all("Drone"):
            spec, status = d.get("spec") or {}, d.get("status") or {}
            where = (_cell(d), str(spec.get("hive") or ""), str(spec.get("stage") or ""))
            phase = str(status.get("phase") or "Pending")
            if phase == "Running" and spec.get("warm") is True:
                phase = "Warm"  # a warm pool's drone: started, no traffic until claimed
            snap.drone_phases[(*where, phase)] += 1
            snap.drones.append(((*where, d["metadata"]["name"]), status))
        async for dl in self._all("DeadLetter"):
            phase = phase_of(dl)
            if phase in (PENDING, REPLAYED):
                hive = ((dl.get("metadata") or {}).get("labels") or {}).get(HIVE_LABEL, "")
                snap.dead_letters[(_cell(dl), str(hive), phase)] += 1
        async for s in self._all("Session"):
            hive = str((s.get("spec") or {}).get("hiveRef") or "")
            status = s.get("status") or {}
            snap.sessions[(_cell(s), hive, str(status.get("phase") or "Pending"))] += 1
            for stage in str(status.get("pendingApproval") or "").split(","):
                if stage:
                    snap.approvals[(_cell(s), hive, stage)] += 1
        async for h in self._all("Hive"):
            for stage, entry in read_history(h).items():
                if isinstance(entry, dict) and isinstance(entry.get("replicas"), int):
                    snap.autoscaled[(_cell(h), h["metadata"]["name"], stage)] = entry["replicas"]
        snap.seconds = self.clock() - now
        self.snapshot = snap

    async def _all(self, kind: str) -> Any:
        token: str | None = None
        while True:
            page = await self.store.list(kind, None, limit=self.settings.page, continue_token=token)
            for obj in page.items:
                yield obj
            token = page.continue_token
            if not token:
                return

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        stage = ["cell", "hive", "stage"]
        yield _gauge("apiary_drones", "drones by phase", [*stage, "phase"], snap.drone_phases)
        restarts = CounterMetricFamily(
            "apiary_drone_restarts", "restarts of a live drone's agent process",
            labels=[*stage, "drone"],
        )  # fmt: skip
        in_flight = GaugeMetricFamily(
            "apiary_drone_in_flight_messages", "messages a drone is working on",
            labels=[*stage, "drone"],
        )  # fmt: skip
        cpu = GaugeMetricFamily(
            "apiary_drone_cpu_cores", "CPU a drone's processes use, in cores (node sample)",
            labels=[*stage, "drone"],
        )  # fmt: skip
        memory = GaugeMetricFamily(
            "apiary_drone_memory_bytes", "resident memory of a drone's processes (node sample)",
            labels=[*stage, "drone"],
        )  # fmt: skip
        for labels, status in snap.drones:
            restarts.add_metric(list(labels), float(status.get("restartCount") or 0))
            usage = status.get("usage") or {}
            if "inFlight" in usage:
                in_flight.add_metric(list(labels), float(usage["inFlight"]))
            if "cpuMillicores" in usage:
                cpu.add_metric(list(labels), float(usage["cpuMillicores"]) / 1000.0)
            if "memoryBytes" in usage:
                memory.add_metric(list(labels), float(usage["memoryBytes"]))
        yield from (restarts, in_flight, cpu, memory)
        yield _gauge(
            "apiary_dead_letters_open", "dead letters waiting for a replay or purge, by phase",
            ["cell", "hive", "phase"], snap.dead_letters,
        )  # fmt: skip
        yield _gauge("apiary_sessions", "sessions by phase", ["cell", "hive", "phase"],
                     snap.sessions)  # fmt: skip
        yield _gauge(
            "apiary_approvals_waiting", "sessions holding a dispatch of the stage for a human",
            stage, snap.approvals,
        )  # fmt: skip
        yield _gauge(
            "apiary_autoscaler_desired_replicas", "replicas the autoscaler last chose for a stage",
            stage, snap.autoscaled,
        )  # fmt: skip
        backlog = self.backlog() if self.backlog is not None else {}
        yield _gauge(
            "apiary_stage_backlog_messages",
            "dispatches published and not yet answered (queued or being worked on), this replica",
            stage, backlog,
        )  # fmt: skip
        took = GaugeMetricFamily(
            "apiary_cluster_snapshot_duration_seconds", "how long the last store snapshot took"
        )
        took.add_metric([], snap.seconds)
        yield took


def _gauge(name: str, doc: str, labels: list[str], values: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), float(value))
    return family


def _cell(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")
