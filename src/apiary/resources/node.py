"""Node: a machine that runs drones. The node agent registers it and keeps its status (capacity,
allocatable, heartbeat, conditions) fresh; ``spec.unschedulable`` cordons it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apiary.resources.base import ApiModel, Timestamp
from apiary.resources.meta import ApiObject, Status
from apiary.resources.quantity import Bytes, Millicores


class NodeSpec(ApiModel):
    unschedulable: bool | None = None


class Capacity(ApiModel):
    """``cpu`` in millicores, ``memory`` in bytes, ``drones`` the most it will run at once."""

    cpu: Millicores | None = None
    memory: Bytes | None = None
    drones: int | None = Field(default=None, ge=0)


class NodeStatus(Status):
    capacity: Capacity | None = None
    allocatable: Capacity | None = None
    """Capacity minus what the node keeps for itself; the scheduler fits requests into this."""
    last_heartbeat_time: Timestamp | None = None
    address: str | None = None
    node_info: dict[str, str] | None = None


class Node(ApiObject):
    status_model = NodeStatus

    kind: Literal["Node"]
    spec: NodeSpec = Field(default_factory=NodeSpec)
