"""A session's typed events as A2A stream responses, and a task as the fold of them.

Every typed event (:mod:`apiary.api.session_events`) becomes exactly one A2A event, under the
same id (``SEQ.I``, also in its ``metadata["apiary.io/event-id"]``), so a client's
``Last-Event-ID`` means the same thing on the session stream and on an A2A stream:

=======================  ====================================================================
``session.input``        status ``WORKING``
``stage.started``        status ``WORKING`` (metadata: stage)
``message.delta``        status ``WORKING`` with the agent's partial line (metadata.partial)
``stage.completed``      status ``WORKING`` with the stage's answer as an agent message
``approval.requested``   status ``INPUT_REQUIRED``: answer with a message saying approve/reject
``approval.granted``     status ``WORKING``
``budget.updated``       the current status, metadata ``usage`` and ``total``
``session.completed``    status ``COMPLETED`` with the final answer (also the task's artifact)
``session.failed``       ``FAILED``, ``CANCELED`` (reason Cancelled) or ``REJECTED`` (Rejected)
``session.event``        the current status, metadata the router's note
=======================  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apiary.a2a.wire import EVENT_ID, agent_message, parts_of, user_message
from apiary.api.session_events import TypedEvent

Obj = dict[str, Any]

WORKING = "TASK_STATE_WORKING"
SUBMITTED = "TASK_STATE_SUBMITTED"
INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
COMPLETED = "TASK_STATE_COMPLETED"
FAILED = "TASK_STATE_FAILED"
CANCELED = "TASK_STATE_CANCELED"
REJECTED = "TASK_STATE_REJECTED"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})
INTERRUPTED = frozenset({INPUT_REQUIRED})
"""States after which a stream ends (A2A: terminal, or waiting for the client)."""

APPROVAL_HELP = "answer 'approve' or 'reject' (optionally 'reject: why')"


@dataclass
class TaskView:
    """What the events so far say about a task: its state, last status message, history."""

    task: str
    context: str
    state: str = SUBMITTED
    message: Obj | None = None
    timestamp: str = ""
    history: list[Obj] = field(default_factory=list)
    artifacts: list[Obj] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    """Stages whose dispatches wait for approval."""
    position: str = "0"

    def apply(self, t: TypedEvent) -> Obj:
        """Fold one typed event in; the A2A stream response it is."""
        d = t.data
        self.position, self.timestamp = t.id, str(d.get("created") or "")
        meta: Obj = {EVENT_ID: t.id, "apiary.io/event": t.type}
        if d.get("stage"):
            meta["apiary.io/stage"] = d["stage"]
        message: Obj | None = None
        state = self.state
        if t.type == "session.input":
            state = WORKING
            mid = str(d.get("entry") or "")
            self.history.append(user_message(d.get("payload"), self.task, self.context, mid))
        elif t.type == "stage.started":
            state = WORKING if not self.waiting else INPUT_REQUIRED
        elif t.type in ("message.delta", "stage.completed"):
            extra = {"partial": True} if t.type == "message.delta" else None
            message = agent_message(d.get("payload"), self.task, self.context, extra)
            state = WORKING if not self.waiting else INPUT_REQUIRED
        elif t.type == "approval.requested":
            self.waiting.append(str(d.get("stage")))
            state = INPUT_REQUIRED
            text = f"stage {d.get('stage')!r} waits for approval: {APPROVAL_HELP}"
            message = agent_message(text, self.task, self.context)
            message["parts"].append({"data": {"approval": {"stage": d.get("stage")}}})
        elif t.type == "approval.granted":
            if d.get("stage") in self.waiting:
                self.waiting.remove(str(d.get("stage")))
            state = WORKING if not self.waiting else INPUT_REQUIRED
        elif t.type == "budget.updated":
            meta["usage"], meta["total"] = d.get("usage"), d.get("total")
        elif t.type == "session.completed":
            state, self.waiting = COMPLETED, []
            message = agent_message(d.get("payload"), self.task, self.context)
            self.history.append(message)
            self.artifacts.append({"artifactId": f"output-{t.id}", "name": "output",
                                   "parts": parts_of(d.get("payload"))})  # fmt: skip
        elif t.type == "session.failed":
            reason = str(d.get("reason") or "Failed")
            state = {"Cancelled": CANCELED, "Rejected": REJECTED}.get(reason, FAILED)
            self.waiting = []
            message = agent_message(f"{reason}: {d.get('message')}", self.task, self.context)
        else:
            meta["note"] = d.get("payload")
        self.state = state
        if message is not None:
            self.message = message
        return {"statusUpdate": {"taskId": self.task, "contextId": self.context,
                                 "status": self.status(message), "metadata": meta}}  # fmt: skip

    def status(self, message: Obj | None = None) -> Obj:
        status: Obj = {"state": self.state}
        if message is not None:
            status["message"] = message
        if self.timestamp:
            status["timestamp"] = self.timestamp
        return status

    def snapshot(self, history_length: int | None = None) -> Obj:
        """The task as ``GetTask`` (and a stream's first event) shows it."""
        history = self.history if history_length is None else self.history[-history_length:]
        if history_length == 0:
            history = []
        status = self.status(self.message)
        task: Obj = {"id": self.task, "contextId": self.context, "status": status,
                     "metadata": {EVENT_ID: self.position}}  # fmt: skip
        if history:
            task["history"] = history
        if self.artifacts:
            task["artifacts"] = self.artifacts
        return task

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    @property
    def paused(self) -> bool:
        return self.state in TERMINAL or self.state in INTERRUPTED
