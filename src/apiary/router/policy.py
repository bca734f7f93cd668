"""What a hive asks of the router beyond its pattern: retries, approvals, dead letters, budgets.

* ``routing.retryPolicy`` — a failed attempt (timeout, schema violation, agent error, unusable
  output) is retried after ``initialDelaySeconds * backoffMultiplier^n`` (capped at
  ``maxDelaySeconds``), ``maxRetries`` times; then the dispatch is dead-lettered.
* ``approval: required`` on a stage — dispatches to it are held until approved.
* ``routing.deadLetterTopic`` — where dead letters are announced (default ``dlq/<hive>``).
* ``tokenBudgetPerSession`` — the tightest of the hive's, the Cell default's and the stages'
  AgentSpecs' budgets: a session past it fails with ``TokenBudgetExceeded`` (not retried).
"""

from __future__ import annotations

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
        )

    def agent_refs(self, hive: Obj) -> set[str]:
        return {s.agent_ref for s in hive_stages(hive)[0]}


def topic_subject(cell: str, topic: str) -> str:
    """A topic (``dlq/event-driven-hive``) as a bus subject in the cell's namespace."""
    tokens = [t for t in topic.replace("/", ".").split(".") if t]
    return ".".join(["apiary", cell, "topic", *tokens])
