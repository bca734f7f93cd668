"""Resource models and admission: pure data and validation, importing nothing of Apiary.

The façade the API uses is :func:`admit`: it checks an object of any kind, applies defaults,
and returns it with warnings about unknown fields; bad input raises :class:`ValidationFailed`
naming each field (``spec.stages[1].agentRef``). :func:`validate_status` checks what controllers
write to ``/status``; :func:`parse` returns the typed model (``Hive``, ``AgentSpec``...) of an
object for code that prefers attributes to dict lookups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The kinds registry is light and what clients (apiaryctl) need; the pydantic models cost ~0.5 s to
# build, so they load on first use (PEP 562) and a CLI command that never validates never pays.
from apiary.resources.registry import API_VERSION, KINDS, KindInfo, kind_by_plural, lookup_kind

_LAZY: dict[str, str] = {
    "Admission": "apiary.resources.admission",
    "AgentSpec": "apiary.resources.agentspec",
    "AgentSpecSpec": "apiary.resources.agentspec",
    "ApiObject": "apiary.resources.meta",
    "Cell": "apiary.resources.cell",
    "CellSpec": "apiary.resources.cell",
    "CircuitBreaker": "apiary.resources.guardrails",
    "Condition": "apiary.resources.meta",
    "Drone": "apiary.resources.drone",
    "DronePhase": "apiary.resources.drone",
    "DroneSpec": "apiary.resources.drone",
    "DroneStatus": "apiary.resources.drone",
    "EnvVar": "apiary.resources.agentspec",
    "Event": "apiary.resources.event",
    "Guardrails": "apiary.resources.guardrails",
    "Hive": "apiary.resources.hive",
    "HiveSpec": "apiary.resources.hive",
    "Interface": "apiary.resources.agentspec",
    "MODELS": "apiary.resources.kinds",
    "Node": "apiary.resources.node",
    "NodeStatus": "apiary.resources.node",
    "ObjectMeta": "apiary.resources.meta",
    "ObjectReference": "apiary.resources.event",
    "OwnerReference": "apiary.resources.meta",
    "PATTERNS": "apiary.resources.hive",
    "PatternSegment": "apiary.resources.hive",
    "ResourceQuota": "apiary.resources.cell",
    "RetryPolicy": "apiary.resources.hive_parts",
    "Routing": "apiary.resources.hive_parts",
    "Scaling": "apiary.resources.agentspec",
    "Secret": "apiary.resources.secret",
    "Session": "apiary.resources.session",
    "SessionSettings": "apiary.resources.hive_parts",
    "SessionStatus": "apiary.resources.session",
    "Stage": "apiary.resources.hive_parts",
    "Status": "apiary.resources.meta",
    "SwarmSettings": "apiary.resources.hive_parts",
    "ValidationFailed": "apiary.resources.admission",
    "WEBHOOK_EVENTS": "apiary.resources.hive_parts",
    "Webhook": "apiary.resources.hive_parts",
    "admit": "apiary.resources.admission",
    "merge_guardrails": "apiary.resources.guardrails",
    "parse": "apiary.resources.admission",
    "to_bytes": "apiary.resources.quantity",
    "to_millicores": "apiary.resources.quantity",
    "validate_status": "apiary.resources.admission",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'apiary.resources' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from apiary.resources.admission import (
        Admission,
        ValidationFailed,
        admit,
        parse,
        validate_status,
    )
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
