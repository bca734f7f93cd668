"""An agent that calls its node's LLM gateway with the real, unmodified ``anthropic`` SDK.

``anthropic.Anthropic(base_url=$APIARY_KEEPER_URL, api_key=$APIARY_KEEPER_TOKEN)``, the SDK's
default retries. The message's payload says what to do (``op``); what the SDK returned or raised
is the answer, and also a line on stderr, ``SDK-RESULT <json>``, which the node keeps in the
drone's log (a message that ran out of budget is not waited for):

* ``create`` — one ``messages.create`` of ``text`` with a ``system`` prompt;
* ``stream`` — the same with ``messages.stream``: the text deltas, the final message;
* ``tools`` — a call offering one tool, then the turn with its ``tool_result``;
* ``tools_stream`` — the tool call streamed (``stream=True``): the event types, the final input;
* ``until_refused`` — calls until the SDK raises; how many answered, what it raised, and how
  long the refused call took (retries would add their back-off).
"""

import json
import os
import sys
import time

import anthropic

from apiary.agent import agent

MODEL = os.environ.get("MODEL", "default")  # "default": the AgentSpec's spec.llm.model
WEATHER = {
    "name": "get_weather",
    "description": "the weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _client() -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=os.environ["APIARY_KEEPER_URL"], api_key=os.environ["APIARY_KEEPER_TOKEN"]
    )


def _error(exc: Exception) -> dict:
    out = {"class": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, anthropic.APIStatusError):
        out.update(
            status=exc.status_code,
            body=exc.body,
            retry=exc.response.headers.get("x-should-retry"),
            error_code=getattr(exc, "error_code", None),
        )
    return out


def _usage(message) -> list:
    return [message.usage.input_tokens, message.usage.output_tokens]


def _do(payload: dict) -> dict:
    op = payload.get("op")
    client = _client()
    text = payload.get("text", "hi")
    asked = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    if op == "create":
        got = client.messages.create(**asked, system="You echo.")
        return {
            "text": got.content[0].text,
            "type": got.type,
            "role": got.role,
            "model": got.model,
            "stop_reason": got.stop_reason,
            "usage": _usage(got),
            "id": got.id,
        }
    if op == "stream":
        with client.messages.stream(**asked, system="You echo.") as stream:
            parts = list(stream.text_stream)
            final = stream.get_final_message()
        return {
            "parts": parts,
            "text": final.content[0].text,
            "stop_reason": final.stop_reason,
            "usage": _usage(final),
        }
    if op == "tools":
        got = client.messages.create(**asked, tools=[WEATHER])
        uses = [b for b in got.content if b.type == "tool_use"]
        turns = [
            *asked["messages"],
            {"role": "assistant", "content": [b.model_dump() for b in got.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": u.id, "content": "sunny, 21 C"}
                    for u in uses
                ],
            },
        ]
        after = client.messages.create(model=MODEL, max_tokens=256, messages=turns, tools=[WEATHER])
        return {
            "tools": [[u.name, u.input] for u in uses],
            "stop_reason": got.stop_reason,
            "after": [after.stop_reason, after.content[0].type],
        }
    if op == "tools_stream":
        kinds, pieces = [], []
        for event in client.messages.create(**asked, tools=[WEATHER], stream=True):
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces.append(event.delta.partial_json)
            if event.type == "message_delta":
                reason, usage = event.delta.stop_reason, event.usage.output_tokens
        with client.messages.stream(**asked, tools=[WEATHER]) as stream:
            final = stream.get_final_message()
        (use,) = [b for b in final.content if b.type == "tool_use"]
        return {
            "events": kinds,
            "json": "".join(pieces),
            "stop_reason": reason,
            "output_tokens": usage,
            "final": [use.name, use.input, final.stop_reason, _usage(final)],
        }
    if op == "until_refused":
        answered = 0
        while answered < 100:
            started = time.monotonic()
            try:
                client.messages.create(**asked)
            except anthropic.APIError as exc:
                return {
                    "answered": answered,
                    "raised": _error(exc),
                    "seconds": time.monotonic() - started,
                }
            answered += 1
        return {"answered": answered, "raised": None}
    raise ValueError(f"unknown op {op!r}")


@agent
def answer(msg, ctx):
    try:
        result = _do(msg.payload)
    except anthropic.APIError as exc:
        result = {"raised": _error(exc)}
    print("SDK-RESULT " + json.dumps(result, default=str), file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    answer.run()
