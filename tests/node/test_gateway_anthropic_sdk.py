"""The gateway as the real, unmodified ``anthropic`` SDK sees it (issue 15 point 1).

``POST /v1/messages`` is served as a chat completion of the gateway's own pipeline and answered
in the Messages API's shape (src/apiary/gateway/messages.py). The first tests drive the SDK
in-process against a real keeper HTTP server and gateway (tests/node/test_gateway.py's ``env``);
the others run tests/fakes/anthropic_sdk_agent.py as a drone of a whole Apiary (tests/stack.py),
the SDK in it talking to the node's gateway in front of the fake OpenAI-compatible provider — or
of the fake Anthropic provider, so a tool call goes Messages → chat → Messages and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from test_gateway import Env, env  # noqa: F401  (env: the fixture)
from test_gateway_openai_sdk import ask, lines, sdk_world

from apiary.gateway.budget import GatewayRefusal
from apiary.gateway.messages import MessageEvents, chat_request, error_body, message_of
from apiary.gateway.providers.anthropic import Anthropic
from fakes.provider_servers import FakeAnthropic, serving
from stack import Stack, agentspec, hive, is_ready, running_stack

SDK_AGENT = [sys.executable, str(Path(__file__).parents[1] / "fakes/anthropic_sdk_agent.py")]
CALL = 15  # tokens the fake providers charge per call (10 prompt + 5 completion)


def _client(world: Env, **kw: Any) -> anthropic.AsyncAnthropic:
    """The SDK as an agent builds it: the keeper's URL (no /v1: the SDK adds it), its token."""
    token = world.headers["Authorization"].removeprefix("Bearer ")
    return anthropic.AsyncAnthropic(base_url=world.base.removesuffix("/v1"), api_key=token, **kw)


# ------------------------------------------------------------------------ the translation


def test_a_messages_request_becomes_a_chat_completion() -> None:
    body = {
        "model": "default", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"], "temperature": 0.2, "top_k": 5,
        "metadata": {"user_id": "u1"}, "stream": True,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look: "},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "and now?"}]},
        ],
    }  # fmt: skip
    assert chat_request(body) == {
        "model": "default", "max_tokens": 100, "temperature": 0.2, "stop": ["END"],
        "user": "u1", "stream": True, "stream_options": {"include_usage": True},
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "get_weather",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "look: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "user", "content": "and now?"},
        ],
    }  # fmt: skip
    assert chat_request({"messages": [], "tool_choice": {"type": "any"}})["tool_choice"] == (
        "required"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"messages": [{"role": "system", "content": "x"}]},
        {"messages": "hi"},
    ],
)
def test_what_the_chat_api_cannot_carry_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(GatewayRefusal) as refused:
        chat_request(bad)
    assert refused.value.status == 400 and refused.value.type == "invalid_request_error"


def test_a_chat_completion_becomes_a_message() -> None:
    answer = {
        "id": "chatcmpl-1", "model": "m", "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me see.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": '{"a": 1}'}}]}}],
    }  # fmt: skip
    assert message_of(answer, []) == {
        "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "Let me see."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }  # fmt: skip
    for finish, matched, want in [("stop", None, ("end_turn", None)),
                                  ("length", None, ("max_tokens", None)),
                                  ("content_filter", None, ("refusal", None)),
                                  ("stop", "END", ("stop_sequence", "END"))]:  # fmt: skip
        choice = {"finish_reason": finish, "stop_reason": matched, "message": {"content": "x"}}
        got = message_of({"choices": [choice]}, ["END"])
        assert (got["stop_reason"], got["stop_sequence"]) == want


def test_errors_are_anthropic_shaped() -> None:
    budget = {"error": {"message": "no", "type": "budget_exceeded", "code": "budget_exceeded"}}
    assert error_body(429, budget) == {"type": "error", "error": {
        "type": "rate_limit_error", "message": "no",
        "details": {"error_code": "budget_exceeded"}}}  # fmt: skip
    overloaded = {"error": {"message": "busy", "type": "overloaded_error"}}
    assert error_body(529, overloaded)["error"] == {"type": "overloaded_error", "message": "busy"}
    assert error_body(502, "<html>")["error"]["type"] == "api_error"


def test_a_stream_of_chunks_becomes_message_events() -> None:
    events = MessageEvents({"model": "m", "messages": []}, [])

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c1", "model": "m", "choices": [{"delta": delta, "finish_reason": finish}]}

    out = events.feed(chunk({"role": "assistant", "content": ""}))
    out += events.feed(chunk({"content": "Hi"}))
    out += events.feed(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        )
    )
    out += events.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    out += events.feed(chunk({}, "tool_calls"))
    out += events.feed(
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
    )
    out += events.done()  # fmt: skip
    kinds = [e.split(b"\n", 1)[0].decode().removeprefix("event: ") for e in out]
    assert kinds == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    assert b'"stop_reason":"tool_use"' in out[-2] and b'"output_tokens":4' in out[-2]
    assert events.done() == []


