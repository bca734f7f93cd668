"""The LLM gateway: an OpenAI-compatible endpoint per drone on the node's keeper HTTP server.

    POST /drones/{cell}/{drone}/v1/chat/completions   (``"stream": true`` → SSE, passed through)
    POST /drones/{cell}/{drone}/v1/embeddings
    GET  /drones/{cell}/{drone}/v1/models

So an agent points any OpenAI client at ``$APIARY_KEEPER_URL/v1`` with ``$APIARY_KEEPER_TOKEN``
as its API key. The gateway checks the caller (the keeper token of that drone), finds the provider
the drone's AgentSpec names (``spec.llm``, :mod:`apiary.gateway.provider`), applies the
drone's task tier — its model and token cap (:mod:`apiary.gateway.tiers`) — or injects the
default model, forwards with the provider's key (which the agent never sees) over one keep-alive
``httpx.AsyncClient``, and counts the tokens the provider reports in ``usage`` — under the model
its answer names — against the message the drone is working on
(:mod:`apiary.gateway.budget`): the one named by ``X-Apiary-Message-Id``, else the only one
in flight — among the messages of the session named by ``X-Apiary-Session-Id`` when the call
names one (a session the drone holds no message of is a 403). A call no message in flight pays
for is refused, so a drone's LLM use is always attributable to a session it holds. For streams
it asks the provider for a final usage chunk (``stream_options.include_usage``) and hands the
agent every event as it arrives — nothing buffers the answer; the usage chunk reaches the agent
only if it asked for it. A provider that reports no usage is charged an estimate (4 characters a
token), so budgets still hold.

With tracing on, each call is a ``chat``/``embeddings`` span (GenAI semantic conventions:
``gen_ai.request.model``, ``gen_ai.usage.*`` ...), a child of the agent's ``traceparent`` header
or else of the keeper's delivery of the message that pays for it; the provider gets the span's
``traceparent`` in turn (:mod:`apiary.telemetry.hops`).

Errors: the provider's own status and body reach the agent unchanged; a provider that cannot be
reached is a 502; the gateway's refusals are OpenAI-style ``{"error": {"type", "message"}}``
bodies (429 ``budget_exceeded``, 409 ``message_not_in_flight``, 404 ``llm_not_configured``,
503 ``gateway_misconfigured``, 401/403 for a wrong token, 403 ``permission_error`` for a session
the drone holds no message of).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from apiary.errors import ApiaryError
from apiary.gateway.budget import DroneMeter, GatewayRefusal, Tally
from apiary.gateway.provider import Provider, Providers, Reader
from apiary.gateway.tiers import TIER_HEADER, TOKEN_KEYS, apply_tier
from apiary.node.keeperhttp import PREFIX, KeeperHttpServer
from apiary.telemetry import hops, tracing

log = logging.getLogger("apiary.gateway")

MESSAGE_HEADER = "x-apiary-message-id"
SESSION_HEADER = "x-apiary-session-id"
CHARS_PER_TOKEN = 4
MAX_MODEL_NAME = 200
PASSED_HEADERS = ("content-type", "x-request-id", "openai-processing-ms", "retry-after")


class GatewayDrone(Protocol):
    """What the gateway needs of a drone running here (a DroneRunner)."""

    spec: dict[str, Any]
    meter: DroneMeter


Lookup = Callable[[str, str], GatewayDrone | None]


def _refusal(exc: GatewayRefusal) -> Response:
    return Response(
        orjson.dumps(exc.body()), exc.status, exc.headers or None, media_type="application/json"
    )


def _apiary_refusal(exc: ApiaryError) -> GatewayRefusal:
    kind = {401: "authentication_error", 403: "permission_error", 413: "invalid_request_error"}
    return GatewayRefusal(exc.status, kind.get(exc.status, "invalid_request_error"), exc.message)


def estimate(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request's messages or input, for the estimate when usage is missing."""
    parts: list[str] = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        parts.append(content if isinstance(content, str) else orjson.dumps(content).decode())
    given = body.get("input")
    if given is not None:
        parts.append(given if isinstance(given, str) else orjson.dumps(given).decode())
    return "".join(parts)


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


