"""Drone: one running agent instance, created by the controllers and owned by its Hive (or by
its AgentSpec for standalone replicas). The node agent that runs it writes its status.

The spec is the AgentSpec's run fields (``runtime``, ``interface``, ``resources``, ``taskTier``
and what it resolved to) as they were when the drone was created, plus where it belongs: a drone
does not change under an edited AgentSpec, it is replaced (``templateHash`` tells generations
apart).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from apiary.resources.agentspec import Interface, Resources, Runtime, SecurityContext
from apiary.resources.base import ApiModel, DNSLabel, NonNegativeNumber, Timestamp
from apiary.resources.guardrails import Guardrails
from apiary.resources.meta import ApiObject, Status
from apiary.resources.tiers import ResolvedTier, TierName

DronePhase = Literal["Pending", "Starting", "Running", "Stopping", "Stopped", "Failed"]


class DroneSpec(ApiModel):
    agent_spec: DNSLabel
    """The AgentSpec it was made from."""
    runtime: Runtime
    interface: Interface = Field(default_factory=Interface)
    resources: Resources | None = None
    task_tier: TierName | None = None
    resolved_tier: ResolvedTier | None = None
    """What ``taskTier`` meant when the drone was made (Cell tiers over the server's): the model
    and token cap the node's gateway applies, the priority the scheduler places it by."""
    guardrails: Guardrails | None = None
    """Already merged: Cell defaults, AgentSpec, Hive, stage."""
    security_context: SecurityContext | None = None
    hive: DNSLabel | None = None
    stage: str | None = Field(default=None, min_length=1, max_length=127)
    pattern: Literal["pipeline", "hierarchical", "swarm", "event-driven"] | None = None
    segment: DNSLabel | None = None
    stage_config: dict[str, Any] | None = None
    """The stage entry of the Hive (role, filter, approval...), minus replicas."""
    template_hash: str | None = Field(default=None, max_length=64)
    ordinal: int | None = Field(default=None, ge=0)
    """Its place in the stage (names end in it; a drone claimed from the warm pool keeps the
    ``-wN`` name it was started under)."""
    warm: bool | None = None
    """True while the drone is in its stage's warm pool: started, but taking no traffic until
    the Queen claims it (docs/controllers.md, "Warm pools")."""
    node_name: DNSLabel | None = None
    """Set by the scheduler when the drone is bound to a node."""


def _stderr(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return list(value)
    raise ValueError("must be a string or a list of strings (the last stderr lines)")


StderrTail = Annotated[
    str | list[str], PlainValidator(_stderr, json_schema_input_type=str | list[str])
]


class TerminatedState(ApiModel):
    """How the drone's previous process ended (Kubernetes' ``lastState.terminated``)."""

    reason: str | None = None
    """``Error``, ``Killed``, ``Completed``, or ``LivenessProbeFailed`` when the node restarted
    it for failing its liveness probe."""
    message: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    finished_at: Timestamp | None = None


class LastState(ApiModel):
    terminated: TerminatedState | None = None


class DroneStatus(Status):
    """``phase`` is one of Pending, Starting, Running, Stopping, Stopped, Failed; a drone that
    keeps crashing is Failed with ``reason: CrashLoopBackOff`` until its next restart. A Running
    drone failing its readiness probe is ``ready: false`` with ``reason: ReadinessProbeFailed``
    (and so is its ``Ready`` condition)."""

    phase: DronePhase | None = None  # type: ignore[assignment]
    node_name: DNSLabel | None = None
    pid: int | None = Field(default=None, ge=0)
    restart_count: int | None = Field(default=None, ge=0)
    ready: bool | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    last_stderr: StderrTail | None = None
    """The last lines the agent wrote to stderr before it exited."""
    started_at: NonNegativeNumber | None = None
    """Epoch seconds of the current process's start."""
    next_restart_at: NonNegativeNumber | None = None
    """Epoch seconds of the next restart while backing off."""
    last_state: LastState | None = None
    """How the previous process ended; kept while its successor runs."""


class Drone(ApiObject):
    status_model = DroneStatus

    kind: Literal["Drone"]
    spec: DroneSpec
