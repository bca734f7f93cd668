"""The drone side of the guardrails: what a drone's worker checks around each message.

The router enforces what needs the whole session (retries, dead letters, ``maxTurns``,
``tokenBudgetPerSession``); the keeper enforces ``responseTimeoutSeconds``. This chain adds the
limits that belong to one drone (docs/guardrails.md):

* before a message is taken (:meth:`GuardrailChain.admit`) — the circuit breaker,
  ``tokenBudgetPerMinute`` and ``rateLimitPerMinute``. A drone that may not take a message now
  hands it back to its queue with the exact wait (``nak(delay)``): the work waits in the queue or
  goes to another replica, and is never lost;
* after the agent answered (:meth:`GuardrailChain.check`) — ``tokenBudgetPerRequest`` (a hard
  stop, not retried) and ``outputSchema`` (a failed attempt: retried, then dead-lettered);
* with the attempt's result (:meth:`GuardrailChain.settle`) — the circuit breaker's count.

A drone without drone-side guardrails gets no chain at all (:meth:`GuardrailChain.build` returns
None), so the worker's hot path pays one ``is None`` test for the feature.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from jsonschema.validators import (  # type: ignore[import-untyped]
    Draft202012Validator,
    validator_for,
)
from pydantic import ValidationError

from apiary.node.circuit import CLOSED, OPEN, CircuitBreaker, State
from apiary.node.ratelimit import Clock, TokenBucket, TokenWindow
from apiary.resources.guardrails import Guardrails
from apiary.waggle import Message

DRONE_FIELDS = (
    "rateLimitPerMinute", "tokenBudgetPerRequest", "tokenBudgetPerMinute", "outputSchema",
    "circuitBreaker",
)  # fmt: skip
"""The guardrail fields this chain enforces; a drone with none of them set gets no chain."""

SCHEMA_VIOLATION = "OutputSchemaViolation"
BUDGET_EXCEEDED = "TokenBudgetExceeded"
NOT_A_DRONE_FAILURE = frozenset({BUDGET_EXCEEDED})
"""Errors that say something about the request, not the drone's health: the breaker ignores
them (a prompt that needs too many tokens does not make a replica sick)."""

MAX_DETAIL = 300
"""Characters of a schema error message kept (jsonschema quotes the offending value)."""

ANSWER_TYPES = frozenset({"result", "response"})
"""Output types ``outputSchema`` judges: an agent's answer, not what it sends to other agents."""


class GuardrailError(ValueError):
    """The drone's ``spec.guardrails`` cannot be enforced; the message names the field."""


class GuardrailStats:
    """Counters for metrics and ``apiaryctl top``: how often each guardrail acted."""

    __slots__ = (
        "budget_exceeded",
        "budget_waits",
        "circuit_opens",
        "circuit_waits",
        "rate_limited",
        "schema_violations",
    )

    def __init__(self) -> None:
        self.rate_limited = 0
        self.budget_waits = 0
        self.circuit_waits = 0
        self.schema_violations = 0
        self.budget_exceeded = 0
        self.circuit_opens = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "rateLimited": self.rate_limited,
            "tokenBudgetWaits": self.budget_waits,
            "circuitWaits": self.circuit_waits,
            "outputSchemaViolations": self.schema_violations,
            "tokenBudgetExceeded": self.budget_exceeded,
            "circuitOpens": self.circuit_opens,
        }


def parse_guardrails(raw: Mapping[str, Any]) -> Guardrails:
    """The wire form (as merged into ``Drone.spec.guardrails``) as a checked model."""
    try:
        return Guardrails.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GuardrailError(f"spec.guardrails.{where}: {first['msg']}") from None


