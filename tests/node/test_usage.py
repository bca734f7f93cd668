"""Drone usage: process-group sampling, the usage document, and the node agent writing it into
``Drone.status.usage`` for a real drone that handled real messages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from apiary.node.keeper import KeeperStats
from apiary.node.usage import GroupSampler, GroupUsage, changed, collect, drone_usage, latency_ms
from apiary.waggle import Message
from stack import Stack, agentspec, hive, is_ready, running_stack

Obj = dict[str, Any]
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']
BURN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    """A process group of two: a shell that forks a sleeper, then becomes a CPU burner."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f'sleep 30 & exec {sys.executable} -c "{BURN}"'],
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sampler_sums_the_group_and_measures_cpu_against_its_clock(
    burner: subprocess.Popen[bytes],
) -> None:
    now = [100.0]
    sampler = GroupSampler(clock=lambda: now[0])
    deadline = time.monotonic() + 5
    while True:  # until the shell has forked the sleeper and exec'd python
        first = sampler.sample([burner.pid, 999_999_999])
        if first and first[burner.pid].processes == 2:
            break
        assert time.monotonic() < deadline, first
        time.sleep(0.02)
    assert set(first) == {burner.pid}  # a group with no process is left out
    assert first[burner.pid].cpu_millicores == 0  # nothing to compare with yet
    time.sleep(0.3)
    now[0] += 1.0  # the clock says one second passed: ~0.3 s of CPU in it is ~300 m
    second = sampler.sample([burner.pid])[burner.pid]
    assert 100 <= second.cpu_millicores <= 600, second
    assert second.memory_bytes > 5 << 20  # a python interpreter plus a sleep
    assert second.processes == 2
    assert sampler.sample([]) == {}


def test_usage_document_from_keeper_stats() -> None:
    stats = KeeperStats()
    assert latency_ms(stats, 0.5) is None
    empty = drone_usage(stats, None)
    assert empty == {"cpuMillicores": 0, "memoryBytes": 0, "messages": 0, "failed": 0,
                     "inFlight": 0}  # fmt: skip
    for seconds in [0.003] * 98 + [0.2, 120.0]:
        stats.observe(seconds)
    stats.delivered, stats.failed, stats.in_flight = 100, 2, 1
    usage = drone_usage(stats, GroupUsage(cpu_millicores=250, memory_bytes=1 << 24, processes=1))
    assert usage == {
        "cpuMillicores": 250, "memoryBytes": 1 << 24, "messages": 100, "failed": 2,
        "inFlight": 1, "latencyP50Ms": 5.0, "latencyP99Ms": 250.0,
    }  # fmt: skip
    stats.observe(120.0)
    stats.observe(120.0)
    assert latency_ms(stats, 0.99) == 60_000.0  # beyond the last bucket: its bound, not inf


def test_only_real_changes_count() -> None:
    base = {"cpuMillicores": 100, "memoryBytes": 50 << 20, "messages": 3, "failed": 0,
            "inFlight": 0, "latencyP50Ms": 1.0}  # fmt: skip
    assert changed(None, base)
    assert not changed(base, dict(base))
    assert not changed(base, {**base, "cpuMillicores": 105, "memoryBytes": (50 << 20) + 4096})
    assert changed(base, {**base, "cpuMillicores": 110})
    assert changed(base, {**base, "memoryBytes": 52 << 20})
    assert changed(base, {**base, "messages": 4})
    assert changed(base, {**base, "latencyP99Ms": 2.5})


class Target:
    def __init__(self, pgid: int | None) -> None:
        self.pgid = pgid
        self.usage_stats = KeeperStats()
        self.usage: Obj | None = None
        self.sets = 0

    def set_usage(self, usage: Obj) -> None:
        self.usage = usage
        self.sets += 1


def test_collect_sets_usage_only_when_changed_and_only_for_running_targets() -> None:
    running, stopped = Target(4242), Target(None)
    sample = {4242: GroupUsage(cpu_millicores=30, memory_bytes=10 << 20, processes=1)}
    assert collect([running, stopped], sample, wall=lambda: 0.0) == 1
    assert running.usage is not None and running.usage["updatedTime"] == "1970-01-01T00:00:00Z"
    assert stopped.usage is None
    assert collect([running, stopped], sample, wall=lambda: 5.0) == 0
    running.usage_stats.delivered = 1
    assert collect([running], sample, wall=lambda: 10.0) == 1
    assert running.usage["messages"] == 1
    assert running.usage["updatedTime"] == "1970-01-01T00:00:10Z"
    assert running.sets == 2


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell) as s:
        s.node.settings.usage_seconds = 0.1  # before the node's tasks first run
        yield s


def _usage(drone: Obj) -> Obj:
    return dict((drone.get("status") or {}).get("usage") or {})


async def test_a_drone_that_handled_messages_reports_them_in_its_status(stack: Stack) -> None:
    await stack.apply(agentspec(stack.cell, "echo-agent", ECHO))
    await stack.apply(hive(stack.cell, "echoes", [("echo", "echo-agent", 1)]))
    (drone,) = await stack.wait(lambda ds: len(ds) == 1 and is_ready(ds[0]), 5, "ready")
    name = drone["metadata"]["name"]
    runner = stack.node.find(stack.cell, name)
    assert runner is not None
    for i in range(5):
        out = await runner.keeper.deliver(Message(f"m{i}"), timeout=5)
        assert out[-1].payload == f"Echo: m{i}"
    (drone,) = await stack.wait(
        lambda ds: _usage(ds[0]).get("messages") == 5, 5, "usage with 5 messages"
    )
    usage = _usage(drone)
    assert usage["failed"] == 0 and usage["inFlight"] == 0
    assert 0 < usage["latencyP50Ms"] <= usage["latencyP99Ms"]
    assert usage["memoryBytes"] > 0  # the shell's RSS
    assert usage["cpuMillicores"] >= 0
    assert usage["updatedTime"].endswith("Z")
    assert drone["status"]["phase"] == "Running" and drone["status"]["ready"] is True
    # Nothing changed since: a new sample writes nothing.
    rv = drone["metadata"]["resourceVersion"]
    assert await stack.node.report_usage() == 0
    await asyncio.sleep(0.3)  # three more periodic samples
    (again,) = await stack.drones()
    assert again["metadata"]["resourceVersion"] == rv


def test_the_sampling_period_comes_from_the_environment_and_bad_values_fall_back() -> None:
    from apiary.node.agent import _usage_seconds

    assert _usage_seconds({}) == 5.0
    assert _usage_seconds({"APIARY_NODE_USAGE_SECONDS": "0.5"}) == 0.5
    for bad in ("soon", "0", "-1", "1e9", "nan"):
        assert _usage_seconds({"APIARY_NODE_USAGE_SECONDS": bad}) == 5.0, bad
