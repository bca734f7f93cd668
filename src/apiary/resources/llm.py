"""``spec.llm`` of an AgentSpec or a Cell: where a drone's LLM calls go, and how the two merge.

Why a Cell default: a team usually has one provider account, and every AgentSpec repeating its
Secret is a place to get it wrong (issue 15.1: "``AgentSpec.spec.llm`` or Cell defaults"). So a
Cell's ``spec.llm`` is the default of every AgentSpec in it, merged the way Kubernetes defaults a
field — the AgentSpec's own settings win, what it leaves out comes from the Cell — with one
rule of our own: ``provider`` is taken whole (its Secret, ``api`` and key header belong
together: an Anthropic key must not be sent to an OpenAI URL), and a ``model`` is only inherited
with the provider it belongs to — an AgentSpec naming its own provider keeps its own model (or
none). The controllers merge it into each Drone's ``spec.llm`` (what the node's gateway reads,
and what the node authorizer lets a node read Secrets for), so a change of the Cell's default
rolls the drones that use it like a change of the AgentSpec's own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from apiary.resources.base import ApiModel, DNSLabel, SecretKey

Obj = dict[str, Any]


class LlmSecretRef(ApiModel):
    """The Secret (same Cell) that holds the provider's base URL and API key, and which keys."""

    name: DNSLabel
    base_url_key: SecretKey = "baseUrl"
    """Key of the OpenAI-compatible base URL (``https://api.openai.com/v1``, the default when
    the key is missing)."""
    api_key_key: SecretKey = "apiKey"
    """Key of the API key; a missing key sends no ``Authorization`` (local providers)."""


class LlmProvider(ApiModel):
    """Where the calls go and in which API shape (docs/gateway.md, "Providers")."""

    secret_ref: LlmSecretRef
    api: Literal["openai", "anthropic", "gemini"] = "openai"
    """The provider's API: ``openai`` (any OpenAI-compatible server: OpenAI, Azure OpenAI, vLLM,
    Ollama, a LiteLLM Proxy…), ``anthropic`` (the Messages API) or ``gemini``
    (``generateContent``); the gateway translates the agent's OpenAI-shaped calls to it."""
    api_key_header: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"
    )
    """The header the key goes in: ``Authorization`` (as ``Bearer <key>``, the default of
    ``openai``), ``api-key`` (Azure OpenAI), ``x-api-key`` (the default of ``anthropic``),
    ``x-goog-api-key`` (the default of ``gemini``); any other header gets the bare key."""


class Llm(ApiModel):
    """The LLM gateway of the agent's drones (docs/gateway.md): the node forwards the agent's
    OpenAI-style calls to ``provider`` with the key from the Secret — the agent never sees the
    key — counts tokens and enforces the token budgets. On an AgentSpec, what it leaves out
    comes from its Cell's ``spec.llm`` (module docstring)."""

    provider: LlmProvider | None = None
    """Required here or in the Cell's ``spec.llm``."""
    model: str | None = Field(default=None, min_length=1)
    """Injected into requests that name no model."""


def merged_llm(own: Any, cell: Any) -> tuple[Obj | None, dict[str, str]]:
    """The ``spec.llm`` a drone of an AgentSpec uses, from the AgentSpec's (``own``) and its
    Cell's (``cell``), and where each field came from (``{"provider": "agentspec" | "cell",
    "model": …}``); (None, {}) when neither has one."""
    own = own if isinstance(own, dict) else None
    cell = cell if isinstance(cell, dict) else None
    if own is None and cell is None:
        return None, {}
    merged: Obj = dict(own or {})
    sources = {key: "agentspec" for key in ("provider", "model") if merged.get(key)}
    if not merged.get("provider") and cell and cell.get("provider"):
        merged["provider"] = cell["provider"]
        sources["provider"] = "cell"
        if not merged.get("model") and cell.get("model"):
            merged["model"] = cell["model"]
            sources["model"] = "cell"
    return merged, sources


__all__ = ["Llm", "LlmProvider", "LlmSecretRef", "merged_llm"]
