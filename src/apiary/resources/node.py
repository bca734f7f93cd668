"""Node: a machine that runs drones. The node agent registers it and keeps its status (capacity,
allocatable, lease, conditions) fresh; ``spec.unschedulable`` cordons it, and ``spec.capacity``
declares room by hand where the node does not report it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apiary.resources.base import ApiModel, PositiveNumber, Timestamp
from apiary.resources.meta import ApiObject, Status
from apiary.resources.quantity import Bytes, Millicores


class Capacity(ApiModel):
    """``cpu`` in millicores, ``memory`` in bytes, ``drones`` the most it will run at once."""

    cpu: Millicores | None = None
    memory: Bytes | None = None
    drones: int | None = Field(default=None, ge=0)


class NodeSpec(ApiModel):
    unschedulable: bool | None = None
    capacity: Capacity | None = None


class NodeLease(ApiModel):
    """The heartbeat: the node agent renews ``renewTime``; a stale lease makes the node lost."""

    renew_time: Timestamp | None = None
    holder_identity: str | None = None
    lease_duration_seconds: PositiveNumber | None = None


class NodeStatus(Status):
    capacity: Capacity | None = None
    allocatable: Capacity | None = None
    """Capacity minus what the node keeps for itself; the scheduler fits requests into this."""
    lease: NodeLease | None = None
    heartbeat_time: Timestamp | None = None
    address: str | None = None
    node_info: dict[str, str] | None = None


class Node(ApiObject):
    status_model = NodeStatus

    kind: Literal["Node"]
    spec: NodeSpec = Field(default_factory=NodeSpec)