class LlmGateway:
    """The gateway of one node; :meth:`routes` go on its :class:`KeeperHttpServer`."""

    def __init__(
        self,
        server: KeeperHttpServer,
        lookup: Lookup,
        read: Reader,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 600.0,
        max_body_bytes: int = 8 << 20,
        provider_ttl: float = 30.0,
    ) -> None:
        self.server = server
        self.lookup = lookup
        self.providers = Providers(read, ttl=provider_ttl)
        self.max_body_bytes = max_body_bytes
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX + "/v1/chat/completions", self._chat, methods=["POST"]),
            Route(PREFIX + "/v1/responses", self._responses, methods=["POST"]),
            Route(PREFIX + "/v1/embeddings", self._embeddings, methods=["POST"]),
            Route(PREFIX + "/v1/models", self._models, methods=["GET"]),
        ]

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # ------------------------------------------------------------------------- plumbing

    def _drone(self, request: Request) -> tuple[str, str, GatewayDrone]:
        try:
            cell, name = self.server.authenticate(request)
        except ApiaryError as exc:
            raise _apiary_refusal(exc) from None
        drone = self.lookup(cell, name)
        if drone is None:
            raise GatewayRefusal(
                403, "permission_error", f"drone {cell}/{name} is not running here"
            )
        return cell, name, drone

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.max_body_bytes:
                raise GatewayRefusal(
                    413, "invalid_request_error",
                    f"request body is over the limit of {self.max_body_bytes} bytes",
                )  # fmt: skip
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayRefusal(
                400, "invalid_request_error", f"malformed JSON body: {exc}"
            ) from None
        if not isinstance(body, dict):
            raise GatewayRefusal(400, "invalid_request_error", "the body must be a JSON object")
        return body

    async def _prepare(
        self, request: Request, *, chat: bool, token_keys: tuple[str, ...] = TOKEN_KEYS
    ) -> tuple[GatewayDrone, Provider, Tally, dict[str, Any], str | None]:
        """Authenticate, parse, find the provider and the message, check the budgets, apply the
        drone's task tier (:mod:`apiary.gateway.tiers`): the tier applied, if any, last."""
        cell, name, drone = self._drone(request)
        body = await self._body(request)
        provider = await self.providers.resolve(cell, drone.spec)
        meter = drone.meter
        headers = request.headers
        tally = meter.pick(
            headers.get(MESSAGE_HEADER), headers.get(SESSION_HEADER), drone=f"{cell}/{name}"
        )
        meter.admit(tally)
        tier = apply_tier(body, drone.spec, provider.model, chat=chat, token_keys=token_keys)
        return drone, provider, tally, body, tier

    async def _post(
        self, provider: Provider, path: str, body: dict[str, Any], span: Any = None
    ) -> httpx.Response:
        url = provider.url(path)
        try:
            return await self.http.post(
                url, content=orjson.dumps(body), headers=_headers(provider, span)
            )
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from None

    # ------------------------------------------------------------------------- handlers

    async def _chat(self, request: Request) -> Response:
        span = None
        try:
            drone, provider, tally, body, tier = await self._prepare(request, chat=True)
            if tracing.TRACER is not None:
                span = _span("chat", request, tally, provider, body)
            if body.get("stream"):
                response = await self._stream(drone.meter, tally, provider, body, span)
            else:
                answer = await self._post(provider, "/chat/completions", body, span)
                response = self._answer(drone.meter, tally, body, answer, completion_of_chat, span)
        except GatewayRefusal as exc:
            hops.llm_refused(span, exc.status, exc.type, exc.message)
            return _refusal(exc)
        if tier is not None:
            response.headers[TIER_HEADER] = tier
        return response

    async def _responses(self, request: Request) -> Response:
        """The Responses API (``POST /v1/responses``), counted like a chat completion: usage
        from the answer or, streamed, from its ``response.completed`` event."""
        span = None
        try:
            drone, provider, tally, body, tier = await self._prepare(
                request, chat=True, token_keys=("max_output_tokens",)
            )
            if provider.api != "openai":
                raise GatewayRefusal(
                    400, "invalid_request_error",
                    f"/v1/responses is served by OpenAI-compatible providers only; this "
                    f"drone's provider speaks {provider.api!r}: use /v1/chat/completions",
                    param="model",
                )  # fmt: skip
            if tracing.TRACER is not None:
                span = _span("responses", request, tally, provider, body)
            if body.get("stream"):
                response = await self._stream(
                    drone.meter, tally, provider, body, span, path="/responses"
                )
            else:
                answer = await self._post(provider, "/responses", body, span)
                response = self._answer(
                    drone.meter, tally, body, answer, completion_of_response, span
                )
        except GatewayRefusal as exc:
            hops.llm_refused(span, exc.status, exc.type, exc.message)
            return _refusal(exc)
        if tier is not None:
            response.headers[TIER_HEADER] = tier
        return response

    async def _embeddings(self, request: Request) -> Response:
        span = None
        try:
            drone, provider, tally, body, _ = await self._prepare(request, chat=False)
            if tracing.TRACER is not None:
                span = _span("embeddings", request, tally, provider, body)
            answer = await self._post(provider, "/embeddings", body, span)
        except GatewayRefusal as exc:
            hops.llm_refused(span, exc.status, exc.type, exc.message)
            return _refusal(exc)
        return self._answer(drone.meter, tally, body, answer, lambda _: "", span)

    async def _models(self, request: Request) -> Response:
        try:
            cell, _, drone = self._drone(request)
            provider = await self.providers.resolve(cell, drone.spec)
            url = provider.url("/models")
            try:
                answer = await self.http.get(url, headers=provider.headers())
            except httpx.HTTPError as exc:
                raise _unreachable(url, exc) from None
        except GatewayRefusal as exc:
            return _refusal(exc)
        return Response(answer.content, answer.status_code, _passed(answer))

    def _answer(
        self, meter: DroneMeter, tally: Tally, body: dict[str, Any], answer: httpx.Response,
        completion: Callable[[Any], str], span: Any = None,
    ) -> Response:  # fmt: skip
        """Count a non-streamed answer (2xx only: a refused call costs nothing) and pass it on."""
        counted = parsed = None
        estimated = False
        if answer.is_success:
            try:
                parsed = orjson.loads(answer.content)
            except orjson.JSONDecodeError:
                parsed = None
            counted = usage_of(parsed)
            if counted is None:
                estimated = True
                counted = (estimate(prompt_text(body)), estimate(completion(parsed)))
            meter.charge(tally, *counted, model=answered_model(parsed, body))
        if span is not None:
            hops.llm_end(span, answer.status_code, counted, parsed, estimated)
        return Response(answer.content, answer.status_code, _passed(answer))

    async def _stream(
        self, meter: DroneMeter, tally: Tally, provider: Provider, body: dict[str, Any],
        span: Any = None, path: str = "/chat/completions",
    ) -> Response:  # fmt: skip
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        if path == "/chat/completions":  # the Responses API always ends with its usage
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        url = provider.url(path)
        request = self.http.build_request(
            "POST", url, content=orjson.dumps(body), headers=_headers(provider, span)
        )
        try:
            answer = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from None
        if not answer.is_success:
            try:
                content = await answer.aread()
            finally:
                await answer.aclose()
            if span is not None:
                hops.llm_end(span, answer.status_code, None)
            return Response(content, answer.status_code, _passed(answer))
        relay = _SseRelay(meter, tally, prompt_text(body), keep_usage_chunk=asked)
        relay.model = _model_name(body.get("model"))
        relay.span = span
        return StreamingResponse(
            relay.run(answer), answer.status_code, _passed(answer), media_type="text/event-stream"
        )


