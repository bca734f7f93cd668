"""Guardrails: outputSchema must be a JSON Schema; layers merge most specific first."""

from __future__ import annotations

from apiary.resources import Guardrails, admit, merge_guardrails

from .helpers import agentspec, errors_of


def test_output_schema_is_checked_against_its_meta_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "number", "minimum": "zero"}},
        "required": "n",
    }
    errors = errors_of(agentspec(guardrails={"outputSchema": schema}))
    assert "spec.guardrails.outputSchema.properties.n.minimum" in errors
    assert "spec.guardrails.outputSchema.required" in errors


def test_output_schema_draft_is_honoured() -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "integer",
        "exclusiveMinimum": True,
        "minimum": 0,
    }
    admit(agentspec(guardrails={"outputSchema": draft4}))
    unknown = {"$schema": "https://example.com/my-draft", "type": "integer"}
    errors = errors_of(agentspec(guardrails={"outputSchema": unknown}))
    assert "unknown JSON Schema draft" in errors["spec.guardrails.outputSchema.$schema"]


def test_circuit_breaker_defaults() -> None:
    out = admit(agentspec(guardrails={"circuitBreaker": {"failureThreshold": 3}})).object
    assert out["spec"]["guardrails"]["circuitBreaker"] == {
        "enabled": True,
        "failureThreshold": 3,
        "resetTimeoutSeconds": 30,
        "halfOpenRequests": 1,
    }


def test_merge_most_specific_first() -> None:
    stage = Guardrails.model_validate({"maxTurns": 4})
    hive = Guardrails.model_validate({"responseTimeoutSeconds": 10})
    agent = Guardrails.model_validate({"responseTimeoutSeconds": 60, "rateLimitPerMinute": 30})
    cell = Guardrails.model_validate({"rateLimitPerMinute": 5, "tokenBudgetPerSession": 1000})
    merged = merge_guardrails(stage, hive, None, agent, cell)
    assert merged.max_turns == 4
    assert merged.response_timeout_seconds == 10
    assert merged.rate_limit_per_minute == 30
    assert merged.token_budget_per_session == 1000
    assert merged.token_budget_per_request is None
