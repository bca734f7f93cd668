"""Task tiers: what an AgentSpec's ``taskTier`` means for its drones' LLM calls and scheduling.

A tier is a class of model and cost. Each tier name maps to settings (:class:`TaskTier`):

* ``model`` — the model the node's LLM gateway sends the drone's chat completions to;
* ``maxTokens`` — the cap on a chat completion's ``max_tokens`` (``max_completion_tokens``);
* ``priority`` — ``low``, ``normal`` or ``high``: the order in which the scheduler places pending
  drones when nodes are short of room (higher first).

Where the settings come from, the most specific first, field by field: the Cell's
``spec.tiers``, the server's tier map (apiaryd ``Settings.tiers``), then :data:`BUILTIN_TIERS`
(priorities only: Apiary does not know which models a provider serves). The controllers resolve
the tier when they build a drone's template and write the result into the Drone's
``spec.resolvedTier`` (:func:`resolve_tier`), which is what the node and the scheduler read — the
agent, which is untrusted, cannot change it.

The functions here work on wire dicts (camelCase), as the controllers and the node hold objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from apiary.resources.base import ApiModel

TierName = Literal["simple", "standard", "complex"]
TIER_NAMES: tuple[str, ...] = ("simple", "standard", "complex")
"""The tiers an AgentSpec may name, cheapest first."""

Priority = Literal["low", "normal", "high"]
PRIORITY_RANK: dict[str, int] = {"high": 0, "normal": 1, "low": 2}
"""Scheduling order of the priorities: lower ranks are placed first."""
DEFAULT_PRIORITY = "normal"
"""The priority of a drone without a tier (and of a tier whose priority nothing sets)."""

ALIAS_PREFIX = "tier:"
"""A request's ``model`` of ``tier:<name>`` (or the bare tier name) asks for the tier's model."""

MAX_MODEL_NAME = 200

BUILTIN_TIERS: dict[str, dict[str, Any]] = {
    "simple": {"priority": "low"},
    "standard": {"priority": "normal"},
    "complex": {"priority": "high"},
}
"""What each tier means when neither the Cell nor the server says more: a priority, no model (the
AgentSpec's ``spec.llm.model`` or the agent's choice) and no token cap."""


class TaskTier(ApiModel):
    """One tier's settings; an unset field falls back to the server's tier map, then to the
    built-in one."""

    model: str | None = Field(default=None, min_length=1, max_length=MAX_MODEL_NAME)
    """The model of the tier's chat completions: the gateway sends every chat completion of a
    drone of this tier to it, whatever model the agent names (docs/gateway.md, Task tiers)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Upper bound on one chat completion's ``max_tokens``/``max_completion_tokens``: a request
    asking for more, or naming none, is capped to it."""
    priority: Priority | None = None
    """``low``, ``normal`` or ``high``: pending drones of higher tiers are placed first when the
    nodes cannot take them all (docs/controllers.md, Scheduler)."""


class TierMap(ApiModel):
    """Settings per tier name (``simple``, ``standard``, ``complex``); a tier left out keeps the
    server's (or built-in) settings."""

    simple: TaskTier | None = None
    standard: TaskTier | None = None
    complex: TaskTier | None = None


class ResolvedTier(ApiModel):
    """What a drone's ``taskTier`` resolved to when the controllers built its template."""

    name: TierName
    model: str | None = Field(default=None, min_length=1, max_length=MAX_MODEL_NAME)
    max_tokens: int | None = Field(default=None, ge=1)
    priority: Priority = "normal"


def tiers_of(spec_tiers: Any) -> dict[str, dict[str, Any]]:
    """A tier map as wire dicts (a Cell's ``spec.tiers``, a :class:`TierMap`, or None)."""
    if isinstance(spec_tiers, TierMap):
        spec_tiers = spec_tiers.model_dump(exclude_none=True)
    if not isinstance(spec_tiers, Mapping):
        return {}
    return {
        str(name): dict(value)
        for name, value in spec_tiers.items()
        if name in TIER_NAMES and isinstance(value, Mapping)
    }


def resolve_tier(
    name: str, cell_tiers: Any = None, server_tiers: Any = None
) -> dict[str, Any] | None:
    """``{name, priority, model?, maxTokens?}`` of tier ``name``, field by field from the Cell's
    map, else the server's, else :data:`BUILTIN_TIERS`; None for a name that is not a tier."""
    if name not in TIER_NAMES:
        return None
    resolved: dict[str, Any] = {"name": name, "priority": DEFAULT_PRIORITY}
    for layer in (BUILTIN_TIERS, tiers_of(server_tiers), tiers_of(cell_tiers)):
        for key in ("model", "maxTokens", "priority"):
            value = (layer.get(name) or {}).get(key)
            if value is not None:
                resolved[key] = value
    return resolved


def priority_rank(drone_spec: Mapping[str, Any]) -> int:
    """Scheduling rank of a drone (0 first): its ``resolvedTier.priority``; a drone made before
    tiers were resolved goes by its ``taskTier``'s built-in priority."""
    resolved = drone_spec.get("resolvedTier")
    priority = resolved.get("priority") if isinstance(resolved, Mapping) else None
    if priority is None:
        builtin = BUILTIN_TIERS.get(str(drone_spec.get("taskTier")))
        priority = builtin["priority"] if builtin else DEFAULT_PRIORITY
    return PRIORITY_RANK.get(str(priority), PRIORITY_RANK[DEFAULT_PRIORITY])


def tier_alias(model: Any) -> str | None:
    """The tier a request's ``model`` names as an alias (``tier:simple`` or ``simple``), else
    None. ``tier:`` followed by something that is not a tier is still an alias (of nothing)."""
    if not isinstance(model, str):
        return None
    if model.startswith(ALIAS_PREFIX):
        return model[len(ALIAS_PREFIX) :]
    return model if model in TIER_NAMES else None


__all__ = [
    "ALIAS_PREFIX",
    "BUILTIN_TIERS",
    "DEFAULT_PRIORITY",
    "PRIORITY_RANK",
    "TIER_NAMES",
    "Priority",
    "ResolvedTier",
    "TaskTier",
    "TierMap",
    "TierName",
    "priority_rank",
    "resolve_tier",
    "tier_alias",
    "tiers_of",
]