# ------------------------------------------------------------------------ in-process SDK


async def test_create_and_stream_with_the_key_in_x_api_key_or_bearer(env: Env) -> None:  # noqa: F811
    tally = env.drone.meter.begin("m1")
    token = env.headers["Authorization"].removeprefix("Bearer ")
    client = _client(env, max_retries=0)
    got = await client.messages.create(
        model="default", max_tokens=50, system="You echo.",
        messages=[{"role": "user", "content": "hello"}],
    )  # fmt: skip
    assert got.type == "message" and got.role == "assistant" and got.model == "fake-small"
    assert got.content[0].type == "text" and got.content[0].text == "echo: hello"
    assert got.stop_reason == "end_turn"
    assert (got.usage.input_tokens, got.usage.output_tokens) == (10, 5)
    (call,) = env.fake.chat_calls()
    assert call.body["messages"][0] == {"role": "system", "content": "You echo."}
    assert call.body["model"] == "fake-small" and call.body["max_tokens"] == 50
    assert token not in str(call.headers)  # the provider's key went to the provider
    async with client.messages.stream(
        model="default", max_tokens=50, messages=[{"role": "user", "content": "one two"}]
    ) as stream:
        parts = [p async for p in stream.text_stream]
        final = await stream.get_final_message()
    assert parts == ["echo:", " one", " two"] and final.content[0].text == "echo: one two"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 5)
    assert tally.usage == (20, 10)
    # The SDK's own header, x-api-key, carries the keeper token as well as a bearer token does.
    raw = await env.http.post(
        env.base + "/messages", headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
        json={"model": "default", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]},
    )  # fmt: skip
    assert raw.status_code == 200 and raw.json()["content"][0]["text"] == "echo: x"
    assert tally.usage == (30, 15)
    await client.close()


async def test_refusals_are_the_sdks_exceptions_with_the_gateways_message(env: Env) -> None:  # noqa: F811
    sent: list[str] = []

    async def count(request: Any) -> None:
        sent.append(str(request.url))

    # The SDK's default retries (2): the refusals' x-should-retry: false says not to.
    client = _client(env, http_client=anthropic.DefaultAsyncHttpxClient(
        event_hooks={"request": [count]}))  # fmt: skip
    idle = {"model": "default", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.ConflictError) as nothing:
        await client.messages.create(**idle)  # type: ignore[call-overload]
    assert "message_not_in_flight" in str(nothing.value.body)
    bad = anthropic.AsyncAnthropic(base_url=str(client.base_url), api_key="wrong")
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        await bad.messages.create(**idle)  # type: ignore[call-overload]
    assert "is not drone" in wrong.value.message
    anon = await env.http.post(env.base + "/messages", json=idle)
    assert anon.status_code == 401 and anon.json()["error"]["type"] == "authentication_error"
    env.drone.meter.per_request = CALL + 4  # one call, then not a prompt's worth left
    env.drone.meter.begin("m1")
    await client.messages.create(**idle)  # type: ignore[call-overload]
    with pytest.raises(anthropic.RateLimitError) as refused:
        await client.messages.create(**idle)  # type: ignore[call-overload]
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.body == {"type": "error", "error": {
        "type": "rate_limit_error", "message": refused.value.body["error"]["message"],  # type: ignore[index]
        "details": {"error_code": "budget_exceeded"}}}  # fmt: skip
    assert "per-request budget of 19" in refused.value.message
    assert len(env.fake.chat_calls()) == 1
    assert len(sent) == 3, sent  # the idle call, the answered one, the refused one: no retry
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model="default", max_tokens=9,
            messages=[{"role": "user", "content": [{"type": "document",  # type: ignore[list-item]
                                                    "source": {"type": "text", "data": "d",
                                                               "media_type": "text/plain"}}]}],
        )  # fmt: skip
    await client.close()
    await bad.close()


