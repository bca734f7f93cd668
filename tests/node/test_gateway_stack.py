"""The LLM gateway end to end: a whole Apiary (tests/stack.py) runs examples/agents/llm_agent.py
as a real process; it asks the node's gateway, which forwards to the fake provider on loopback.
Budgets are enforced by the node and the router: the session's flows fail with
``TokenBudgetExceeded`` and the tokens spent stay within the budget (a call that does not fit is
refused before it is sent). With apiaryd's
metered router, the tokens are counted, and priced, under the model the provider answered with."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_gateway import ANSWERED, RenamingFake

import stack as stack_module
from apiary.journal import Entry
from apiary.router.status import SessionStatusWriter
from apiary.telemetry.metrics import Recorder
from apiary.telemetry.taps import MeteredRouter
from apiary.waggle import Message
from fakes import openai_server
from fakes.openai_server import FakeOpenAI, running_fake_openai
from stack import Stack, agentspec, hive, is_ready, running_stack, session

LLM_AGENT = [sys.executable, str(Path(__file__).parents[2] / "examples/agents/llm_agent.py")]
CALL = 15  # tokens the fake provider charges per chat completion (10 prompt + 5 completion)


@contextlib.asynccontextmanager
async def _world(tmp_path: Path, cell: str) -> AsyncIterator[tuple[Stack, FakeOpenAI]]:
    async with running_fake_openai() as fake, running_stack(tmp_path, cell, messaging=True) as s:
        assert s.router is not None and s.journal is not None
        s.router.on_status = SessionStatusWriter(s.store, s.journal).update
        await s.apply({
            "apiVersion": "apiary.io/v1", "kind": "Secret",
            "metadata": {"name": "provider", "namespace": cell},
            "stringData": {"baseUrl": fake.url, "apiKey": fake.api_key},
        })  # fmt: skip
        yield s, fake


@pytest.fixture
async def world(tmp_path: Path, cell: str) -> AsyncIterator[tuple[Stack, FakeOpenAI]]:
    async with _world(tmp_path, cell) as found:
        yield found


@pytest.fixture
async def metered(
    tmp_path: Path, cell: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Stack, Recorder]]:
    """The stack with apiaryd's :class:`MeteredRouter` (its own recorder) and a provider that
    answers as :data:`ANSWERED` whatever model it is asked for."""
    recorder = Recorder()
    monkeypatch.setattr(stack_module, "Router", functools.partial(MeteredRouter, metrics=recorder))
    monkeypatch.setattr(openai_server, "FakeOpenAI", RenamingFake)
    async with _world(tmp_path, cell) as (s, _):
        yield s, recorder


async def llm_hive(
    stack: Stack,
    env: dict[str, str] | None = None,
    guardrails: dict[str, Any] | None = None,
    hive_guardrails: dict[str, Any] | None = None,
) -> None:
    agent = agentspec(stack.cell, "writer", LLM_AGENT, fmt="waggle")
    agent["spec"]["llm"] = {"provider": {"secretRef": {"name": "provider"}}, "model": "fake-small"}
    agent["spec"]["runtime"]["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    if guardrails:
        agent["spec"]["guardrails"] = guardrails
    await stack.apply(agent)
    h = hive(stack.cell, "h", [("write", "writer", 1)])
    h["spec"]["routing"] = {"retryPolicy": {"maxRetries": 2, "initialDelaySeconds": 0.05}}
    if hive_guardrails:
        h["spec"]["guardrails"] = hive_guardrails
    await stack.apply(h)
    await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 15, "drone ready")
    await asyncio.sleep(0.1)


async def ended(stack: Stack, key: str, count: int, timeout: float = 20.0) -> list[Entry]:
    assert stack.journal is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        done = await stack.journal.read(key, kinds={"final", "error"}, limit=10_000)
        if len(done) >= count or asyncio.get_running_loop().time() > deadline:
            return done
        await asyncio.sleep(0.05)


async def session_status(stack: Stack, name: str, reason: str) -> dict[str, Any]:
    for _ in range(200):
        status = (await stack.store.get("Session", stack.cell, name)).get("status") or {}
        if status.get("reason") == reason:
            return dict(status)
        await asyncio.sleep(0.05)
    pytest.fail(f"session {name} never showed reason {reason}: {status}")


async def test_answers_via_the_gateway_and_the_session_budget_stops_the_third_message(
    world: tuple[Stack, FakeOpenAI],
) -> None:
    stack, fake = world
    await llm_hive(stack, hive_guardrails={"tokenBudgetPerSession": 2 * CALL + 5})
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None and stack.journal is not None
    key = f"{stack.cell}/s"
    for n, text in enumerate(["alpha", "beta"], 1):
        await stack.router.submit(stack.cell, "s", Message(text))
        done = await ended(stack, key, n)
        assert done[-1].kind == "final", done[-1].message
        assert done[-1].message["payload"] == {"response": f"echo: {text}", "confidence": 0.9}
    outputs = await stack.journal.read(key, kinds={"output"})
    assert [(e.prompt_tokens, e.completion_tokens) for e in outputs] == [(10, 5), (10, 5)]
    # The key stays in the node: the agent's environment has the keeper's URL and token only.
    (drone,) = await stack.drones()
    environ = psutil.Process(drone["status"]["pid"]).environ()
    assert environ["APIARY_KEEPER_URL"].startswith("http://127.0.0.1:")
    assert not any(fake.api_key in v for v in environ.values())
    assert fake.api_key not in str(drone)
    assert {c.headers["authorization"] for c in fake.chat_calls()} == {f"Bearer {fake.api_key}"}
    # Five tokens are left, less than the third call's prompt: it is refused before it goes
    # to the provider (reserve-then-settle) — the budget is not passed at all.
    await stack.router.submit(stack.cell, "s", Message("gamma"))
    done = await ended(stack, key, 3)
    assert done[-1].kind == "error"
    assert done[-1].message["payload"]["reason"] == "TokenBudgetExceeded"
    _, prompt, completion = await stack.journal.usage(key)
    assert prompt + completion == 2 * CALL <= 2 * CALL + 5
    status = await session_status(stack, "s", "TokenBudgetExceeded")
    assert status["usage"]["promptTokens"] + status["usage"]["completionTokens"] == 2 * CALL
    assert len(fake.chat_calls()) == 2


async def test_a_runaway_agent_is_stopped_at_its_per_request_budget(
    world: tuple[Stack, FakeOpenAI],
) -> None:
    stack, fake = world
    budget = 25
    await llm_hive(stack, {"LOOP": "1"}, {"tokenBudgetPerRequest": budget})
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None and stack.journal is not None
    await stack.router.submit(stack.cell, "s", Message("again and again"))
    (done,) = await ended(stack, f"{stack.cell}/s", 1)
    assert done.kind == "error", done.message
    assert done.message["payload"]["reason"] == "TokenBudgetExceeded"  # not retried
    assert fake.tokens_billed() == CALL <= budget
    # 10 tokens are left, less than the second call's prompt (11, estimated): refused unsent.
    assert len(fake.chat_calls()) == 1
    await asyncio.sleep(0.3)  # the agent keeps trying: every call is refused
    assert fake.tokens_billed() == CALL
    _, prompt, completion = await stack.journal.usage(f"{stack.cell}/s")
    assert prompt + completion == fake.tokens_billed()
    await session_status(stack, "s", "TokenBudgetExceeded")


@pytest.mark.parametrize("stream", ["0", "1"])
async def test_tokens_and_their_cost_are_counted_under_the_model_that_answered(
    metered: tuple[Stack, Recorder], stream: str
) -> None:
    stack, recorder = metered
    await llm_hive(stack, {"STREAM": stream, "CALLS": "2"})  # spec.llm.model asks fake-small
    await stack.store.create(session(stack.cell, "s", "h"))
    assert stack.router is not None
    await stack.router.submit(stack.cell, "s", Message("alpha"))
    (done,) = await ended(stack, f"{stack.cell}/s", 1)
    assert done.kind == "final", done.message
    where = {"cell": stack.cell, "hive": "h", "stage": "write"}
    value = recorder.registry.get_sample_value
    for _ in range(100):  # the answer is journaled just before it is counted
        if value("apiary_llm_tokens_total", {**where, "model": ANSWERED, "type": "prompt"}):
            break
        await asyncio.sleep(0.02)
    assert value("apiary_llm_tokens_total", {**where, "model": ANSWERED, "type": "prompt"}) == 20
    assert (
        value("apiary_llm_tokens_total", {**where, "model": ANSWERED, "type": "completion"}) == 10
    )
    assert (
        value("apiary_llm_tokens_total", {**where, "model": "fake-small", "type": "prompt"}) is None
    )
    cost = value("apiary_llm_cost_usd_total", {**where, "model": ANSWERED})
    assert cost == pytest.approx((20 * 0.15 + 10 * 0.60) / 1e6)  # gpt-4o-mini's built-in price
