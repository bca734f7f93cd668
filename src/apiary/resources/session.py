"""Session: one conversation or job with a Hive. The transcript and Comb memory live in their
own stores; the object carries what the API lists: state, output, token usage and timings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from apiary.resources.base import ApiModel, DNSLabel, PositiveNumber, Timestamp
from apiary.resources.meta import ApiObject, Status


class SessionReplay(ApiModel):
    session: DNSLabel
    mode: Literal["recorded", "live", "mixed"] = "recorded"


class SessionSpec(ApiModel):
    """Which hive, the first input (any JSON, optional) and optional tighter time limits than
    the hive's ``spec.session``."""

    hive_ref: DNSLabel
    input: Any = None
    timeout_minutes: PositiveNumber | None = None
    max_duration_minutes: PositiveNumber | None = None
    replay: SessionReplay | None = None
    """This session re-runs another's inputs (``apiaryctl session replay``): its LLM calls are
    answered from ``session``'s recorded calls — ``recorded``: only from them, ``mixed``: the
    provider for those with no match, ``live``: always the provider (docs/gateway.md)."""


class TokenUsage(ApiModel):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    """Estimated USD of the tokens whose model is known (the gateway's count), priced by the
    Cell's table when each hop was journaled; absent when nothing was priced."""


class SessionStatus(Status):
    """``phase`` is chosen by the session controller (Pending, Running, WaitingForApproval,
    Succeeded, Failed, TimedOut, Closed); ``pendingApproval`` names the held stage."""

    output: Any = None
    usage: TokenUsage | None = None
    turns: int | None = Field(default=None, ge=0)
    message_count: int | None = Field(default=None, ge=0)
    pending_approval: str | None = None
    reason: str | None = None
    message: str | None = None
    start_time: Timestamp | None = None
    completion_time: Timestamp | None = None
    last_activity_time: Timestamp | None = None


class Session(ApiObject):
    status_model = SessionStatus

    kind: Literal["Session"]
    spec: SessionSpec