def _model_name(value: Any) -> str:
    return value[:MAX_MODEL_NAME] if isinstance(value, str) else ""


def answered_model(answer: Any, body: dict[str, Any]) -> str:
    """The model the provider says answered (``model`` of its answer: often a dated version of
    the one asked for, or another one altogether behind a router), else the requested one."""
    said = _model_name(answer.get("model")) if isinstance(answer, dict) else ""
    return said or _model_name(body.get("model"))


def completion_of_chat(answer: Any) -> str:
    if not isinstance(answer, dict):
        return ""
    parts = []
    for choice in answer.get("choices") or []:
        content = ((choice or {}).get("message") or {}).get("content")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


def completion_of_response(answer: Any) -> str:
    """The text of a Responses API answer (``output[].content[].text``), for the estimate."""
    if not isinstance(answer, dict):
        return ""
    parts = []
    for item in answer.get("output") or []:
        for content in (item or {}).get("content") or [] if isinstance(item, dict) else []:
            text = content.get("text") if isinstance(content, dict) else None
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def _span(
    operation: str, request: Request, tally: Tally, provider: Provider, body: dict[str, Any]
) -> Any:
    model = body.get("model")
    return hops.llm_begin(
        operation, request.headers.get("traceparent"), tally.session, tally.message_id,
        provider.base_url, model if isinstance(model, str) else None, bool(body.get("stream")),
    )  # fmt: skip


