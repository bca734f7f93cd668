"""LLM budgets of a Cell and a Hive: hard stops on what their LLM calls may cost in all.

``spec.budget`` of a Cell or a Hive bounds every LLM call of its drones, through the node's
gateway, in tokens and/or estimated US dollars (the price table: ``APIARY_LLM_PRICES`` with the
Cell's ``spec.prices`` over it); ``perSession`` bounds each session of it. The gateway reserves a
call's maximum cost against every scope before the call — atomically, through apiaryd — and
settles what the provider reported after it (docs/gateway.md, "Budgets").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apiary.resources.base import ApiModel


class Limit(ApiModel):
    """What a scope's LLM calls may use in all; unset: no bound."""

    tokens: int | None = Field(default=None, ge=1, le=10**15)
    """Prompt + completion tokens, as the providers report them."""
    usd: float | None = Field(default=None, gt=0, le=1e9)
    """Estimated US dollars (tokens times the price table's price of the model that answered)."""


class Budget(Limit):
    """``tokens`` / ``usd`` for the whole scope (the Cell, the Hive) and ``perSession``."""

    per_session: Limit | None = None
    """What each session may use (with ``tokenBudgetPerSession`` guardrails: the tightest)."""
    on_exhausted: Literal["fail", "pause"] | None = None
    """``fail`` (default): a call that does not fit is refused and its message fails with
    ``TokenBudgetExceeded``. ``pause``: the call is held in the gateway and the session goes
    ``WaitingForBudget`` until ``apiaryctl budget raise`` makes room; then it goes on, nothing
    lost or sent twice. The Hive's setting, else the Cell's."""


class GatewaySettings(ApiModel):
    """Where the LLM calls of a Hive's (or a Cell's) drones go (docs/gateway.md, "Record and
    replay"). Every answered call is recorded in its session's journal either way."""

    mode: Literal["live", "replay"] = "live"
    """``live``: to the provider. ``replay``: never to a provider — each call is answered from
    ``replayFrom``'s recorded calls by its normalised request, costing no tokens; a call with no
    recorded match is refused naming the field that differs."""
    replay_from: str | None = Field(default=None, min_length=1, max_length=253)
    """The session whose recorded calls answer (with ``mode: replay``)."""


class ModelPrice(ApiModel):
    """US dollars per 1M tokens."""

    input: float = Field(default=0, ge=0)
    output: float = Field(default=0, ge=0)


class LlmUsage(ApiModel):
    """What a Cell's or a Hive's LLM calls used in all (``status.usage``), from apiaryd's budget
    ledger: the tokens the providers reported and their estimated cost. Written by the Queen
    (:mod:`apiary.controllers.llmusage`) a few seconds behind the calls, never per call."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0, ge=0)
    """Estimated US dollars (the price table, as the USD budgets count them)."""


__all__ = ["Budget", "GatewaySettings", "Limit", "LlmUsage", "ModelPrice"]
