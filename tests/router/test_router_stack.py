"""The router with real drones: sessions through a pipeline of real agent processes over the
in-process bus, recorded in the journal — right answers, none lost, none duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from apiary.journal import Entry
from apiary.waggle import Message
from stack import Stack, agentspec, hive, is_ready, running_stack, session

REPO = Path(__file__).resolve().parents[2]
UPPER = [sys.executable, str(REPO / "examples/agents/upper.py")]
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']
SLOW_ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do sleep 0.2; echo "Echo: $line"; done']


@pytest.fixture
def cell() -> str:
    return f"r{os.getpid()}-{id(object()) % 100000}"


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell, messaging=True) as s:
        yield s


async def finals(stack: Stack, key: str, inputs: int, timeout: float = 30.0) -> list[Entry]:
    assert stack.journal is not None
    deadline = asyncio.get_running_loop().time() + timeout
    seen = 0
    while True:
        done = await stack.journal.read(key, kinds={"final", "error"}, limit=10_000)
        if len(done) >= inputs or asyncio.get_running_loop().time() > deadline:
            return done
        newer = await stack.journal.wait(key, seen, 0.2)
        seen = newer[-1].seq if newer else seen


async def two_stage_pipeline(stack: Stack, replicas: int, second: list[str] = ECHO) -> None:
    await stack.apply(agentspec(stack.cell, "upper", UPPER, fmt="waggle"))
    await stack.apply(agentspec(stack.cell, "echo", second))
    await stack.apply(
        hive(stack.cell, "p", [("shout", "upper", replicas), ("echo", "echo", replicas)])
    )
    await stack.wait(lambda ds: len(ds) == 2 * replicas and all(map(is_ready, ds)), 15, "ready")
    await asyncio.sleep(0.1)  # workers subscribe right after Ready is reported


async def test_a_message_goes_through_the_stages_in_order(stack: Stack) -> None:
    await two_stage_pipeline(stack, 1)
    await stack.store.create(session(stack.cell, "s1", "p"))
    assert stack.router is not None
    sent = await stack.router.submit(stack.cell, "s1", Message("hello"))
    (final,) = await finals(stack, f"{stack.cell}/s1", 1)
    assert final.kind == "final"
    assert final.message["payload"] == "Echo: HELLO"
    assert final.parent == sent.id
    transcript = await stack.journal.read(f"{stack.cell}/s1")  # type: ignore[union-attr]
    outputs = [e for e in transcript if e.kind == "output"]
    assert [e.stage for e in outputs] == ["shout", "echo"]
    assert all(e.drone and e.latency_ms is not None for e in outputs)


async def test_many_sessions_concurrently_none_lost_none_duplicated(stack: Stack) -> None:
    await two_stage_pipeline(stack, 2)
    assert stack.router is not None
    n = 200
    for i in range(n):
        await stack.store.create(session(stack.cell, f"s{i}", "p"))
    await asyncio.gather(
        *(stack.router.submit(stack.cell, f"s{i}", Message(f"m{i}")) for i in range(n))
    )
    results = await asyncio.gather(*(finals(stack, f"{stack.cell}/s{i}", 1) for i in range(n)))
    for i, got in enumerate(results):
        assert [e.message["payload"] for e in got] == [f"Echo: M{i}"], i
    # Both replicas of each stage took work.
    drones_used = set()
    for i in range(n):
        for e in await stack.journal.read(f"{stack.cell}/s{i}", kinds={"output"}):  # type: ignore[union-attr]
            drones_used.add(e.drone)
    assert len(drones_used) == 4


async def test_killed_drone_mid_run_its_messages_finish_elsewhere_once(stack: Stack) -> None:
    await two_stage_pipeline(stack, 2, second=SLOW_ECHO)
    assert stack.router is not None
    n = 20
    for i in range(n):
        await stack.store.create(session(stack.cell, f"k{i}", "p"))
    await asyncio.gather(
        *(stack.router.submit(stack.cell, f"k{i}", Message(f"m{i}")) for i in range(n))
    )
    await asyncio.sleep(0.3)  # the slow echo stage is busy now
    victim = next(d for d in await stack.drones() if d["spec"]["stage"] == "echo" and is_ready(d))
    os.kill(victim["status"]["pid"], signal.SIGKILL)
    results = await asyncio.gather(
        *(finals(stack, f"{stack.cell}/k{i}", 1, timeout=60) for i in range(n))
    )
    for i, got in enumerate(results):
        assert [e.message["payload"] for e in got] == [f"Echo: M{i}"], i


async def test_an_input_sent_again_after_its_session_ended_is_not_a_conflict(stack: Stack) -> None:
    """A client that retries an input (a job's Idempotency-Key retry) after the session already
    answered and ended gets the input back, as for any duplicate; a new input is refused."""
    from apiary.errors import Conflict

    await two_stage_pipeline(stack, 1)
    await stack.store.create(session(stack.cell, "s1", "p"))
    assert stack.router is not None and stack.journal is not None
    sent = await stack.router.submit(stack.cell, "s1", Message("hello", id="in-1"))
    await finals(stack, f"{stack.cell}/s1", 1)
    obj = await stack.store.get("Session", stack.cell, "s1")
    obj["status"] = {**obj.get("status", {}), "phase": "Closed"}
    await stack.store.update(obj, subresource="status")
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the router's session directory follows the store
        try:
            await stack.router.submit(stack.cell, "s1", Message("new"))
        except Conflict:
            break
        assert asyncio.get_running_loop().time() < deadline, "the ended session took an input"
        await asyncio.sleep(0.05)
    before = await stack.journal.read(f"{stack.cell}/s1", limit=10_000)
    again = await stack.router.submit(stack.cell, "s1", Message("hello", id="in-1"))
    assert again.id == sent.id
    assert await stack.journal.read(f"{stack.cell}/s1", limit=10_000) == before


async def test_an_input_id_the_server_made_is_not_looked_up_in_the_journal(stack: Stack) -> None:
    """``fresh``: no session can hold an id this server made just now, so the router skips the
    journal read that catches a client's re-send (issue 12: one read less per message); a
    client's id is still looked up, and its re-send still runs once."""
    await two_stage_pipeline(stack, 1)
    await stack.store.create(session(stack.cell, "s1", "p"))
    assert stack.router is not None and stack.journal is not None
    journal = stack.journal
    asked: list[str] = []
    real_get = journal.get

    async def counting_get(session: str, entry_id: str) -> Entry | None:
        asked.append(entry_id)
        return await real_get(session, entry_id)

    journal.get = counting_get  # type: ignore[method-assign]
    try:
        fresh = await stack.router.submit(stack.cell, "s1", Message("one"), fresh=True)
        assert asked == []
        chosen = await stack.router.submit(stack.cell, "s1", Message("two", id="c-2"))
        assert asked == ["c-2"]
        await stack.router.submit(stack.cell, "s1", Message("two", id="c-2"))  # a re-send
    finally:
        del journal.get
    done = await finals(stack, f"{stack.cell}/s1", 2)
    assert sorted(e.parent or "" for e in done) == sorted([fresh.id, chosen.id])
