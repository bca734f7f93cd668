"""Hive: a workflow of agents — one pattern over ``stages``, or ``patternSegments`` composed.

Only checks that need nothing but the object itself live here (exactly one of stages and
segments, unique DNS-1123 stage names, a pattern that fits, ordered bounds). Whether the named
AgentSpecs exist is the controllers' business: a Hive may be applied before its agents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, ValidationError, model_validator

from apiary.resources.base import ApiModel, DNSLabel, Loc, Problems, Topic
from apiary.resources.budget import Budget, GatewaySettings, LlmUsage
from apiary.resources.guardrails import Guardrails
from apiary.resources.hive_names import DEFAULT_PREFIX, duplicate_names
from apiary.resources.hive_parts import (
    EventDrivenSettings,
    Member,
    PoolSettings,
    Routing,
    SegmentMember,
    SessionSettings,
    Stage,
    SwarmSettings,
    Webhook,
)
from apiary.resources.interop import A2ASettings
from apiary.resources.messages import problem_locs
from apiary.resources.meta import ApiObject, Status

Pattern = Literal["pipeline", "hierarchical", "swarm", "event-driven"]
PATTERNS: tuple[str, ...] = ("pipeline", "hierarchical", "swarm", "event-driven", "composed")

MEMBER_KEY: dict[str, str] = {
    "pipeline": "stages",
    "hierarchical": "stages",
    "swarm": "agents",
    "event-driven": "subscribers",
}
"""Which list a segment's ``config`` holds for each pattern (seed 09's shapes)."""


def check_members(
    members: Sequence[Member], at: Loc, pattern: str | None, problems: Problems
) -> None:
    """At most one supervisor, and only in a hierarchical hive (names: see hive_names)."""
    supervisors = 0
    for index, member in enumerate(members):
        if member.role == "supervisor":
            supervisors += 1
            if pattern != "hierarchical":
                problems.add((*at, index, "role"), "only used with pattern hierarchical")
            elif supervisors > 1:
                problems.add((*at, index, "role"), "a hierarchical hive has one supervisor")


class SegmentConfig(ApiModel):
    """Per-pattern shape: ``stages`` (pipeline, hierarchical), ``agents`` (swarm, with optional
    ``aggregation``/``rounds``) or ``subscribers`` (event-driven, with optional ``maxHops``)."""

    stages: list[Stage] | None = Field(default=None, min_length=1)
    agents: list[SegmentMember] | None = Field(default=None, min_length=1)
    subscribers: list[SegmentMember] | None = Field(default=None, min_length=1)
    aggregation: Literal["all", "first", "majority"] | None = None
    rounds: int | None = Field(default=None, ge=1, le=100)
    max_hops: int | None = Field(default=None, ge=1, le=1000)

    def members(self) -> list[Stage] | list[SegmentMember]:
        return self.stages or self.agents or self.subscribers or []


class PatternSegment(ApiModel):
    """One pattern inside a composed hive; ``outputTopic`` feeds the next ``inputTopic``."""

    name: DNSLabel
    pattern: Pattern
    config: SegmentConfig
    input_topic: Topic | None = None
    output_topic: Topic | None = None

    @model_validator(mode="after")
    def _config_fits_pattern(self) -> PatternSegment:
        problems = Problems()
        want = MEMBER_KEY[self.pattern]
        for key in ("stages", "agents", "subscribers"):
            present = getattr(self.config, key) is not None
            if key == want and not present:
                problems.add(("config", key), f"field required for pattern {self.pattern}")
            elif key != want and present:
                problems.add(
                    ("config", key), f"not used by pattern {self.pattern} (it takes {want})"
                )
        if self.pattern != "swarm":
            for key in ("aggregation", "rounds"):
                if getattr(self.config, key) is not None:
                    problems.add(("config", key), "only used with pattern swarm")
        if self.pattern != "event-driven" and self.config.max_hops is not None:
            problems.add(("config", "maxHops"), "only used with pattern event-driven")
        unnamed: list[SegmentMember] = self.config.agents or self.config.subscribers or []
        for index, member in enumerate(unnamed):
            if member.name is None:
                member.name = f"{DEFAULT_PREFIX[want]}{index + 1}"
        check_members(self.config.members(), ("config", want), self.pattern, problems)
        problems.raise_if_any()
        return self


class HiveSpec(ApiModel):
    """A workflow. ``poolMode``: ``cold`` (default) starts drones on demand; ``warm`` keeps
    ``warmPoolSize`` extra, already started drones per stage that take no traffic until a
    scale-up, a crash replacement or the autoscaler claims one (no process start), the pool
    refilling behind it; ``hybrid`` keeps that pool only while the stage has had traffic in the
    last ``pool.idleSeconds`` (default 300) and releases it after. ``pattern: composed`` is
    implied by ``patternSegments``."""

    pattern: Literal["pipeline", "hierarchical", "swarm", "event-driven", "composed"] | None = None
    stages: list[Stage] | None = Field(default=None, min_length=1)
    pattern_segments: list[PatternSegment] | None = Field(default=None, min_length=1)
    pool_mode: Literal["cold", "warm", "hybrid"] = "cold"
    warm_pool_size: int | None = Field(default=None, ge=0, le=1000)
    """Warm drones kept per stage (``poolMode`` warm or hybrid; default 1 there, 0 for cold)."""
    pool: PoolSettings | None = None
    """``idleSeconds``: how long a ``hybrid`` stage keeps its pool after its last traffic."""
    session: SessionSettings | None = None
    routing: Routing | None = None
    guardrails: Guardrails | None = None
    a2a: A2ASettings | None = Field(default=None, alias="a2a")
    """Whether the hive is an A2A agent and an MCP tool, and its card (docs/interop.md)."""
    budget: Budget | None = None
    """What the hive's LLM calls may cost in all, and per session (docs/gateway.md, "Budgets")."""
    gateway: GatewaySettings | None = None
    """``mode: live|replay`` of the hive's LLM calls (docs/gateway.md, "Record and replay")."""
    webhook: Webhook | None = None
    swarm: SwarmSettings | None = None
    event_driven: EventDrivenSettings | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ModelWrapValidatorHandler[HiveSpec]) -> HiveSpec:
        """Duplicate names are reported even when other fields fail (see hive_names)."""
        problems = Problems()
        problems.items.extend(duplicate_names(data))
        try:
            spec = handler(data)
        except ValidationError as exc:
            if not problems.items:
                raise
            problems.items[:0] = problem_locs(exc)
            problems.raise_if_any()
            raise  # pragma: no cover - raise_if_any raised
        spec._shape(problems)
        problems.raise_if_any()
        return spec

    def _shape(self, problems: Problems) -> None:
        if self.stages is None and self.pattern_segments is None:
            problems.add(("stages",), "field required (or patternSegments)")
        elif self.stages is not None and self.pattern_segments is not None:
            problems.add(("patternSegments",), "may not be set together with stages")
        elif self.stages is not None:
            if self.pattern is None:
                problems.add(("pattern",), "field required with stages")
            elif self.pattern == "composed":
                problems.add(("pattern",), "composed takes patternSegments, not stages")
            check_members(self.stages, ("stages",), self.pattern, problems)
        elif self.pattern_segments is not None:
            if self.pattern is None:
                self.pattern = "composed"
            elif self.pattern != "composed":
                problems.add(("pattern",), "must be composed (or unset) with patternSegments")
            self._check_segments(self.pattern_segments, problems)
        if self.swarm is not None and self.pattern != "swarm":
            problems.add(("swarm",), "only used with pattern swarm")
        if self.event_driven is not None and self.pattern != "event-driven":
            problems.add(("eventDriven",), "only used with pattern event-driven")
        if self.warm_pool_size is None:
            self.warm_pool_size = 0 if self.pool_mode == "cold" else 1
        elif self.pool_mode == "cold" and self.warm_pool_size > 0:
            problems.add(("warmPoolSize",), "must be 0 with poolMode cold")
        if self.pool is not None and self.pool_mode != "hybrid":
            problems.add(("pool",), "only used with poolMode hybrid")

    @staticmethod
    def _check_segments(segments: list[PatternSegment], problems: Problems) -> None:
        for index, segment in enumerate(segments[1:], start=1):
            previous = segments[index - 1].output_topic
            if previous is not None and segment.input_topic not in (None, previous):
                problems.add(
                    ("patternSegments", index, "inputTopic"),
                    f"must be the previous segment's outputTopic ({previous!r})",
                )

    def stage_names(self) -> list[str]:
        """Every stage name, segments included (``segment/stage`` inside a composed hive)."""
        if self.stages is not None:
            return [stage.name for stage in self.stages]
        names: list[str] = []
        for segment in self.pattern_segments or []:
            names.extend(f"{segment.name}/{m.name}" for m in segment.config.members())
        return names


class HiveStatus(Status):
    replicas: int | None = Field(default=None, ge=0)
    ready_replicas: int | None = Field(default=None, ge=0)
    usage: LlmUsage | None = None
    """What the Hive's LLM calls used in all (tokens, estimated USD), from the budget ledger."""


class Hive(ApiObject):
    status_model = HiveStatus

    kind: Literal["Hive"]
    spec: HiveSpec
