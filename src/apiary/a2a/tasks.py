"""A2A tasks as Sessions: create one, read it, follow its events, answer its approval, close it.

A task is a job session of the hive (``a2a-xxxxx``, label ``apiary.io/job``) whose one input is
the client's first message; its A2A ``contextId`` is the client's (annotation
``apiary.io/a2a-context``) or the task id. Reading a task folds the session's typed events from
the journal (:class:`~apiary.a2a.events.TaskView`), so a task's state and its stream are the
journal's — the same after a disconnect and after an apiaryd restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import string
from collections.abc import AsyncIterator
from typing import Any

from apiary.a2a.events import TaskView
from apiary.a2a.wire import INVALID_PARAMS, TASK_NOT_FOUND, UNSUPPORTED_OPERATION, RpcError
from apiary.api.session_create import store_session
from apiary.api.session_events import Position, Typer
from apiary.api.session_ops import SessionOps
from apiary.api.session_stream import entry_batches
from apiary.api.watch import TokenCheck
from apiary.errors import AlreadyExists, Conflict, NotFound
from apiary.router import JOB_LABEL, SessionInfo
from apiary.waggle import Message

Obj = dict[str, Any]

A2A_LABEL = "apiary.io/a2a"
CONTEXT_ANNOTATION = "apiary.io/a2a-context"
MESSAGE_ID = "a2a-message-id"
BLOCKING_WAIT = 60.0
"""Longest a blocking ``SendMessage`` waits for the task to finish or ask for input (seconds);
after that it answers with the task as it is (``WORKING``), for the client to poll or follow."""

APPROVE_WORDS = frozenset({"approve", "approved", "yes", "ok"})
REJECT_WORDS = frozenset({"reject", "rejected", "no", "deny"})


async def create(
    ops: SessionOps, cell: str, hive: str, payload: Any, message: Obj, *,
    prefix: str = "a2a-", label: str = A2A_LABEL,
) -> SessionInfo:  # fmt: skip
    """A new job of ``hive`` whose input is ``payload`` (the input id is the session's uid),
    named ``prefix`` + 8 random characters and labelled ``label: hive``."""
    await ops.check_hive(cell, hive, "hive", "cannot start the task")
    context = message.get("contextId")
    annotations = {CONTEXT_ANNOTATION: context} if isinstance(context, str) and context else {}
    labels = {JOB_LABEL: "true", label: hive}
    alphabet = string.ascii_lowercase + string.digits
    for _ in range(5):
        name = prefix + "".join(secrets.choice(alphabet) for _ in range(8))
        try:
            stored = await store_session(ops.state, cell, name, hive, labels, payload, annotations)
            break
        except AlreadyExists:
            continue
    else:
        raise Conflict("could not find a free task name")
    uid = stored["metadata"]["uid"]
    metadata = {MESSAGE_ID: str(message.get("messageId") or "")}
    await ops.send(cell, name, Message(payload, id=uid, metadata=metadata))
    return await ops.info(cell, name)


async def task_of(ops: SessionOps, cell: str, hive: str, task: Any) -> tuple[SessionInfo, str]:
    """The session behind task id ``task`` of ``hive`` and its context id."""
    if not isinstance(task, str) or not task:
        raise RpcError(INVALID_PARAMS, "params.id: required, the task id")
    try:
        info = await ops.info(cell, task)
    except NotFound:
        raise RpcError(TASK_NOT_FOUND, f"task {task!r} not found") from None
    if info.hive != hive:
        raise RpcError(TASK_NOT_FOUND, f"task {task!r} not found (it is not a task of {hive!r})")
    obj = await ops.store.get("Session", cell, task)
    annotations = obj["metadata"].get("annotations") or {}
    return info, str(annotations.get(CONTEXT_ANNOTATION) or task)


async def view(ops: SessionOps, info: SessionInfo, context: str) -> TaskView:
    """The task now: every typed event of the session folded in."""
    v, typer = TaskView(info.name, context), Typer()
    for e in await ops.transcript(info.key):
        for t in typer.events(e):
            v.apply(t)
    return _ended(v, info)


def _ended(v: TaskView, info: SessionInfo) -> TaskView:
    """A session that ended without a final or failure in its journal (closed, timed out)."""
    if not info.open and not v.ended:
        v.state = "TASK_STATE_CANCELED" if info.phase == "Closed" else "TASK_STATE_FAILED"
        v.waiting = []
    return v


async def follow(
    ops: SessionOps,
    info: SessionInfo,
    context: str,
    at: Position | None,
    snapshot: bool,
    valid: TokenCheck | None = None,
) -> AsyncIterator[tuple[str, Obj]]:
    """(event id, stream response) of the task after ``at`` (None: now), optionally preceded
    by the task as it stands at ``at``; ends once the task ends or waits for input, and raises
    why once ``valid`` finds the request's token no longer good (revoked, expired)."""
    v, typer = TaskView(info.name, context), Typer()
    entries = await ops.transcript(info.key)
    last = entries[-1].seq if entries else 0
    here = at if at is not None else Position(last)
    pending: list[tuple[str, Obj]] = []
    for e in entries:
        for i, t in enumerate(typer.events(e)):
            wanted = here.wants(e.seq, i)
            if wanted and snapshot and not pending:
                pending.append((v.position, {"task": v.snapshot()}))
            response = v.apply(t)
            if wanted:
                pending.append((t.id, response))
    if snapshot and not pending:
        pending.append((v.position, {"task": _ended(v, info).snapshot()}))
    for item in pending:
        yield item
    if _ended(v, info).paused:
        return
    async for batch in entry_batches(ops, info.cell, info.name, last, info.job, valid):
        for e in batch:
            for t in typer.events(e):
                yield t.id, v.apply(t)
                if v.paused:
                    return
    if valid is not None and valid.error is not None:
        raise valid.error


async def wait_until_paused(ops: SessionOps, info: SessionInfo, context: str) -> TaskView:
    """Block (up to :data:`BLOCKING_WAIT`) until the task ends or asks for input; the task."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(BLOCKING_WAIT):
            async for _ in follow(ops, info, context, None, False):
                pass
    return await view(ops, await ops.info(info.cell, info.name), context)


async def answer(ops: SessionOps, info: SessionInfo, v: TaskView, payload: Any) -> None:
    """A client's message to a task that waits for approval: approve or reject (with reason)."""
    verdict, stage, reason = _verdict(payload, v)
    router = ops.router
    if verdict:
        done = await router.approve(info.cell, info.name, stage)
    else:
        done = await router.reject(info.cell, info.name, stage, reason or "rejected over A2A")
    if done == 0:
        raise RpcError(INVALID_PARAMS, f"task {info.name!r} has nothing waiting for approval"
                                       + (f" at stage {stage!r}" if stage else ""))  # fmt: skip


def _verdict(payload: Any, v: TaskView) -> tuple[bool, str | None, str | None]:
    """(approve?, stage or None for all, reason) from ``{"approve": bool, "stage"?, "reason"?}``
    or a text such as ``approve`` / ``reject: too risky``."""
    where = f"task {v.task!r} waits for approval of {', '.join(repr(s) for s in v.waiting)}"
    if isinstance(payload, dict) and isinstance(payload.get("approve"), bool):
        stage, reason = payload.get("stage"), payload.get("reason")
        if stage is not None and stage not in v.waiting:
            raise RpcError(INVALID_PARAMS, f"message: stage {stage!r}: {where}")
        return payload["approve"], stage, str(reason) if reason else None
    if isinstance(payload, str):
        word, _, reason = payload.strip().partition(":")
        if word.strip().lower() in APPROVE_WORDS:
            return True, None, None
        if word.strip().lower() in REJECT_WORDS:
            return False, None, reason.strip() or None
    raise RpcError(INVALID_PARAMS, f"message: {where}: answer 'approve' or 'reject' (optionally "
                                   "'reject: why'), or data {\"approve\": true|false}")  # fmt: skip


def refuse_message(v: TaskView) -> RpcError:
    if v.ended:
        return RpcError(UNSUPPORTED_OPERATION, f"task {v.task!r} is {v.state}: it takes no more "
                                               "messages; start a new task")  # fmt: skip
    return RpcError(INVALID_PARAMS, f"task {v.task!r} is {v.state}: it takes a message only "
                                    "while it asks for input")  # fmt: skip