# ------------------------------------------------------------------------ a real agent


async def _result(tmp_path: Path) -> dict[str, Any]:
    for _ in range(100):
        if lines(tmp_path):
            break
        await asyncio.sleep(0.05)
    (seen,) = lines(tmp_path)
    return seen


async def test_create_stream_and_usage_from_a_drone_with_the_anthropic_sdk(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        await sdk_hive_of(stack, budget={"tokens": 1000})
        answers = {}
        for op, text in [("create", "alpha"), ("stream", "beta gamma")]:
            done = await ask(stack, op, {"op": op, "text": text})
            assert done.kind == "final", done.message
            answers[op] = done.message["payload"]
        created = answers["create"]
        assert created.pop("id").startswith("msg")
        assert created == {"text": "echo: alpha", "type": "message", "role": "assistant",
                           "model": "fake-small", "stop_reason": "end_turn",
                           "usage": [10, 5]}  # fmt: skip
        assert answers["stream"] == {"parts": ["echo:", " beta", " gamma"],
                                     "text": "echo: beta gamma", "stop_reason": "end_turn",
                                     "usage": [10, 5]}  # fmt: skip
        asked = provider.chat_calls()
        assert [r.body["model"] for r in asked] == ["fake-small", "fake-small"]
        assert {r.headers["authorization"] for r in asked} == {f"Bearer {provider.api_key}"}
        assert asked[0].body["messages"][0] == {"role": "system", "content": "You echo."}
        # Counted as any chat completion: the sessions, the Hive's budget, the ledger.
        assert stack.journal is not None
        for name in ("create", "stream"):
            _, prompt, completion = await stack.journal.usage(f"{cell}/{name}")
            assert prompt + completion == CALL, name
        usage = (await stack.client.request("GET", f"/api/v1/cells/{cell}/llmbudget")).body
        assert usage["hives"]["h"]["tokens"] == 2 * CALL
        assert usage["sessions"]["create"]["tokens"] == CALL
        # Recorded as the chat completion it was served as, and replayed from the cassette.
        for name in ("create", "stream"):
            entries = await stack.journal.read(f"{cell}/{name}", kinds={"event"})
            (call,) = [e.message["payload"]["llmCall"] for e in entries]
            assert call["path"] == "/chat/completions" and call["usage"] == [10, 5]
        gateway = {"mode": "replay", "replayFrom": "create"}
        await sdk_hive_of(stack, budget={"tokens": 1000}, gateway=gateway)
        again = await ask(stack, "again", {"op": "create", "text": "alpha"})
        assert again.kind == "final", again.message
        replayed = again.message["payload"]
        assert replayed.pop("id").startswith("msg") and replayed == created
        assert len(provider.chat_calls()) == 2  # none for the replay


async def sdk_hive_of(stack: Stack, *, llm: dict[str, Any] | None = None, **hive_spec: Any) -> None:
    """tests/fakes/anthropic_sdk_agent.py as the one stage of hive ``h`` (as ``sdk_hive``)."""
    agent = agentspec(stack.cell, "sdk", SDK_AGENT, fmt="waggle")
    agent["spec"]["llm"] = llm or {
        "provider": {"secretRef": {"name": "provider"}},
        "model": "fake-small",
    }
    await stack.apply(agent)
    await stack.apply(hive(stack.cell, "h", [("ask", "sdk", 1)], **hive_spec))
    await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 20, "drones ready")


