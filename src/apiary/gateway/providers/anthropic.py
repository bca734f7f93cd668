"""OpenAI chat completions ↔ the Anthropic Messages API (``POST /v1/messages``).

Request: ``system``/``developer`` messages become ``system``; user and assistant turns become
``messages`` (consecutive turns of one role merged, as the API wants them alternating); an
assistant's ``tool_calls`` become ``tool_use`` blocks and ``tool`` messages ``tool_result`` blocks
of a user turn; ``tools``/``tool_choice``, ``stop``, ``temperature``, ``top_p`` map to their
names; ``max_tokens`` is required there (the gateway's budget cap, else
:data:`DEFAULT_MAX_TOKENS`). Answer: text and ``tool_use`` blocks become the message's
``content`` and ``tool_calls``; ``stop_reason`` the ``finish_reason``; ``usage`` input/output
tokens (cache reads and writes counted as prompt). Streams: ``message_start``,
``content_block_*`` and ``message_delta`` events become chunks as they come.
"""

from __future__ import annotations

from typing import Any

import orjson

from apiary.gateway.providers import Obj, chunk, completion, error_body, text_of

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}  # fmt: skip
"""Anthropic's ``stop_reason`` → OpenAI's ``finish_reason`` (the first of each is the way back:
:mod:`apiary.gateway.messages` serves the Messages API over chat completions)."""
TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}
"""OpenAI's ``tool_choice`` strings → Anthropic's ``tool_choice.type`` (and back)."""


def _image(part: Obj) -> Obj | None:
    url = (part.get("image_url") or {}).get("url") if isinstance(part, dict) else None
    if not isinstance(url, str):
        return None
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[Obj]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[Obj] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            out.append({"type": "text", "text": str(part.get("text") or "")})
        elif part.get("type") == "image_url":
            image = _image(part)
            if image is not None:
                out.append(image)
    return out


def tool_input(raw: Any) -> Any:
    """A tool call's JSON ``arguments`` as the object a ``tool_use`` block's ``input`` is."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _messages(messages: list[Any]) -> tuple[str, list[Obj]]:
    system: list[str] = []
    turns: list[Obj] = []

    def add(role: str, blocks: list[Obj]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": str(m.get("tool_call_id") or ""),
                          "content": text_of(m.get("content"))}])  # fmt: skip
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for call in m.get("tool_calls") or []:
                fn = (call or {}).get("function") or {}
                blocks.append({"type": "tool_use", "id": str(call.get("id") or ""),
                               "name": str(fn.get("name") or ""),
                               "input": tool_input(fn.get("arguments"))})  # fmt: skip
            add("assistant", blocks)
        else:
            add("user", _blocks(m.get("content")))
    return "\n\n".join(s for s in system if s), turns


def _tool_choice(choice: Any) -> Obj | None:
    if isinstance(choice, str) and choice in TOOL_CHOICE:
        return {"type": TOOL_CHOICE[choice]}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    return None


class Anthropic:
    def request(self, body: Obj, *, stream: bool) -> tuple[str, Obj, dict[str, str]]:
        system, turns = _messages(body.get("messages") or [])
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        out: Obj = {"model": body.get("model"), "max_tokens": limit, "messages": turns}
        if system:
            out["system"] = system
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
            if body.get(ours) is not None:
                out[theirs] = body[ours]
        stop = body.get("stop")
        if stop:
            out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        tools = []
        for tool in body.get("tools") or []:
            fn = (tool or {}).get("function") or {}
            if fn.get("name"):
                schema = fn.get("parameters") or {"type": "object"}
                tools.append({"name": fn["name"], "description": fn.get("description") or "",
                              "input_schema": schema})  # fmt: skip
        if tools:
            out["tools"] = tools
            choice = _tool_choice(body.get("tool_choice"))
            if choice is not None:
                out["tool_choice"] = choice
        if stream:
            out["stream"] = True
        return "/messages", out, {"anthropic-version": VERSION}

    def response(self, answer: Obj, model: str) -> Obj:
        text: list[str] = []
        calls: list[Obj] = []
        for block in answer.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                calls.append({"id": block.get("id"), "type": "function",
                              "function": {"name": block.get("name"),
                                           "arguments": orjson.dumps(block.get("input") or {})
                                           .decode()}})  # fmt: skip
        message: Obj = {"role": "assistant", "content": "".join(text) if text else None}
        if calls:
            message["tool_calls"] = calls
        finish = FINISH.get(str(answer.get("stop_reason")), "stop")
        out = completion(str(answer.get("model") or model), str(answer.get("id") or "msg"),
                         message, finish, usage_of(answer.get("usage")))  # fmt: skip
        _stop_sequence(out, answer.get("stop_sequence"))
        return out

    def stream(self, model: str) -> AnthropicStream:
        return AnthropicStream(model)

    def error(self, status: int, answer: Any) -> Obj:
        err = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(err, dict):
            kind = str(err.get("type") or "api_error")
            return error_body(str(err.get("message") or ""), kind)
        return error_body(f"the Anthropic API answered {status}", "api_error")


def _stop_sequence(answer: Obj, sequence: Any) -> None:
    """The stop sequence that ended the answer as ``choices[].stop_reason``, as vLLM names it
    (chat completions have no field of their own): the Messages API served to agents
    (:mod:`apiary.gateway.messages`) answers ``stop_sequence`` from it."""
    if isinstance(sequence, str) and answer.get("choices"):
        answer["choices"][0]["stop_reason"] = sequence


def usage_of(usage: Any) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return (0, 0)
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    prompt = sum(int(usage.get(k) or 0) for k in keys)
    return (prompt, int(usage.get("output_tokens") or 0))


class AnthropicStream:
    """Anthropic stream events → OpenAI chunks, as they come."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "msg"
        self.usage: tuple[int, int] | None = None
        self._prompt = 0
        self._tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool call index
        self._finished = False

    def _chunk(self, delta: Obj | None, finish: str | None = None) -> Obj:
        return chunk(self.model, self.id, delta, finish)

    def feed(self, event: Obj) -> list[Obj]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id") or self.id)
            self.model = str(message.get("model") or self.model)
            self._prompt, out = usage_of(message.get("usage"))
            self.usage = (self._prompt, out)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[int(event.get("index") or 0)] = len(self._tools)
                call = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}  # fmt: skip
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": str(delta.get("text") or "")})]
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(int(event.get("index") or 0), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            out = int((event.get("usage") or {}).get("output_tokens") or 0)
            self.usage = (self._prompt, out)
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self._finished = True
                out_chunk = self._chunk({}, FINISH.get(str(reason), "stop"))
                _stop_sequence(out_chunk, (event.get("delta") or {}).get("stop_sequence"))
                return [out_chunk]
        if kind == "error":
            err = event.get("error") or {}
            return [{"error": error_body(str(err.get("message")), str(err.get("type")))["error"]}]
        return []

    def finish(self) -> list[Obj]:
        return [] if self._finished else [self._chunk({}, "stop")]


__all__ = ["FINISH", "TOOL_CHOICE", "VERSION", "Anthropic", "AnthropicStream", "tool_input"]
