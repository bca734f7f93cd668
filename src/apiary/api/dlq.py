"""The dead-letter queue of a hive: list, show, replay and purge what the router gave up on.

The router files a ``DeadLetter`` object (``dl-<dispatch>``, labelled with its hive and session)
when a dispatch failed every attempt, and keeps the dispatch *held* in the session's journal state:
nothing runs it again until a human decides. These routes are that decision:

* replay — :meth:`Router.replay` puts the dispatch back on the bus as a new attempt; the object
  says ``status.phase: Replayed`` (with ``replayedAt``) while it is in flight. When the replayed
  dispatch is answered the router settles the letter: ``Resolved`` (``resolvedAt``) when the flow
  went on, ``Failed`` when the answer was an error that is not retried (nothing is held any more).
  If the dispatch dies again the router rewrites the object's spec (the generation goes up),
  which is how a later read knows the replay failed: a mark older than the spec shows as
  ``Pending`` again. The mark is written *before* the router is asked, so a replay that dies at
  once can never be hidden by a late mark.
* purge — :meth:`Router.purge` fails the dispatch's flow for good (``DeadLetterPurged``), then the
  object is deleted (a settled letter is just deleted: nothing is held).

A dead letter is addressed by its dispatch id (what ``apiaryctl dlq list`` shows) or by its object
name; one of another hive is a 404, as is a hive that neither exists nor has dead letters left.
``GET …/dlq?phase=Pending,Replayed`` lists only letters in those phases (``apiaryctl dlq list``
hides the Resolved ones unless ``--all``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api import params
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.state import ApiState
from apiary.errors import BadRequest, Conflict, NotFound, Unavailable
from apiary.resources import API_VERSION
from apiary.router import Router
from apiary.router.holds import REPLAY_FAILED, RESOLVED
from apiary.store import Store, parse_selector
from apiary.store.base import now_rfc3339

Obj = dict[str, Any]
KIND = "DeadLetter"
HIVE_LABEL = "apiary.io/hive"
PENDING, REPLAYED = "Pending", "Replayed"
PHASES = (PENDING, REPLAYED, RESOLVED, REPLAY_FAILED)
HIVE_DLQ = "/api/v1/cells/{cell}/hives/{hive}/dlq"


def object_name(ident: str) -> str:
    """``<dispatch>`` or ``dl-<dispatch>`` → the object's name."""
    return ident if ident.startswith("dl-") else f"dl-{ident}"


def phase_of(obj: Obj) -> str:
    """``Replayed`` while the replay is in flight, then ``Resolved`` or ``Failed`` as the router
    settled it; ``Pending`` before, and after it died again (the router rewrote the spec since
    the mark: a newer generation)."""
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase not in (REPLAYED, RESOLVED, REPLAY_FAILED):
        return PENDING
    generation = int((obj.get("metadata") or {}).get("generation") or 1)
    return str(phase) if generation <= int(status.get("replayedGeneration") or 0) else PENDING


def phases_param(raw: str | None) -> frozenset[str] | None:
    """``phase=Pending,Replayed`` → those phases; None (every letter) when absent or empty."""
    if not raw:
        return None
    wanted = frozenset(p.strip() for p in raw.split(",") if p.strip())
    unknown = sorted(wanted - set(PHASES))
    if unknown:
        raise BadRequest(
            f"query parameter phase={raw!r}: unknown phase(s) {', '.join(unknown)} "
            f"(a dead letter is {', '.join(PHASES)})"
        )
    return wanted or None


def view(obj: Obj) -> Obj:
    """The object as clients see it: ``status.phase`` always set, from :func:`phase_of`."""
    out = copy.deepcopy(obj)
    out.setdefault("apiVersion", API_VERSION)
    status = dict(out.get("status") or {})
    status["phase"] = phase_of(obj)
    out["status"] = status
    return out


def _newest_first(items: list[Obj]) -> list[Obj]:
    return sorted(items, key=_order, reverse=True)


def _order(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def _encode_cursor(obj: Obj) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(_order(obj)))).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, name = orjson.loads(raw)
        return str(created), str(name)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest(f"query parameter continue={token!r}: not a token this API gave") from None


