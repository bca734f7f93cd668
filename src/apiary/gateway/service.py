"""The LLM gateway: an OpenAI-compatible endpoint per drone on the node's keeper HTTP server.

    POST /drones/{cell}/{drone}/v1/chat/completions   (``"stream": true`` → SSE, passed through)
    POST /drones/{cell}/{drone}/v1/embeddings
    GET  /drones/{cell}/{drone}/v1/models
    POST /drones/{cell}/{drone}/v1/messages           (Anthropic's Messages API, as a chat)

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from apiary.errors import ApiaryError
from apiary.gateway import calls, messages, providers, translated
from apiary.gateway import recorded_streams as streams
from apiary.gateway.budget import DroneMeter, GatewayRefusal, Tally
from apiary.gateway.calls import Budgeted, estimate, prompt_text
from apiary.gateway.provider import Provider, Providers, Reader
from apiary.gateway.relay import SseRelay, model_name, usage_of
from apiary.gateway.shared import SharedBudgets
from apiary.gateway.tiers import TIER_HEADER, TOKEN_KEYS, apply_tier
from apiary.node.keeperhttp import PREFIX, KeeperHttpServer
from apiary.telemetry import hops, tracing

log = logging.getLogger("apiary.gateway")

MESSAGE_HEADER = "x-apiary-message-id"
SESSION_HEADER = "x-apiary-session-id"
PASSED_HEADERS = ("content-type", "x-request-id", "openai-processing-ms", "retry-after")


class GatewayDrone(Protocol):
    """What the gateway needs of a drone running here (a DroneRunner)."""

    spec: dict[str, Any]
    meter: DroneMeter


Lookup = Callable[[str, str], GatewayDrone | None]


@dataclass
class Call:
    """One call on its way: who makes it, where it goes, what it holds."""

    drone: GatewayDrone
    provider: Provider
    tally: Tally
    body: dict[str, Any]
    tier: str | None
    budgeted: Budgeted
    cell: str = ""
    usage: tuple[int, int] = (0, 0)
    """What the call was charged, once answered."""


def _refusal(exc: GatewayRefusal) -> Response:
    return Response(
        orjson.dumps(exc.body()), exc.status, exc.headers or None, media_type="application/json"
    )


def _apiary_refusal(exc: ApiaryError) -> GatewayRefusal:
    kind = {401: "authentication_error", 403: "permission_error", 413: "invalid_request_error"}
    return GatewayRefusal(exc.status, kind.get(exc.status, "invalid_request_error"), exc.message)


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
        budgets: SharedBudgets | None = None,
    ) -> None:
        self.server = server
        self.budgets = budgets
        """The Cell, Hive and session budgets (apiaryd's ledger); None: the drone's only."""
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
            Route(PREFIX + "/v1/messages", self._messages, methods=["POST"]),
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
        self, request: Request, *, chat: bool, token_keys: tuple[str, ...] | None = TOKEN_KEYS
    ) -> Call:
        """Authenticate, parse, find the provider and the message, apply the drone's task tier
        (:mod:`apiary.gateway.tiers`), then reserve the call's maximum cost against every
        budget (:mod:`apiary.gateway.calls`), capping its completion to what is left."""
        cell, name, drone = self._drone(request)
        body = await self._body(request)
        provider = await self.providers.resolve(cell, drone.spec)
        meter = drone.meter
        headers = request.headers
        tally = meter.pick(
            headers.get(MESSAGE_HEADER), headers.get(SESSION_HEADER), drone=f"{cell}/{name}"
        )
        meter.admit(tally)
        tier = apply_tier(body, drone.spec, provider.model, chat=chat,
                          token_keys=token_keys or TOKEN_KEYS)  # fmt: skip
        hive = drone.spec.get("hive")
        budgeted = await calls.reserve(
            meter, self.budgets, tally, body, cell=cell,
            hive=hive if isinstance(hive, str) else None, keys=token_keys,
        )  # fmt: skip
        return Call(drone, provider, tally, body, tier, budgeted, cell)

    async def _settle(self, call: Call, prompt: int, completion: int, model: str = "") -> None:
        await calls.settle(call.drone.meter, self.budgets, call.budgeted, prompt, completion,
                           model)  # fmt: skip

    async def _post(self, call: Call, path: str, span: Any = None) -> httpx.Response:
        provider = call.provider
        url = provider.url(path)
        try:
            return await self.http.post(
                url, content=orjson.dumps(call.body), headers=_headers(provider, span)
            )
        except httpx.HTTPError as exc:
            await self._settle(call, 0, 0)
            raise translated.unreachable(url, exc) from None

    # ------------------------------------------------------------------------- handlers

    async def _handle(
        self, request: Request, operation: str, path: str, completion: Callable[[Any], str],
        *, chat: bool = True, token_keys: tuple[str, ...] | None = TOKEN_KEYS,
    ) -> Response:  # fmt: skip
        span = None
        try:
            call = await self._prepare(request, chat=chat, token_keys=token_keys)
            try:
                if path == "/responses" and call.provider.api != "openai":
                    raise GatewayRefusal(
                        400, "invalid_request_error",
                        "/v1/responses is served by OpenAI-compatible providers only; this "
                        f"drone's provider speaks {call.provider.api!r}: use "
                        "/v1/chat/completions", param="model",
                    )  # fmt: skip
                if tracing.TRACER is not None:
                    span = _span(operation, request, call.tally, call.provider, call.body)
                translator = providers.translator(call.provider.api)
                shared = call.budgeted.shared
                replayed = None
                if shared is not None and shared.replay_from:
                    replayed = await self._replayed(
                        call, path, shared.replay_from, mixed=shared.replay_mode == "mixed"
                    )
                if replayed is not None:
                    response = replayed
                elif translator is not None:
                    response = await self._translated(call, path, translator, span)
                elif call.body.get("stream") and path != "/embeddings":
                    response = await self._stream(call, span, path)
                else:
                    started = time.monotonic()
                    answer = await self._post(call, path, span)
                    response = await self._answer(call, answer, completion, span)
                    if answer.is_success:
                        await self._record(call, path, _loads(answer.content), call.usage,
                                           started)  # fmt: skip
            except BaseException:
                await self._settle(call, 0, 0)  # nothing was spent; release the holds
                raise
        except GatewayRefusal as exc:
            hops.llm_refused(span, exc.status, exc.type, exc.message)
            return _refusal(exc)
        if call.tier is not None:
            response.headers[TIER_HEADER] = call.tier
        return response

    async def _replayed(
        self, call: Call, path: str, source: str, *, mixed: bool = False
    ) -> Response | None:
        """``spec.gateway.mode: replay`` (or a replaying session): the recorded answer, no
        provider, no tokens; ``mixed``: None — go to the provider — when nothing matches."""
        assert self.budgets is not None
        stage = call.drone.spec.get("stage")
        got = await self.budgets.lookup(
            call.cell, source, {"path": path, "stage": stage, "request": call.body}
        )
        if "response" not in got and mixed:
            return None
        if "response" not in got:
            raise GatewayRefusal(400, "invalid_request_error", str(got.get("missing")),
                                 code="replay_mismatch")  # fmt: skip
        sse = streams.sse_of(got, call.body, path) if call.body.get("stream") else None
        if call.body.get("stream") and sse is None:
            if mixed:
                return None
            raise GatewayRefusal(
                400, "invalid_request_error",
                f"the recorded {path[1:]} call was not streamed: call without stream",
                param="stream",
            )  # fmt: skip
        await self._settle(call, 0, 0)
        if sse is not None:  # as it was streamed, or the recorded chat completion as a stream
            return Response(sse, media_type="text/event-stream")
        return Response(orjson.dumps(got["response"]), media_type="application/json")

    async def _record(
        self, call: Call, path: str, answer: Any, usage: tuple[int, int], started: float,
        events: list[bytes] | None = None,
    ) -> None:  # fmt: skip
        """Put the exchange in the session's journal: its cassette (:mod:`apiary.api.cassettes`);
        a streamed one with its events (:mod:`apiary.gateway.recorded_streams`)."""
        if self.budgets is None or not call.tally.session:
            return
        exchange = {
            "path": path, "stage": call.drone.spec.get("stage"), "model": call.body.get("model"),
            "request": call.body, "response": answer, "usage": list(usage),
            "latencyMs": round((time.monotonic() - started) * 1000, 3),
        }  # fmt: skip
        if events is not None:
            exchange["stream"] = [e.decode("utf-8", "replace") for e in events]
        await self.budgets.record(call.cell, call.tally.session, exchange)

    async def _translated(
        self, call: Call, path: str, translator: providers.Translator, span: Any
    ) -> Response:
        if path != "/chat/completions":
            raise GatewayRefusal(
                400, "invalid_request_error",
                f"{path[1:]} is not served for this drone's provider ({call.provider.api!r}): "
                "only chat completions are translated to its API",
            )  # fmt: skip

        async def settle(prompt: int, completion: int, model: str) -> None:
            call.usage = (prompt, completion)
            await self._settle(call, prompt, completion, model)

        started = time.monotonic()

        async def record(events: list[bytes], usage: tuple[int, int]) -> None:
            await self._record(call, path, streams.assemble(events), usage, started, events)

        response = await translated.forward(
            self.http, call.provider, translator, call.body, settle, _headers(call.provider, span),
            record if call.tally.session and self.budgets is not None else None,
        )  # fmt: skip
        if not call.body.get("stream") and response.status_code < 300:  # recorded as served
            await self._record(call, path, _loads(bytes(response.body)), call.usage, started)
        return response

    async def _chat(self, request: Request) -> Response:
        return await self._handle(request, "chat", "/chat/completions", completion_of_chat)

    async def _messages(self, request: Request) -> Response:
        """Anthropic's Messages API as a chat completion (:mod:`apiary.gateway.messages`)."""
        return await messages.serve(request, self._body, self._chat)

    async def _responses(self, request: Request) -> Response:
        """The Responses API (``POST /v1/responses``), counted like a chat completion: usage
        from the answer or, streamed, from its ``response.completed`` event."""
        return await self._handle(request, "responses", "/responses", completion_of_response,
                                  token_keys=("max_output_tokens",))  # fmt: skip

    async def _embeddings(self, request: Request) -> Response:
        return await self._handle(request, "embeddings", "/embeddings", lambda _: "",
                                  chat=False, token_keys=None)  # fmt: skip

    async def _models(self, request: Request) -> Response:
        try:
            cell, _, drone = self._drone(request)
            provider = await self.providers.resolve(cell, drone.spec)
            if provider.api != "openai":  # what the agent may ask for: the AgentSpec's model
                listed = [{"id": provider.model, "object": "model", "owned_by": provider.api}]
                body = {"object": "list", "data": listed if provider.model else []}
                return Response(orjson.dumps(body), media_type="application/json")
            url = provider.url("/models")
            try:
                answer = await self.http.get(url, headers=provider.headers())
            except httpx.HTTPError as exc:
                raise translated.unreachable(url, exc) from None
        except GatewayRefusal as exc:
            return _refusal(exc)
        return Response(answer.content, answer.status_code, _passed(answer))

    async def _answer(
        self, call: Call, answer: httpx.Response, completion: Callable[[Any], str],
        span: Any = None,
    ) -> Response:  # fmt: skip
        """Count a non-streamed answer (2xx only: a refused call costs nothing) and pass it on."""
        counted = parsed = None
        estimated = False
        body = call.body
        if answer.is_success:
            try:
                parsed = orjson.loads(answer.content)
            except orjson.JSONDecodeError:
                parsed = None
            counted = usage_of(parsed)
            if counted is None:
                estimated = True
                counted = (estimate(prompt_text(body)), estimate(completion(parsed)))
            call.usage = counted
            await self._settle(call, *counted, model=answered_model(parsed, body))
        else:
            await self._settle(call, 0, 0)
        if span is not None:
            hops.llm_end(span, answer.status_code, counted, parsed, estimated)
        return Response(answer.content, answer.status_code, _passed(answer))

    async def _stream(self, call: Call, span: Any = None, path: str = "/chat/completions"
                      ) -> Response:  # fmt: skip
        body, provider = call.body, call.provider
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
            raise translated.unreachable(url, exc) from None
        if not answer.is_success:
            try:
                content = await answer.aread()
            finally:
                await answer.aclose()
            await self._settle(call, 0, 0)
            if span is not None:
                hops.llm_end(span, answer.status_code, None)
            return Response(content, answer.status_code, _passed(answer))

        async def settle(prompt: int, completion: int, model: str) -> None:
            await self._settle(call, prompt, completion, model)

        relay = SseRelay(settle, prompt_text(body), keep_usage_chunk=asked)
        relay.model = model_name(body.get("model"))
        relay.span = span
        if call.tally.session and self.budgets is not None:  # into the cassette once complete
            kept: list[bytes] = []
            relay.recorded, started = kept, time.monotonic()

            async def record(usage: tuple[int, int]) -> None:
                await self._record(call, path, streams.assemble(kept), usage, started, kept)

            relay.finished = record
        return StreamingResponse(
            relay.run(answer), answer.status_code, _passed(answer), media_type="text/event-stream"
        )


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def answered_model(answer: Any, body: dict[str, Any]) -> str:
    """The model the provider says answered (``model`` of its answer: often a dated version of
    the one asked for, or another one altogether behind a router), else the requested one."""
    said = model_name(answer.get("model")) if isinstance(answer, dict) else ""
    return said or model_name(body.get("model"))


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


__all__ = ["MESSAGE_HEADER", "SESSION_HEADER", "GatewayDrone", "LlmGateway", "estimate", "usage_of"]
