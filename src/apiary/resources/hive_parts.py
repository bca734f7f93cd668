"""The parts a Hive is built from: stages, event filters, session, routing, webhook, swarm,
event-driven settings."""

from __future__ import annotations

from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from apiary.resources.agentspec import SecretKeySelector
from apiary.resources.base import (
    ApiModel,
    DNSLabel,
    Multiplier,
    NonNegativeNumber,
    PositiveNumber,
    Problems,
    Topic,
)
from apiary.resources.guardrails import Guardrails

WaggleType = Literal["task", "result", "request", "response", "event", "error"]

WebhookEvent = Literal[
    "guardrail_violation",
    "timeout",
    "dead_letter",
    "approval_required",
    "circuit_open",
    "crash_loop",
    "scaled",
    "session_started",
    "session_completed",
    "session_failed",
]

WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEvent)
"""What a webhook can subscribe to (``spec.webhook.events``); unset means all of them."""


class EventFilter(ApiModel):
    """Which events an event-driven stage receives: all of the given conditions must hold;
    an empty filter matches every event."""

    type: WaggleType | None = None
    metadata: dict[str, str] | None = None


class Member(ApiModel):
    """What every participant of a pattern has: the agent it runs and how many copies."""

    agent_ref: DNSLabel
    """Name of an AgentSpec in the same Cell (not checked here: it may be applied later)."""
    replicas: int = Field(default=1, ge=0)
    role: Literal["supervisor", "worker"] | None = None
    """Hierarchical only: which stage receives the input (default: the first)."""
    filter: EventFilter | None = None
    """Event-driven only: which events this stage gets."""
    approval: Literal["required", "none"] | None = None
    """``required`` holds each session before this stage until a human approves."""
    guardrails: Guardrails | None = None
    """Overrides the Hive's and AgentSpec's guardrails for this stage only."""


class Stage(Member):
    """A named step of a hive (or of a pipeline/hierarchical segment)."""

    name: DNSLabel


class SegmentMember(Member):
    """A subscriber or swarm agent inside a composed hive's segment; the name is optional and
    defaults to ``subscriber1``/``agent1``... by position."""

    name: DNSLabel | None = None


class SessionSettings(ApiModel):
    """Session lifetime: closed after ``timeoutMinutes`` idle or ``maxDurationMinutes`` in all;
    ``persistOnTerminate`` keeps transcript and memory after the session ends."""

    timeout_minutes: PositiveNumber | None = None
    max_duration_minutes: PositiveNumber | None = None
    persist_on_terminate: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SessionSettings:
        idle, total = self.timeout_minutes, self.max_duration_minutes
        if idle is not None and total is not None and idle > total:
            problems = Problems()
            problems.add(("timeoutMinutes",), f"must not exceed maxDurationMinutes ({total})")
            problems.raise_if_any()
        return self


class RetryPolicy(ApiModel):
    """Retries of a failed or timed-out message: delays grow from ``initialDelaySeconds`` by
    ``backoffMultiplier`` up to ``maxDelaySeconds``; after ``maxRetries`` it is dead-lettered."""

    max_retries: int = Field(default=3, ge=0, le=1000)
    initial_delay_seconds: NonNegativeNumber = 1
    max_delay_seconds: PositiveNumber = 60
    backoff_multiplier: Multiplier = 2

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.initial_delay_seconds > self.max_delay_seconds:
            problems = Problems()
            problems.add(
                ("initialDelaySeconds",),
                f"must not exceed maxDelaySeconds ({self.max_delay_seconds})",
            )
            problems.raise_if_any()
        return self


class Routing(ApiModel):
    retry_policy: RetryPolicy | None = None
    dead_letter_topic: Topic | None = None
    """Where exhausted messages go; defaults to ``dlq/<hive name>``."""
    queue_limit: int | None = Field(default=None, ge=1)
    """Undelivered dispatches a router replica lets this hive have; more inputs get 429."""


class Webhook(ApiModel):
    """POSTs a JSON notice to ``url`` for each of ``events`` (all when unset)."""

    url: str
    events: list[WebhookEvent] | None = Field(default=None, min_length=1)
    secret_ref: SecretKeySelector | None = None
    """Optional HMAC key: notices carry an ``X-Apiary-Signature`` computed with it."""
    timeout_seconds: PositiveNumber | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ValueError(f"{url!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} must be an http:// or https:// URL with a host")
        return url


class SwarmSettings(ApiModel):
    """How swarm results combine: ``all`` (a list), ``first``, or ``majority`` (vote on equal
    payloads); ``rounds`` > 1 feeds each agent the others' previous answers."""

    aggregation: Literal["all", "first", "majority"] = "all"
    rounds: int = Field(default=1, ge=1, le=100)


DEFAULT_POOL_IDLE_SECONDS = 300.0
"""How long a ``poolMode: hybrid`` stage keeps its warm pool after its last traffic."""


class PoolSettings(ApiModel):
    """The warm pool of ``poolMode: hybrid``: kept while the stage has had traffic in the last
    ``idleSeconds`` (default 300; the Hive's creation counts as traffic), released after."""

    idle_seconds: float = Field(default=DEFAULT_POOL_IDLE_SECONDS, ge=0.1, le=7 * 86400)


DEFAULT_MAX_HOPS = 8
"""How many times an event-driven hive re-routes outputs as events when nothing sets a bound."""


class EventDrivenSettings(ApiModel):
    """Event-driven choreography: an event that has already travelled ``maxHops`` hops is
    recorded but routed no further, so two subscribers answering each other cannot loop forever.
    Unset, the Hive's ``guardrails.maxTurns`` applies, then 8."""

    max_hops: int | None = Field(default=None, ge=1, le=1000)
