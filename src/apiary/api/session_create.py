"""Sessions that send as they are born: ``spec.input`` on create, jobs, and hive events.

All three check everything a send needs *before* the Session is stored — the body, the payload
size, that the hive exists — so a refused request leaves no half-made session behind. The input a
session is created with gets the session's ``metadata.uid`` as its message id: a client that
knows the session knows which final answers it (the final's ``parent``).

A job is idempotent on a key (``Idempotency-Key``, else the body's ``id``): its name is derived
from the key, so a retry after a lost answer — or a concurrent duplicate — meets the job the first
request made instead of starting a second one (docs/sessions-api.md).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from apiary.api import handlers, params
from apiary.api.bodies import parse_body, read_body
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.session_messages import check_size, invalid, parse_message
from apiary.api.session_ops import FINISHED_KINDS, SessionOps, session_key
from apiary.api.state import ApiState
from apiary.errors import AlreadyExists, Conflict, FieldDetail, Invalid, NotFound, Unavailable
from apiary.resources import API_VERSION, ValidationFailed, admit
from apiary.router import JOB_LABEL, OPEN_PHASES
from apiary.waggle import Message

Obj = dict[str, Any]

JOB_FIELDS = frozenset({"hive", "input", "metadata", "id"})
EVENT_FIELDS = frozenset({"type", "payload", "metadata", "session", "id", "traceparent"})

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 256
KEY_ANNOTATION = "apiary.io/idempotency-key"
"""On a keyed job: the key, so a session that merely has the derived name is not taken for it."""
REQUEST_ANNOTATION = "apiary.io/idempotency-request"
"""On a keyed job: SHA-256 of the request it was made by (hive, input, metadata, id)."""


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


def authorize(request: Request, verb: str, cell: str) -> None:
    state_of(request).authorizer.authorize(request.scope[PRINCIPAL_KEY], verb, "Session", cell)


async def read_json(request: Request, state: ApiState) -> Obj:
    limit = max(state.config.max_body_bytes, state.config.max_message_bytes + 65_536)
    raw = await read_body(request, limit)
    return parse_body(raw, request.headers.get("content-type"))


def _unknown(body: Obj, allowed: frozenset[str], what: str) -> None:
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise Invalid(
            f"unknown field(s) {', '.join(unknown)} (a {what} has {', '.join(sorted(allowed))})",
            [FieldDetail(k, "unknown field") for k in unknown],
        )


# ------------------------------------------------------------------ POST …/sessions


async def create_session(request: Request) -> Response:
    """The generic create, plus: ``spec.input`` (when given) is sent as the first message."""
    state = state_of(request)
    cell = request.path_params["cell"]
    authorize(request, "create", cell)
    raw = await read_body(request, state.config.max_body_bytes)
    # The generic handler reads the body again: Starlette replays a body cached here.
    request._body = raw
    doc = parse_body(raw, request.headers.get("content-type"))
    spec = doc.get("spec")
    first = spec.get("input") if isinstance(spec, dict) else None
    dry = params.dry_run(request.query_params)
    ops = SessionOps(state)
    if first is not None:
        check_size(first, state.config.max_message_bytes, "spec.input")
        hive = spec.get("hiveRef") if isinstance(spec, dict) else None
        if isinstance(hive, str) and hive:
            # 503 without a router, 404 without the hive: either way nothing is stored
            await ops.check_hive(cell, hive, "spec.hiveRef", "cannot send spec.input")
    response = await handlers.create_object(request)
    if dry or state.router is None:
        return response
    stored = orjson.loads(bytes(response.body))
    info = state.router.sessions.remember(stored)
    if first is not None:
        await ops.send(cell, info.name, Message(first, id=info.uid), fresh=True)  # a new uid
    return response


async def new_session(
    state: ApiState, cell: str, prefix: str, hive: str, labels: dict[str, str], first: Any = None
) -> Obj:
    """Store a Session named ``prefix`` + 5 random characters (admitted, within quota)."""
    alphabet = string.ascii_lowercase + string.digits
    for _ in range(5):
        name = prefix + "".join(secrets.choice(alphabet) for _ in range(5))
        try:
            return await store_session(state, cell, name, hive, labels, first)
        except AlreadyExists:
            continue
    raise Conflict(f"could not find a free session name starting with {prefix!r}")


async def store_session(
    state: ApiState, cell: str, name: str, hive: str, labels: dict[str, str],
    first: Any = None, annotations: dict[str, str] | None = None,
) -> Obj:  # fmt: skip
    """Admit and create one Session; :class:`AlreadyExists` when the name is taken."""
    spec: Obj = {"hiveRef": hive}
    if first is not None:
        spec["input"] = first
    meta: Obj = {"name": name, "namespace": cell, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    obj: Obj = {"apiVersion": API_VERSION, "kind": "Session", "metadata": meta, "spec": spec}
    try:
        admitted = admit(obj).object
    except ValidationFailed as exc:
        details = [FieldDetail(f, m) for f, m in exc.details]
        summary = "; ".join(f"{d.field}: {d.message}" for d in details)
        raise Invalid(f"the session would be invalid: {summary}", details) from None
    async with state.quotas.admitting(admitted, creating=True):
        stored = await state.store.create(admitted)
    if state.router is not None:
        state.router.sessions.remember(stored)
    return stored


# ------------------------------------------------------------------------------ jobs


async def create_job(request: Request) -> Response:
    """``POST /jobs {hive, input, metadata?, id?}`` → 201 ``{"id": NAME, "input": MSG ID}``.

    With an idempotency key (the ``Idempotency-Key`` header, else the body's ``id``) the job's
    name is derived from the key, so the store's create decides between concurrent retries; a
    retry gets the job it made with 200, a reused key with another body is a 409."""
    state = state_of(request)
    cell = request.path_params["cell"]
    authorize(request, "create", cell)
    body = await read_json(request, state)
    _unknown(body, JOB_FIELDS, "job")
    hive = body.get("hive")
    if not isinstance(hive, str) or not hive:
        raise invalid("hive", "required: the name of the hive to run")
    if "input" not in body:
        raise invalid("input", "required (any JSON value)")
    check_size(body["input"], state.config.max_message_bytes, "input")
    message = parse_message(
        {"payload": body["input"], "metadata": body.get("metadata"), "id": body.get("id")},
        state.config.max_message_bytes,
    )
    key = JobKey.of(request, body)
    ops = SessionOps(state)
    if key is None:
        await ops.check_hive(cell, hive, "hive", "cannot run the job")
        stored = await new_session(state, cell, "job-", hive, {JOB_LABEL: "true"}, body["input"])
        created = True
    else:
        stored, created = await _keyed_job(state, ops, cell, key)
    name = stored["metadata"]["name"]
    if body.get("id") is None:
        message.id = stored["metadata"]["uid"]
    # A retry sends too when the first attempt stored the job but died before its input was
    # journaled; the router ignores an input id it has (concurrent retries included).
    if created or await ops.journal.get(session_key(cell, name), message.id) is None:
        await ops.send(cell, name, message, fresh=created and body.get("id") is None)
    answer = {"id": name, "session": name, "input": message.id, "hive": hive}
    response = json_response(answer, 201 if created else 200)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class JobKey:
    """A job's idempotency key, and the fingerprint of the request it was first used with."""

    def __init__(self, key: str, source: str, body: Obj) -> None:
        self.key, self.source = key, source
        self.hive, self.input = str(body["hive"]), body["input"]
        doc = {"hive": self.hive, "input": self.input, "metadata": body.get("metadata") or {},
               "id": body.get("id")}  # fmt: skip
        self.fingerprint = hashlib.sha256(canonical(doc)).hexdigest()
        self.name = "job-" + hashlib.sha256(key.encode()).hexdigest()[:24]

    @classmethod
    def of(cls, request: Request, body: Obj) -> JobKey | None:
        """The ``Idempotency-Key`` header, else the body's ``id`` (already checked), else None."""
        header = request.headers.get(IDEMPOTENCY_HEADER)
        if header is not None:
            key = header.strip()
            if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
                why = f"must be 1 to {MAX_KEY_LENGTH} printable characters"
                raise Invalid(f"header {IDEMPOTENCY_HEADER}: {why}",
                              [FieldDetail(IDEMPOTENCY_HEADER, why)])  # fmt: skip
            return cls(key, IDEMPOTENCY_HEADER, body)
        ident = body.get("id")
        return cls(ident, "id", body) if isinstance(ident, str) and ident else None

    @property
    def annotations(self) -> dict[str, str]:
        return {KEY_ANNOTATION: self.key, REQUEST_ANNOTATION: self.fingerprint}

    def check(self, obj: Obj) -> Obj:
        """``obj`` when it is the job this key made for this very request; 409 otherwise."""
        meta = obj["metadata"]
        annotations = meta.get("annotations") or {}
        what = f"{self.source} {self.key!r}"
        if annotations.get(KEY_ANNOTATION) != self.key:
            raise Conflict(f"{what}: session {meta['name']!r} exists and is not the job of this "
                           "key; use another key")  # fmt: skip
        if annotations.get(REQUEST_ANNOTATION) == self.fingerprint:
            return obj
        spec = obj.get("spec") or {}
        if spec.get("hiveRef") != self.hive:
            field, why = "hive", f"hive {spec.get('hiveRef')!r}, not {self.hive!r}"
        elif canonical(spec.get("input")) != canonical(self.input):
            field, why = "input", "another input"
        else:
            field, why = "metadata", "other metadata or another id"
        message = f"{what} was already used for job {meta['name']!r} with {why}"
        raise Conflict(f"{message}; a new job needs a new key", [FieldDetail(field, message)])


async def _keyed_job(state: ApiState, ops: SessionOps, cell: str, key: JobKey) -> tuple[Obj, bool]:
    """(the job, newly created?): the key's job if it exists (409 for another body), else a new
    one — when two requests race, the store's create lets one win and the other reads its job."""
    try:
        return key.check(await state.store.get("Session", cell, key.name)), False
    except NotFound:
        pass
    await ops.check_hive(cell, key.hive, "hive", "cannot run the job")
    labels = {JOB_LABEL: "true"}
    try:
        return await store_session(
            state, cell, key.name, key.hive, labels, key.input, key.annotations
        ), True
    except AlreadyExists:
        pass
    try:
        return key.check(await state.store.get("Session", cell, key.name)), False
    except NotFound:  # created and deleted between our two calls
        raise Conflict(f"{key.source} {key.key!r}: its job was deleted meanwhile; retry") from None


async def job_view(state: ApiState, cell: str, name: str) -> Obj:
    """``{"id", "phase", "hive", "output"?, "error"?}``; the journal decides a fresh end (the
    status writer follows it by milliseconds)."""
    try:
        obj = await state.store.get("Session", cell, name)
    except NotFound:
        raise NotFound(f"job {name!r} not found in cell {cell!r}") from None
    meta = obj["metadata"]
    if str((meta.get("labels") or {}).get(JOB_LABEL, "")).lower() != "true":
        raise NotFound(f"job {name!r} not found in cell {cell!r} (that session is not a job)")
    status = obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    view: Obj = {
        "id": name,
        "phase": phase,
        "hive": (obj.get("spec") or {}).get("hiveRef"),
        "created": meta.get("creationTimestamp"),
    }
    ops = SessionOps(state)
    done = await ops.journal.read(session_key(cell, name), 0, limit=100, kinds=FINISHED_KINDS)
    finals = [e.message.get("payload") for e in done if e.kind == "final"]
    failure = next((e.message.get("payload") for e in done if e.kind == "error"), None)
    if finals:
        view["output"] = finals[0]
        view["results"] = finals
        if phase in OPEN_PHASES:
            view["phase"] = "Succeeded"
    elif failure is not None:
        view["error"] = failure
        if phase in OPEN_PHASES:
            view["phase"] = "Failed"
    elif status.get("reason") and view["phase"] not in OPEN_PHASES:
        view["error"] = {"reason": status.get("reason"), "message": status.get("message")}
    return view


async def get_job(request: Request) -> Response:
    cell, name = request.path_params["cell"], request.path_params["name"]
    authorize(request, "get", cell)
    view = await job_view(state_of(request), cell, name)
    view.pop("results", None)
    return json_response(view)


async def job_results(request: Request) -> Response:
    """The final payload(s) of a succeeded job; 409 while it runs or when it did not succeed."""
    cell, name = request.path_params["cell"], request.path_params["name"]
    authorize(request, "get", cell)
    view = await job_view(state_of(request), cell, name)
    phase = view["phase"]
    if "results" not in view:
        if phase in OPEN_PHASES:
            raise Conflict(f"job {name!r} is {phase}: no results yet")
        err = view.get("error") or {}
        why = f": {err.get('reason')}: {err.get('message')}" if isinstance(err, dict) else ""
        raise Conflict(f"job {name!r} is {phase}, it has no results{why}")
    return json_response({"id": name, "phase": phase, "results": view["results"]})


# ---------------------------------------------------------------------------- events


async def publish_event(request: Request) -> Response:
    """``POST /hives/{name}/events {type, payload, metadata?, session?}`` → 202 with ids.

    Into the given session (it must run this hive), or into a new one created for the event."""
    state = state_of(request)
    cell, hive = request.path_params["cell"], request.path_params["name"]
    authorize(request, "create", cell)
    body = await read_json(request, state)
    _unknown(body, EVENT_FIELDS, "hive event")
    target = body.pop("session", None)
    message = parse_message(body, state.config.max_message_bytes, default_type="event")
    ops = SessionOps(state)
    try:
        await state.store.get("Hive", cell, hive)
    except NotFound:
        raise NotFound(f"hive {hive!r} not found in cell {cell!r}") from None
    created = False
    if target is not None:
        if not isinstance(target, str) or not target:
            raise invalid("session", "must be the name of a session of this hive")
        info = await ops.info(cell, target)
        if info.hive != hive:
            raise Conflict(f"session {target!r} runs hive {info.hive!r}, not {hive!r}")
        name = target
    else:
        if state.router is None:
            raise Unavailable("sessions are not running on this server (no router configured)")
        await ops.check_hive(cell, hive, "hive", "cannot publish the event")
        stored = await new_session(state, cell, "event-", hive, {"apiary.io/hive": hive})
        name, created = stored["metadata"]["name"], True
    sent = await ops.send(cell, name, message, fresh=body.get("id") is None)
    return json_response({"id": sent.id, "session": name, "created": created}, 202)
