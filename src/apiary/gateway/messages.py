"""The Anthropic Messages API on the gateway: ``POST /drones/{cell}/{drone}/v1/messages``.

So an agent may use the unmodified ``anthropic`` SDK, ``anthropic.Anthropic(base_url=
$APIARY_KEEPER_URL, api_key=$APIARY_KEEPER_TOKEN)``, as well as OpenAI's. A Messages call is
served *as a chat completion*: its body is translated to one and handed to the gateway's own chat
handler (:meth:`apiary.gateway.service.LlmGateway._chat`), so the drone's provider, tier and
model, the budgets' reserve and settle, record and replay, metrics and spans are the chat
pipeline's, unchanged — there is no second pipeline. What that handler answers (a
``chat.completion``, its ``chat.completion.chunk`` stream, or an OpenAI-shaped error) is
translated back: a Messages ``message``, Anthropic's stream events (``message_start``,
``content_block_start`` / ``_delta`` (``text_delta``, ``input_json_delta``) / ``_stop``,
``message_delta`` with the usage, ``message_stop``), or ``{"type": "error", "error": {type,
message}}`` with the same status and headers — a budget refusal is a 429 ``rate_limit_error``
with ``x-should-retry: false``, which the SDK raises as ``RateLimitError`` without retrying; the
gateway's own code (``budget_exceeded``) is in ``error.details.error_code``.

This is the reverse of :mod:`apiary.gateway.providers.anthropic` (chat completions to an
Anthropic *provider*), whose tables it reads backwards. The keeper token may come in
``x-api-key`` (what the SDK's ``api_key`` sends in its older versions) as well as in
``Authorization: Bearer``.

Not translated: ``top_k`` and ``thinking`` (chat completions have no such fields: dropped),
``cache_control`` (dropped), and content the chat API cannot carry — documents, server tools,
search results — which are a 400 naming the block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message

from apiary.gateway.budget import GatewayRefusal
from apiary.gateway.calls import estimate, estimate_prompt
from apiary.gateway.providers import text_of
from apiary.gateway.providers.anthropic import FINISH, TOOL_CHOICE, tool_input

Obj = dict[str, Any]
ReadBody = Callable[[Request], Awaitable[Obj]]
Chat = Callable[[Request], Awaitable[Response]]

STOP_REASON = {finish: reason for reason, finish in reversed(FINISH.items())}
"""OpenAI's ``finish_reason`` → Anthropic's ``stop_reason``: the first of :data:`FINISH`'s."""
STOP_REASON["function_call"] = "tool_use"
TOOL_CHOICE_BACK = {theirs: ours for ours, theirs in TOOL_CHOICE.items()}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 529: "overloaded_error"}  # fmt: skip
"""The Anthropic error ``type`` of a status (any other: ``api_error``)."""
KEPT_HEADERS = ("x-should-retry", "retry-after", "x-request-id", "x-apiary-tier")


# ----------------------------------------------------------------------------- the request


def _refuse(message: str, param: str | None = None) -> GatewayRefusal:
    return GatewayRefusal(400, "invalid_request_error", message, param=param)


def _image(block: Obj) -> Obj:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif source.get("type") == "url":
        url = str(source.get("url") or "")
    else:
        raise _refuse(f"an image source of type {source.get('type')!r} is not served here")
    return {"type": "image_url", "image_url": {"url": url}}


def _blocks(content: Any) -> list[Obj]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _refuse("a message's content must be a string or a list of content blocks")
    return [b for b in content if isinstance(b, dict)]


def _user(content: Any) -> list[Obj]:
    """A user turn: its ``tool_result`` blocks as ``tool`` messages (first, as the chat API wants
    them right after the assistant's ``tool_calls``), then the rest as one user message."""
    tools: list[Obj] = []
    parts: list[Obj] = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "image":
            parts.append(_image(block))
        elif kind == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else text_of(_blocks(inner or []))
            if block.get("is_error"):
                text = f"error: {text}"
            tools.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""),
                          "content": text})  # fmt: skip
        else:
            raise _refuse(f"a user content block of type {kind!r} is not served here")
    if not parts:
        return tools
    if all(p["type"] == "text" for p in parts):
        return [*tools, {"role": "user", "content": "".join(p["text"] for p in parts)}]
    return [*tools, {"role": "user", "content": parts}]


