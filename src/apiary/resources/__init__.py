"""Resource models and admission: pure data and validation, importing nothing of Apiary.

The façade the API uses is :func:`admit`: it checks an object of any kind, applies defaults,
and returns it with warnings about unknown fields; bad input raises :class:`ValidationFailed`
naming each field (``spec.stages[1].agentRef``). :func:`validate_status` checks what controllers
write to ``/status``; :func:`parse` returns the typed model (``Hive``, ``AgentSpec``...) of an
object for code that prefers attributes to dict lookups.
"""

from __future__ import annotations

from apiary.resources.admission import Admission, ValidationFailed, admit, parse, validate_status
from apiary.resources.agentspec import AgentSpec, AgentSpecSpec, EnvVar, Interface, Scaling
from apiary.resources.cell import Cell, CellSpec, ResourceQuota
from apiary.resources.drone import Drone, DronePhase, DroneSpec, DroneStatus
from apiary.resources.event import Event, ObjectReference
from apiary.resources.guardrails import CircuitBreaker, Guardrails, merge_guardrails
from apiary.resources.hive import PATTERNS, Hive, HiveSpec, PatternSegment
from apiary.resources.hive_parts import (
    WEBHOOK_EVENTS,
    RetryPolicy,
    Routing,
    SessionSettings,
    Stage,
    SwarmSettings,
    Webhook,
)
from apiary.resources.kinds import MODELS
from apiary.resources.meta import ApiObject, Condition, ObjectMeta, OwnerReference, Status
from apiary.resources.node import Node, NodeStatus
from apiary.resources.quantity import to_bytes, to_millicores
from apiary.resources.registry import API_VERSION, KINDS, KindInfo, kind_by_plural, lookup_kind
from apiary.resources.secret import Secret
from apiary.resources.session import Session, SessionStatus

__all__ = [
    "API_VERSION",
    "KINDS",
    "MODELS",
    "PATTERNS",
    "WEBHOOK_EVENTS",
    "Admission",
    "AgentSpec",
    "AgentSpecSpec",
    "ApiObject",
    "Cell",
    "CellSpec",
    "CircuitBreaker",
    "Condition",
    "Drone",
    "DronePhase",
    "DroneSpec",
    "DroneStatus",
    "EnvVar",
    "Event",
    "Guardrails",
    "Hive",
    "HiveSpec",
    "Interface",
    "KindInfo",
    "Node",
    "NodeStatus",
    "ObjectMeta",
    "ObjectReference",
    "OwnerReference",
    "PatternSegment",
    "ResourceQuota",
    "RetryPolicy",
    "Routing",
    "Scaling",
    "Secret",
    "Session",
    "SessionSettings",
    "SessionStatus",
    "Stage",
    "Status",
    "SwarmSettings",
    "ValidationFailed",
    "Webhook",
    "admit",
    "kind_by_plural",
    "lookup_kind",
    "merge_guardrails",
    "parse",
    "to_bytes",
    "to_millicores",
    "validate_status",
]
