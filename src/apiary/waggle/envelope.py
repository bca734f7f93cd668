"""The two envelopes on the bus between the router and the drones (docs/sessions.md).

* a **Dispatch** (router → one drone of a stage): which session and stage, and the Waggle message;
* an **Outcome** (drone → router): what the agent made of a dispatch — its outputs, how long it
  took, or why it failed;
* a **Cancel** (router → every drone of a stage): a session was closed; drop its queued
  dispatches and tell the agent holding one of its messages.

Subjects are built here too, so both sides agree on them. Names are DNS-1123 labels, so they never
contain the ``.`` that separates subject tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

OUTCOMES = "apiary.*.*.out"
"""What the router subscribes to: the outcome subjects of every hive in every cell."""

ROUTER_GROUP = "router"


def stage_subject(cell: str, hive: str, stage: str) -> str:
    return f"apiary.{cell}.{hive}.{stage}.in"


def stage_group(cell: str, hive: str, stage: str) -> str:
    return f"{cell}.{hive}.{stage}"


def outcome_subject(cell: str, hive: str) -> str:
    return f"apiary.{cell}.{hive}.out"


def cancel_subject(cell: str, hive: str, stage: str) -> str:
    return f"apiary.{cell}.{hive}.{stage}.cancel"


def cancel_group(cell: str, hive: str, stage: str, drone: str) -> str:
    """One group per drone: every drone of the stage gets its own copy of a Cancel."""
    return f"{cell}.{hive}.{stage}.{drone}.cancel"


@dataclass(frozen=True, slots=True)
class Cancel:
    session: str  # "<cell>/<session name>"
    dispatches: list[str]  # the dispatches of the stage that were still open
    reason: str = "Cancelled"
    message: str = ""

    @property
    def msg_id(self) -> str:
        return f"{self.session}:cancel:{','.join(self.dispatches)}"[:200]

    def encode(self) -> bytes:
        return orjson.dumps({"session": self.session, "dispatches": self.dispatches,
                             "reason": self.reason, "message": self.message})  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Cancel:
        body = _load(data, ("session", "dispatches"))
        dispatches = body["dispatches"]
        if not isinstance(dispatches, list):
            raise EnvelopeError("dispatches must be a list")
        reason = str(body.get("reason") or "Cancelled")
        return cls(str(body["session"]), [str(d) for d in dispatches], reason,
                   str(body.get("message") or ""))  # fmt: skip


class EnvelopeError(ValueError):
    """A bus message that is not a well-formed envelope; it is dropped with this reason."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    dispatch: str
    session: str  # "<cell>/<session name>"
    hive: str
    stage: str
    message: dict[str, Any]
    timeout: float | None = None  # seconds the agent gets (guardrails.responseTimeoutSeconds)
    attempt: int = 0  # 0 the first time; a retry or a DLQ replay counts up
    tokens_left: int | None = None  # of the session's token budget, when the hive has one

    @property
    def msg_id(self) -> str:
        """Bus dedupe id: a retry is a new message, a republish of the same attempt is not.

        Scoped by the session: dispatch ids derive from the ids clients choose, which are theirs
        per session (DESIGN §9), and the dedupe window is the bus's, shared by every session."""
        base = f"{self.session}/{self.dispatch}"
        return base if not self.attempt else f"{base}#{self.attempt}"

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "dispatch": self.dispatch, "session": self.session, "hive": self.hive,
            "stage": self.stage, "message": self.message,
        }  # fmt: skip
        if self.timeout is not None:
            body["timeout"] = self.timeout
        if self.attempt:
            body["attempt"] = self.attempt
        if self.tokens_left is not None:
            body["tokensLeft"] = self.tokens_left
        return orjson.dumps(body)

    @classmethod
    def decode(cls, data: bytes) -> Dispatch:
        body = _load(data, ("dispatch", "session", "hive", "stage", "message"))
        timeout = body.get("timeout")
        left = body.get("tokensLeft")
        return cls(
            str(body["dispatch"]), str(body["session"]), str(body["hive"]), str(body["stage"]),
            dict(body["message"]), float(timeout) if timeout is not None else None,
            int(body.get("attempt") or 0), int(left) if left is not None else None,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    dispatch: str
    session: str
    hive: str
    stage: str
    drone: str
    outputs: list[dict[str, Any]]
    latency_ms: float = 0.0
    error: tuple[str, str] | None = None  # (reason, message)
    attempt: int = 0
    usage: tuple[int, int] = (0, 0)  # (prompt, completion) tokens the agent used, gateway counted
    late: bool = False
    """True for lines the agent printed after its answer (docs/waggle.md, "Turns")."""
    offset: int = 0
    """For late outputs: the index of the first of ``outputs`` among everything the agent
    printed for this dispatch (the answer's outputs come first; an empty answer has none)."""
    models: tuple[tuple[str, int, int], ...] = ()
    """``usage`` by the model each LLM call was answered by, as the gateway counted it:
    (model, prompt, completion) — what the token and cost metrics are labelled with."""

    @property
    def msg_id(self) -> str:
        base = f"{self.session}/{self.dispatch}:{self.attempt}:out"  # per session, as Dispatch
        return f"{base}+{self.offset}" if self.late else base

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "dispatch": self.dispatch, "session": self.session, "hive": self.hive,
            "stage": self.stage, "drone": self.drone, "outputs": self.outputs,
            "latencyMs": self.latency_ms,
        }  # fmt: skip
        if self.error is not None:
            body["error"] = {"reason": self.error[0], "message": self.error[1]}
        if self.attempt:
            body["attempt"] = self.attempt
        if self.usage != (0, 0):
            body["usage"] = {"promptTokens": self.usage[0], "completionTokens": self.usage[1]}
        if self.models:
            body["usageByModel"] = {
                m: {"promptTokens": p, "completionTokens": c} for m, p, c in self.models
            }
        if self.late:
            body["late"] = True
            body["offset"] = self.offset
        return orjson.dumps(body)

    @classmethod
    def decode(cls, data: bytes) -> Outcome:
        body = _load(data, ("dispatch", "session", "hive", "stage", "outputs"))
        err = body.get("error")
        error = (str(err.get("reason")), str(err.get("message"))) if isinstance(err, dict) else None
        outputs = body["outputs"]
        if not isinstance(outputs, list):
            raise EnvelopeError("outputs must be a list")
        return cls(
            str(body["dispatch"]), str(body["session"]), str(body["hive"]), str(body["stage"]),
            str(body.get("drone") or ""), outputs, float(body.get("latencyMs") or 0.0), error,
            int(body.get("attempt") or 0), _usage(body.get("usage")),
            bool(body.get("late")), int(body.get("offset") or 0),
            _usage_by_model(body.get("usageByModel")),
        )  # fmt: skip


def _usage(raw: Any) -> tuple[int, int]:
    if not isinstance(raw, dict):
        return (0, 0)
    return (int(raw.get("promptTokens") or 0), int(raw.get("completionTokens") or 0))


MAX_MODELS_PER_OUTCOME = 16
MAX_MODEL_NAME = 200


def _usage_by_model(raw: Any) -> tuple[tuple[str, int, int], ...]:
    """``usageByModel`` of an Outcome (newer nodes; none from older ones), what is malformed
    left out: a model name is a metric label, so names and their number are bounded."""
    if not isinstance(raw, dict):
        return ()
    out = []
    for model, usage in list(raw.items())[:MAX_MODELS_PER_OUTCOME]:
        if not isinstance(model, str) or len(model) > MAX_MODEL_NAME or not isinstance(usage, dict):
            continue
        p, c = usage.get("promptTokens"), usage.get("completionTokens")
        p = p if type(p) is int and p > 0 else 0
        c = c if type(c) is int and c > 0 else 0
        if p or c:
            out.append((model, p, c))
    return tuple(out)


def _load(data: bytes, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EnvelopeError("not a JSON object")
    missing = [k for k in required if k not in body]
    if missing:
        raise EnvelopeError(f"missing {', '.join(missing)}")
    return body
