"""The task tier of a drone's LLM calls: which model a call goes to and how many tokens it may ask.

The controllers resolved the drone's ``taskTier`` into ``spec.resolvedTier`` (``name``, ``model``,
``maxTokens``, ``priority``; :mod:`apiary.resources.tiers`) from its Cell's tier map; the agent
cannot change that, so the gateway takes it as the drone's policy:

* a chat completion of a drone whose tier has a ``model`` goes to that model — whether the agent
  named no model, the tier's alias (``tier:<name>`` or the bare name) or another model: the tier
  is what the drone's calls may cost, and an untrusted agent does not get to pick a dearer one;
* without a tier model, no model or the drone's own alias means the AgentSpec's
  ``spec.llm.model``, and a model the agent names goes through as before;
* an alias of another tier (``tier:complex`` from a ``simple`` drone), or any alias from a drone
  without a tier, is refused — 403 ``permission_error`` and 400 ``invalid_request_error``;
* the tier's ``maxTokens`` caps ``max_tokens`` and ``max_completion_tokens`` of chat completions
  (a request asking for more, or naming neither, gets ``max_tokens: maxTokens``).

Embeddings keep their model (a tier's model is a chat model): no model or the drone's alias
means ``spec.llm.model``.
"""

from __future__ import annotations

from typing import Any

from apiary.gateway.budget import GatewayRefusal
from apiary.resources.tiers import tier_alias

TIER_HEADER = "X-Apiary-Tier"
"""On a chat completion's answer: the tier whose settings the call was sent with."""

TOKEN_KEYS = ("max_tokens", "max_completion_tokens")

DEFAULT_ALIAS = "default"
"""The ``model`` an agent sends for the AgentSpec's ``spec.llm.model`` (or its tier's model): the
``openai`` SDK needs some model name; an omitted or empty one means the same."""


def resolved_tier(drone_spec: dict[str, Any]) -> dict[str, Any] | None:
    tier = drone_spec.get("resolvedTier")
    return tier if isinstance(tier, dict) and isinstance(tier.get("name"), str) else None


def apply_tier(
    body: dict[str, Any],
    drone_spec: dict[str, Any],
    default_model: str | None,
    *,
    chat: bool,
    token_keys: tuple[str, ...] = TOKEN_KEYS,
) -> str | None:
    """Set ``body``'s model (and cap its tokens) for the drone's tier; the tier's name when its
    settings applied (a chat completion of a drone with a tier), else None.

    Raises :class:`GatewayRefusal` for an alias the drone may not use, or when no model is
    found anywhere."""
    tier = resolved_tier(drone_spec)
    asked = body.get("model")
    if asked == DEFAULT_ALIAS:
        asked = None
    alias = tier_alias(asked)
    if alias is not None:
        if tier is None:
            raise GatewayRefusal(
                400, "invalid_request_error",
                f"model {asked!r} names a task tier, but this drone's AgentSpec has no "
                "spec.taskTier",
            )  # fmt: skip
        if alias != tier["name"]:
            raise GatewayRefusal(
                403, "permission_error",
                f"model {asked!r} asks for tier {alias!r}; this drone's taskTier is "
                f"{tier['name']!r} and its calls are for that tier only",
            )  # fmt: skip
    model = tier.get("model") if chat and tier is not None else None
    if isinstance(model, str) and model:
        body["model"] = model
    elif alias is not None or not asked:
        if not default_model:
            what = (
                f"model {asked!r} is the alias of tier {alias!r}, which names no model,"
                if alias is not None
                else "the request names no model"
            )
            raise GatewayRefusal(
                400, "invalid_request_error", f"{what} and the AgentSpec has no spec.llm.model"
            )
        body["model"] = default_model
    cap = tier.get("maxTokens") if chat and tier is not None else None
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        _cap_tokens(body, cap, token_keys)
    return tier["name"] if chat and tier is not None else None


def _cap_tokens(body: dict[str, Any], cap: int, keys: tuple[str, ...] = TOKEN_KEYS) -> None:
    named = False
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        named = True
        if isinstance(value, int) and not isinstance(value, bool) and value <= cap:
            continue
        body[key] = cap  # more than the cap, or not a number the provider could honour
    if not named:
        body[keys[0]] = cap


__all__ = ["DEFAULT_ALIAS", "TIER_HEADER", "TOKEN_KEYS", "apply_tier", "resolved_tier"]
