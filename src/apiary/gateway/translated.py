"""A chat completion sent to a provider that does not speak OpenAI's API (Anthropic, Gemini).

The request is translated (:mod:`apiary.gateway.providers`), sent with the gateway's client and
the provider's key, and the answer translated back, so the agent — any OpenAI client — sees a
``chat.completion`` (or, streamed, ``chat.completion.chunk`` events ending in ``[DONE]``, with a
usage chunk when it asked for one). The usage counted against the budgets is the provider's own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
from starlette.responses import Response, StreamingResponse

from apiary.gateway.budget import GatewayRefusal
from apiary.gateway.calls import estimate, prompt_text
from apiary.gateway.provider import Provider
from apiary.gateway.providers import Translator, chunk

log = logging.getLogger("apiary.gateway")

Settle = Callable[[int, int, str], Awaitable[None]]
Record = Callable[[list[bytes], tuple[int, int]], Awaitable[None]]
"""Puts a finished stream in the session's cassette: the events the agent was sent (the usage
chunk always among them) and the usage settled."""


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def unreachable(url: str, exc: httpx.HTTPError) -> GatewayRefusal:
    """The 502 for a provider the gateway could not reach (the URL and the cause named)."""
    return GatewayRefusal(502, "provider_unreachable",
                          f"the LLM provider at {url} could not be reached: "
                          f"{type(exc).__name__}: {exc}")  # fmt: skip


async def forward(
    http: httpx.AsyncClient, provider: Provider, translator: Translator, body: dict[str, Any],
    settle: Settle, headers: dict[str, str], record: Record | None = None,
) -> Response:  # fmt: skip
    stream = bool(body.get("stream"))
    path, payload, extra = translator.request(body, stream=stream)
    url = provider.url(path)
    sent = {**headers, **extra}
    model = str(body.get("model") or "")
    if not stream:
        try:
            answer = await http.post(url, content=orjson.dumps(payload), headers=sent)
        except httpx.HTTPError as exc:
            await settle(0, 0, "")
            raise unreachable(url, exc) from None
        parsed = _parsed(answer.content)
        if not answer.is_success:
            await settle(0, 0, "")
            return _json(translator.error(answer.status_code, parsed), answer.status_code)
        out = translator.response(parsed if isinstance(parsed, dict) else {}, model)
        usage = out["usage"]
        await settle(usage["prompt_tokens"], usage["completion_tokens"], out["model"])
        return _json(out)
    request = http.build_request("POST", url, content=orjson.dumps(payload), headers=sent)
    try:
        answer = await http.send(request, stream=True)
    except httpx.HTTPError as exc:
        await settle(0, 0, "")
        raise unreachable(url, exc) from None
    if not answer.is_success:
        try:
            content = await answer.aread()
        finally:
            await answer.aclose()
        await settle(0, 0, "")
        return _json(translator.error(answer.status_code, _parsed(content)), answer.status_code)
    asked = bool((body.get("stream_options") or {}).get("include_usage"))
    events = _events(answer, translator, model, settle, prompt_text(body), asked, record)
    return StreamingResponse(events, 200, media_type="text/event-stream")


def _parsed(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _events(
    answer: httpx.Response, translator: Translator, model: str, settle: Settle, prompt: str,
    keep_usage: bool, record: Record | None = None,
) -> AsyncIterator[bytes]:  # fmt: skip
    """The provider's stream as chat.completion.chunk events; settled (and recorded) before the
    final ``[DONE]``, so the call is in the ledger and the cassette once the agent has it all."""
    converter = translator.stream(model)
    streamed = 0
    buffer = b""
    kept: list[bytes] = []
    settled = False

    async def done(recorded: bool) -> None:
        """Settle what came (the provider's count, else an estimate), once; and record it."""
        nonlocal settled
        settled = True
        usage = converter.usage or (estimate(prompt), estimate("x" * streamed))
        await settle(usage[0], usage[1], converter.model)
        if recorded and record is not None:  # as the relay records: no blank line per event
            await record([e.rstrip(b"\n") for e in kept], usage)

    try:
        async for piece in answer.aiter_bytes():
            buffer += piece.replace(b"\r\n", b"\n")
            while (end := buffer.find(b"\n\n")) >= 0:
                raw, buffer = buffer[:end], buffer[end + 2 :]
                data = b"".join(x[5:].strip() for x in raw.split(b"\n") if x.startswith(b"data:"))
                event = _parsed(data) if data else None
                if not isinstance(event, dict):
                    continue
                for out in converter.feed(event):
                    for choice in out.get("choices") or []:
                        streamed += len(str((choice.get("delta") or {}).get("content") or ""))
                    kept.append(_sse(out))
                    yield kept[-1]
        for out in converter.finish():
            kept.append(_sse(out))
            yield kept[-1]
        if converter.usage is not None:
            prompt_tokens, completion = converter.usage
            last = chunk(converter.model, "usage", None)
            last["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                             "total_tokens": prompt_tokens + completion}  # fmt: skip
            kept.append(_sse(last))  # recorded always; sent when the agent asked for it
            if keep_usage:
                yield kept[-1]
        kept.append(b"data: [DONE]\n\n")
        await done(recorded=True)
        yield kept[-1]
    except httpx.HTTPError as exc:
        log.warning("LLM provider stream broke off", extra={"error": str(exc)})
        yield _sse({"error": {"message": f"the provider's stream broke off: {exc}",
                              "type": "provider_unreachable", "param": None,
                              "code": "provider_unreachable"}})  # fmt: skip
    finally:
        await answer.aclose()
        if not settled:  # broke off, or the agent left: charge what came, record nothing
            await done(recorded=False)


__all__ = ["forward"]
