"""An agent that calls its node's LLM gateway with the real, unmodified ``openai`` SDK.

Base URL ``$APIARY_KEEPER_URL/v1``, API key ``$APIARY_KEEPER_TOKEN``, the SDK's default retries.
The message's payload says what to do (``op``); what the SDK returned or raised is the answer,
and — because a message that ran out of budget is not waited for — also a line on stderr,
``SDK-RESULT <json>``, which the node keeps in the drone's log:

* ``chat`` / ``stream`` — one chat completion of ``text`` (streamed: the deltas joined);
* ``embed`` — embeddings of ``inputs``;
* ``responses`` / ``responses_stream`` — one Responses API call;
* ``tools`` — a chat completion offering one tool; the answer's tool calls;
* ``until_refused`` — chat completions until the SDK raises; how many answered, what it raised;
* ``burst`` — ``n`` chat completions at once (AsyncOpenAI); how many answered, what was raised.
"""

import asyncio
import json
import os
import sys
import time

import openai

from apiary.agent import agent

MODEL = os.environ.get("MODEL", "default")  # "default": the AgentSpec's spec.llm.model


def _client() -> openai.OpenAI:
    return openai.OpenAI(
        base_url=os.environ["APIARY_KEEPER_URL"] + "/v1", api_key=os.environ["APIARY_KEEPER_TOKEN"]
    )


def _error(exc: Exception) -> dict:
    out = {"class": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, openai.APIStatusError):
        out.update(status=exc.status_code, body=exc.body, code=getattr(exc, "code", None))
    return out


def _messages(payload: dict) -> list:
    return [{"role": "user", "content": payload.get("text", "hi")}]


async def _burst(n: int, payload: dict) -> dict:
    client = openai.AsyncOpenAI(
        base_url=os.environ["APIARY_KEEPER_URL"] + "/v1", api_key=os.environ["APIARY_KEEPER_TOKEN"]
    )
    max_tokens = payload.get("max_tokens")

    async def one() -> object:
        try:
            extra = {"max_tokens": max_tokens} if max_tokens else {}
            got = await client.chat.completions.create(
                model=MODEL, messages=_messages(payload), **extra
            )
            return got.choices[0].message.content
        except openai.APIError as exc:
            return exc

    results = await asyncio.gather(*(one() for _ in range(n)))
    await client.close()
    errors = [_error(r) for r in results if isinstance(r, Exception)]
    return {"answered": sum(1 for r in results if not isinstance(r, Exception)), "errors": errors}


def _do(payload: dict) -> dict:
    op = payload.get("op")
    client = _client()
    if op == "chat":
        got = client.chat.completions.create(model=MODEL, messages=_messages(payload))
        return {"text": got.choices[0].message.content, "model": got.model,
                "usage": [got.usage.prompt_tokens, got.usage.completion_tokens]}  # fmt: skip
    if op == "stream":
        stream = client.chat.completions.create(
            model=MODEL, messages=_messages(payload), stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        parts, usage = [], None
        for chunk in stream:
            if chunk.usage is not None:
                usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
        return {"text": "".join(parts), "usage": usage}
    if op == "tools":
        tool = {"type": "function", "function": {
            "name": "get_weather", "description": "the weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}  # fmt: skip
        got = client.chat.completions.create(model=MODEL, messages=_messages(payload), tools=[tool])
        calls = got.choices[0].message.tool_calls or []
        return {"tools": [[c.function.name, json.loads(c.function.arguments)] for c in calls],
                "finish": got.choices[0].finish_reason}  # fmt: skip
    if op == "embed":
        got = client.embeddings.create(model=MODEL, input=payload.get("inputs", ["a"]))
        return {"vectors": len(got.data), "usage": got.usage.prompt_tokens}
    if op == "responses":
        got = client.responses.create(model=MODEL, input=payload.get("text", "hi"))
        return {"text": got.output_text, "usage": [got.usage.input_tokens, got.usage.output_tokens]}
    if op == "responses_stream":
        parts, usage = [], None
        for event in client.responses.create(model=MODEL, input=payload.get("text"), stream=True):
            if event.type == "response.output_text.delta":
                parts.append(event.delta)
            if event.type == "response.completed":
                usage = [event.response.usage.input_tokens, event.response.usage.output_tokens]
        return {"text": "".join(parts), "usage": usage}
    if op == "until_refused":
        answered, started = 0, time.monotonic()
        while answered < 100:
            try:
                client.chat.completions.create(model=MODEL, messages=_messages(payload))
            except openai.APIError as exc:
                return {"answered": answered, "raised": _error(exc),
                        "seconds": time.monotonic() - started}  # fmt: skip
            answered += 1
        return {"answered": answered, "raised": None}
    if op == "burst":
        return asyncio.run(_burst(int(payload.get("n", 50)), payload))
    raise ValueError(f"unknown op {op!r}")


@agent
def answer(msg, ctx):
    try:
        result = _do(msg.payload)
    except openai.APIError as exc:
        result = {"raised": _error(exc)}
    print("SDK-RESULT " + json.dumps(result, default=str), file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    answer.run()
