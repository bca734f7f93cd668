"""``apiaryctl session replay`` end to end (issue 15.4): a 3-stage hive whose agents call the
gateway runs a session; v2 of the hive changes the last stage's prompt; ``--mode mixed`` calls
the provider once — only for the changed stage — and shows the diff; ``--mode recorded`` on the
unchanged hive reproduces the transcript's answers byte for byte with zero provider calls."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from test_gateway_openai_sdk import sdk_world

from apiary.waggle import Message
from fakes import openai_server
from fakes.openai_server import FakeOpenAI
from stack import Stack, agentspec, apiaryctl, hive, is_ready, session

LLM_AGENT = [sys.executable, str(Path(__file__).parents[2] / "examples/agents/llm_agent.py")]


class PromptedFake(FakeOpenAI):
    """Answers ``echo: <last user message>``, plus ``[<system prompt>]`` when there is one."""

    async def chat(self, request: Request) -> Response:
        answer = await super().chat(request)
        system = [m["content"] for m in self.requests[-1].body["messages"]
                  if m.get("role") == "system"]  # fmt: skip
        if not system or not isinstance(answer, JSONResponse):
            return answer
        body = orjson.loads(answer.body)
        body["choices"][0]["message"]["content"] += f" [{system[0]}]"
        return JSONResponse(body)


@pytest.fixture
def prompted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_server, "FakeOpenAI", PromptedFake)


@pytest.fixture
async def world(
    tmp_path: Path, cell: str, prompted: None
) -> AsyncIterator[tuple[Stack, FakeOpenAI]]:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        for name, prompt in [("a", ""), ("b", ""), ("c", "v1"), ("c2", "v2")]:
            agent = agentspec(cell, name, LLM_AGENT, fmt="waggle")
            agent["spec"]["llm"] = {"provider": {"secretRef": {"name": "provider"}},
                                    "model": "fake-small"}  # fmt: skip
            if prompt:
                agent["spec"]["runtime"]["env"] = [{"name": "SYSTEM_PROMPT", "value": prompt}]
            await stack.apply(agent)
        routing = {"retryPolicy": {"maxRetries": 0}}
        for name, last in [("h", "c"), ("h2", "c2")]:
            stages = [("one", "a", 1), ("two", "b", 1), ("three", last, 1)]
            await stack.apply(hive(cell, name, stages, routing=routing))
        await stack.wait(lambda ds: len(ds) == 6 and all(map(is_ready, ds)), 30, "6 drones")
        yield stack, provider


async def test_replay_mixed_calls_only_the_changed_stage_and_recorded_calls_none(
    world: tuple[Stack, FakeOpenAI],
) -> None:
    stack, provider = world
    assert stack.router is not None and stack.journal is not None
    await stack.store.create(session(stack.cell, "golden", "h"))
    await stack.router.submit(stack.cell, "golden", Message("alpha"))
    for _ in range(400):
        done = await stack.journal.read(f"{stack.cell}/golden", kinds={"final", "error"})
        if done:
            break
        await asyncio.sleep(0.05)
    assert done[-1].kind == "final", done[-1].message
    golden = done[-1].message["payload"]
    assert golden["response"].endswith("[v1]")
    assert len(provider.chat_calls()) == 3

    mixed = await ctl_json(stack, "session", "replay", "golden", "--hive", "h2", "--mode", "mixed")
    assert len(provider.chat_calls()) == 4  # only the changed stage went to the provider
    assert mixed["stages"] == [
        {"stage": "one", "output": "same", "tokensBefore": 15, "tokensAfter": 0},
        {"stage": "two", "output": "same", "tokensBefore": 15, "tokensAfter": 0},
        {"stage": "three", "output": "changed", "tokensBefore": 15, "tokensAfter": 15},
    ]
    assert mixed["sameFinal"] is False and mixed["hive"] == "h2"

    recorded = await ctl_json(stack, "session", "replay", "golden", "--mode", "recorded")
    assert len(provider.chat_calls()) == 4  # zero provider calls
    assert recorded["sameFinal"] is True and recorded["hive"] == "h"
    assert [s["output"] for s in recorded["stages"]] == ["same", "same", "same"]
    assert [s["tokensAfter"] for s in recorded["stages"]] == [0, 0, 0]
    (final,) = await stack.journal.read(f"{stack.cell}/{recorded['session']}", kinds={"final"})
    assert orjson.dumps(final.message["payload"]) == orjson.dumps(golden)  # byte for byte


async def ctl_json(stack: Stack, *args: str) -> Any:
    return json.loads(await apiaryctl(stack, "-o", "json", *args))
