"""Fake Anthropic Messages and Gemini generateContent servers: real Starlette apps under uvicorn.

Deterministic, as tests/fakes/openai_server.py: they answer ``echo: <last user text>`` with
fixed usage (10 prompt, 5 completion tokens); when the request offers tools and the last user
text mentions ``weather``, they call the first tool with ``{"city": "Paris"}`` instead. Streams
are the providers' own event shapes (Anthropic ``message_start`` … ``message_stop``; Gemini SSE
chunks of ``GenerateContentResponse``). Each checks its key header and records every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fakes.openai_server import Recorded

USAGE = (10, 5)


@dataclass
class FakeProvider:
    api_key: str = "fake-provider-key"
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        rec = Recorded(request.method, request.url.path, dict(request.headers), body,
                       query=request.url.query)  # fmt: skip
        self.requests.append(rec)
        return rec


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


@dataclass
class FakeAnthropic(FakeProvider):
    async def messages(self, request: Request) -> Response:
        rec = await self._record(request)
        if request.headers.get("x-api-key") != self.api_key:
            return JSONResponse({"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}}, 401)  # fmt: skip
        if request.headers.get("anthropic-version") != "2023-06-01":
            return JSONResponse({"type": "error", "error": {
                "type": "invalid_request_error", "message": "anthropic-version"}}, 400)  # fmt: skip
        body = rec.body
        if not isinstance(body.get("max_tokens"), int):
            return JSONResponse(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "max_tokens: Field required",
                    },
                },
                400,
            )
        last = body["messages"][-1]
        text = "".join(b.get("text", "") for b in last["content"] if b.get("type") == "text")
        tool = body.get("tools", [{}])[0].get("name") if "weather" in text else None
        blocks = ([{"type": "tool_use", "id": "toolu_1", "name": tool, "input": {"city": "Paris"}}]
                  if tool else [{"type": "text", "text": f"echo: {text}"}])  # fmt: skip
        usage = {"input_tokens": USAGE[0], "output_tokens": USAGE[1]}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                   "content": blocks, "stop_reason": "tool_use" if tool else "end_turn",
                   "usage": usage}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse(message)

        async def events() -> AsyncIterator[bytes]:
            start = {**message, "content": [], "stop_reason": None,
                     "usage": {"input_tokens": USAGE[0], "output_tokens": 1}}  # fmt: skip
            yield _sse({"type": "message_start", "message": start}, "message_start")
            if tool:
                yield _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": tool,
                            "input": {},
                        },
                    }
                )
                for piece in ['{"city": ', '"Paris"}']:
                    yield _sse({"type": "content_block_delta", "index": 0, "delta": {
                        "type": "input_json_delta", "partial_json": piece}})  # fmt: skip
            else:
                yield _sse({"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}})  # fmt: skip
                for i, word in enumerate(f"echo: {text}".split(" ")):
                    yield _sse(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": word if i == 0 else " " + word},
                        }
                    )
            yield _sse({"type": "content_block_stop", "index": 0})
            yield _sse({"type": "ping"})
            yield _sse({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"]},
                        "usage": {"output_tokens": USAGE[1]}})  # fmt: skip
            yield _sse({"type": "message_stop"})

        return StreamingResponse(events(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])


@dataclass
class FakeGemini(FakeProvider):
    async def generate(self, request: Request) -> Response:
        rec = await self._record(request)
        if request.headers.get("x-goog-api-key") != self.api_key:
            return JSONResponse({"error": {"code": 403, "message": "API key not valid",
                                           "status": "PERMISSION_DENIED"}}, 403)  # fmt: skip
        model, _, verb = request.path_params["target"].partition(":")
        body = rec.body
        last = body["contents"][-1]
        text = "".join(p.get("text", "") for p in last["parts"])
        declared = (body.get("tools") or [{}])[0].get("functionDeclarations") or [{}]
        tool = declared[0].get("name") if "weather" in text else None
        part = ({"functionCall": {"name": tool, "args": {"city": "Paris"}}} if tool
                else {"text": f"echo: {text}"})  # fmt: skip
        usage = {"promptTokenCount": USAGE[0], "candidatesTokenCount": USAGE[1],
                 "totalTokenCount": sum(USAGE)}  # fmt: skip
        answer = {"candidates": [{"content": {"role": "model", "parts": [part]},
                                  "finishReason": "STOP", "index": 0}],
                  "usageMetadata": usage, "modelVersion": model}  # fmt: skip
        if verb == "generateContent":
            return JSONResponse(answer)
        assert verb == "streamGenerateContent" and request.query_params.get("alt") == "sse"

        async def events() -> AsyncIterator[bytes]:
            if tool:
                yield _sse(answer)
                return
            words = f"echo: {text}".split(" ")
            for i, word in enumerate(words):
                piece = {"candidates": [{"content": {"role": "model", "parts": [
                    {"text": word if i == 0 else " " + word}]}, "index": 0}],
                    "modelVersion": model}  # fmt: skip
                if i == len(words) - 1:
                    piece["candidates"][0]["finishReason"] = "STOP"
                    piece["usageMetadata"] = usage
                yield _sse(piece)

        return StreamingResponse(events(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1beta/models/{target}", self.generate, methods=["POST"]),
        ])  # fmt: skip


@contextlib.asynccontextmanager
async def serving(fake: FakeAnthropic | FakeGemini, prefix: str) -> AsyncIterator[Any]:
    """Serve ``fake`` on an ephemeral loopback port; ``fake.url`` is its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}{prefix}"
    server = uvicorn.Server(
        uvicorn.Config(
            fake.app(),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield fake
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        sock.close()