class GuardrailChain:
    """One drone's guardrails; built once per drone, consulted once per message."""

    __slots__ = (
        "breaker",
        "bucket",
        "on_circuit",
        "request_budget",
        "stats",
        "validator",
        "window",
    )

    def __init__(
        self,
        guardrails: Guardrails,
        *,
        clock: Clock = time.monotonic,
        on_circuit: Callable[[State], None] | None = None,
    ) -> None:
        g = guardrails
        self.stats = GuardrailStats()
        self.on_circuit = on_circuit
        self.bucket = (
            TokenBucket(g.rate_limit_per_minute, clock=clock) if g.rate_limit_per_minute else None
        )
        self.window = (
            TokenWindow(g.token_budget_per_minute, clock=clock)
            if g.token_budget_per_minute
            else None
        )
        self.request_budget = g.token_budget_per_request
        self.validator: Any = None
        if g.output_schema is not None:  # compiled once per drone, not per message
            cls = validator_for(g.output_schema, default=Draft202012Validator)
            self.validator = cls(g.output_schema)
        cb = g.circuit_breaker
        self.breaker = (
            CircuitBreaker(
                threshold=cb.failure_threshold,
                cooldown=float(cb.reset_timeout_seconds),
                trials=cb.half_open_requests,
                clock=clock,
                on_change=self._circuit_changed,
            )
            if cb is not None and cb.enabled
            else None
        )

    @classmethod
    def build(
        cls,
        raw: Mapping[str, Any] | None,
        *,
        clock: Clock = time.monotonic,
        on_circuit: Callable[[State], None] | None = None,
    ) -> GuardrailChain | None:
        """The chain for a drone's merged guardrails, or None when it has nothing to enforce.

        Raises :class:`GuardrailError` naming the field when the guardrails are malformed."""
        if not raw:
            return None
        if not isinstance(raw, Mapping):
            raise GuardrailError("spec.guardrails: must be an object")
        if all(raw.get(k) is None for k in DRONE_FIELDS):
            return None
        chain = cls(parse_guardrails(raw), clock=clock, on_circuit=on_circuit)
        parts = (chain.bucket, chain.window, chain.breaker, chain.validator, chain.request_budget)
        if all(part is None for part in parts):
            return None  # e.g. only a disabled circuit breaker
        return chain

    # --------------------------------------------------------------------------- before

    def admit(self) -> float:
        """May the drone take a message now? 0.0 yes (a rate token and, while half open, a
        trial slot are taken); else the seconds to wait, and nothing is taken."""
        if self.window is not None:
            wait = self.window.wait()
            if wait:
                self.stats.budget_waits += 1
                return wait
        breaker = self.breaker
        if breaker is not None:
            wait = breaker.admit()
            if wait:
                self.stats.circuit_waits += 1
                return wait
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait:
                if breaker is not None:
                    breaker.release()
                self.stats.rate_limited += 1
                return wait
        return 0.0

    def cancel(self) -> None:
        """An admitted message was not delivered after all (it already had an answer)."""
        if self.bucket is not None:
            self.bucket.give_back()
        if self.breaker is not None:
            self.breaker.release()

    @property
    def circuit(self) -> State | None:
        return self.breaker.state if self.breaker is not None else None

    # ---------------------------------------------------------------------------- after

    def check(
        self, outputs: Sequence[Message], gateway: tuple[int, int] = (0, 0)
    ) -> tuple[str, str] | None:
        """The outcome error the agent's answer earns, if any: over the per-request token
        budget (a hard stop) or an output payload that breaks ``outputSchema``.

        ``gateway`` is the (prompt, completion) tokens the LLM gateway counted for this message;
        it adds to the tokens the outputs declare in ``usage``."""
        budget, window = self.request_budget, self.window
        if budget is not None or window is not None:
            tokens = gateway[0] + gateway[1]
            for out in outputs:
                if out.usage is not None:
                    tokens += out.usage.total
            if window is not None:
                window.add(tokens)
            if budget is not None and tokens > budget:
                self.stats.budget_exceeded += 1
                why = f"the answer used {tokens} tokens, over tokenBudgetPerRequest {budget}"
                return (BUDGET_EXCEEDED, why)
        if self.validator is not None:
            problem = self._schema_problem(outputs)
            if problem is not None:
                self.stats.schema_violations += 1
                return (SCHEMA_VIOLATION, problem)
        return None

    def _schema_problem(self, outputs: Sequence[Message]) -> str | None:
        """``"<path>: <message>"`` for the first answer whose payload breaks the schema.

        An answer is a terminal output (not ``more``) of type ``result``/``response`` without a
        destination: a supervisor's ``task`` to a worker, an ``event`` and an ``error`` are not
        answers (an error is a failure already), so the schema does not judge them."""
        checked = [
            (i, o) for i, o in enumerate(outputs)
            if not o.more and o.type in ANSWER_TYPES and not o.dest_agent_id
        ]  # fmt: skip
        for index, out in checked:
            if self.validator.is_valid(out.payload):
                continue
            error = best_match(self.validator.iter_errors(out.payload))
            path = "payload" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            if len(outputs) > 1:
                path = f"outputs[{index}].{path}"
            text = error.message
            if len(text) > MAX_DETAIL:
                text = text[:MAX_DETAIL] + "…"
            return f"{path}: {text}"
        return None

    # ----------------------------------------------------------------------------- result

    def settle(self, error: tuple[str, str] | None, outputs: Sequence[Message] = ()) -> None:
        """The attempt's result, for the circuit breaker: a failure is an outcome error (a
        timeout, a schema violation...) or an answer of type ``error`` (the router's
        ``AgentError``)."""
        breaker = self.breaker
        if breaker is None:
            return
        if error is not None:
            failed = error[0] not in NOT_A_DRONE_FAILURE
        else:
            failed = _answered_error(outputs)
        if failed:
            breaker.failure()
        else:
            breaker.success()

    def crashed(self) -> None:
        """The agent died (or was not ready) with the message: a failed attempt."""
        if self.breaker is not None:
            self.breaker.failure()

    def _circuit_changed(self, state: State) -> None:
        if state == OPEN:
            self.stats.circuit_opens += 1
        if self.on_circuit is not None:
            self.on_circuit(state)


def _answered_error(outputs: Sequence[Message]) -> bool:
    """Whether the turn's answer (its first output not marked ``more``) is an ``error``."""
    for out in outputs:
        if not out.more:
            return out.type == "error"
    return False


def circuit_status(status: Mapping[str, Any], chain: GuardrailChain) -> dict[str, Any]:
    """A drone's node-reported status as shown while its circuit is not closed: not ready
    (like a Kubernetes pod failing its readiness probe: no traffic), with the reason."""
    breaker = chain.breaker
    if breaker is None or breaker.state == CLOSED or not status.get("ready"):
        return dict(status)
    if breaker.state == OPEN:
        reason = "CircuitOpen"
        message = (f"circuit open after {breaker.failures} consecutive failed attempts; "
                   f"a trial message in {breaker.remaining():.1f}s")  # fmt: skip
    else:
        reason = "CircuitHalfOpen"
        message = f"circuit half open: {breaker.trials} trial message(s) decide"
    return {**status, "ready": False, "reason": reason, "message": message}


__all__ = [
    "DRONE_FIELDS",
    "GuardrailChain",
    "GuardrailError",
    "GuardrailStats",
    "circuit_status",
    "parse_guardrails",
]
