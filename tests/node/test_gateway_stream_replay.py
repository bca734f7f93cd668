"""Streamed LLM calls in record/replay (issue 15.4): the real ``openai`` SDK streams a chat
completion from inside a drone; the call is recorded in the session's cassette with its events
and the answer they add up to; ``apiaryctl session replay --mode recorded`` answers the streamed
call from the cassette — as a stream, zero provider calls, the same final answer byte for byte —
and ``--mode mixed`` sends a call the cassette has no match for to the provider (streamed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
from test_gateway_openai_sdk import SDK_AGENT, ask, sdk_world

from stack import Stack, agentspec, apiaryctl, hive, is_ready

LLM = {"provider": {"secretRef": {"name": "provider"}}, "model": "fake-small"}


async def test_a_streamed_call_is_recorded_and_replayed_as_a_stream(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        for name, model in [("sdk", None), ("sdk2", "fake-other")]:
            agent = agentspec(cell, name, SDK_AGENT, fmt="waggle")
            agent["spec"]["llm"] = LLM
            if model:  # v2 asks for another model: a request the cassette has no match for
                agent["spec"]["runtime"]["env"] = [{"name": "MODEL", "value": model}]
            await stack.apply(agent)
        routing = {"retryPolicy": {"maxRetries": 0}}
        await stack.apply(hive(cell, "h", [("ask", "sdk", 1)], routing=routing))
        await stack.apply(hive(cell, "h2", [("ask", "sdk2", 1)], routing=routing))
        await stack.wait(lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 30, "2 drones")
        golden = await ask(stack, "golden", {"op": "stream", "text": "alpha"})
        assert golden.kind == "final", golden.message
        assert golden.message["payload"]["text"] == "echo: alpha"
        assert golden.message["payload"]["usage"] == [10, 5]
        assert len(provider.chat_calls()) == 1 and provider.chat_calls()[0].body["stream"]
        # The cassette: the events as streamed, and the answer they add up to.
        assert stack.journal is not None
        events = await stack.journal.read(f"{cell}/golden", kinds={"event"})
        (call,) = [e.message["payload"]["llmCall"] for e in events]
        assert call["response"]["object"] == "chat.completion"
        assert call["response"]["choices"][0]["message"]["content"] == "echo: alpha"
        assert call["usage"] == [10, 5] and call["stream"][-1] == "data: [DONE]"
        assert len(call["stream"]) > 3  # role, content deltas, finish, usage, [DONE]

        recorded = await ctl_json(stack, "session", "replay", "golden", "--mode", "recorded")
        assert len(provider.chat_calls()) == 1  # zero provider calls
        assert recorded["sameFinal"] is True
        assert [s["tokensAfter"] for s in recorded["stages"]] == [0]
        (final,) = await stack.journal.read(f"{cell}/{recorded['session']}", kinds={"final"})
        assert orjson.dumps(final.message["payload"]) == orjson.dumps(golden.message["payload"])

        mixed = await ctl_json(
            stack, "session", "replay", "golden", "--hive", "h2", "--mode", "mixed"
        )
        assert len(provider.chat_calls()) == 2  # the unmatched call went to the provider
        last = provider.chat_calls()[-1].body
        assert last["stream"] is True and last["model"] == "fake-other"
        (final,) = await stack.journal.read(f"{cell}/{mixed['session']}", kinds={"final"})
        assert final.message["payload"]["text"] == "echo: alpha"
        # ... and recorded in turn, streamed, in the replaying session's cassette.
        for _ in range(100):  # recorded once the stream is over: the final may come first
            events = await stack.journal.read(f"{cell}/{mixed['session']}", kinds={"event"})
            calls = [e.message["payload"]["llmCall"] for e in events
                     if "llmCall" in (e.message.get("payload") or {})]  # fmt: skip
            if calls:
                break
            await asyncio.sleep(0.05)
        assert [c["request"]["model"] for c in calls] == ["fake-other"]
        assert calls[0]["stream"][-1] == "data: [DONE]"


async def ctl_json(stack: Stack, *args: str) -> Any:
    return json.loads(await apiaryctl(stack, "-o", "json", *args))
