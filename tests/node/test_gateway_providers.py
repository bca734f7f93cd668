"""Anthropic Messages and Gemini generateContent behind the gateway, driven by the real ``openai``
SDK inside a real agent process (issue 15.1): chat, streaming and tool calls are translated both
ways, and the providers' own usage is what the session is charged."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_gateway_openai_sdk import ask, sdk_hive

from fakes.provider_servers import FakeAnthropic, FakeGemini, serving
from stack import Stack, running_stack

SHAPES = {
    "anthropic": (FakeAnthropic, "/v1", "claude-3-5-haiku-latest", "x-api-key"),
    "gemini": (FakeGemini, "/v1beta", "gemini-2.0-flash", "x-goog-api-key"),
}


@contextlib.asynccontextmanager
async def provider_world(
    tmp_path: Path, cell: str, api: str
) -> AsyncIterator[tuple[Stack, FakeAnthropic | FakeGemini]]:
    kind, prefix, _, _ = SHAPES[api]
    async with (
        serving(kind(), prefix) as fake,
        running_stack(tmp_path, cell, messaging=True) as s,
    ):
        await s.apply({
            "apiVersion": "apiary.io/v1", "kind": "Secret",
            "metadata": {"name": "provider", "namespace": cell},
            "stringData": {"baseUrl": fake.url, "apiKey": fake.api_key},
        })  # fmt: skip
        yield s, fake


@pytest.mark.parametrize("api", ["anthropic", "gemini"])
async def test_chat_streaming_and_tools_through_the_openai_sdk(
    tmp_path: Path, cell: str, api: str
) -> None:
    _, _, model, key_header = SHAPES[api]
    async with provider_world(tmp_path, cell, api) as (stack, fake):
        llm = {"provider": {"secretRef": {"name": "provider"}, "api": api}, "model": model}
        await sdk_hive(stack, llm=llm)
        answers: dict[str, Any] = {}
        for op, text in [("chat", "alpha"), ("stream", "beta gamma"), ("tools", "weather?")]:
            done = await ask(stack, op, {"op": op, "text": text})
            assert done.kind == "final", done.message
            answers[op] = done.message["payload"]
        assert answers["chat"] == {"text": "echo: alpha", "model": model, "usage": [10, 5]}
        assert answers["stream"] == {"text": "echo: beta gamma", "usage": [10, 5]}
        assert answers["tools"] == {"tools": [["get_weather", {"city": "Paris"}]],
                                    "finish": "tool_calls"}  # fmt: skip
        # The provider got its own API's shape, with its key in its own header.
        chat, streamed, tools = fake.requests
        assert {r.headers[key_header] for r in fake.requests} == {fake.api_key}
        assert all("authorization" not in r.headers for r in fake.requests)
        if api == "anthropic":
            assert chat.path == "/v1/messages" and chat.body["model"] == model
            assert chat.body["messages"] == [
                {"role": "user", "content": [{"type": "text", "text": "alpha"}]}
            ]
            assert isinstance(chat.body["max_tokens"], int) and streamed.body["stream"] is True
            assert tools.body["tools"][0]["name"] == "get_weather"
            assert tools.body["tools"][0]["input_schema"]["required"] == ["city"]
        else:
            assert chat.path == f"/v1beta/models/{model}:generateContent"
            assert chat.body["contents"] == [{"role": "user", "parts": [{"text": "alpha"}]}]
            assert streamed.path.endswith(":streamGenerateContent")
            assert streamed.query == "alt=sse"
            declared = tools.body["tools"][0]["functionDeclarations"][0]
            assert declared["name"] == "get_weather"
        # Each session was charged what the provider reported.
        assert stack.journal is not None
        for name in ("chat", "stream", "tools"):
            _, prompt, completion = await stack.journal.usage(f"{cell}/{name}")
            assert (prompt, completion) == (10, 5), name
        ledger = (await stack.client.request("GET", f"/api/v1/cells/{cell}/llmbudget")).body
        assert ledger["hives"]["h"]["tokens"] == 3 * 15


@pytest.mark.parametrize("api", ["anthropic", "gemini"])
async def test_a_translated_call_is_recorded_and_replayed_without_the_provider(
    tmp_path: Path, cell: str, api: str
) -> None:
    """Record/replay holds for a provider the gateway translates to: the cassette keeps the
    chat completion the agent was served, and a replaying hive answers it from there."""
    from test_gateway_replay import REPLAY_GOLDEN, run, writer_hive

    _, _, model, _ = SHAPES[api]
    async with provider_world(tmp_path, cell, api) as (stack, fake):
        llm = {"provider": {"secretRef": {"name": "provider"}, "api": api}, "model": model}
        await writer_hive(stack, llm)
        golden = await run(stack, "golden", "alpha")
        assert golden.kind == "final", golden.message
        assert len(fake.requests) == 1
        assert stack.journal is not None
        events = await stack.journal.read(f"{cell}/golden", kinds={"event"})
        (call,) = [e.message["payload"]["llmCall"] for e in events]
        assert call["response"]["object"] == "chat.completion"  # as the agent was served it
        assert call["usage"] == [10, 5]
        await writer_hive(stack, llm, **REPLAY_GOLDEN)
        again = await run(stack, "again", "alpha")
        assert again.kind == "final", again.message
        assert again.message["payload"] == golden.message["payload"]
        assert len(fake.requests) == 1  # no provider call


@pytest.mark.parametrize("api", ["anthropic", "gemini"])
async def test_a_translated_stream_is_recorded_and_replayed_as_a_stream(
    tmp_path: Path, cell: str, api: str
) -> None:
    """The openai SDK streams through a translated provider: the cassette keeps the chunks the
    agent was sent (and the answer they add up to), and a replaying hive streams them back."""
    _, _, model, _ = SHAPES[api]
    async with provider_world(tmp_path, cell, api) as (stack, fake):
        llm = {"provider": {"secretRef": {"name": "provider"}, "api": api}, "model": model}
        await sdk_hive(stack, llm=llm)
        golden = await ask(stack, "golden", {"op": "stream", "text": "beta gamma"})
        assert golden.message["payload"] == {"text": "echo: beta gamma", "usage": [10, 5]}
        assert len(fake.requests) == 1
        assert stack.journal is not None
        events = await stack.journal.read(f"{cell}/golden", kinds={"event"})
        (call,) = [e.message["payload"]["llmCall"] for e in events]
        assert call["response"]["choices"][0]["message"]["content"] == "echo: beta gamma"
        assert call["usage"] == [10, 5] and call["stream"][-1] == "data: [DONE]"
        await sdk_hive(stack, llm=llm, gateway={"mode": "replay", "replayFrom": "golden"})
        again = await ask(stack, "again", {"op": "stream", "text": "beta gamma"})
        assert again.message["payload"] == golden.message["payload"]
        assert len(fake.requests) == 1  # no provider call
