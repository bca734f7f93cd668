"""Fixtures for the node tests: unique cells, a fake clock, and a guard against leaked processes.

Every drone a test starts carries ``APIARY_CELL`` in its environment, and its children inherit it,
so after each test the guard looks for live processes whose cell belongs to this test run —
including grandchildren that were re-parented away from pytest — and for children of pytest that
were left running. Anything found is killed and the test fails: the launcher promises to leave
nothing behind.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import psutil
import pytest

RUN_PREFIX = f"t{os.getpid()}-"
_counter = itertools.count()


@pytest.fixture
def cell() -> str:
    """A cell name unique to this test, marking the test's processes for the leak guard."""
    return f"{RUN_PREFIX}{next(_counter)}"


def _marked_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("APIARY_CELL", "").startswith(RUN_PREFIX):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _live_children(before: set[int]) -> list[psutil.Process]:
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + 3.0
    while True:
        stray = {p.pid: p for p in [*_marked_processes(), *_live_children(before)]}
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if stray:
        described = []
        for proc in stray.values():
            try:
                described.append(f"{proc.pid} {proc.cmdline()}")
                proc.kill()
            except psutil.Error:
                continue
        pytest.fail(f"test left processes running: {described}")


class FakeClock:
    """Wall clock and sleep for the supervisor: sleeping records the delay and advances time."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` on the event loop (real processes need real time), failing on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


@pytest.fixture
def waiter() -> Callable[..., object]:
    return wait_for


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start agent processes with piped stdin/stdout, as the launcher does; reap them after."""
    procs: list[asyncio.subprocess.Process] = []

    async def _spawn(*argv: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