def _assistant(content: Any) -> Obj:
    text: list[str] = []
    calls: list[Obj] = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id") or ""), "type": "function",
                          "function": {"name": str(block.get("name") or ""),
                                       "arguments": orjson.dumps(block.get("input") or {})
                                       .decode()}})  # fmt: skip
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own reasoning: no chat-completions field carries it
        else:
            raise _refuse(f"an assistant content block of type {kind!r} is not served here")
    message: Obj = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool(tool: Any) -> Obj:
    if not isinstance(tool, dict) or not tool.get("name") or (
        tool.get("type") not in (None, "custom")
    ):  # fmt: skip
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _refuse(f"tool {kind!r} is not served here: only custom tools (name, "
                      "input_schema) are", param="tools")  # fmt: skip
    fn: Obj = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def chat_request(body: Obj) -> Obj:
    """A Messages API request as the chat completion the gateway serves."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _refuse("messages: a list of messages is required", param="messages")
    out: list[Obj] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else text_of(_blocks(system))
        out.append({"role": "system", "content": text})
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _refuse("each message needs a role, 'user' or 'assistant'", param="messages")
        if m["role"] == "user":
            out.extend(_user(m.get("content")))
        else:
            out.append(_assistant(m.get("content")))
    chat: Obj = {"model": body.get("model") or "default", "messages": out}
    for key in ("max_tokens", "temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        chat["stop"] = list(stops)
    if body.get("tools"):
        chat["tools"] = [_tool(t) for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in TOOL_CHOICE_BACK:
            chat["tool_choice"] = TOOL_CHOICE_BACK[kind]
        if choice.get("disable_parallel_tool_use") and kind != "none":
            chat["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        chat["user"] = user
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # message_delta carries the usage
    return chat


# ----------------------------------------------------------------------------- the answer


def _stop(finish: Any, matched: Any, stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence): a stop sequence is known when the answer names it, as vLLM's
    ``choices[].stop_reason`` does; otherwise a ``stop`` is the end of the turn."""
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASON.get(str(finish), "end_turn"), None


def _message_id(ident: Any) -> str:
    ident = str(ident or "")
    return ident if ident.startswith("msg") else f"msg_{ident or 'apiary'}"


def message_of(answer: Obj, stops: list[str]) -> Obj:
    """A ``chat.completion`` as a Messages API ``message``."""
    choice = (answer.get("choices") or [{}])[0] or {}
    said = choice.get("message") or {}
    content: list[Obj] = []
    text = said.get("content")
    text = text if isinstance(text, str) else text_of(text)
    if text:
        content.append({"type": "text", "text": text})
    for call in said.get("tool_calls") or []:
        fn = (call or {}).get("function") or {}
        content.append({"type": "tool_use", "id": str(call.get("id") or ""),
                        "name": str(fn.get("name") or ""),
                        "input": tool_input(fn.get("arguments"))})  # fmt: skip
    reason, sequence = _stop(choice.get("finish_reason"), choice.get("stop_reason"), stops)
    usage = answer.get("usage") or {}
    return {
        "id": _message_id(answer.get("id")), "type": "message", "role": "assistant",
        "model": str(answer.get("model") or ""), "content": content, "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": int(usage.get("prompt_tokens") or 0),
                  "output_tokens": int(usage.get("completion_tokens") or 0)},
    }  # fmt: skip


