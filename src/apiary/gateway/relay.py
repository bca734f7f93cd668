"""Streams from the provider to the agent, event by event, with the usage read on the way.

:class:`SseRelay` passes a provider's Server-Sent Events on as they arrive — nothing buffers the
answer — reading the final usage chunk of a chat completion (or the ``response.completed`` event
of the Responses API), and settles the call's budget when the stream ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson

from apiary.gateway.calls import CHARS_PER_TOKEN, estimate
from apiary.telemetry import hops

log = logging.getLogger("apiary.gateway")

MAX_MODEL_NAME = 200

Settle = Callable[[int, int, str], Awaitable[None]]
"""(prompt, completion, model) → count the call and release its holds."""


def usage_of(answer: Any) -> tuple[int, int] | None:
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int):
        total = usage.get("total_tokens")
        if not isinstance(total, int):
            return None
        prompt = total - (completion if isinstance(completion, int) else 0)
    return (prompt, completion if isinstance(completion, int) else 0)


def _is_done(event: bytes) -> bool:
    return event.replace(b" ", b"").strip() == b"data:[DONE]"


def model_name(value: Any) -> str:
    return value[:MAX_MODEL_NAME] if isinstance(value, str) else ""


class SseRelay:
    """Passes a provider's SSE stream on event by event, reading usage from the final chunk.

    The usage-only chunk (``choices: []``) the gateway asked for is dropped unless the agent asked
    for it too. The call is settled (``settle``) when the stream ends — also when the agent hangs
    up or the provider breaks off, with an estimate of what was streamed when no usage arrived."""

    def __init__(self, settle: Settle, prompt: str, *, keep_usage_chunk: bool):
        self.settle = settle
        self.prompt = prompt
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: tuple[int, int] | None = None
        self.streamed = 0  # characters of content seen
        self.model = ""  # the requested model until a chunk names the one that answers
        self._named = False
        self.span: Any = None  # the call's trace span, ended with the stream
        self.recorded: list[bytes] | None = None
        """With a list: every event the provider sent is kept in it, for the cassette."""
        self.complete = False
        """Whether the provider's stream ran to its end (nothing broke off, the agent stayed)."""
        self.finished: Callable[[tuple[int, int]], Awaitable[None]] | None = None
        """Called with the usage after a complete stream is settled (to record it)."""

    def event(self, raw: bytes) -> bytes | None:
        """One event (without its blank line): what to send on, or None to drop it."""
        if self.recorded is not None:
            self.recorded.append(raw)
        data = b"".join(line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return raw
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return raw
        if not isinstance(chunk, dict):
            return raw
        kind = chunk.get("type")
        if isinstance(kind, str) and kind.startswith("response."):  # the Responses API
            return self._response_event(kind, chunk, raw)
        if not self._named and model_name(chunk.get("model")):
            self.model, self._named = model_name(chunk.get("model")), True
        counted = usage_of(chunk)
        if counted is not None:
            self.usage = counted
        for choice in chunk.get("choices") or []:
            content = ((choice or {}).get("delta") or {}).get("content")
            if isinstance(content, str):
                self.streamed += len(content)
        if counted is not None and chunk.get("choices") == [] and not self.keep_usage_chunk:
            return None
        return raw

    def _response_event(self, kind: str, chunk: dict[str, Any], raw: bytes) -> bytes:
        """A Responses API event: text deltas are counted, ``response.completed`` (or
        ``.incomplete``) carries the model and the usage; every event is passed on."""
        if kind == "response.output_text.delta" and isinstance(chunk.get("delta"), str):
            self.streamed += len(chunk["delta"])
        final = chunk.get("response")
        if kind in ("response.completed", "response.incomplete") and isinstance(final, dict):
            counted = usage_of(final)
            if counted is not None:
                self.usage = counted
            if model_name(final.get("model")):
                self.model, self._named = model_name(final.get("model")), True
        return raw

    async def run(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """The events to send on. The ``[DONE]`` event is held until the call is settled (and
        recorded): an agent that has the whole answer may end its turn at once, and the
        ledger and the cassette must have the call by then."""
        buffer, done, ended = b"", None, False
        try:
            async for chunk in answer.aiter_bytes():
                buffer += chunk.replace(b"\r\n", b"\n")
                while True:
                    end = buffer.find(b"\n\n")
                    if end < 0:
                        break
                    raw, buffer = buffer[:end], buffer[end + 2 :]
                    out = self.event(raw)
                    if out is not None and _is_done(out):
                        done = out
                    elif out is not None:
                        yield out + b"\n\n"
            if buffer.strip():
                out = self.event(buffer.rstrip(b"\n"))
                if out is not None and _is_done(out):
                    done = out
                elif out is not None:
                    yield out + b"\n\n"
            self.complete = ended = True
            await self._end(answer)
            if done is not None:
                yield done + b"\n\n"
        except httpx.HTTPError as exc:
            log.warning("LLM provider stream broke off", extra={"error": str(exc)})
            failure = {"error": {"type": "provider_unreachable",
                                 "message": f"the provider's stream broke off: {exc}"}}  # fmt: skip
            yield b"data: " + orjson.dumps(failure) + b"\n\n"
        finally:
            if not ended:
                await self._end(answer)

    async def _end(self, answer: httpx.Response) -> None:
        """Close the provider's stream, settle the call, record it when complete, end the span."""
        await answer.aclose()
        usage = self.usage or (
            estimate(self.prompt),
            (self.streamed + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN,
        )
        await self.settle(usage[0], usage[1], self.model)
        if self.complete and self.finished is not None:
            await self.finished(usage)
        if self.span is not None:
            said = {"model": self.model} if self._named else None
            hops.llm_end(self.span, answer.status_code, usage, said, self.usage is None)


__all__ = ["MAX_MODEL_NAME", "SseRelay", "model_name", "usage_of"]
