"""Retries, dead letters, replay and approvals with real agents (docs/guardrails.md)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apiary.journal import Entry
from apiary.waggle import Message
from stack import Stack, agentspec, hive, is_ready, running_stack, session

from .test_router_stack import ECHO, finals

# An agent that answers `error` to its first FAIL_FIRST messages, then echoes (waggle format).
FLAKY = [
    sys.executable,
    "-c",
    """
import json, os, sys
left = int(os.environ.get("FAIL_FIRST", "0"))
for line in sys.stdin:
    msg = json.loads(line)
    if left > 0:
        left -= 1
        out = {"type": "error", "payload": {"message": "boom"}, "version": "1.0"}
    else:
        out = {"type": "result", "payload": "ok: " + str(msg["payload"]), "version": "1.0"}
    print(json.dumps(out), flush=True)
""",
]


@pytest.fixture
def cell() -> str:
    return f"p{id(object()) % 1000000}"


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell, messaging=True) as s:
        yield s


async def flaky_hive(stack: Stack, fail_first: int, max_retries: int, **stage: Any) -> None:
    spec = agentspec(stack.cell, "flaky", FLAKY, fmt="waggle")
    spec["spec"]["runtime"]["env"] = [{"name": "FAIL_FIRST", "value": str(fail_first)}]
    await stack.apply(spec)
    await stack.apply(agentspec(stack.cell, "echo", ECHO))
    h = hive(stack.cell, "h", [("flaky", "flaky", 1), ("echo", "echo", 1)])
    h["spec"]["routing"] = {"retryPolicy": {"maxRetries": max_retries, "initialDelaySeconds": 0.05,
                                            "maxDelaySeconds": 0.2}}  # fmt: skip
    h["spec"]["stages"][1].update(stage)
    await stack.apply(h)
    await stack.wait(lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 15, "ready")
    await asyncio.sleep(0.1)


async def events(stack: Stack, key: str) -> list[Entry]:
    assert stack.journal is not None
    return [e for e in await stack.journal.read(key) if e.kind == "event"]


async def test_failed_attempts_are_retried_with_backoff_until_one_succeeds(stack: Stack) -> None:
    await flaky_hive(stack, fail_first=2, max_retries=3)
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s", Message("x"))
    (final,) = await finals(stack, f"{stack.cell}/s", 1)
    assert final.kind == "final" and final.message["payload"] == "Echo: ok: x"
    failures = [e.message["payload"] for e in await events(stack, f"{stack.cell}/s")]
    assert [(f["reason"], f["attempt"]) for f in failures] == [("AgentError", 0), ("AgentError", 1)]


async def test_exhausted_retries_dead_letter_and_replay_succeeds_after_a_fix(
    stack: Stack,
) -> None:
    await flaky_hive(stack, fail_first=1000, max_retries=1)
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s", Message("x"))
    key = f"{stack.cell}/s"
    for _ in range(200):
        letters = (await stack.store.list("DeadLetter", stack.cell)).items
        if letters:
            break
        await asyncio.sleep(0.05)
    (letter,) = letters
    assert letter["spec"]["stage"] == "flaky" and letter["spec"]["attempts"] == 2
    assert letter["spec"]["reason"] == "AgentError"
    assert letter["spec"]["original"]["payload"] == "x"
    assert await finals(stack, key, 1, timeout=0.5) == []  # held: neither final nor failed
    # Fix the agent (a rolling update replaces the drone), then replay the dead letter.
    fixed = agentspec(stack.cell, "flaky", FLAKY, fmt="waggle")
    await stack.apply(fixed)
    await stack.wait(
        lambda ds: len(ds) == 2 and all(map(is_ready, ds))
        and all(not d["spec"]["runtime"].get("env") for d in ds),
        20, "fixed drone ready",
    )  # fmt: skip
    await asyncio.sleep(0.1)
    assert await stack.router.replay(stack.cell, "s", letter["spec"]["dispatch"])
    (final,) = await finals(stack, key, 1)
    assert final.kind == "final" and final.message["payload"] == "Echo: ok: x"


async def test_purged_dead_letter_fails_its_flow(stack: Stack) -> None:
    await flaky_hive(stack, fail_first=1000, max_retries=0)
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s", Message("x"))
    for _ in range(200):
        letters = (await stack.store.list("DeadLetter", stack.cell)).items
        if letters:
            break
        await asyncio.sleep(0.05)
    assert await stack.router.purge(stack.cell, "s", letters[0]["spec"]["dispatch"])
    (done,) = await finals(stack, f"{stack.cell}/s", 1)
    assert done.kind == "error" and done.message["payload"]["reason"] == "DeadLetterPurged"


async def test_approval_gate_holds_until_approved(stack: Stack) -> None:
    await flaky_hive(stack, fail_first=0, max_retries=0, approval="required")
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s", Message("x"))
    key = f"{stack.cell}/s"
    for _ in range(200):
        held = [e for e in await events(stack, key) if e.id.endswith("#held")]
        if held:
            break
        await asyncio.sleep(0.05)
    assert held and held[0].stage == "echo"
    assert await finals(stack, key, 1, timeout=0.5) == []
    assert await stack.router.approve(stack.cell, "s") == 1
    (final,) = await finals(stack, key, 1)
    assert final.message["payload"] == "Echo: ok: x"


async def test_rejected_approval_fails_the_flow(stack: Stack) -> None:
    await flaky_hive(stack, fail_first=0, max_retries=0, approval="required")
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s", Message("x"))
    key = f"{stack.cell}/s"
    for _ in range(200):
        if any(e.id.endswith("#held") for e in await events(stack, key)):
            break
        await asyncio.sleep(0.05)
    assert await stack.router.reject(stack.cell, "s", reason="not today") >= 1
    (done,) = await finals(stack, key, 1)
    assert done.kind == "error"
    assert done.message["payload"] == {"reason": "Rejected", "message": "not today"}
