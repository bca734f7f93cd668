"""The translations of apiary.gateway.providers on their own: what the fake providers of
test_gateway_providers.py do not exercise (streamed tool calls, tool results, errors)."""

from __future__ import annotations

import json

from apiary.gateway.providers.anthropic import Anthropic
from apiary.gateway.providers.gemini import Gemini

CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_9", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_9", "content": '{"celsius": 21}'},
]  # fmt: skip


def test_anthropic_tool_results_system_and_a_streamed_tool_call() -> None:
    path, body, headers = Anthropic().request(
        {"model": "claude", "messages": CONVERSATION, "stop": "END", "max_tokens": 9},
        stream=True,
    )
    assert (path, headers) == ("/messages", {"anthropic-version": "2023-06-01"})
    assert body["system"] == "be brief" and body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 9 and body["stream"] is True
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_9", "content": '{"celsius": 21}'}
    ]
    stream = Anthropic().stream("claude")
    out = []
    for event in [
        {"type": "message_start", "message": {"id": "m", "model": "claude-x",
                                              "usage": {"input_tokens": 7, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "tu", "name": "f"}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 4}},
    ]:  # fmt: skip
        out.extend(stream.feed(event))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in out[1:3]]
    assert calls[0]["id"] == "tu" and calls[0]["function"]["name"] == "f"
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in out[1:4])  # fmt: skip
    assert json.loads(args) == {"a": 1}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.usage == (7, 4) and stream.model == "claude-x" and stream.finish() == []
    error = Anthropic().error(
        529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert error == {"error": {"message": "Overloaded", "type": "overloaded_error",
                               "param": None, "code": "overloaded_error"}}  # fmt: skip


def test_gemini_function_responses_schema_and_errors() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "additionalProperties": False,
        "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    path, body, _ = Gemini().request(
        {"model": "gemini-2.0-flash", "messages": CONVERSATION, "tools": tools,
         "tool_choice": "required", "max_tokens": 50, "temperature": 0},
        stream=False,
    )  # fmt: skip
    assert path == "/models/gemini-2.0-flash:generateContent"
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
    }
    assert body["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}}],
    }
    declared = body["tools"][0]["functionDeclarations"][0]
    assert "additionalProperties" not in declared["parameters"]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0}
    answer = Gemini().response({"candidates": [{"content": {"parts": [
        {"text": "thinking", "thought": True}, {"text": "21C"}]}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2,
                          "thoughtsTokenCount": 5}}, "gemini-2.0-flash")  # fmt: skip
    assert answer["choices"][0] == {
        "index": 0,
        "finish_reason": "length",
        "message": {"role": "assistant", "content": "21C"},
    }
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    error = Gemini().error(400, {"error": {"code": 400, "message": "bad model",
                                           "status": "INVALID_ARGUMENT"}})  # fmt: skip
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "INVALID_ARGUMENT" and error["error"]["message"] == "bad model"
