"""Drone: one running agent instance, created by the controllers and owned by its Hive (or by
its AgentSpec for standalone replicas). The node agent that runs it writes its status."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apiary.resources.agentspec import AgentSpecSpec
from apiary.resources.base import ApiModel, DNSLabel, Timestamp
from apiary.resources.meta import ApiObject, Status

DronePhase = Literal["Pending", "Starting", "Running", "Stopping", "Stopped", "Failed"]


class DroneSpec(ApiModel):
    """What to run and where. ``template`` is the AgentSpec's spec as it was when the drone was
    created, so a running drone does not change under an edited AgentSpec (it is replaced)."""

    agent_ref: DNSLabel
    hive_ref: DNSLabel | None = None
    stage: str | None = Field(default=None, min_length=1, max_length=127)
    """The stage it serves (``segment/stage`` inside a composed hive)."""
    node_name: DNSLabel | None = None
    """Set by the scheduler when the drone is bound to a node."""
    warm: bool | None = None
    """True while it idles in a warm pool, not yet serving."""
    template: AgentSpecSpec | None = None


class DroneStatus(Status):
    """``phase`` is one of Pending, Starting, Running, Stopping, Stopped, Failed; a drone that
    keeps crashing stays Pending/Failed with ``reason: CrashLoopBackOff``."""

    phase: DronePhase | None = None  # type: ignore[assignment]
    node_name: DNSLabel | None = None
    pid: int | None = Field(default=None, ge=0)
    restart_count: int | None = Field(default=None, ge=0)
    ready: bool | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    last_stderr: str | None = None
    """The last lines the agent wrote to stderr before it exited."""
    start_time: Timestamp | None = None
    last_heartbeat_time: Timestamp | None = None


class Drone(ApiObject):
    status_model = DroneStatus

    kind: Literal["Drone"]
    spec: DroneSpec
