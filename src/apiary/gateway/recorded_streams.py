"""Streamed LLM calls in a session's cassette: recorded as their events, replayed as a stream.

Why both the events and an assembled answer: a replay must give a streaming agent what the
provider streamed — the same chunks, in order, so an agent that reads deltas (or tool-call
fragments) behaves as it did — while a transcript, the replay diff and a later *unstreamed* call
with the same request (``stream`` is not part of the request hash) want one answer. So a streamed
call is recorded with ``stream``: the provider's SSE events as they came (the usage chunk the
gateway asked for included), and ``response``: the answer they add up to (a ``chat.completion``,
or for the Responses API the ``response`` of its ``response.completed`` event). A streamed call
answered from an unstreamed recording gets that answer as one chunk, then its usage, then
``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import orjson

Obj = dict[str, Any]
DONE = b"data: [DONE]"


def _data(raw: bytes) -> Any:
    data = b"".join(line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:"))
    if not data or data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _merge_tool_calls(into: list[Obj], deltas: Any) -> None:
    for delta in deltas if isinstance(deltas, list) else []:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", len(into))
        while len(into) <= index:
            into.append({"id": None, "type": "function",
                         "function": {"name": "", "arguments": ""}})  # fmt: skip
        call, function = into[index], delta.get("function") or {}
        for key in ("id", "type"):
            if delta.get(key):
                call[key] = delta[key]
        for key in ("name", "arguments"):
            if isinstance(function.get(key), str):
                call["function"][key] += function[key]


def assemble(events: list[bytes]) -> Obj | None:
    """The answer a stream's events add up to; None when they carry no chunk at all."""
    answer: Obj | None = None
    choices: dict[int, Obj] = {}
    for raw in events:
        chunk = _data(raw)
        if not isinstance(chunk, dict):
            continue
        if chunk.get("type") == "response.completed" and isinstance(chunk.get("response"), dict):
            return dict(chunk["response"])  # the Responses API: the final answer is an event
        if answer is None:
            answer = {"id": chunk.get("id"), "object": "chat.completion",
                      "created": chunk.get("created"), "model": chunk.get("model")}  # fmt: skip
        if isinstance(chunk.get("usage"), dict):
            answer["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = int(choice.get("index") or 0)
            built = choices.setdefault(
                index,
                {
                    "index": index,
                    "finish_reason": None,
                    "message": {"role": "assistant", "content": None},
                },
            )
            delta = choice.get("delta") or {}
            message = built["message"]
            if isinstance(delta.get("role"), str):
                message["role"] = delta["role"]
            if isinstance(delta.get("content"), str):
                message["content"] = (message["content"] or "") + delta["content"]
            if delta.get("tool_calls"):
                _merge_tool_calls(message.setdefault("tool_calls", []), delta["tool_calls"])
            if choice.get("finish_reason"):
                built["finish_reason"] = choice["finish_reason"]
    if answer is not None:
        answer["choices"] = [choices[i] for i in sorted(choices)]
    return answer


def as_events(answer: Any) -> list[bytes]:
    """An unstreamed ``chat.completion`` as the events a stream of it would have been."""
    if not isinstance(answer, dict):
        return [DONE]
    head = {k: answer.get(k) for k in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"
    choices = []
    for choice in answer.get("choices") or []:
        message = dict((choice or {}).get("message") or {})
        calls = message.pop("tool_calls", None)
        if isinstance(calls, list):
            message["tool_calls"] = [{**c, "index": i} for i, c in enumerate(calls)]
        choices.append({"index": (choice or {}).get("index", 0), "delta": message,
                        "finish_reason": (choice or {}).get("finish_reason")})  # fmt: skip
    events = [b"data: " + orjson.dumps({**head, "choices": choices})]
    if isinstance(answer.get("usage"), dict):
        events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": answer["usage"]}))
    return [*events, DONE]


def replayed(events: list[bytes], *, keep_usage_chunk: bool) -> list[bytes]:
    """The recorded events as the agent gets them: the usage-only chunk the gateway asked the
    provider for is left out unless the agent asked for it too (as :class:`SseRelay` does)."""
    out = []
    for raw in events:
        chunk = _data(raw)
        usage_only = isinstance(chunk, dict) and chunk.get("choices") == [] and "usage" in chunk
        if usage_only and not keep_usage_chunk:
            continue
        out.append(raw + b"\n\n")
    return out


def sse_of(found: Obj, request: Obj, path: str) -> bytes | None:
    """The body of a replayed stream: the recorded events of ``found`` (a cassette lookup's
    answer), or its chat completion as events; None for another unstreamed answer (a Responses
    API call recorded unstreamed has no events to give)."""
    recorded = found.get("stream")
    if isinstance(recorded, list):
        events = [str(e).encode() for e in recorded]
    elif path == "/chat/completions":
        events = as_events(found.get("response"))
    else:
        return None
    asked = bool((request.get("stream_options") or {}).get("include_usage"))
    return b"".join(replayed(events, keep_usage_chunk=asked))


__all__ = ["as_events", "assemble", "replayed", "sse_of"]
