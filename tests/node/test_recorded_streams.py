"""A streamed call in the cassette (apiary.gateway.recorded_streams): the events add up to the
answer an unstreamed call of the same request gets; an unstreamed recording replays as a stream
the SDK can read; the usage chunk only reaches an agent that asked for it."""

from __future__ import annotations

import orjson

from apiary.gateway.recorded_streams import as_events, assemble, replayed


def event(chunk: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(chunk)


HEAD = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
TOOL = {"index": 0, "id": "t1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"ci'}}  # fmt: skip
MORE = {"index": 0, "function": {"arguments": 'ty": "Paris"}'}}
STREAM = [
    event({**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
    event({**HEAD, "choices": [{"index": 0, "delta": {"content": "echo: "}}]}),
    event({**HEAD, "choices": [{"index": 0, "delta": {"content": "alpha"}}]}),
    event({**HEAD, "choices": [{"index": 0, "delta": {"tool_calls": [TOOL]}}]}),
    event({**HEAD, "choices": [{"index": 0, "delta": {"tool_calls": [MORE]}}]}),
    event({**HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    event({**HEAD, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
    b"data: [DONE]",
]


def test_the_events_add_up_to_a_chat_completion_with_tool_calls_and_usage() -> None:
    answer = assemble(STREAM)
    assert answer == {
        "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "echo: alpha",
            "tool_calls": [{"id": "t1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}}],
    }  # fmt: skip


def test_the_usage_chunk_reaches_only_an_agent_that_asked_for_it() -> None:
    assert len(replayed(STREAM, keep_usage_chunk=True)) == len(STREAM)
    kept = replayed(STREAM, keep_usage_chunk=False)
    assert len(kept) == len(STREAM) - 1 and all(e.endswith(b"\n\n") for e in kept)
    assert not any(b'"usage"' in e for e in kept)


def test_an_unstreamed_recording_replays_as_a_stream_that_adds_up_to_it() -> None:
    answer = assemble(STREAM)
    events = as_events(answer)
    assert events[-1] == b"data: [DONE]"
    again = assemble(events)
    assert again is not None and answer is not None
    assert again["choices"] == answer["choices"] and again["usage"] == answer["usage"]
    first = orjson.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["tool_calls"][0]["index"] == 0


def test_a_responses_api_stream_is_recorded_as_its_completed_response() -> None:
    final = {"id": "r1", "object": "response", "usage": {"input_tokens": 3}}
    events = [event({"type": "response.output_text.delta", "delta": "hi"}),
              event({"type": "response.completed", "response": final})]  # fmt: skip
    assert assemble(events) == final
