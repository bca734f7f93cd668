"""The router's own decisions around the pattern engine — pure, like the engine.

The session's state document holds the engine's state plus one key of the router's, ``router``:
``attempts`` (dispatch id → attempt number of its current try) and ``held`` (dispatch id → why it
is not on the bus: waiting for approval, or dead-lettered). A :class:`Plan` is what one step
decided: the new state, journal entries, dispatches to publish (with a delay for retries), dead
letters to file, and the change to the Session's status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apiary.journal import Entry
from apiary.patterns import Dispatch as EngineDispatch
from apiary.patterns import Step
from apiary.waggle import Message

Obj = dict[str, Any]
ROUTER_KEY = "router"
APPROVAL = "WaitingForApproval"
DEAD = "DeadLettered"


def dead_letter_message(held: Obj) -> str:
    """A dead-lettered session's status message, from what its state holds of the letter
    (``held`` as :meth:`Router._retry_or_dead_letter` records it; the reconciler reads it back)."""
    reason, detail = held["error"]
    return (
        f"stage {held['stage']}: {reason}: {detail} "
        f"after {held['attempts']} attempts; see apiaryctl dlq list"
    )


@dataclass
class Send:
    """One dispatch to put on the bus, ``delay`` seconds from now."""

    id: str
    stage: str
    message: Obj
    attempt: int = 0
    delay: float = 0.0


@dataclass
class DeadLetter:
    dispatch: str
    stage: str
    message: Obj
    attempts: int
    reason: str
    detail: str


@dataclass
class Plan:
    state: Obj
    entries: list[Entry] = field(default_factory=list)
    send: list[Send] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    status: Obj = field(default_factory=dict)
    """A patch for the Session's status (empty: nothing to say)."""
    step: Step | None = None
    notices: list[tuple[str, Obj]] = field(default_factory=list)
    """(event, detail) for webhooks, Events and metrics — event names as in WEBHOOK_EVENTS."""


VIOLATIONS = frozenset({"OutputSchemaViolation", "TokenBudgetExceeded", "RateLimited",
                        "MaxTurnsExceeded", "CircuitOpen"})  # fmt: skip


def failure_notices(reason: str, detail: Obj) -> list[tuple[str, Obj]]:
    """What a failed attempt announces: ``timeout`` or ``guardrail_violation`` (or nothing)."""
    if reason == "ResponseTimeout":
        return [("timeout", detail)]
    if reason in VIOLATIONS:
        return [("guardrail_violation", detail)]
    return []


def split(state: Obj) -> tuple[Obj, Obj]:
    """(the engine's state, the router's part) — the engine never sees the router's key."""
    if not state:
        return {}, {"attempts": {}, "held": {}}
    engine = {k: v for k, v in state.items() if k != ROUTER_KEY}
    mine = state.get(ROUTER_KEY) or {}
    return engine, {"attempts": dict(mine.get("attempts") or {}),
                    "held": dict(mine.get("held") or {})}  # fmt: skip


def join(engine_state: Obj, mine: Obj) -> Obj:
    out = dict(engine_state)
    if mine["attempts"] or mine["held"]:
        out[ROUTER_KEY] = mine
    return out


def agent_error(outputs: list[Message]) -> tuple[str, str] | None:
    """An answer of type ``error`` is a failed attempt like a timeout (retried, then DLQ)."""
    for out in outputs:
        if out.more:
            continue
        if out.type == "error":
            payload = out.payload
            text = payload.get("message") if isinstance(payload, dict) else payload
            return ("AgentError", str(text) if text is not None else "the agent answered error")
        return None
    return None


def note(key: str, id: str, stage: str | None, parent: str | None, payload: Obj,
         type: str = "event") -> Entry:  # fmt: skip
    """A journal entry of kind ``event`` the router writes about a dispatch (retry, hold ...)."""
    return Entry(key, id, "event", Message(payload, type).to_dict(), stage=stage, parent=parent)


def hold_approvals(
    step: Step, mine: Obj, approval_stages: frozenset[str], key: str
) -> tuple[list[EngineDispatch], list[Entry], Obj]:
    """Split the step's dispatches into those to send and those held for approval: dispatches
    to a stage with ``approval: required``, and those caused by an output that asked for it
    (``metadata.approval = "required"``). Returns (to send, notes, status patch)."""
    asking = {r.id for r in step.records if r.message.metadata.get("approval") == "required"}
    send, notes, waiting = [], [], []
    for d in step.dispatches:
        if d.stage in approval_stages or d.parent in asking:
            mine["held"][d.id] = {"reason": APPROVAL, "stage": d.stage,
                                  "message": d.message.to_dict()}  # fmt: skip
            notes.append(note(key, f"{d.id}#held", d.stage, d.id,
                              {"held": "approval", "stage": d.stage}))  # fmt: skip
            waiting.append(d.stage)
        else:
            send.append(d)
    status: Obj = {}
    if waiting:
        status = {"phase": APPROVAL, "pendingApproval": ",".join(sorted(set(waiting)))}
    return send, notes, status


def held_for(mine: Obj, reason: str, stage: str | None = None) -> list[tuple[str, Obj]]:
    return [
        (d, h) for d, h in sorted(mine["held"].items())
        if h.get("reason") == reason and (stage is None or h.get("stage") == stage)
    ]  # fmt: skip