async def test_a_budget_refusal_is_the_sdks_rate_limit_error_at_once(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        await sdk_hive_of(stack, budget={"tokens": 3 * CALL + 5})
        done = await ask(stack, "s", {"op": "until_refused"})
        assert done.kind == "error"
        assert done.message["payload"]["reason"] == "TokenBudgetExceeded"
        seen = await _result(tmp_path)
        raised = seen["raised"]
        assert seen["answered"] == 3 and len(provider.chat_calls()) == 3
        assert raised["class"] == "RateLimitError" and raised["status"] == 429, raised
        assert raised["retry"] == "false"
        assert raised["body"]["type"] == "error"
        assert raised["body"]["error"]["type"] == "rate_limit_error"
        assert raised["body"]["error"]["details"] == {"error_code": "budget_exceeded"}
        assert "hive h has 5 of its 50 tokens left" in raised["body"]["error"]["message"]
        assert "hive h has 5 of its 50 tokens left" in raised["message"]
        assert seen["seconds"] < 0.4, "the SDK waited: it retried the refusal"


@contextlib.asynccontextmanager
async def anthropic_world(tmp_path: Path, cell: str) -> AsyncIterator[tuple[Stack, Any]]:
    async with (
        serving(FakeAnthropic(), "/v1") as fake,
        running_stack(tmp_path, cell, messaging=True) as s,
    ):
        await s.apply({
            "apiVersion": "apiary.io/v1", "kind": "Secret",
            "metadata": {"name": "provider", "namespace": cell},
            "stringData": {"baseUrl": fake.url, "apiKey": fake.api_key},
        })  # fmt: skip
        yield s, fake


async def test_tool_use_created_and_streamed_through_an_anthropic_provider(
    tmp_path: Path, cell: str
) -> None:
    """Messages → the gateway's chat completion → Messages to the provider, and back."""
    async with anthropic_world(tmp_path, cell) as (stack, fake):
        llm = {"provider": {"secretRef": {"name": "provider"}, "api": "anthropic"},
               "model": "claude-3-5-haiku-latest"}  # fmt: skip
        await sdk_hive_of(stack, llm=llm)
        answers = {}
        for op in ("tools", "tools_stream"):
            done = await ask(stack, op, {"op": op, "text": "weather in Paris?"})
            assert done.kind == "final", done.message
            answers[op] = done.message["payload"]
        assert answers["tools"] == {"tools": [["get_weather", {"city": "Paris"}]],
                                    "stop_reason": "tool_use",
                                    "after": ["end_turn", "text"]}  # fmt: skip
        streamed = answers["tools_stream"]
        assert streamed["events"] == ["message_start", "content_block_start",
                                      "content_block_delta", "content_block_delta",
                                      "content_block_stop", "message_delta",
                                      "message_stop"]  # fmt: skip
        assert streamed["json"] == '{"city": "Paris"}'
        assert streamed["stop_reason"] == "tool_use" and streamed["output_tokens"] == 5
        assert streamed["final"] == ["get_weather", {"city": "Paris"}, "tool_use", [10, 5]]
        # The provider saw its own API, the tool result of the second turn included.
        first, second = fake.requests[:2]
        assert first.body["tools"][0]["name"] == "get_weather"
        assert first.body["tools"][0]["input_schema"]["required"] == ["city"]
        assert second.body["messages"][-1]["content"][0]["type"] == "tool_result"
        assert second.body["messages"][-1]["content"][0]["tool_use_id"] == "toolu_1"
        assert stack.journal is not None
        _, prompt, completion = await stack.journal.usage(f"{cell}/tools")
        assert prompt + completion == 2 * CALL


def test_a_stop_sequence_survives_an_anthropic_provider_both_ways() -> None:
    """Anthropic's ``stop_sequence`` rides the chat completion as ``choices[].stop_reason``
    (vLLM's name for it), so a Messages call to an Anthropic provider still says which."""
    answer = {"id": "msg_1", "model": "claude", "content": [{"type": "text", "text": "a"}],
              "stop_reason": "stop_sequence", "stop_sequence": "END",
              "usage": {"input_tokens": 3, "output_tokens": 1}}  # fmt: skip
    got = message_of(Anthropic().response(answer, "claude"), ["END"])
    assert (got["id"], got["stop_reason"], got["stop_sequence"]) == (
        "msg_1",
        "stop_sequence",
        "END",
    )
    provider = Anthropic().stream("claude")
    events = MessageEvents({"model": "claude", "messages": []}, ["END"])
    for event in [{"type": "message_start", "message": {"id": "msg_1", "usage": {}}},
                  {"type": "message_delta", "delta": {"stop_reason": "stop_sequence",
                                                      "stop_sequence": "END"},
                   "usage": {"output_tokens": 1}}]:  # fmt: skip
        for chunk in provider.feed(event):
            events.feed(chunk)
    delta = events.done()[-2]
    assert b'"stop_reason":"stop_sequence","stop_sequence":"END"' in delta