def _headers(provider: Provider, span: Any) -> dict[str, str]:
    headers = {**provider.headers(), "Content-Type": "application/json"}
    if span is not None:  # the provider (an OpenAI-compatible server of ours) may trace too
        headers["traceparent"] = tracing.traceparent(span) or ""
    return headers


def _passed(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower() in PASSED_HEADERS}


def _unreachable(url: str, exc: httpx.HTTPError) -> GatewayRefusal:
    what = type(exc).__name__
    return GatewayRefusal(
        502,
        "provider_unreachable",
        f"the LLM provider at {url} could not be reached: {what}: {exc}",
    )


class _SseRelay:
    """Passes a provider's SSE stream on event by event, reading usage from the final chunk.

    The usage-only chunk (``choices: []``) the gateway asked for is dropped unless the agent asked
    for it too. The tally is charged when the stream ends — also when the agent hangs up or the
    provider breaks off, with an estimate of what was streamed when no usage arrived."""

    def __init__(self, meter: DroneMeter, tally: Tally, prompt: str, *, keep_usage_chunk: bool):
        self.meter = meter
        self.tally = tally
        self.prompt = prompt
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: tuple[int, int] | None = None
        self.streamed = 0  # characters of content seen
        self.model = ""  # the requested model until a chunk names the one that answers
        self._named = False
        self.span: Any = None  # the call's trace span, ended with the stream

    def event(self, raw: bytes) -> bytes | None:
        """One event (without its blank line): what to send on, or None to drop it."""
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
        if not self._named and _model_name(chunk.get("model")):
            self.model, self._named = _model_name(chunk.get("model")), True
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
            if _model_name(final.get("model")):
                self.model, self._named = _model_name(final.get("model")), True
        return raw

    async def run(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        buffer = b""
        try:
            async for chunk in answer.aiter_bytes():
                buffer += chunk.replace(b"\r\n", b"\n")
                while True:
                    end = buffer.find(b"\n\n")
                    if end < 0:
                        break
                    raw, buffer = buffer[:end], buffer[end + 2 :]
                    out = self.event(raw)
                    if out is not None:
                        yield out + b"\n\n"
            if buffer.strip():
                out = self.event(buffer.rstrip(b"\n"))
                if out is not None:
                    yield out + b"\n\n"
        except httpx.HTTPError as exc:
            log.warning("LLM provider stream broke off", extra={"error": str(exc)})
            failure = {"error": {"type": "provider_unreachable",
                                 "message": f"the provider's stream broke off: {exc}"}}  # fmt: skip
            yield b"data: " + orjson.dumps(failure) + b"\n\n"
        finally:
            await answer.aclose()
            usage = self.usage or (
                estimate(self.prompt),
                (self.streamed + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN,
            )
            self.meter.charge(self.tally, *usage, model=self.model)
            if self.span is not None:
                said = {"model": self.model} if self._named else None
                hops.llm_end(self.span, answer.status_code, usage, said, self.usage is None)


__all__ = ["MESSAGE_HEADER", "SESSION_HEADER", "GatewayDrone", "LlmGateway", "estimate", "usage_of"]
