"""Session routes: send messages, read (long-poll, SSE, transcript), close; jobs; hive events.

Sessions themselves are ordinary objects (generic CRUD); these routes are registered before the
generic ones so that creating a session can send its ``spec.input`` and deleting one drops its
transcript. See docs/sessions-api.md for the contract.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api import handlers, params
from apiary.api.responses import json_response
from apiary.api.session_create import (
    authorize,
    create_job,
    create_session,
    get_job,
    job_results,
    publish_event,
    read_json,
    state_of,
)
from apiary.api.session_events import events_param, typed_position
from apiary.api.session_messages import (
    after_param,
    entry_dict,
    limit_param,
    parse_message,
    wait_param,
)
from apiary.api.session_ops import SessionOps, session_key
from apiary.api.session_stream import stream_response, typed_response
from apiary.api.watch import token_recheck
from apiary.telemetry.prices import usd

CELL = "/api/v1/cells/{cell}"
SESSION = CELL + "/sessions/{name}"

_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _ops(request: Request, verb: str) -> tuple[SessionOps, str, str]:
    cell = request.path_params["cell"]
    authorize(request, verb, cell)
    return SessionOps(state_of(request)), cell, request.path_params["name"]


def session_routes() -> APIRouter:
    r = APIRouter(tags=["sessions"])

    @r.post(
        CELL + "/sessions",
        status_code=201,
        summary="Create a session (spec.input, when given, is sent as its first message)",
        openapi_extra=_JSON_BODY,
    )
    async def create(request: Request, cell: str) -> Response:
        request.path_params["plural"] = "sessions"  # the generic handler reads it
        return await create_session(request)

    @r.delete(SESSION, summary="Delete a session and its transcript")
    async def delete(request: Request, cell: str, name: str) -> Response:
        request.path_params["plural"] = "sessions"
        response = await handlers.delete_object(request)
        last = orjson.loads(bytes(response.body))
        if not params.dry_run(request.query_params) and not last["metadata"].get(
            "deletionTimestamp"
        ):
            await SessionOps(state_of(request)).forget(cell, name)
        return response

    @r.post(
        SESSION + "/messages",
        status_code=202,
        summary="Send a message (payload, type?, metadata?, id?) → 202 {id, session}",
        openapi_extra=_JSON_BODY,
    )
    async def send(request: Request, cell: str, name: str) -> Response:
        ops, cell, name = _ops(request, "create")
        body = await read_json(request, ops.state)
        message = parse_message(body, ops.state.config.max_message_bytes)
        sent = await ops.send(cell, name, message, fresh=body.get("id") is None)
        return json_response({"id": sent.id, "session": name}, 202)

    @r.get(SESSION + "/messages", summary="Entries after SEQ (long-poll with wait=SECONDS)")
    async def messages(request: Request, cell: str, name: str) -> Response:
        ops, cell, name = _ops(request, "get")
        q = request.query_params
        after, limit, wait = after_param(q), limit_param(q), wait_param(q)
        await ops.info(cell, name)
        entries = await ops.read(session_key(cell, name), after, limit, wait)
        last = entries[-1].seq if entries else after
        return json_response({"items": [entry_dict(e) for e in entries], "last": last})

    @r.get(SESSION + "/stream", summary="Entries as Server-Sent Events (resumes at Last-Event-ID)")
    async def stream(request: Request, cell: str, name: str) -> Response:
        ops, cell, name = _ops(request, "get")
        recheck = token_recheck(ops.state, request.headers.get("authorization"))
        if events_param(request.query_params.get("events")):
            return await typed_response(ops, cell, name, typed_position(request), recheck)
        after = after_param(request.query_params, request.headers.get("last-event-id"))
        return await stream_response(ops, cell, name, after, recheck)

    @r.get(
        SESSION + "/transcript", summary="Every entry with stage, drone, latency, tokens and cost"
    )
    async def transcript(request: Request, cell: str, name: str) -> Response:
        ops, cell, name = _ops(request, "get")
        info = await ops.info(cell, name)
        key = session_key(cell, name)
        entries = await ops.transcript(key)
        count, prompt, completion, cost = await ops.journal.totals(key)
        usage: dict[str, Any] = {"promptTokens": prompt, "completionTokens": completion}
        if cost > 0:
            usage["costUsd"] = usd(cost)
        body: dict[str, Any] = {
            "session": name,
            "hive": info.hive,
            "phase": info.phase or "Pending",
        }
        body.update(entries=count, usage=usage, items=[entry_dict(e) for e in entries])
        return json_response(body)

    @r.post(SESSION + "/close", summary="Close the session: it takes no more messages")
    async def close(request: Request, cell: str, name: str) -> Response:
        ops, cell, name = _ops(request, "update")
        return json_response(await ops.close(cell, name))

    @r.get(
        SESSION + "/dispatches/{dispatch}",
        summary="Whether a dispatch already has its outcome (nodes ask on redelivery)",
    )
    async def dispatch(request: Request, cell: str, name: str, dispatch: str) -> Response:
        ops, cell, name = _ops(request, "get/dispatches")  # what nodes may ask of sessions
        answered = await ops.journal.is_answered(session_key(cell, name), dispatch)
        return json_response({"answered": answered})

    @r.post(
        CELL + "/jobs",
        status_code=201,
        summary="Run a hive on one input: {hive, input, metadata?} → 201 {id}",
        openapi_extra=_JSON_BODY,
    )
    async def job(request: Request, cell: str) -> Response:
        return await create_job(request)

    @r.get(CELL + "/jobs/{name}", summary="A job's phase, and its output or error once ended")
    async def job_get(request: Request, cell: str, name: str) -> Response:
        return await get_job(request)

    @r.get(CELL + "/jobs/{name}/results", summary="A job's final payload(s); 409 until it ends")
    async def job_result(request: Request, cell: str, name: str) -> Response:
        return await job_results(request)

    @r.post(
        CELL + "/hives/{name}/events",
        status_code=202,
        summary="Publish an event {type, payload, metadata?, session?} into a hive's session",
        openapi_extra=_JSON_BODY,
    )
    async def event(request: Request, cell: str, name: str) -> Response:
        return await publish_event(request)

    return r