def _check_replayable(ident: str, phase: str, status: Obj) -> None:
    """409 unless the letter is Pending: in flight, resolved or failed for good."""
    if phase == REPLAYED:
        raise Conflict(
            f"dead letter {ident} was replayed at {status.get('replayedAt')} and is in "
            "flight; it comes back here if it fails again"
        )
    if phase == RESOLVED:
        raise Conflict(
            f"dead letter {ident} is Resolved: its replay succeeded at {status.get('resolvedAt')}; "
            "nothing to replay (purge it to delete it)"
        )
    if phase == REPLAY_FAILED:
        raise Conflict(
            f"dead letter {ident} is Failed: its replay was answered at {status.get('failedAt')} "
            f"by {status.get('reason')}: {status.get('message')}, which is not retried; nothing "
            "is held any more (purge it to delete it)"
        )


class DeadLetterQueue:
    """The operations, without HTTP; bound to one request's :class:`ApiState`."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.store: Store = state.store

    @property
    def router(self) -> Router:
        if self.state.router is None:
            raise Unavailable("sessions are not running on this server (no router configured)")
        return self.state.router

    async def letters(self, cell: str, hive: str) -> list[Obj]:
        """Every dead letter of the hive, newest first; 404 for a hive that is not there and
        left none (dead letters outlive a deleted hive, so they can still be purged)."""
        selector = parse_selector(f"{HIVE_LABEL}={hive}")
        found = (await self.store.list(KIND, cell, selector=selector)).items
        if not found:
            try:
                await self.store.get("Hive", cell, hive)
            except NotFound:
                raise NotFound(f"hive {hive!r} not found in cell {cell!r}") from None
        return _newest_first(found)

    async def page(
        self, cell: str, hive: str, limit: int | None, token: str | None,
        phases: frozenset[str] | None = None,
    ) -> tuple[list[Obj], str | None]:  # fmt: skip
        """One page of :meth:`letters` (viewed; only ``phases`` when given) and the token of
        the next, if any."""
        items = await self.letters(cell, hive)
        if phases is not None:
            items = [o for o in items if phase_of(o) in phases]
        if token:
            cursor = _decode_cursor(token)
            items = [o for o in items if _order(o) < cursor]
        if limit and len(items) > limit:
            items = items[:limit]
            return [view(o) for o in items], _encode_cursor(items[-1])
        return [view(o) for o in items], None

    async def find(self, cell: str, hive: str, ident: str) -> Obj:
        missing = NotFound(f"dead letter {ident!r} not found in hive {hive!r} (cell {cell!r})")
        try:
            obj = await self.store.get(KIND, cell, object_name(ident))
        except NotFound:
            await self.letters(cell, hive)  # an unknown hive says so first
            raise missing from None
        if (obj.get("spec") or {}).get("hive") != hive:
            raise missing
        return obj

    # ---------------------------------------------------------------------------- replay

    async def replay(self, cell: str, hive: str, ident: str) -> Obj:
        return await self._replay(await self.find(cell, hive, ident))

    async def replay_all(self, cell: str, hive: str) -> Obj:
        """Replay every pending dead letter of the hive; one failing does not stop the rest."""
        self.router  # noqa: B018 -- 503 without a router, even when nothing is dead-lettered
        replayed, failed = [], []
        for obj in await self.letters(cell, hive):
            if phase_of(obj) != PENDING:
                continue
            ident = str(obj["spec"]["dispatch"])
            try:
                await self._replay(obj)
            except (Conflict, NotFound) as exc:
                failed.append({"id": ident, "message": exc.message})
            else:
                replayed.append(ident)
        return {"hive": hive, "replayed": replayed, "failed": failed}

    async def _replay(self, obj: Obj) -> Obj:
        router = self.router
        spec, meta = obj.get("spec") or {}, obj["metadata"]
        ident, session = str(spec.get("dispatch")), str(spec.get("session"))
        status = obj.get("status") or {}
        _check_replayable(ident, phase_of(obj), status)
        mark = {
            **status,
            "phase": REPLAYED,
            "replayedAt": now_rfc3339(self.store.clock),
            "replayedGeneration": int(meta.get("generation") or 1),
            "replays": int(status.get("replays") or 0) + 1,
        }
        try:  # the resourceVersion makes two concurrent replays of one letter a 409
            marked = await self.store.update({**obj, "status": mark}, subresource="status")
        except Conflict:
            raise Conflict(f"dead letter {ident} changed meanwhile; read it again") from None
        try:
            ok = await router.replay(meta["namespace"], session, ident)
        except NotFound:
            await self._unmark(marked, status)
            raise Conflict(
                f"dead letter {ident}: its session {session!r} no longer exists; purge it"
            ) from None
        except Exception:
            await self._unmark(marked, status)
            raise
        if not ok:
            await self._unmark(marked, status)
            raise Conflict(
                f"dead letter {ident}: session {session!r} does not hold this dispatch "
                "(it was replayed or purged meanwhile)"
            )
        return view(marked)

    async def _unmark(self, marked: Obj, previous: Obj) -> None:
        """Undo a Replayed mark whose replay did not happen (unless the object moved on)."""
        with contextlib.suppress(Conflict, NotFound):
            await self.store.update({**marked, "status": previous}, subresource="status")

    # ----------------------------------------------------------------------------- purge

    async def purge(self, cell: str, hive: str, ident: str) -> Obj:
        return await self._purge(await self.find(cell, hive, ident))

    async def purge_all(self, cell: str, hive: str) -> Obj:
        self.router  # noqa: B018 -- 503 without a router, even when nothing is dead-lettered
        purged, failed_flows = [], 0
        for obj in await self.letters(cell, hive):
            done = await self._purge(obj)
            purged.append(done["id"])
            failed_flows += int(done["flowFailed"])
        return {"hive": hive, "purged": purged, "flowsFailed": failed_flows}

    async def _purge(self, obj: Obj) -> Obj:
        """Fail the held dispatch's flow (when the session still holds it), then delete."""
        router = self.router
        spec, meta = obj.get("spec") or {}, obj["metadata"]
        ident, session = str(spec.get("dispatch")), str(spec.get("session"))
        try:
            flow_failed = await router.purge(meta["namespace"], session, ident)
        except NotFound:  # the session is gone: nothing is held any more
            flow_failed = False
        with contextlib.suppress(NotFound):  # a concurrent purge got there first
            await self.store.delete(KIND, meta["namespace"], meta["name"])
        return {"id": ident, "session": session, "purged": True, "flowFailed": flow_failed}