def _event(kind: str, data: Obj) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessageEvents:
    """``chat.completion.chunk`` events → Anthropic's stream events, as they come."""

    def __init__(self, request: Obj, stops: list[str]) -> None:
        self.stops = stops
        self.prompt_estimate = estimate_prompt(request)
        self.model = str(request.get("model") or "")
        self.started = self.ended = False
        self.open: int | None = None  # the content block open now
        self.kind = ""  # its type
        self.blocks = 0
        self.tools: dict[int, int] = {}  # OpenAI tool call index → content block index
        self.finish: Any = None
        self.matched: Any = None
        self.usage: tuple[int, int] | None = None
        self.streamed = 0

    def _start(self, ident: Any) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message: Obj = {
            "id": _message_id(ident),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [_event("message_start", {"message": message})]  # fmt: skip

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [_event("content_block_stop", {"index": index})]

    def _open(self, kind: str, block: Obj) -> list[bytes]:
        out = self._close()
        self.open, self.kind = self.blocks, kind
        self.blocks += 1
        return [*out, _event("content_block_start", {"index": self.open, "content_block": block})]

    def feed(self, chunk: Obj) -> list[bytes]:
        if isinstance(chunk.get("error"), dict):  # the provider's stream broke off
            err = chunk["error"]
            self.ended = True
            return [
                _event(
                    "error",
                    {"error": {"type": "api_error", "message": str(err.get("message") or "")}},
                )
            ]
        out = self._start(chunk.get("id"))
        if chunk.get("model"):
            self.model = str(chunk["model"])
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
            self.usage = (int(usage.get("prompt_tokens") or 0),
                          int(usage.get("completion_tokens") or 0))  # fmt: skip
        for choice in chunk.get("choices") or []:
            delta = (choice or {}).get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open is None or self.kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                self.streamed += len(text)
                delta = {"type": "text_delta", "text": text}
                out.append(_event("content_block_delta", {"index": self.open, "delta": delta}))
            for call in delta.get("tool_calls") or []:
                out += self._tool_call(call or {})
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
        return out

    def _tool_call(self, call: Obj) -> list[bytes]:
        out: list[bytes] = []
        number = int(call.get("index") or 0)
        fn = call.get("function") or {}
        if number not in self.tools:
            out += self._open(
                "tool_use",
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or ""),
                    "name": str(fn.get("name") or ""),
                    "input": {},
                },
            )
            self.tools[number] = self.blocks - 1
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            self.streamed += len(piece)
            out.append(_event("content_block_delta", {"index": self.tools[number], "delta": {
                "type": "input_json_delta", "partial_json": piece}}))  # fmt: skip
        return out

    def done(self) -> list[bytes]:
        """The stream's ``[DONE]`` (or its end): close the message, with its usage."""
        if self.ended:
            return []
        self.ended = True
        out = self._start("") + self._close()
        prompt, completion = self.usage or (self.prompt_estimate, estimate("x" * self.streamed))
        reason, sequence = _stop(self.finish, self.matched, self.stops)
        out.append(_event("message_delta", {
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": {"input_tokens": prompt, "output_tokens": completion}}))  # fmt: skip
        out.append(_event("message_stop", {}))
        return out


async def _translate_stream(
    pieces: AsyncIterator[bytes], events: MessageEvents
) -> AsyncIterator[bytes]:
    buffer = b""
    try:
        async for piece in pieces:
            buffer += piece.replace(b"\r\n", b"\n")
            while (end := buffer.find(b"\n\n")) >= 0:
                raw, buffer = buffer[:end], buffer[end + 2 :]
                data = b"".join(x[5:].strip() for x in raw.split(b"\n") if x.startswith(b"data:"))
                if data == b"[DONE]":
                    for out in events.done():
                        yield out
                    continue
                try:
                    chunk = orjson.loads(data) if data else None
                except orjson.JSONDecodeError:
                    chunk = None
                if isinstance(chunk, dict):
                    for out in events.feed(chunk):
                        yield out
        for out in events.done():
            yield out
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:  # the agent hung up: let the relay settle the call now
            await close()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


# ----------------------------------------------------------------------------- errors


def error_body(status: int, answer: Any) -> Obj:
    """An OpenAI-shaped error (the gateway's, or a provider's) as Anthropic's error body."""
    err = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        theirs = str(err.get("type") or "")
        code = err.get("code") if isinstance(err.get("code"), str) else theirs
    else:
        message = answer if isinstance(answer, str) and answer else f"the gateway answered {status}"
        theirs = code = ""
    known = set(ERROR_TYPES.values()) | {"api_error"}
    kind = theirs if theirs in known else ERROR_TYPES.get(status, "api_error")
    out: Obj = {"type": kind, "message": message}
    if code and code != kind:
        out["details"] = {"error_code": code}
    return {"type": "error", "error": out}


def _error(status: int, answer: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body(status, answer)), status, headers,
                    media_type="application/json")  # fmt: skip


def _kept(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}


async def _content(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        parts = [p if isinstance(p, bytes) else str(p).encode() async for p in
                 response.body_iterator]  # fmt: skip
        return b"".join(parts)
    return bytes(response.body)


# ----------------------------------------------------------------------------- serving


def _inner(request: Request, chat: Obj) -> Request:
    """The chat completion as a request of the same drone, for the gateway's chat handler; the
    keeper token of ``x-api-key`` as the bearer token the keeper checks."""
    raw = orjson.dumps(chat)
    headers = [(k, v) for k, v in request.scope["headers"]
               if k not in (b"content-length", b"content-type")]  # fmt: skip
    key = request.headers.get("x-api-key")
    if key and not request.headers.get("authorization"):
        headers.append((b"authorization", b"Bearer " + key.encode("latin-1")))
    headers += [(b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode())]  # fmt: skip
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await request.receive()

    return Request({**request.scope, "headers": headers}, receive)


async def serve(request: Request, read_body: ReadBody, chat: Chat) -> Response:
    """``POST /v1/messages``: the Messages call as a chat completion (``chat``), answered back in
    the Messages API's shape."""
    if not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        return _error(
            401,
            {
                "error": {
                    "type": "authentication_error",
                    "message": "send 'x-api-key: $APIARY_KEEPER_TOKEN' (or Authorization: Bearer)",
                }
            },
        )
    try:
        body = await read_body(request)
        converted = chat_request(body)
    except GatewayRefusal as exc:
        return _error(exc.status, exc.body(), exc.headers)
    stops = [s for s in converted.get("stop") or [] if isinstance(s, str)]
    response = await chat(_inner(request, converted))
    kept = _kept(response)
    if not 200 <= response.status_code < 300:
        raw = await _content(response)
        try:
            answer: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = raw.decode("utf-8", "replace")
        return _error(response.status_code, answer, kept)
    if converted.get("stream"):
        events = MessageEvents(converted, stops)
        pieces = (response.body_iterator if isinstance(response, StreamingResponse)
                  else _once(bytes(response.body)))  # fmt: skip
        stream = _translate_stream(pieces, events)  # type: ignore[arg-type]
        return StreamingResponse(stream, 200, kept, media_type="text/event-stream",
                                 background=response.background)  # fmt: skip
    try:
        answer = orjson.loads(await _content(response))
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        return _error(502, "the provider's answer is not a chat completion", kept)
    return Response(orjson.dumps(message_of(answer, stops)), 200, kept,
                    media_type="application/json")  # fmt: skip


__all__ = ["MessageEvents", "chat_request", "error_body", "message_of", "serve"]
