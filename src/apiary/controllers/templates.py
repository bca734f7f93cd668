"""What a Hive or AgentSpec wants to run: its stages and the Drone template of each.

A Drone's ``spec`` carries everything a node needs to run it — a copy of the AgentSpec's runtime,
interface, resources and task tier, the merged guardrails, and the stage's own configuration — so
a node never reads the AgentSpec. The ``templateHash`` of that copy is part of the drone name, so
any change that affects how a drone runs makes new names and a rolling replacement.

Stage names: ``spec.stages[i].name`` for plain Hives; for ``patternSegments`` each entry of a
segment's ``config.subscribers`` / ``config.stages`` / ``config.agents`` becomes the stage
``{segment}-{entry name}`` (``{segment}-{index}`` when the entry has no name). That name is what
``apiaryctl scale hive/NAME --stage S`` and the ``apiary.io/stage`` label use.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from apiary.controllers.meta import Obj, QuantityError, requests_of, short_hash

SEGMENT_ENTRY_KEYS = ("subscribers", "stages", "agents")
"""Keys of ``patternSegments[].config`` whose list entries become stages (seed 09)."""

RUNTIME_FIELDS = (
    "runtime",
    "interface",
    "resources",
    "taskTier",
    "llm",
    "securityContext",
    "memory",
)
"""AgentSpec fields copied verbatim into the drone template (``scaling`` is not: a scaling
change must not restart drones)."""


@dataclass(frozen=True)
class Stage:
    """One group of identical drones a Hive wants."""

    name: str
    agent_ref: str
    replicas: int
    field: str
    """Where the stage lives in the Hive, for messages (``spec.stages[1]``)."""
    pattern: str | None = None
    segment: str | None = None
    config: Obj = dataclasses.field(default_factory=dict)
    """The stage entry minus ``replicas`` (role, filter, approval, guardrails, ...)."""


def _replicas(entry: Obj, path: str, errors: list[tuple[str, str]]) -> int:
    value = entry.get("replicas", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.append((f"{path}.replicas", f"must be a non-negative integer, got {value!r}"))
        return 0
    return value


def _stage(
    entry: Any,
    path: str,
    name: str | None,
    pattern: str | None,
    segment: str | None,
    errors: list[tuple[str, str]],
) -> Stage | None:
    if not isinstance(entry, dict):
        errors.append((path, "must be a mapping with agentRef and replicas"))
        return None
    ref = entry.get("agentRef")
    if not isinstance(ref, str) or not ref:
        errors.append((f"{path}.agentRef", "required: the name of an AgentSpec"))
        return None
    stage_name = name if name is not None else str(entry.get("name") or "")
    if not stage_name:
        errors.append((f"{path}.name", "required"))
        return None
    config = {k: v for k, v in entry.items() if k != "replicas"}
    return Stage(stage_name, ref, _replicas(entry, path, errors), path, pattern, segment, config)


AUTOSCALER_ANNOTATION = "status.apiary.io/autoscaler"
"""Where the autoscaler keeps each autoscaled stage's replica count (JSON: stage → {replicas,
...}). It overrides ``replicas`` in the spec, which stays what the user wrote (it round-trips)."""


def autoscaled_replicas(hive: Obj) -> dict[str, int]:
    raw = ((hive.get("metadata") or {}).get("annotations") or {}).get(AUTOSCALER_ANNOTATION)
    try:
        notes = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    if not isinstance(notes, dict):
        return {}
    return {
        str(stage): int(entry["replicas"])
        for stage, entry in notes.items()
        if isinstance(entry, dict) and isinstance(entry.get("replicas"), int)
        and entry["replicas"] >= 0
    }  # fmt: skip


def hive_stages(hive: Obj) -> tuple[list[Stage], list[tuple[str, str]]]:
    """The stages of a Hive and the problems found, as (field path, message). An autoscaled
    stage's ``replicas`` is the autoscaler's count (:data:`AUTOSCALER_ANNOTATION`)."""
    spec = hive.get("spec") or {}
    errors: list[tuple[str, str]] = []
    stages: list[Stage] = []
    pattern = spec.get("pattern")
    for i, entry in enumerate(spec.get("stages") or []):
        stage = _stage(entry, f"spec.stages[{i}]", None, pattern, None, errors)
        if stage is not None:
            stages.append(stage)
    for s, segment in enumerate(spec.get("patternSegments") or []):
        seg_path = f"spec.patternSegments[{s}]"
        if not isinstance(segment, dict):
            errors.append((seg_path, "must be a mapping"))
            continue
        seg_name = str(segment.get("name") or f"segment{s}")
        config = segment.get("config") or {}
        if not isinstance(config, dict):
            errors.append((f"{seg_path}.config", "must be a mapping"))
            continue
        for key in SEGMENT_ENTRY_KEYS:
            for i, entry in enumerate(config.get(key) or []):
                path = f"{seg_path}.config.{key}[{i}]"
                own = entry.get("name") if isinstance(entry, dict) else None
                name = f"{seg_name}-{own or i}"
                stage = _stage(entry, path, name, segment.get("pattern"), seg_name, errors)
                if stage is not None:
                    stages.append(stage)
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            errors.append((f"{stage.field}.name", f"duplicate stage name {stage.name!r}"))
        seen.add(stage.name)
    scaled = autoscaled_replicas(hive)
    if scaled:
        stages = [
            dataclasses.replace(s, replicas=scaled[s.name]) if s.name in scaled else s
            for s in stages
        ]
    return stages, errors


def cell_default_guardrails(cell: Obj | None) -> Obj:
    """``Cell.spec.defaults.guardrails`` (or ``spec.defaults`` itself when it holds them)."""
    if cell is None:
        return {}
    defaults = (cell.get("spec") or {}).get("defaults") or {}
    if not isinstance(defaults, dict):
        return {}
    nested = defaults.get("guardrails")
    return dict(nested) if isinstance(nested, dict) else dict(defaults)


def _mapping(value: Any) -> Obj:
    return dict(value) if isinstance(value, dict) else {}


def drone_template(
    agentspec: Obj, *, cell: Obj | None, hive: Obj | None = None, stage: Stage | None = None
) -> Obj:
    """The part of a Drone spec shared by all replicas of a stage (or standalone AgentSpec).

    Guardrails merge from general to specific: Cell defaults, AgentSpec, Hive, stage.
    Raises :class:`QuantityError` (naming the AgentSpec field) when its requests are unreadable.
    """
    spec = agentspec.get("spec") or {}
    requests_of(spec, f"agentspec {agentspec['metadata']['name']!r}: spec")
    template: Obj = {"agentSpec": agentspec["metadata"]["name"]}
    for key in RUNTIME_FIELDS:
        if key in spec:
            template[key] = copy.deepcopy(spec[key])
    guardrails = cell_default_guardrails(cell)
    guardrails.update(_mapping(spec.get("guardrails")))
    if hive is not None:
        guardrails.update(_mapping((hive.get("spec") or {}).get("guardrails")))
        template["hive"] = hive["metadata"]["name"]
    if stage is not None:
        guardrails.update(_mapping(stage.config.get("guardrails")))
        template["stage"] = stage.name
        if stage.pattern:
            template["pattern"] = stage.pattern
        if stage.segment:
            template["segment"] = stage.segment
        template["stageConfig"] = copy.deepcopy(stage.config)
    if guardrails:
        template["guardrails"] = guardrails
    return template


def template_hash(template: Obj) -> str:
    return short_hash(template, 8)


__all__ = [
    "SEGMENT_ENTRY_KEYS",
    "QuantityError",
    "Stage",
    "cell_default_guardrails",
    "drone_template",
    "hive_stages",
    "template_hash",
]
