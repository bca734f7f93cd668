"""The gateway as the real, unmodified ``openai`` SDK sees it, from inside a real agent process.

A whole Apiary (tests/stack.py: API over HTTP, the Queen, a node agent, router, journal) runs
tests/fakes/openai_sdk_agent.py as a drone; the SDK in it talks to the node's gateway, which
forwards to the fake OpenAI-compatible provider on loopback (issue 15.1b)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from apiary.controllers import QueenSettings
from apiary.journal import Entry
from apiary.waggle import Message
from fakes.openai_server import FakeOpenAI, running_fake_openai
from stack import Stack, agentspec, hive, is_ready, running_stack, session

SDK_AGENT = [sys.executable, str(Path(__file__).parents[1] / "fakes/openai_sdk_agent.py")]
CALL = 15  # tokens the fake provider charges per call (10 prompt + 5 completion)


@contextlib.asynccontextmanager
async def sdk_world(
    tmp_path: Path, cell: str, *, store_url: str = "memory://",
    queen: QueenSettings | None = None, **fake: Any,
) -> AsyncIterator[tuple[Stack, FakeOpenAI]]:  # fmt: skip
    async with (
        running_fake_openai(**fake) as provider,
        running_stack(tmp_path, cell, messaging=True, store_url=store_url, queen=queen) as s,
    ):
        await s.apply({
            "apiVersion": "apiary.io/v1", "kind": "Secret",
            "metadata": {"name": "provider", "namespace": cell},
            "stringData": {"baseUrl": provider.url, "apiKey": provider.api_key},
        })  # fmt: skip
        yield s, provider


async def sdk_hive(
    stack: Stack, *, llm: dict[str, Any] | None = None, replicas: int = 1,
    guardrails: dict[str, Any] | None = None, **hive_spec: Any,
) -> None:  # fmt: skip
    agent = agentspec(stack.cell, "sdk", SDK_AGENT, fmt="waggle")
    agent["spec"]["llm"] = llm or {
        "provider": {"secretRef": {"name": "provider"}},
        "model": "fake-small",
    }
    if guardrails:
        agent["spec"]["guardrails"] = guardrails
    await stack.apply(agent)
    await stack.apply(hive(stack.cell, "h", [("ask", "sdk", replicas)], **hive_spec))
    await stack.wait(lambda ds: len(ds) == replicas and all(map(is_ready, ds)), 20, "drones ready")


async def ask(stack: Stack, name: str, payload: dict[str, Any], timeout: float = 20) -> Entry:
    """Run a session of one message; its final (or error) journal entry."""
    assert stack.router is not None and stack.journal is not None
    await stack.store.create(session(stack.cell, name, "h"))
    await stack.router.submit(stack.cell, name, Message(payload))
    deadline = time.monotonic() + timeout
    while True:
        done = await stack.journal.read(f"{stack.cell}/{name}", kinds={"final", "error"})
        if done:
            return done[-1]
        if time.monotonic() > deadline:
            pytest.fail(f"session {name} did not end within {timeout}s")
        await asyncio.sleep(0.05)


def lines(tmp_path: Path) -> list[dict[str, Any]]:
    """What the agent printed as ``SDK-RESULT <json>`` (its drones' logs, kept by the node)."""
    out = []
    for log in sorted((tmp_path / "node" / "logs").glob("*/*.log")):
        for line in log.read_text().splitlines():
            _, found, rest = line.partition(" SDK-RESULT ")
            if found:
                out.append(json.loads(rest))
    return out


async def test_chat_streaming_embeddings_and_responses_through_the_openai_sdk(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        await sdk_hive(stack)
        answers = {}
        for op, extra in [("chat", {"text": "alpha"}), ("stream", {"text": "beta gamma"}),
                          ("embed", {"inputs": ["a", "b", "c"]}),
                          ("responses", {"text": "delta"}),
                          ("responses_stream", {"text": "eps zeta"})]:  # fmt: skip
            done = await ask(stack, op.replace("_", "-"), {"op": op, **extra})
            assert done.kind == "final", done.message
            answers[op] = done.message["payload"]
        assert answers["chat"] == {"text": "echo: alpha", "model": "fake-small", "usage": [10, 5]}
        assert answers["stream"] == {"text": "echo: beta gamma", "usage": [10, 5]}
        assert answers["embed"] == {"vectors": 3, "usage": 4}
        assert answers["responses"] == {"text": "echo: delta", "usage": [10, 5]}
        assert answers["responses_stream"] == {"text": "echo: eps zeta", "usage": [10, 5]}
        # "default" is the AgentSpec's spec.llm.model; the key is the provider's, not the agent's.
        asked = [r for r in provider.requests if r.method == "POST"]
        assert {r.body["model"] for r in asked} == {"fake-small"}
        assert {r.headers["authorization"] for r in asked} == {f"Bearer {provider.api_key}"}
        streamed = [r.body for r in asked if r.path.endswith("/chat/completions")][1]
        assert streamed["stream_options"] == {"include_usage": True}
        # Every call was counted against its session, the Responses API's too.
        assert stack.journal is not None
        for name, tokens in [("chat", 15), ("stream", 15), ("embed", 4), ("responses", 15),
                             ("responses-stream", 15)]:  # fmt: skip
            _, prompt, completion = await stack.journal.usage(f"{cell}/{name}")
            assert prompt + completion == tokens, name


async def test_a_budget_refusal_is_the_budget_error_at_once_and_errors_are_openai_shaped(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        await sdk_hive(stack, guardrails={"tokenBudgetPerRequest": 2 * CALL})
        done = await ask(stack, "s", {"op": "until_refused"})
        assert done.kind == "error"
        assert done.message["payload"]["reason"] == "TokenBudgetExceeded"
        for _ in range(100):
            if lines(tmp_path):
                break
            await asyncio.sleep(0.05)
        (seen,) = lines(tmp_path)
        raised = seen["raised"]
        # The budget error itself, not a 409 after the SDK's retries: nothing was retried.
        assert raised["class"] == "RateLimitError" and raised["status"] == 429, raised
        assert raised["code"] == "budget_exceeded"
        assert raised["body"]["type"] == "budget_exceeded" and raised["body"]["param"] is None
        assert "per-request budget of 30" in raised["body"]["message"]
        assert seen["seconds"] < 0.5, "the SDK waited: it retried the refusal"
        assert len(provider.chat_calls()) == seen["answered"]
        # The keeper's own errors are OpenAI-shaped too: what the SDK makes of them here.
        (drone,) = await stack.drones()
        environ = psutil.Process(drone["status"]["pid"]).environ()
        client = openai.AsyncOpenAI(
            base_url=environ["APIARY_KEEPER_URL"] + "/v1",
            api_key=environ["APIARY_KEEPER_TOKEN"], max_retries=0,
        )  # fmt: skip
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.models.retrieve("fake-small")  # no such keeper route
        assert "no keeper route" in refused.value.message
        assert refused.value.code == "Forbidden"
        with pytest.raises(openai.ConflictError) as idle:
            await client.chat.completions.create(model="default", messages=[])
        assert idle.value.code == "message_not_in_flight"
        assert idle.value.response.headers["x-should-retry"] == "false"
        bad = openai.AsyncOpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as wrong:
            await bad.chat.completions.create(model="default", messages=[])
        assert "is not drone" in wrong.value.message
        await client.close()
        await bad.close()


async def test_50_concurrent_sdk_calls_of_a_drone_against_a_hive_budget_for_10(
    tmp_path: Path, cell: str
) -> None:
    """One message fires 50 chat completions at once (AsyncOpenAI); the Hive's budget has room
    for 10 (8 prompt tokens, as estimated, + max_tokens 5 each): 10 reach the provider, 40 are
    the budget error, and the ledger shows what was used."""
    url = f"sqlite:///{tmp_path / 'apiary.db'}"
    async with sdk_world(tmp_path, cell, store_url=url, usage=(8, 5)) as (stack, provider):
        await sdk_hive(stack, budget={"tokens": 130})
        done = await ask(stack, "s", {"op": "burst", "n": 50, "max_tokens": 5})
        assert done.kind == "error"  # the refused calls marked the message: over budget
        for _ in range(100):
            if lines(tmp_path):
                break
            await asyncio.sleep(0.05)
        (seen,) = lines(tmp_path)
        assert seen["answered"] == 10 and len(seen["errors"]) == 40
        assert {e["class"] for e in seen["errors"]} == {"RateLimitError"}
        assert {e["code"] for e in seen["errors"]} == {"budget_exceeded"}
        assert "hive h has 0 of its 130 tokens left" in seen["errors"][0]["message"]
        assert len(provider.chat_calls()) == 10
        assert {c.body["max_tokens"] for c in provider.chat_calls()} == {5}
        usage = (await stack.client.request("GET", f"/api/v1/cells/{cell}/llmbudget")).body
        assert usage["hives"]["h"] == {"tokens": 130, "usd": 0, "heldTokens": 0, "heldUsd": 0}
        assert usage["sessions"]["s"]["tokens"] == 130 and usage["cell"]["tokens"] == 130
