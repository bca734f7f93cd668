"""What objects point at: a Hive's ``agentRef``s and an AgentSpec's ``secretKeyRef``s.

Walked generically, so every place a Hive can name an agent (``stages[]``, ``patternSegments[]
.config.stages|subscribers|agents[]``, whatever comes next) is found without a list to maintain.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def agent_refs(spec: Any, path: str = "spec") -> Iterator[tuple[str, str, int]]:
    """Every ``(field path, agent name, replicas)`` under ``spec``; replicas default to 1."""
    if isinstance(spec, dict):
        ref = spec.get("agentRef")
        if isinstance(ref, str) and ref:
            replicas = spec.get("replicas", 1)
            count = replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1
            yield f"{path}.agentRef", ref, max(count, 0)
        for key, value in spec.items():
            if key != "agentRef":
                yield from agent_refs(value, f"{path}.{key}")
    elif isinstance(spec, list):
        for i, item in enumerate(spec):
            yield from agent_refs(item, f"{path}[{i}]")


def secret_key_refs(spec: Any) -> Iterator[tuple[str, str, str | None]]:
    """Every ``(field path, secret name, key)`` in ``runtime.env[].valueFrom.secretKeyRef``."""
    if not isinstance(spec, dict):
        return
    runtime = spec.get("runtime")
    env = runtime.get("env") if isinstance(runtime, dict) else None
    if not isinstance(env, list):
        return
    for i, var in enumerate(env):
        source = var.get("valueFrom") if isinstance(var, dict) else None
        ref = source.get("secretKeyRef") if isinstance(source, dict) else None
        if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
            key = ref.get("key")
            yield (
                f"spec.runtime.env[{i}].valueFrom.secretKeyRef",
                ref["name"],
                key if isinstance(key, str) else None,
            )


def total_replicas(spec: Any) -> int:
    return sum(replicas for _, _, replicas in agent_refs(spec))
