"""What a hive asks of the router beyond its pattern: retries, approvals, dead letters, budgets.

* ``routing.retryPolicy`` — a failed attempt (timeout, schema violation, agent error, unusable
  output) is retried after ``initialDelaySeconds * backoffMultiplier^n`` (capped at
  ``maxDelaySeconds``), ``maxRetries`` times; then the dispatch is dead-lettered.
* ``approval: required`` on a stage — dispatches to it are held until approved.
* ``routing.deadLetterTopic`` — where dead letters are announced (default ``dlq/<hive>``).
* ``tokenBudgetPerSession`` — the tightest of the hive's, the Cell default's and the stages'
  AgentSpecs' budgets: a session past it fails with ``TokenBudgetExceeded`` (not retried).
* ``routing.queueLimit`` — at most this many of the hive's dispatches on the bus without an
  outcome (counted per router replica, :class:`HiveQueue`); a new input beyond it gets 429.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apiary.controllers.templates import hive_stages

Obj = dict[str, Any]

NOT_RETRIED = frozenset(
    {"TokenBudgetExceeded", "MaxTurnsExceeded", "Rejected", "DeadLetterPurged", "RateLimited"}
)
"""Failures a retry cannot fix: hard stops and human decisions."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt 0 was the first try)."""
        return float(min(self.initial_delay * self.multiplier**attempt, self.max_delay))

    @classmethod
    def from_spec(cls, raw: Any) -> RetryPolicy:
        if not isinstance(raw, dict):
            return cls()
        return cls(
            max_retries=int(raw.get("maxRetries", 3)),
            initial_delay=float(raw.get("initialDelaySeconds", 1)),
            max_delay=float(raw.get("maxDelaySeconds", 60)),
            multiplier=float(raw.get("backoffMultiplier", 2)),
        )


@dataclass(frozen=True)
class HivePolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    approval_stages: frozenset[str] = frozenset()
    dead_letter_topic: str = ""
    session_token_budget: int | None = None
    queue_limit: int | None = None

    @classmethod
    def build(cls, hive: Obj, agentspecs: dict[str, Obj], cell: Obj | None) -> HivePolicy:
        spec = hive.get("spec") or {}
        routing = spec.get("routing") or {}
        stages, _ = hive_stages(hive)
        approval = frozenset(s.name for s in stages if s.config.get("approval") == "required")
        budgets = [(spec.get("guardrails") or {}).get("tokenBudgetPerSession")]
        defaults = ((cell or {}).get("spec") or {}).get("defaults") or {}
        budgets.append((defaults.get("guardrails") or defaults).get("tokenBudgetPerSession"))
        for s in stages:
            budgets.append((s.config.get("guardrails") or {}).get("tokenBudgetPerSession"))
            agent = agentspecs.get(s.agent_ref) or {}
            budgets.append(((agent.get("spec") or {}).get("guardrails") or {}).get(
                "tokenBudgetPerSession"))  # fmt: skip
        known = [int(b) for b in budgets if isinstance(b, int | float) and b > 0]
        return cls(
            retry=RetryPolicy.from_spec(routing.get("retryPolicy")),
            approval_stages=approval,
            dead_letter_topic=str(
                routing.get("deadLetterTopic") or f"dlq/{hive['metadata']['name']}"
            ),
            session_token_budget=min(known) if known else None,
            queue_limit=_positive_int(routing.get("queueLimit")),
        )

    def agent_refs(self, hive: Obj) -> set[str]:
        return {s.agent_ref for s in hive_stages(hive)[0]}


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass
class HiveQueue:
    """This router replica's count of a hive's undelivered dispatches (``routing.queueLimit``):
    +1 when one is published, -1 when its outcome is handled.

    Kept in memory, per replica, so the count costs a dict operation per message rather than a
    journal query. With several replicas an outcome may be handled by another one, so the
    count can only be too high, never too low; before refusing an input the router
    :class:`~apiary.router.service.Router` prunes it against the journal (``pruned_at``)."""

    limit: int
    open: dict[tuple[str, str], int] = field(default_factory=dict)
    """(session key, dispatch id) → attempt last published."""
    pruned_at: float = float("-inf")

    def published(self, session: str, dispatch: str, attempt: int) -> None:
        key = (session, dispatch)
        if self.open.get(key, -1) < attempt:
            self.open[key] = attempt

    def handled(self, session: str, dispatch: str, attempt: int) -> None:
        """An outcome of ``attempt`` (a late one of an older attempt leaves the newer counted)."""
        key = (session, dispatch)
        if self.open.get(key, attempt) <= attempt:
            self.open.pop(key, None)

    @property
    def full(self) -> bool:
        return len(self.open) >= self.limit


def topic_subject(cell: str, topic: str) -> str:
    """A topic (``dlq/event-driven-hive``) as a bus subject in the cell's namespace."""
    tokens = [t for t in topic.replace("/", ".").split(".") if t]
    return ".".join(["apiary", cell, "topic", *tokens])


@dataclass
class StageBacklog:
    """Dispatches this router published and has not yet seen an outcome of, per
    (cell, hive, stage): messages queued for a stage's drones plus those they are working on.

    The autoscaler reads it (docs/autoscaling.md). Counting costs two dict operations per
    message. With several router replicas an outcome may be handled by another one, so an entry
    can outlive its dispatch here; entries not refreshed (a retry or a sweep republishes) within
    ``ttl`` seconds are dropped when counted, so a stale count heals instead of pinning a stage
    at a high replica count."""

    ttl: float = 600.0
    clock: Callable[[], float] = time.monotonic
    open: dict[tuple[str, str, str], dict[tuple[str, str], tuple[int, float]]] = field(
        default_factory=dict
    )
    """(cell, hive, stage) → (session key, dispatch id) → (attempt, published at)."""

    def published(self, cell: str, hive: str, stage: str, session: str, dispatch: str,
                  attempt: int) -> None:  # fmt: skip
        group = self.open.get((cell, hive, stage))
        if group is None:
            group = self.open[(cell, hive, stage)] = {}
        key = (session, dispatch)
        held = group.get(key)
        if held is None or held[0] <= attempt:
            group[key] = (attempt, self.clock())

    def handled(self, cell: str, hive: str, stage: str, session: str, dispatch: str,
                attempt: int) -> None:  # fmt: skip
        """An outcome of ``attempt`` (a late one of an older attempt leaves the newer counted)."""
        group = self.open.get((cell, hive, stage))
        if group is None:
            return
        held = group.get((session, dispatch))
        if held is not None and held[0] <= attempt:
            del group[(session, dispatch)]
            if not group:
                del self.open[(cell, hive, stage)]

    def count(self, cell: str, hive: str, stage: str) -> int:
        group = self.open.get((cell, hive, stage))
        if not group:
            return 0
        self._expire((cell, hive, stage), group)
        return len(group)

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        """Every stage's count (stages with none are absent)."""
        for where, group in list(self.open.items()):
            self._expire(where, group)
        return {where: len(group) for where, group in self.open.items()}

    def _expire(self, where: tuple[str, str, str], group: dict[Any, tuple[int, float]]) -> None:
        oldest = self.clock() - self.ttl
        for key in [k for k, (_, at) in group.items() if at < oldest]:
            del group[key]
        if not group:
            self.open.pop(where, None)
