"""The A2A HTTP surface: cards, the cell's directory of cards, and the JSON-RPC endpoint.

``POST /a2a/cells/{cell}/hives/{hive}`` takes one JSON-RPC 2.0 request. ``SendStreamingMessage``
and ``SubscribeToTask`` answer Server-Sent Events, each ``data:`` one JSON-RPC response whose
``result`` is a ``StreamResponse``, each ``id:`` its event id; ``SubscribeToTask`` with a
``Last-Event-ID`` header replays what came after that event (from the journal), without one it
starts with the task as it stands. Errors are JSON-RPC errors naming the field or the cause;
authentication failures are the REST API's 401/403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.a2a import tasks
from apiary.a2a.card import card, check_exposed, exposed
from apiary.a2a.wire import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PROTOCOL_VERSION,
    TASK_NOT_CANCELABLE,
    VERSION_HEADER,
    VERSION_NOT_SUPPORTED,
    RpcError,
    error,
    payload_of,
    result,
    rpc_error_of,
)
from apiary.api.bodies import read_body
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.session_create import authorize, state_of
from apiary.api.session_events import Position
from apiary.api.session_ops import SessionOps
from apiary.api.session_stream import event_stream
from apiary.api.watch import TokenCheck, token_recheck
from apiary.errors import ApiaryError, NotFound

Obj = dict[str, Any]
BASE = "/a2a/cells/{cell}"
HIVE = BASE + "/hives/{hive}"
CARD = HIVE + "/.well-known/agent-card.json"
STREAMING = frozenset({"SendStreamingMessage", "SubscribeToTask"})


async def _hive(request: Request, cell: str, hive: str) -> Obj:
    state = state_of(request)
    state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "get", "Hive", cell)
    try:
        obj = await state.store.get("Hive", cell, hive)
    except NotFound:
        raise NotFound(f"hive {hive!r} not found in cell {cell!r}") from None
    check_exposed(obj)
    return obj


async def _card(request: Request, hive: Obj) -> Obj:
    state = state_of(request)
    cell = hive["metadata"].get("namespace") or "default"
    agents = {}
    for item in (await state.store.list("AgentSpec", cell)).items:
        agents[item["metadata"]["name"]] = item
    return card(hive, agents, str(request.base_url))


def a2a_routes() -> APIRouter:
    r = APIRouter(tags=["a2a"])

    @r.get(CARD, summary="The hive's A2A agent card (A2A v1.0; 404 unless spec.a2a.expose)")
    async def agent_card(request: Request, cell: str, hive: str) -> Response:
        return json_response(await _card(request, await _hive(request, cell, hive)))

    @r.get(BASE, summary="The cell's directory of A2A agent cards (every exposed hive)")
    async def directory(request: Request, cell: str) -> Response:
        state = state_of(request)
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "list", "Hive", cell)
        hives = [h for h in (await state.store.list("Hive", cell)).items if exposed(h)]
        return json_response({"cell": cell, "agents": [await _card(request, h) for h in hives]})

    @r.post(HIVE, summary="A2A JSON-RPC: SendMessage, SendStreamingMessage, GetTask, "
                          "CancelTask, SubscribeToTask")  # fmt: skip
    async def rpc(request: Request, cell: str, hive: str) -> Response:
        await _hive(request, cell, hive)
        raw = await read_body(request, state_of(request).config.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return json_response(error(None, RpcError(PARSE_ERROR, f"not JSON: {exc}")))
        rpc_id = body.get("id") if isinstance(body, dict) else None
        try:
            method, params = _request(body)
            _check_version(request)
            call = Call(request, cell, hive, params)
            if method in STREAMING:
                return event_stream(_sse(rpc_id, await call.stream(method)))
            return json_response(result(rpc_id, await call.unary(method)))
        except RpcError as exc:
            return json_response(error(rpc_id, exc))
        except ApiaryError as exc:
            if exc.status in (401, 403):
                raise
            return json_response(error(rpc_id, rpc_error_of(exc)))

    return r


def _request(body: Any) -> tuple[str, Obj]:
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'a JSON-RPC 2.0 request object ("jsonrpc": "2.0")')
    method = body.get("method")
    if not isinstance(method, str) or method not in Call.METHODS:
        known = ", ".join(sorted(Call.METHODS))
        raise RpcError(METHOD_NOT_FOUND, f"method {method!r} is not served here (served: {known})")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params: must be an object")
    return method, params


def _check_version(request: Request) -> None:
    asked = request.headers.get(VERSION_HEADER)
    if asked and asked.strip().split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
        raise RpcError(VERSION_NOT_SUPPORTED, f"header {VERSION_HEADER}: {asked!r}: this server "
                                              f"speaks A2A {PROTOCOL_VERSION}")  # fmt: skip


async def _sse(rpc_id: Any, events: AsyncIterator[tuple[str, Obj]]) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"
    try:
        async for event_id, response in events:
            data = orjson.dumps(result(rpc_id, response))
            yield b"id: %s\ndata: %s\n\n" % (event_id.encode(), data)
    except RpcError as exc:
        yield b"data: %s\n\n" % orjson.dumps(error(rpc_id, exc))
    except ApiaryError as exc:
        yield b"data: %s\n\n" % orjson.dumps(error(rpc_id, rpc_error_of(exc)))


class Call:
    """One JSON-RPC call against one exposed hive."""

    METHODS = frozenset({"SendMessage", "GetTask", "CancelTask", *STREAMING})

    def __init__(self, request: Request, cell: str, hive: str, params: Obj) -> None:
        self.request, self.cell, self.hive, self.params = request, cell, hive, params
        self.ops = SessionOps(state_of(request))

    async def unary(self, method: str) -> Obj:
        if method == "GetTask":
            authorize(self.request, "get", self.cell)
            info, context = await tasks.task_of(
                self.ops, self.cell, self.hive, self.params.get("id")
            )
            return (await tasks.view(self.ops, info, context)).snapshot(self._history())
        if method == "CancelTask":
            authorize(self.request, "update", self.cell)
            info, context = await tasks.task_of(
                self.ops, self.cell, self.hive, self.params.get("id")
            )
            if (await tasks.view(self.ops, info, context)).ended:
                raise RpcError(TASK_NOT_CANCELABLE, f"task {info.name!r} has ended already")
            await self.ops.close(self.cell, info.name)
            info = await self.ops.info(self.cell, info.name)
            return (await tasks.view(self.ops, info, context)).snapshot()
        info, context, _ = await self._send()
        configuration = self.params.get("configuration") or {}
        if isinstance(configuration, dict) and configuration.get("returnImmediately") is True:
            return {"task": (await tasks.view(self.ops, info, context)).snapshot()}
        return {"task": (await tasks.wait_until_paused(self.ops, info, context)).snapshot()}

    async def stream(self, method: str) -> AsyncIterator[tuple[str, Obj]]:
        recheck = token_recheck(self.ops.state, self.request.headers.get("authorization"))
        if method == "SubscribeToTask":
            authorize(self.request, "get", self.cell)
            info, context = await tasks.task_of(
                self.ops, self.cell, self.hive, self.params.get("id")
            )
            last = self.request.headers.get("last-event-id")
            at = Position.parse(last) if last and last.strip() else None
            return tasks.follow(
                self.ops, info, context, at, snapshot=at is None, valid=TokenCheck(recheck)
            )
        info, context, at = await self._send()
        return tasks.follow(self.ops, info, context, at, snapshot=True, valid=TokenCheck(recheck))

    async def _send(self) -> tuple[Any, str, Position]:
        """Start a task, or answer the approval its task waits for; where its stream starts."""
        message = self.params.get("message")
        if not isinstance(message, dict):
            raise RpcError(INVALID_PARAMS, "params.message: required, an A2A message")
        payload = payload_of(message)
        task = message.get("taskId")
        if task:
            authorize(self.request, "update", self.cell)
            info, context = await tasks.task_of(self.ops, self.cell, self.hive, task)
            v = await tasks.view(self.ops, info, context)
            if not v.waiting:
                raise tasks.refuse_message(v)
            at = Position.parse(v.position)
            await tasks.answer(self.ops, info, v, payload)
            return info, context, at
        authorize(self.request, "create", self.cell)
        info = await tasks.create(self.ops, self.cell, self.hive, payload, message)
        context = message.get("contextId") or info.name
        return info, str(context), Position(0)

    def _history(self) -> int | None:
        value = self.params.get("historyLength")
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RpcError(INVALID_PARAMS, "params.historyLength: must be an integer ≥ 0")
        return value
