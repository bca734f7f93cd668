"""Record and replay of a session's LLM calls (issue 15.4, first part).

    POST /api/v1/cells/{cell}/sessions/{name}/llm-calls   the gateway records one exchange
    POST /api/v1/cells/{cell}/llmcalls/lookup             a replaying gateway asks for one

**Record.** Every LLM call the gateway answers for a session (2xx) is an ``event`` entry of the
session's journal, in order with its messages, whose payload is ``{"llmCall": {hash, path,
stage, model, request, response, usage, latencyMs}}`` — the session's cassette; a streamed call
also has ``stream``, the provider's events as they came, and ``response`` is the answer they add
up to (:mod:`apiary.gateway.recorded_streams`).
``hash`` is that of the *normalised* request (:func:`request_hash`: everything but the fields
that may differ between two runs of the same call — ``max_tokens`` and friends, which budgets
cap, ``stream``/``stream_options``, ``user``, ``metadata``).

**Replay.** A Hive (or Cell) with ``spec.gateway: {mode: replay, replayFrom: SESSION}`` never
calls a provider: each call is answered from SESSION's cassette by its hash, costing no tokens.
A call the cassette has no match for is refused naming the first field where it differs from the
recorded call of the same stage nearest to it (``messages[1].content: 'new' ≠ recorded 'old'``).
Recording needs ``update/comb`` on the Session (nodes have it, as for tool calls), the lookup
``create`` on LlmBudget (nodes); a node records only for a session of a Hive one of its drones
belongs to, and looks up only in a Cell where it runs a drone (``NodeServes``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.session_create import read_json, state_of
from apiary.api.session_messages import check_size
from apiary.api.session_ops import SessionOps
from apiary.errors import Invalid, NotFound
from apiary.journal import Entry
from apiary.router.plan import Plan
from apiary.security.roles import NODE
from apiary.waggle import Message

Obj = dict[str, Any]
RECORD = "/api/v1/cells/{cell}/sessions/{name}/llm-calls"
LOOKUP = "/api/v1/cells/{cell}/llmcalls/lookup"
VOLATILE = frozenset({"max_tokens", "max_completion_tokens", "max_output_tokens", "stream",
                      "stream_options", "user", "metadata", "store"})  # fmt: skip


def normalised(request: Obj) -> Obj:
    return {k: v for k, v in request.items() if k not in VOLATILE}


def request_hash(request: Obj) -> str:
    raw = orjson.dumps(normalised(request), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:32]


def first_difference(new: Any, old: Any, path: str = "") -> str | None:
    """Where two normalised requests first differ, as ``path: new ≠ recorded old``."""
    if isinstance(new, dict) and isinstance(old, dict):
        for key in sorted(set(new) | set(old)):
            where = f"{path}.{key}" if path else key
            if key not in old:
                return f"{where}: not in the recorded request"
            if key not in new:
                return f"{where}: in the recorded request only"
            found = first_difference(new[key], old[key], where)
            if found:
                return found
        return None
    if isinstance(new, list) and isinstance(old, list):
        for i, (a, b) in enumerate(zip(new, old, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(new) != len(old):
            return f"{path}: {len(new)} items, the recorded request has {len(old)}"
        return None
    if new != old:
        show = [orjson.dumps(x).decode()[:80] for x in (new, old)]
        return f"{path or 'the request'}: {show[0]} differs from the recorded {show[1]}"
    return None


def _shared(a: Any, b: Any) -> int:
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(1 + _shared(a[k], b[k]) for k in a if k in b and _shared(a[k], b[k]) >= 0)
    if isinstance(a, list) and isinstance(b, list):
        return sum(_shared(x, y) for x, y in zip(a, b, strict=False))
    return 1 if a == b else -1


async def recorded_calls(request: Request, cell: str, session: str) -> list[Obj]:
    state = state_of(request)
    if state.journal is None:
        raise NotFound("this apiaryd has no journal: nothing is recorded")
    entries = await state.journal.read(f"{cell}/{session}", kinds={"event"}, limit=10_000)
    calls = []
    for entry in entries:
        payload = (entry.message or {}).get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("llmCall"), dict):
            calls.append(payload["llmCall"])
    return calls


def cassette_routes() -> APIRouter:
    r = APIRouter(tags=["sessions"])

    @r.post(RECORD, status_code=201, summary="Record one LLM exchange in the session's journal")
    async def record(request: Request, cell: str, name: str) -> Response:
        state = state_of(request)
        principal = request.scope[PRINCIPAL_KEY]
        state.authorizer.authorize(principal, "update/comb", "Session", cell)
        if principal.role == NODE:  # only for a session of a hive it serves
            session = await state.store.get("Session", cell, name)
            hive = str((session.get("spec") or {}).get("hiveRef") or "")
            await state.node_serves.check(state.store, principal, cell, hive or None)
        body = await read_json(request, state)
        if not isinstance(body.get("request"), dict) or "response" not in body:
            raise Invalid("request: an LLM call is recorded with its request and response")
        check_size(body, max(state.config.max_message_bytes, 1 << 20), "llmCall")
        call = {k: body.get(k) for k in ("path", "stage", "model", "request", "response",
                                         "usage", "latencyMs")}  # fmt: skip
        stream = body.get("stream")
        if stream is not None:
            if not isinstance(stream, list) or not all(isinstance(e, str) for e in stream):
                raise Invalid("stream: a streamed call is recorded with its events, as strings")
            call["stream"] = stream
        call["hash"] = request_hash(body["request"])
        ops = SessionOps(state)
        info = await ops.info(cell, name)
        message = Message({"llmCall": call}, "event", metadata={"llm.hash": str(call["hash"])})
        latency = body.get("latencyMs")
        ms = float(latency) if isinstance(latency, int | float) else None
        entry = Entry(info.key, f"llm-{uuid.uuid4()}", "event", message.to_dict(),
                      stage=body.get("stage"), drone=body.get("drone"), latency_ms=ms)  # fmt: skip
        await ops.router._run(info, lambda s: Plan(s, [entry]))
        return json_response({"id": entry.id, "hash": call["hash"]}, 201)

    @r.post(LOOKUP, summary="The recorded answer of an LLM call, for a replaying gateway")
    async def lookup(request: Request, cell: str) -> Response:
        state = state_of(request)
        principal = request.scope[PRINCIPAL_KEY]
        state.authorizer.authorize(principal, "create", "LlmBudget", cell)
        await state.node_serves.check(state.store, principal, cell, None)
        body = await read_json(request, state)
        source, asked = body.get("from"), body.get("request")
        if not isinstance(source, str) or not isinstance(asked, dict):
            raise Invalid("from: the session to replay from and the request are required")
        calls = await recorded_calls(request, cell, source)
        wanted = request_hash(asked)
        for call in calls:
            if call.get("hash") == wanted and call.get("path") == body.get("path"):
                found = {"response": call.get("response"), "usage": call.get("usage")}
                if isinstance(call.get("stream"), list):
                    found["stream"] = call["stream"]
                return json_response(found)
        same = [c for c in calls if c.get("stage") == body.get("stage")] or calls
        if not same:
            why = f"session {source!r} recorded no LLM call"
        else:
            mine = normalised(asked)
            near = max(same, key=lambda c: _shared(mine, normalised(c.get("request") or {})))
            diff = first_difference(mine, normalised(near.get("request") or {}))
            why = f"no recorded call of session {source!r} matches: {diff}"
        return json_response({"missing": why})

    return r


__all__ = ["cassette_routes", "first_difference", "request_hash"]