# ------------------------------------------------------------------------------- routes


def _queue(request: Request, verb: str) -> tuple[DeadLetterQueue, str, str]:
    state: ApiState = request.app.state.apiary
    cell, hive = request.path_params["cell"], request.path_params["hive"]
    state.authorizer.authorize(request.scope[PRINCIPAL_KEY], verb, KIND, cell)
    return DeadLetterQueue(state), cell, hive


def _list_body(items: list[Obj], token: str | None) -> Obj:
    meta: Obj = {"continue": token} if token else {}
    return {"apiVersion": API_VERSION, "kind": "DeadLetterList", "metadata": meta, "items": items}


def dlq_routes() -> APIRouter:
    r = APIRouter(tags=["dead letters"])

    @r.get(HIVE_DLQ, summary="A hive's dead letters, newest first (phase, limit, continue)")
    async def list_letters(request: Request, cell: str, hive: str) -> Response:
        queue, cell, hive = _queue(request, "list")
        q = request.query_params
        limit = params.non_negative_int(q, "limit")
        phases = phases_param(q.get("phase"))
        items, token = await queue.page(cell, hive, limit, q.get("continue") or None, phases)
        return json_response(_list_body(items, token))

    @r.post(HIVE_DLQ + "/replay", summary="Replay every pending dead letter of the hive")
    async def replay_all(request: Request, cell: str, hive: str) -> Response:
        queue, cell, hive = _queue(request, "update")
        return json_response(await queue.replay_all(cell, hive))

    @r.delete(HIVE_DLQ, summary="Purge every dead letter of the hive (their flows fail)")
    async def purge_all(request: Request, cell: str, hive: str) -> Response:
        queue, cell, hive = _queue(request, "delete")
        return json_response(await queue.purge_all(cell, hive))

    @r.get(HIVE_DLQ + "/{ident}", summary="One dead letter (by dispatch id or object name)")
    async def get_letter(request: Request, cell: str, hive: str, ident: str) -> Response:
        queue, cell, hive = _queue(request, "get")
        return json_response(view(await queue.find(cell, hive, ident)))

    @r.post(HIVE_DLQ + "/{ident}/replay", summary="Put a dead letter back on the bus")
    async def replay(request: Request, cell: str, hive: str, ident: str) -> Response:
        queue, cell, hive = _queue(request, "update")
        return json_response(await queue.replay(cell, hive, ident))

    @r.delete(HIVE_DLQ + "/{ident}", summary="Purge a dead letter: its flow fails for good")
    async def purge(request: Request, cell: str, hive: str, ident: str) -> Response:
        queue, cell, hive = _queue(request, "delete")
        return json_response(await queue.purge(cell, hive, ident))

    return r
