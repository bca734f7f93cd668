"""Guardrails: the limits a drone works under, and how the layers that set them combine.

Guardrails are written on an AgentSpec, on a Hive (for every stage of that hive) and in a Cell's
``spec.defaults``. Every field defaults to *unset* (None) rather than to a number, so that a layer
only overrides what it names; :func:`merge_guardrails` resolves the layers field by field.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema.validators import (  # type: ignore[import-untyped]
    Draft202012Validator,
    validator_for,
)
from pydantic import Field, field_validator

from apiary.resources.base import ApiModel, Loc, PositiveNumber, Problems


class CircuitBreaker(ApiModel):
    """Per-drone circuit breaker: after ``failureThreshold`` consecutive failures the drone gets
    no messages for ``resetTimeoutSeconds``, then ``halfOpenRequests`` trial messages decide
    whether it closes again."""

    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout_seconds: PositiveNumber = 30
    half_open_requests: int = Field(default=1, ge=1)


class Guardrails(ApiModel):
    """Limits enforced by the keeper on every message. Unset fields inherit (see merge)."""

    response_timeout_seconds: PositiveNumber | None = None
    """A message not answered within this is cancelled, retried per the retry policy, then
    dead-lettered."""
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    token_budget_per_request: int | None = Field(default=None, ge=1)
    token_budget_per_session: int | None = Field(default=None, ge=1)
    token_budget_per_minute: int | None = Field(default=None, ge=1)
    output_schema: dict[str, Any] | None = None
    """JSON Schema every output payload must satisfy; checked against its meta-schema here."""
    max_turns: int | None = Field(default=None, ge=1)
    """Bound on supervisor turns (hierarchical) and event hops (event-driven)."""
    circuit_breaker: CircuitBreaker | None = None

    @field_validator("output_schema")
    @classmethod
    def _valid_json_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            problems = json_schema_problems(schema)
            if problems:
                checker = Problems()
                for loc, message in problems:
                    checker.add(loc, message)
                checker.raise_if_any()
        return schema


def json_schema_problems(schema: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Why ``schema`` is not a valid JSON Schema (draft 2020-12 unless ``$schema`` says
    otherwise), as (path inside the schema, message) pairs; empty when it is valid.

    Checking against the meta-schema takes about half a millisecond, and the same AgentSpec is
    admitted again on every apply, so answers are cached by the schema's canonical JSON.
    """
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):  # not plain JSON (a caller outside the API): no caching
        return _check_schema(schema)
    return list(_cached_check(key))


@functools.lru_cache(maxsize=512)
def _cached_check(key: str) -> tuple[tuple[Loc, str], ...]:
    return tuple(_check_schema(json.loads(key)))


@functools.cache
def _meta_checker(checker_class: Any) -> Any:
    return checker_class(checker_class.META_SCHEMA)


def _check_schema(schema: dict[str, Any]) -> list[tuple[Loc, str]]:
    declared = schema.get("$schema")
    if declared is not None:
        if not isinstance(declared, str):
            return [(("$schema",), "must be a string naming a JSON Schema draft")]
        if validator_for(schema, default=None) is None:
            return [(("$schema",), f"unknown JSON Schema draft {declared!r}")]
    checker_class = validator_for(schema, default=Draft202012Validator)
    try:
        errors = list(_meta_checker(checker_class).iter_errors(schema))
    except Exception as exc:  # a pathological schema must be an error, never a crash
        return [((), f"is not a valid JSON Schema: {exc}")]
    problems: list[tuple[Loc, str]] = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        loc: Loc = tuple(p if isinstance(p, int) else str(p) for p in error.absolute_path)
        problems.append((loc, f"invalid JSON Schema: {error.message}"))
    return problems


def merge_guardrails(*layers: Guardrails | None) -> Guardrails:
    """Combine layers, earlier ones winning field by field; None layers are skipped.

    The intended order is ``merge_guardrails(stage, hive, agentspec, cell_defaults)``: the most
    specific layer wins, and Cell defaults fill what nothing else sets.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in Guardrails.model_fields:
            value = getattr(layer, name)
            if value is not None and name not in merged:
                merged[name] = value
    return Guardrails.model_construct(**merged)
