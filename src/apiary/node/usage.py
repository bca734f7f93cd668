"""Resource and traffic usage of the drones on this node, for ``Drone.status.usage``.

The node agent samples every running drone every few seconds (``NodeSettings.usage_seconds``) and
hands the result to the drone's runner, which folds it into its status; the
:class:`~apiary.node.runner.StatusWriter` then writes it with everything else. Nothing here runs
per message: the traffic half comes from the keeper's counters (:class:`KeeperStats`), the
resource half from one scan of the process table per sample, not one per drone.

``status.usage`` (all fields documented in docs/cli.md, ``apiaryctl top``):
``cpuMillicores``, ``memoryBytes``, ``messages``, ``failed``, ``inFlight``, ``latencyP50Ms``,
``latencyP99Ms`` (absent until a message was delivered), ``updatedTime``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psutil

from apiary.node.keeper import LATENCY_BUCKETS, KeeperStats

Obj = dict[str, Any]

CPU_NOISE_MILLICORES = 10
"""CPU changes smaller than this do not count as a change: an idle agent jitters by a few
millicores, and a write every few seconds per idle drone would load the API for nothing."""

MEMORY_NOISE_BYTES = 1 << 20
"""RSS changes smaller than this (1 MiB) do not count as a change, for the same reason."""


@dataclass(frozen=True)
class GroupUsage:
    """What one process group uses right now, summed over its processes."""

    cpu_millicores: int
    """CPU time per wall second x 1000 since the previous sample (psutil's ``cpu_percent`` x 10);
    0 for processes seen for the first time."""

    memory_bytes: int
    """Resident set size."""

    processes: int


class GroupSampler:
    """CPU and memory per process group, one pass over the process table per :meth:`sample`.

    Drones run in their own session and process group (the launcher's ``start_new_session``), so
    the group catches whatever the agent forks too. CPU is the growth of each process's user +
    system time between two samples over the wall time between them (``clock``, injectable);
    processes are keyed by pid and start time, so a recycled pid never inherits another
    process's counters. Blocking (it reads ``/proc``): run it in a thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[tuple[int, float], tuple[float, float]] = {}

    def sample(self, pgids: Collection[int]) -> dict[int, GroupUsage]:
        wanted = set(pgids)
        cpu: dict[int, float] = {g: 0.0 for g in wanted}
        rss: dict[int, int] = {g: 0 for g in wanted}
        count: dict[int, int] = {g: 0 for g in wanted}
        seen: dict[tuple[int, float], tuple[float, float]] = {}
        if not wanted:
            self._last = seen
            return {}
        for pid in psutil.pids():
            try:
                pgid = os.getpgid(pid)
                if pgid not in wanted:
                    continue
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    memory = proc.memory_info().rss
                    key = (pid, proc.create_time())
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue  # gone between the listing and the read, or not ours to read
            now = self._clock()
            used = float(times.user + times.system)
            seen[key] = (used, now)
            before = self._last.get(key)
            if before is not None and now > before[1]:
                cpu[pgid] += max(0.0, used - before[0]) / (now - before[1])
            rss[pgid] += int(memory)
            count[pgid] += 1
        self._last = seen
        return {g: GroupUsage(round(cpu[g] * 1000), rss[g], count[g]) for g in wanted if count[g]}


def latency_ms(stats: KeeperStats, q: float) -> float | None:
    """The ``q`` latency quantile in milliseconds (a bucket's upper bound); None before the first
    delivered message. Beyond the last bucket it is that bucket's bound: JSON has no infinity."""
    seconds = stats.quantile(q)
    if seconds is None:
        return None
    if math.isinf(seconds):
        seconds = LATENCY_BUCKETS[-1]
    return round(seconds * 1000, 3)


def drone_usage(stats: KeeperStats, group: GroupUsage | None) -> Obj:
    """``status.usage`` without its ``updatedTime``, from the keeper and a process sample."""
    usage: Obj = {
        "cpuMillicores": group.cpu_millicores if group is not None else 0,
        "memoryBytes": group.memory_bytes if group is not None else 0,
        "messages": stats.delivered,
        "failed": stats.failed,
        "inFlight": stats.in_flight,
    }
    for key, q in (("latencyP50Ms", 0.5), ("latencyP99Ms", 0.99)):
        value = latency_ms(stats, q)
        if value is not None:
            usage[key] = value
    return usage


def changed(old: Obj | None, new: Obj) -> bool:
    """Whether ``new`` is worth a status write over ``old`` (``updatedTime`` aside): any counter
    or latency that moved, or CPU / memory beyond their noise thresholds."""
    if old is None:
        return True
    for key in ("messages", "failed", "inFlight", "latencyP50Ms", "latencyP99Ms"):
        if old.get(key) != new.get(key):
            return True
    cpu_delta = abs(int(old.get("cpuMillicores") or 0) - int(new["cpuMillicores"]))
    if cpu_delta >= CPU_NOISE_MILLICORES:
        return True
    return abs(int(old.get("memoryBytes") or 0) - int(new["memoryBytes"])) >= MEMORY_NOISE_BYTES


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UsageTarget(Protocol):
    """What the reporter needs of a drone runner."""

    @property
    def pgid(self) -> int | None: ...

    @property
    def usage_stats(self) -> KeeperStats: ...

    def set_usage(self, usage: Obj) -> None: ...

    @property
    def usage(self) -> Obj | None: ...


def collect(
    targets: Iterable[UsageTarget],
    samples: dict[int, GroupUsage],
    wall: Callable[[], float] = time.time,
) -> int:
    """Give every running target its new usage when it changed; returns how many changed."""
    stamp = rfc3339(wall())
    n = 0
    for target in targets:
        pgid = target.pgid
        if pgid is None:
            continue
        new = drone_usage(target.usage_stats, samples.get(pgid))
        if changed(target.usage, new):
            target.set_usage({**new, "updatedTime": stamp})
            n += 1
    return n
