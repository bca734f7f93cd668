"""Record and replay (issue 15.4, first part): every answered LLM call of a session is in its
journal (request, response, usage, latency), and a hive in ``spec.gateway.mode: replay`` is
answered from a recorded session's calls — zero provider calls — refusing a call that has no
recorded match with the field where it differs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from test_gateway_openai_sdk import sdk_world

from apiary.journal import Entry
from apiary.waggle import Message
from stack import Stack, agentspec, hive, is_ready, session

LLM_AGENT = [sys.executable, str(Path(__file__).parents[2] / "examples/agents/llm_agent.py")]


async def run(stack: Stack, name: str, text: str) -> Entry:
    assert stack.router is not None and stack.journal is not None
    await stack.store.create(session(stack.cell, name, "h"))
    await stack.router.submit(stack.cell, name, Message(text))
    for _ in range(400):
        done = await stack.journal.read(f"{stack.cell}/{name}", kinds={"final", "error"})
        if done:
            return done[-1]
        await asyncio.sleep(0.05)
    everything = await stack.journal.read(f"{stack.cell}/{name}")
    raise AssertionError(f"session {name} did not end: {[(e.kind, e.message) for e in everything]}")


async def writer_hive(stack: Stack, llm: dict[str, Any], **extra: Any) -> None:
    """Hive h: one stage of the LLM agent with ``llm``, no retries; applied again with a
    ``gateway`` to make it replay."""
    cell = stack.cell
    agent = agentspec(cell, "writer", LLM_AGENT, fmt="waggle")
    agent["spec"]["llm"] = llm
    await stack.apply(agent)
    routing = {"retryPolicy": {"maxRetries": 0}}
    await stack.apply(hive(cell, "h", [("write", "writer", 1)], routing=routing, **extra))
    await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 20, "drone ready")


REPLAY_GOLDEN = {"gateway": {"mode": "replay", "replayFrom": "golden"}}


async def test_calls_are_recorded_and_a_replaying_hive_never_calls_the_provider(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        llm = {"provider": {"secretRef": {"name": "provider"}}, "model": "fake-small"}
        await writer_hive(stack, llm)
        golden = await run(stack, "golden", "alpha")
        assert golden.kind == "final", golden.message
        assert len(provider.chat_calls()) == 1
        # The cassette: the exchange is an event of the session's journal.
        assert stack.journal is not None
        events = await stack.journal.read(f"{cell}/golden", kinds={"event"})
        (call,) = [e.message["payload"]["llmCall"] for e in events]
        assert call["request"]["messages"] == [{"role": "user", "content": "alpha"}]
        assert call["response"]["choices"][0]["message"]["content"] == "echo: alpha"
        assert call["usage"] == [10, 5] and call["latencyMs"] > 0 and call["stage"] == "write"
        assert len(call["hash"]) == 32
        # Replay: the same input gets the recorded answer, byte for byte, from no provider.
        await writer_hive(stack, llm, **REPLAY_GOLDEN)
        again = await run(stack, "again", "alpha")
        assert again.kind == "final", again.message
        assert again.message["payload"] == golden.message["payload"]
        assert len(provider.chat_calls()) == 1
        _, prompt, completion = await stack.journal.usage(f"{cell}/again")
        assert prompt + completion == 0  # no tokens spent
        # A call the recording has no match for is an error naming where it differs.
        assert stack.router is not None
        await stack.store.create(session(cell, "changed", "h"))
        await stack.router.submit(cell, "changed", Message("beta"))
        failed: list[Entry] = []
        for _ in range(200):
            events = await stack.journal.read(f"{cell}/changed", kinds={"event"})
            failed = [e for e in events if e.message.get("type") == "error"]
            if failed:
                break
            await asyncio.sleep(0.05)
        (error,) = failed[:1]
        assert error.message["payload"]["message"] == (
            "400 invalid_request_error: no recorded call of session 'golden' matches: "
            'messages[0].content: "beta" differs from the recorded "alpha"'
        )
        assert len(provider.chat_calls()) == 1
