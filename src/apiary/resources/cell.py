"""Cell: a namespace with a resource quota and default guardrails (cluster-scoped)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apiary.resources.base import ApiModel, NonNegativeNumber
from apiary.resources.guardrails import Guardrails
from apiary.resources.meta import ApiObject, Status
from apiary.resources.quantity import Millicores


class ResourceQuota(ApiModel):
    """Upper bounds on what a Cell may hold; an unset field means no limit."""

    max_agent_specs: int | None = Field(default=None, ge=0)
    max_hives: int | None = Field(default=None, ge=0)
    max_drones_per_hive: int | None = Field(default=None, ge=0)
    max_total_drones: int | None = Field(default=None, ge=0)
    max_cpu: Millicores | None = Field(default=None, alias="maxCPU")
    """Sum of the CPU requests of the Cell's drones, in millicores (``1000`` or ``"1"``)."""
    max_memory_gb: NonNegativeNumber | None = Field(default=None, alias="maxMemoryGB")
    """Sum of the memory requests of the Cell's drones, in GB (10^9 bytes)."""


class CellDefaults(ApiModel):
    """Defaults for everything in the Cell; the most specific setting wins."""

    guardrails: Guardrails | None = None


class CellSpec(ApiModel):
    resource_quota: ResourceQuota | None = None
    defaults: CellDefaults | None = None


class CellStatus(Status):
    """``phase`` is ``Active`` or ``Terminating``; ``used`` counts what the quota counts."""

    used: dict[str, NonNegativeNumber] | None = None


class Cell(ApiObject):
    status_model = CellStatus

    kind: Literal["Cell"]
    spec: CellSpec = Field(default_factory=CellSpec)
