"""Cell: a namespace with a resource quota, default guardrails and its task tiers
(cluster-scoped)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from apiary.resources.base import ApiModel, NonNegativeNumber, Problems
from apiary.resources.budget import Budget, GatewaySettings, LlmUsage, ModelPrice
from apiary.resources.guardrails import Guardrails
from apiary.resources.interop import McpServer, check_mcp_servers
from apiary.resources.llm import Llm
from apiary.resources.meta import ApiObject, Status
from apiary.resources.quantity import Millicores
from apiary.resources.tiers import TierMap


class ResourceQuota(ApiModel):
    """Upper bounds on what a Cell may hold; an unset count means no limit. The last three lower
    the server's admission limits for the Cell's objects (unset: the server's; see
    :mod:`apiary.resources.limits`)."""

    max_agent_specs: int | None = Field(default=None, ge=0)
    max_hives: int | None = Field(default=None, ge=0)
    max_drones_per_hive: int | None = Field(default=None, ge=0)
    max_total_drones: int | None = Field(default=None, ge=0)
    max_cpu: Millicores | None = Field(default=None, alias="maxCPU")
    """Sum of the CPU requests of the Cell's drones, in millicores (``1000`` or ``"1"``)."""
    max_memory_gb: NonNegativeNumber | None = Field(default=None, alias="maxMemoryGB")
    """Sum of the memory requests of the Cell's drones, in GB (10^9 bytes)."""
    max_object_bytes: int | None = Field(default=None, ge=1024)
    """Largest object in the Cell, as JSON (at most the server's ``max_object_bytes``)."""
    max_stages_per_hive: int | None = Field(default=None, ge=1)
    """Most stages a Hive of the Cell may have (at most the server's limit)."""
    max_replicas_per_stage: int | None = Field(default=None, ge=0)
    """Most replicas one stage or AgentSpec of the Cell may ask for (at most the server's)."""


class CellDefaults(ApiModel):
    """Defaults for everything in the Cell; the most specific setting wins."""

    guardrails: Guardrails | None = None


class CellSpec(ApiModel):
    resource_quota: ResourceQuota | None = None
    defaults: CellDefaults | None = None
    tiers: TierMap | None = None
    """What each ``taskTier`` of the Cell's AgentSpecs means — ``model``, ``maxTokens``,
    ``priority`` per tier (``simple``, ``standard``, ``complex``) — over the server's tier map,
    field by field (:mod:`apiary.resources.tiers`). A change rolls the drones of that tier."""
    budget: Budget | None = None
    """What all LLM calls of the Cell, and each of its sessions, may use (docs/gateway.md)."""
    gateway: GatewaySettings | None = None
    """``mode: live|replay`` of the Cell's LLM calls, unless a Hive says (docs/gateway.md)."""
    prices: dict[str, ModelPrice] | None = None
    """The Cell's own prices (USD per 1M tokens) over the server's table, for its budgets."""
    llm: Llm | None = None
    """The default ``spec.llm`` of the Cell's AgentSpecs: an AgentSpec's own fields win, the
    provider is taken whole and its model only with it (:mod:`apiary.resources.llm`)."""
    mcp_servers: list[McpServer] | None = Field(default=None, max_length=32)
    """MCP servers every drone of the Cell reaches through its keeper (an AgentSpec's entry of
    the same name replaces one); see :mod:`apiary.resources.interop`, docs/interop.md."""

    @model_validator(mode="after")
    def _unique_mcp_servers(self) -> CellSpec:
        problems = Problems()
        check_mcp_servers(self.mcp_servers, problems)
        problems.raise_if_any()
        return self


class CellStatus(Status):
    """``phase`` is ``Active`` or ``Terminating``; ``used`` counts what the quota counts;
    ``usage`` is what the Cell's LLM calls used (tokens, estimated USD)."""

    used: dict[str, NonNegativeNumber] | None = None
    usage: LlmUsage | None = None


class Cell(ApiObject):
    status_model = CellStatus

    kind: Literal["Cell"]
    spec: CellSpec = Field(default_factory=CellSpec)
