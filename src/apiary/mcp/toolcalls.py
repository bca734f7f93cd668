"""``POST …/sessions/{name}/tool-calls``: the keeper records an agent's MCP tool call.

The keeper proxies a drone's MCP calls (:mod:`apiary.mcp.keeper`) and reports each one here
with the node's token — the same relay authority as a drone's Comb writes (``update/comb`` on
Session) — so the call lands in the session's journal, in order with the messages: an ``event``
entry whose payload is ``{"toolCall": {server, tool, arguments, result, isError, latencyMs}}``
(the transcript shows it; the typed stream says ``tool.called``). The body is bounded like a
message (``max_message_bytes``; 413 naming ``toolCall``), unknown fields are a 422.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.session_create import read_json, state_of
from apiary.api.session_messages import check_size, invalid
from apiary.api.session_ops import SessionOps
from apiary.journal import Entry
from apiary.router.plan import Plan
from apiary.waggle import Message

Obj = dict[str, Any]
PATH = "/api/v1/cells/{cell}/sessions/{name}/tool-calls"
FIELDS = frozenset({"server", "tool", "arguments", "result", "isError", "latencyMs", "drone",
                    "stage", "error", "traceparent"})  # fmt: skip


def _check(body: Obj) -> None:
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        raise invalid(unknown[0], f"unknown field (a tool call has {', '.join(sorted(FIELDS))})")
    for key in ("server", "tool"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise invalid(key, "required, a non-empty string")
    latency = body.get("latencyMs")
    if latency is not None and (not isinstance(latency, int | float) or latency < 0):
        raise invalid("latencyMs", "must be a number ≥ 0")


def toolcall_routes() -> APIRouter:
    r = APIRouter(tags=["mcp"])

    @r.post(PATH, status_code=201, summary="Record an MCP tool call in the session's journal")
    async def record(request: Request, cell: str, name: str) -> Response:
        state = state_of(request)
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "update/comb", "Session", cell)
        body = await read_json(request, state)
        _check(body)
        check_size(body, state.config.max_message_bytes, "toolCall")
        ops = SessionOps(state)
        info = await ops.info(cell, name)
        metadata = {"mcp.server": str(body["server"]), "mcp.tool": str(body["tool"])}
        message = Message({"toolCall": body}, "event", metadata=metadata)
        latency = body.get("latencyMs")
        entry = Entry(info.key, f"mcp-{uuid.uuid4()}", "event", message.to_dict(),
                      stage=body.get("stage"), drone=body.get("drone"),
                      latency_ms=float(latency) if latency is not None else None)  # fmt: skip
        await ops.router._run(info, lambda s: Plan(s, [entry]))
        return json_response({"id": entry.id, "session": name}, 201)

    return r
