"""A fake OpenAI-compatible provider: a real Starlette app under uvicorn on ``127.0.0.1:0``.

Deterministic, so tests can assert exact text and token counts:

* ``POST /v1/chat/completions`` answers ``"echo: <last user message>"`` with a fixed ``usage``
  (:attr:`FakeOpenAI.usage`, per call). With ``"stream": true`` it sends one SSE chunk per word,
  a final chunk with ``finish_reason``, then — only when the request asked with
  ``stream_options.include_usage`` — a usage chunk with ``choices: []``, then ``data: [DONE]``.
  :attr:`FakeOpenAI.stream_gate`, when set to an unset event, holds the stream after its first
  chunk until the event is set, which lets a test prove that nothing buffers the whole answer.
* ``POST /v1/embeddings`` answers one small deterministic vector per input, ``usage`` with
  ``prompt_tokens`` = :attr:`FakeOpenAI.embedding_tokens` per call.
* ``GET /v1/models`` lists :attr:`FakeOpenAI.models`.
* Every route checks ``Authorization: Bearer <api_key>`` (401 with an OpenAI error body).
* :attr:`FakeOpenAI.fail_next` makes the next calls answer a given (status, body) instead.
* :attr:`FakeOpenAI.requests` records every request (method, path, headers, JSON body).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    billed: int = 0
    """Tokens this call was charged (0 when refused)."""
    query: str = ""


@dataclass
class FakeOpenAI:
    api_key: str = "sk-fake-provider-key"
    usage: tuple[int, int] = (10, 5)
    """(prompt, completion) tokens reported for every chat completion."""
    embedding_tokens: int = 4
    models: list[str] = field(default_factory=lambda: ["fake-small", "fake-large"])
    fail_next: list[tuple[int, Any]] = field(default_factory=list)
    """Answers (status, JSON body) handed out, first first, before any real answer."""
    stream_gate: asyncio.Event | None = None
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    """``http://127.0.0.1:PORT/v1`` once running (what a Secret's ``baseUrl`` holds)."""
    key_header: str = "authorization"
    """The header the key must come in (``Bearer <key>`` in ``authorization``, else bare)."""

    # ---------------------------------------------------------------------------- helpers

    def chat_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def tokens_billed(self) -> int:
        """Tokens this provider charged for chat completions and embeddings it answered."""
        return sum(r.billed for r in self.requests)

    def _check(self, request: Request) -> Response | None:
        want = f"Bearer {self.api_key}" if self.key_header == "authorization" else self.api_key
        if request.headers.get(self.key_header) != want:
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status_code=401,
            )
        if self.fail_next:
            status, body = self.fail_next.pop(0)
            return JSONResponse(body, status_code=status)
        return None

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Recorded(request.method, request.url.path, dict(request.headers), body,
                       query=request.url.query)  # fmt: skip
        self.requests.append(rec)
        return rec

    # ----------------------------------------------------------------------------- routes

    async def chat(self, request: Request) -> Response:
        rec = await self._record(request)
        refused = self._check(request)
        if refused is not None:
            return refused
        body = rec.body if isinstance(rec.body, dict) else {}
        messages = body.get("messages") or []
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        text = f"echo: {last}"
        model = body.get("model") or "fake-default"
        prompt, completion = self.usage
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        rec.billed = prompt + completion
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage,
            })  # fmt: skip
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._stream(model, text, usage if with_usage else None),
            media_type="text/event-stream",
        )

    async def _stream(self, model: str, text: str, usage: Any) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield chunk({"role": "assistant", "content": piece} if i == 0 else {"content": piece})
            if i == 0 and self.stream_gate is not None:
                await self.stream_gate.wait()
        yield chunk({}, "stop")
        if usage is not None:
            final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                     "model": model, "choices": [], "usage": usage}  # fmt: skip
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def responses(self, request: Request) -> Response:
        """The Responses API: ``output_text`` ``echo: <input>``, usage in input/output tokens;
        streamed as ``response.output_text.delta`` events and a ``response.completed``."""
        rec = await self._record(request)
        refused = self._check(request)
        if refused is not None:
            return refused
        body = rec.body if isinstance(rec.body, dict) else {}
        given = body.get("input")
        text = f"echo: {given if isinstance(given, str) else json.dumps(given)}"
        prompt, completion = self.usage
        rec.billed = prompt + completion
        final = {
            "id": "resp-fake", "object": "response", "created_at": 1, "status": "completed",
            "model": body.get("model") or "fake-default",
            "output": [{"type": "message", "id": "msg-fake", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": prompt, "output_tokens": completion,
                      "total_tokens": prompt + completion},
        }  # fmt: skip
        if not body.get("stream"):
            return JSONResponse(final)

        async def events() -> AsyncIterator[bytes]:
            def event(kind: str, data: dict[str, Any]) -> bytes:
                payload = json.dumps({"type": kind, **data})
                return f"event: {kind}\ndata: {payload}\n\n".encode()

            started = {**final, "status": "in_progress", "output": [], "usage": None}
            yield event("response.created", {"response": started})
            for i, word in enumerate(text.split(" ")):
                yield event("response.output_text.delta", {
                    "item_id": "msg-fake", "output_index": 0, "content_index": 0,
                    "delta": word if i == 0 else " " + word})  # fmt: skip
            yield event("response.completed", {"response": final})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(self, request: Request) -> Response:
        rec = await self._record(request)
        refused = self._check(request)
        if refused is not None:
            return refused
        body = rec.body if isinstance(rec.body, dict) else {}
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(str(item).encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [b / 255 for b in digest[:8]]})  # fmt: skip
        rec.billed = self.embedding_tokens
        return JSONResponse({
            "object": "list", "data": data, "model": body.get("model") or "fake-embed",
            "usage": {"prompt_tokens": self.embedding_tokens,
                      "total_tokens": self.embedding_tokens},
        })  # fmt: skip

    async def list_models(self, request: Request) -> Response:
        await self._record(request)
        refused = self._check(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models],
            }
        )

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
        ])  # fmt: skip


@contextlib.asynccontextmanager
async def running_fake_openai(**config: Any) -> AsyncIterator[FakeOpenAI]:
    """Serve a :class:`FakeOpenAI` on an ephemeral loopback port for the ``with`` block."""
    fake = FakeOpenAI(**config)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = uvicorn.Server(
        uvicorn.Config(
            fake.app(),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.005)
        yield fake
    finally:
        if fake.stream_gate is not None:
            fake.stream_gate.set()  # never leave a held stream behind
        server.should_exit = True
        try:
            await asyncio.wait_for(serving, 5)
        except (TimeoutError, asyncio.CancelledError):
            serving.cancel()
        sock.close()
