"""The LLM budgets of a Cell over HTTP: the nodes' gateways reserve and settle every call here.

    POST /api/v1/cells/{cell}/llmbudget/reserve   {hive, session, model, prompt, completion,
                                                   minCompletion} → {hold, completion} or
                                                   {refused, scope}
    POST /api/v1/cells/{cell}/llmbudget/settle    {hold, hive, session, model, prompt, completion}
    GET  /api/v1/cells/{cell}/llmbudget           what the cell, each hive and each session used
                                                   and holds, in tokens and estimated USD

Limits come from the store, not from the caller: the Cell's and the Hive's ``spec.budget``
(``tokens``, ``usd``, ``perSession``) and the ``tokenBudgetPerSession`` guardrails of the Hive and
the Cell's defaults (:mod:`apiary.api.budget_ledger`). Prices are apiaryd's table
(``APIARY_LLM_PRICES``) with the Cell's ``spec.prices`` over it. A refusal is an answer (200,
``refused``), not an error: the gateway turns it into its own 429 for the agent.

Reserving and settling need ``create`` on ``LlmBudget`` (nodes have it), and a node only for a
Hive one of its drones belongs to (:class:`apiary.api.nodeauth.NodeServes`); reading needs ``get``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api import budget_ledger as ledger
from apiary.api.bodies import parse_body, read_body
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.state import ApiState
from apiary.errors import Invalid, NotFound
from apiary.store import Key
from apiary.telemetry.prices import Prices, prices_from_env

Obj = dict[str, Any]
BASE = "/api/v1/cells/{cell}/llmbudget"
RESOURCE = "LlmBudget"
MAX_NAME = 253


@functools.cache
def server_prices() -> Prices:
    return prices_from_env()


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


async def _body(request: Request) -> Obj:
    raw = await read_body(request, 64 << 10)
    return parse_body(raw, request.headers.get("content-type"))


def _name(body: Obj, field: str) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise Invalid(f"{field}: expected a name of at most {MAX_NAME} characters")
    return value.rsplit("/", 1)[-1]  # a session may come as cell/name


def _count(body: Obj, field: str, *, optional: bool = False) -> int | None:
    value = body.get(field)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{field}: expected a whole number of tokens, at least 0")
    return value


async def _get(state: ApiState, kind: str, cell: str, name: str | None) -> Obj | None:
    if not name:
        return None
    try:
        return await state.store.get(kind, "" if kind == "Cell" else cell, name)
    except NotFound:
        return None


async def _transact(state: ApiState, cell: str, change: Any) -> Obj:
    def mutate(current: Obj | None, rv: int) -> Obj:
        obj = current if current is not None else ledger.new_ledger(cell)
        obj["metadata"]["resourceVersion"] = str(rv)
        change(obj["status"])
        return obj

    new = await state.store.transact(Key(ledger.KIND, cell, ledger.NAME), mutate)
    assert new is not None
    return new


async def _session_phase(state: ApiState, cell: str, session: str, waiting: str | None) -> None:
    """``waiting``: the Session goes ``WaitingForBudget`` (from an open phase) saying why;
    None: back to ``Running`` (from ``WaitingForBudget``)."""

    def change(obj: Obj) -> Obj | None:
        status = dict(obj.get("status") or {})
        phase = status.get("phase") or ""
        if waiting is not None and phase in ("", "Pending", "Running"):
            status.update(phase="WaitingForBudget", waitingForBudget=waiting)
        elif waiting is None and phase == "WaitingForBudget":
            status["phase"] = "Running"
            status.pop("waitingForBudget", None)
        else:
            return None
        return {**obj, "status": status}

    await state.store.update_with_retry("Session", cell, session, change, subresource="status")


async def _gateway_call(
    request: Request, cell: str
) -> tuple[ApiState, Obj, str | None, str | None]:
    """A reserve or settle, authorized (a node only for a hive one of its drones belongs to):
    the state, the body, and the hive and session it names."""
    state = _state(request)
    principal = request.scope[PRINCIPAL_KEY]
    state.authorizer.authorize(principal, "create", RESOURCE, cell)
    body = await _body(request)
    hive, session = _name(body, "hive"), _name(body, "session")
    await state.node_serves.check(state.store, principal, cell, hive)
    return state, body, hive, session


def budget_routes() -> APIRouter:
    r = APIRouter(tags=["budgets"])

    @r.post(BASE + "/reserve", summary="Hold room for one LLM call in every scope (gateways)")
    async def reserve(request: Request, cell: str) -> Response:
        state, body, hive_name, session = await _gateway_call(request, cell)
        cell_obj = await _get(state, "Cell", cell, cell)
        hive = await _get(state, "Hive", cell, hive_name)
        limits = ledger.scope_limits(cell_obj, hive, hive_name, session)
        model = str(body.get("model") or "")[:200]
        prompt = _count(body, "prompt")
        assert prompt is not None
        ask = ledger.Ask(prompt, _count(body, "completion", optional=True),
                         _count(body, "minCompletion", optional=True) or 0,
                         ledger.prices_for(server_prices(), cell_obj).of(model))  # fmt: skip
        replay, replay_mode = ledger.replay_from(
            cell_obj, hive, await _get(state, "Session", cell, session)
        )
        if not any(limit.bounded for limit in limits.values()):
            return json_response({"hold": None, "completion": ask.completion, "bounded": False,
                                  "scopes": list(limits), "replayFrom": replay,
                                  "replayMode": replay_mode})  # fmt: skip
        granted: list[ledger.Granted] = []
        now = time.time()
        pause = ledger.pauses(cell_obj, hive)
        waited: list[bool] = []

        def hold(status: Obj) -> None:
            got = ledger.reserve(status, limits, ask, now)
            granted.append(got)
            if got.refused is not None and pause:
                ledger.wait(status, session, hive_name, got, now)
            elif got.refused is None and session:
                waited.append(status.get("waiting", {}).pop(session, None) is not None)

        await _transact(state, cell, hold)
        (got,) = granted[-1:]
        if got.refused is not None:
            if pause and session:
                await _session_phase(state, cell, session, got.refused)
            return json_response({"refused": got.refused, "scope": got.scope, "bounded": True,
                                  "pause": pause})  # fmt: skip
        if any(waited) and session:
            await _session_phase(state, cell, session, None)
        return json_response({"hold": got.hold, "completion": got.completion, "bounded": True,
                              "scopes": list(limits), "replayFrom": replay,
                              "replayMode": replay_mode})  # fmt: skip

    @r.post(BASE + "/settle", summary="Count what one LLM call used and release its hold")
    async def settle(request: Request, cell: str) -> Response:
        state, body, hive_name, session = await _gateway_call(request, cell)
        hold = body.get("hold") if isinstance(body.get("hold"), str) else None
        prompt, completion = _count(body, "prompt"), _count(body, "completion")
        assert prompt is not None and completion is not None
        cell_obj = await _get(state, "Cell", cell, cell)
        price = ledger.prices_for(server_prices(), cell_obj).of(str(body.get("model") or ""))
        names = ["cell"] + ([f"hive/{hive_name}"] if hive_name else [])
        names += [f"session/{session}"] if session else []
        now = time.time()
        await _transact(
            state, cell, lambda s: ledger.settle(s, hold, names, prompt, completion, price, now)
        )
        return json_response({"settled": True})

    @r.post(BASE + "/raise", summary="Let a scope use more {scope, tokens?, usd?}")
    async def raise_budget(request: Request, cell: str) -> Response:
        state = _state(request)
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "update", RESOURCE, cell)
        body = await _body(request)
        scope = body.get("scope")
        kind, _, name = str(scope or "").partition("/")
        if not ((kind == "cell" and not name) or (kind in ("hive", "session") and name)):
            raise Invalid("scope: expected cell, hive/NAME or session/NAME")
        tokens = _count(body, "tokens", optional=True) or 0
        usd = body.get("usd") or 0.0
        if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
            raise Invalid("usd: expected a number of US dollars, at least 0")
        if not tokens and not usd:
            raise Invalid("tokens: give tokens or usd to raise the budget by")
        freed: list[list[str]] = []
        await _transact(state, cell, lambda s: freed.append(
            ledger.raise_limit(s, str(scope), tokens, float(usd))))  # fmt: skip
        for session in freed[-1]:
            await _session_phase(state, cell, session, None)
        return json_response({"scope": scope, "raisedTokens": tokens, "raisedUsd": usd,
                              "resumed": freed[-1]})  # fmt: skip

    @r.get(BASE, summary="What the Cell, its hives and sessions used and hold (tokens, USD)")
    async def usage(request: Request, cell: str) -> Response:
        state = _state(request)
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "get", RESOURCE, cell)
        try:
            obj = await state.store.get(ledger.KIND, cell, ledger.NAME)
        except NotFound:
            obj = ledger.new_ledger(cell)
        return json_response(ledger.usage_view(obj["status"]))

    return r


__all__ = ["budget_routes"]
