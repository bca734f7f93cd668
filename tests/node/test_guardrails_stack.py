"""Guardrails through a whole Apiary with real agent processes: each allowed, and blocked with
its documented effect (docs/guardrails.md) — schema violations retried then dead-lettered,
token budgets as hard stops, timeouts, rate limits that delay but lose nothing, the circuit
breaker in the drone's status, and a hive's queue limit answering 429."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiary.errors import TooManyRequests
from apiary.journal import Entry
from apiary.resources import ValidationFailed, admit
from apiary.waggle import Message
from stack import TOKEN, Stack, agentspec, hive, is_ready, running_stack, session

REPO = Path(__file__).resolve().parents[2]
SCHEMA_AGENT = [sys.executable, str(REPO / "examples/agents/schema_agent.py")]
SLOW = [sys.executable, str(REPO / "examples/agents/slow.py")]
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']
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
SEED_04_SCHEMA = {
    "type": "object",
    "properties": {"response": {"type": "string"}, "confidence": {"type": "number"}},
}
FAST_RETRIES = {"maxRetries": 1, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.1}


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell, messaging=True) as s:
        yield s


async def one_stage(stack: Stack, command: list[str], fmt: str = "waggle", replicas: int = 1,
                    env: dict[str, str] | None = None, routing: Any = None,
                    **guardrails: Any) -> None:  # fmt: skip
    spec = agentspec(stack.cell, "agent", command, fmt=fmt)
    if env:
        spec["spec"]["runtime"]["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if guardrails:
        spec["spec"]["guardrails"] = guardrails
    await stack.apply(spec)
    h = hive(stack.cell, "h", [("only", "agent", replicas)])
    h["spec"]["routing"] = routing or {"retryPolicy": FAST_RETRIES}
    await stack.apply(h)
    await stack.wait(lambda ds: len(ds) == replicas and all(map(is_ready, ds)), 20, "ready")
    await asyncio.sleep(0.1)  # workers subscribe right after Ready is reported


async def ask(stack: Stack, name: str, payload: Any) -> str:
    await stack.store.create(session(stack.cell, name, "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, name, Message(payload))
    return f"{stack.cell}/{name}"


async def ended(stack: Stack, key: str, timeout: float = 20.0) -> Entry:
    assert stack.journal is not None
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        done = await stack.journal.read(key, kinds={"final", "error"})
        if done:
            return done[0]
        newer = await stack.journal.wait(key, seen, 0.2)
        seen = newer[-1].seq if newer else seen
        await asyncio.sleep(0)
    entries = [(e.kind, e.stage, e.message.get("payload")) for e in await stack.journal.read(key)]
    pytest.fail(f"session {key} did not end within {timeout}s: {entries}")


async def dead_letter(stack: Stack, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        letters = (await stack.store.list("DeadLetter", stack.cell)).items
        if letters:
            return dict(letters[0]["spec"])
        await asyncio.sleep(0.05)
    pytest.fail("no dead letter")


async def failures(stack: Stack, key: str) -> list[tuple[str, int]]:
    assert stack.journal is not None
    notes = [e.message["payload"] for e in await stack.journal.read(key) if e.kind == "event"]
    return [(n["reason"], n["attempt"]) for n in notes if "reason" in n]


# ------------------------------------------------------------------------------ outputSchema


async def test_output_matching_the_schema_passes(stack: Stack) -> None:
    await one_stage(stack, SCHEMA_AGENT, outputSchema=SEED_04_SCHEMA)
    done = await ended(stack, await ask(stack, "s", "what is apiary"))
    assert done.kind == "final"
    assert done.message["payload"]["response"] == "You asked about: what is apiary"


async def test_schema_violation_is_retried_then_dead_lettered(stack: Stack) -> None:
    await one_stage(stack, ECHO, fmt="text", outputSchema=SEED_04_SCHEMA)
    key = await ask(stack, "s", "x")
    letter = await dead_letter(stack)
    assert (letter["reason"], letter["attempts"]) == ("OutputSchemaViolation", 2)
    assert letter["message"] == "payload: 'Echo: x' is not of type 'object'"
    assert await failures(stack, key) == [("OutputSchemaViolation", 0),
                                          ("OutputSchemaViolation", 1)]  # fmt: skip


# ------------------------------------------------------------------------------ token budgets


async def test_answer_within_the_per_request_budget_passes(stack: Stack) -> None:
    await one_stage(stack, SCHEMA_AGENT, tokenBudgetPerRequest=10)  # "a b c": 3 + 7 tokens
    done = await ended(stack, await ask(stack, "s", "a b c"))
    assert done.kind == "final"


async def test_answer_over_the_per_request_budget_fails_the_session_without_retry(
    stack: Stack,
) -> None:
    await one_stage(stack, SCHEMA_AGENT, tokenBudgetPerRequest=9)
    key = await ask(stack, "s", "a b c")
    done = await ended(stack, key)
    assert done.kind == "error"
    assert done.message["payload"] == {
        "reason": "TokenBudgetExceeded",
        "message": "the answer used 10 tokens, over tokenBudgetPerRequest 9",
    }
    assert await failures(stack, key) == []  # a hard stop: no retry
    assert (await stack.store.list("DeadLetter", stack.cell)).items == []


# ---------------------------------------------------------------------------------- timeout


async def test_answer_within_the_response_timeout_passes(stack: Stack) -> None:
    await one_stage(stack, SLOW, env={"SLOW_SECONDS": "0.1"}, responseTimeoutSeconds=5)
    done = await ended(stack, await ask(stack, "s", "x"))
    assert (done.kind, done.message["payload"]) == ("final", "x")


async def test_response_timeout_is_retried_then_dead_lettered(stack: Stack) -> None:
    await one_stage(stack, SLOW, env={"SLOW_SECONDS": "1"}, responseTimeoutSeconds=0.2)
    key = await ask(stack, "s", "x")
    letter = await dead_letter(stack)
    assert (letter["reason"], letter["attempts"]) == ("ResponseTimeout", 2)
    assert [r for r, _ in await failures(stack, key)] == ["ResponseTimeout", "ResponseTimeout"]


# ------------------------------------------------------------------------------- rate limit


async def test_rate_limited_drone_answers_everything_just_later(stack: Stack) -> None:
    await one_stage(stack, ECHO, fmt="text", rateLimitPerMinute=120)  # burst 2, then 2/s
    t0 = time.monotonic()
    keys = [await ask(stack, f"s{i}", f"m{i}") for i in range(4)]
    done = [await ended(stack, k) for k in keys]
    assert [d.message["payload"] for d in done] == [f"Echo: m{i}" for i in range(4)]
    assert time.monotonic() - t0 >= 0.9  # two waited for tokens, in the queue


# -------------------------------------------------------------------------- circuit breaker


async def test_circuit_opens_shows_in_the_drone_status_then_closes_after_a_good_trial(
    stack: Stack,
) -> None:
    retries = {"maxRetries": 3, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.1}
    breaker = {"failureThreshold": 2, "resetTimeoutSeconds": 1}
    await one_stage(stack, FLAKY, env={"FAIL_FIRST": "2"}, routing={"retryPolicy": retries},
                    circuitBreaker=breaker)  # fmt: skip
    key = await ask(stack, "s", "x")

    def tripped(ds: list[dict[str, Any]]) -> bool:
        st = ds[0].get("status") or {}
        return st.get("reason") == "CircuitOpen"

    (drone,) = await stack.wait(tripped, 10, "CircuitOpen")
    st = drone["status"]
    assert st["ready"] is False and st["phase"] == "Running"
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CircuitOpen")
    done = await ended(stack, key)  # the third attempt waited for the half-open trial
    assert (done.kind, done.message["payload"]) == ("final", "ok: x")
    assert await failures(stack, key) == [("AgentError", 0), ("AgentError", 1)]
    await stack.wait(lambda ds: is_ready(ds[0]) and not ds[0]["status"].get("reason"), 10,
                     "ready again")  # fmt: skip


# ------------------------------------------------------------------------------ queue limit


def test_queue_limit_is_a_positive_integer_on_the_hive_routing() -> None:
    h = hive("c", "h", [("a", "a", 1)])
    h["spec"]["routing"] = {"queueLimit": 100}
    assert admit(h, strict=True).warnings == []
    h["spec"]["routing"] = {"queueLimit": 0}
    with pytest.raises(ValidationFailed) as info:
        admit(h)
    assert [f for f, _ in info.value.details] == ["spec.routing.queueLimit"]


async def test_queue_limit_refuses_inputs_with_429_until_the_queue_drains(stack: Stack) -> None:
    await one_stage(stack, SLOW, env={"SLOW_SECONDS": "0.4"},
                    routing={"queueLimit": 2})  # fmt: skip
    first = [await ask(stack, f"s{i}", f"m{i}") for i in range(2)]
    with pytest.raises(TooManyRequests, match="queue limit of 2"):
        await ask(stack, "s2", "m2")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=auth) as http:
        answer = await http.post(
            f"/api/v1/cells/{stack.cell}/sessions/s2/messages", json={"payload": "m2"}
        )
    assert answer.status_code == 429, answer.text
    assert answer.json()["details"][0]["field"] == "spec.routing.queueLimit"
    for key in first:
        assert (await ended(stack, key)).kind == "final"
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s2", Message("m2"))  # room again
    assert (await ended(stack, f"{stack.cell}/s2")).message["payload"] == "m2"
