"""What a Hive or AgentSpec wants to run: its stages and the Drone template of each.

A Drone's ``spec`` carries everything a node needs to run it — a copy of the AgentSpec's runtime,
interface, resources and task tier, what that tier resolves to in its Cell (``resolvedTier``:
model, token cap, priority — :mod:`apiary.resources.tiers`), its ``llm`` over the Cell's default
``spec.llm`` (:mod:`apiary.resources.llm`), the merged guardrails, and the stage's own
configuration — so a node never reads the AgentSpec. The ``templateHash`` of that
copy is part of the drone name, so any change that affects how a drone runs makes new names and
a rolling replacement.

Stage names: ``spec.stages[i].name`` for plain Hives; for ``patternSegments`` each entry of a
segment's ``config.subscribers`` / ``config.stages`` / ``config.agents`` becomes the stage
``{segment}-{entry name}`` (``{segment}-{index}`` when the entry has no name). That name is what
``apiaryctl scale hive/NAME --stage S`` and the ``apiary.io/stage`` label use.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apiary.controllers.meta import Obj, QuantityError, requests_of, short_hash
from apiary.resources.llm import merged_llm
from apiary.resources.tiers import resolve_tier

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
    "mcpServers",
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
    declared: int | None = None
    """The ``replicas`` the spec says; ``replicas`` differs from it only where the autoscaler's
    annotation applies (:func:`effective_replicas` tells whether it should)."""

    @property
    def spec_replicas(self) -> int:
        return self.replicas if self.declared is None else self.declared


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
    count = _replicas(entry, path, errors)
    return Stage(stage_name, ref, count, path, pattern, segment, config, declared=count)


AUTOSCALER_ANNOTATION = "status.apiary.io/autoscaler"
"""Where the autoscaler keeps each autoscaled stage's replica count (JSON: stage → {replicas,
specReplicas, ...}). It overrides ``replicas`` in the spec, which stays what the user wrote (it
round-trips) — but only while the spec still says the ``specReplicas`` the entry was decided
against: a spec changed since (``apiaryctl scale``, a re-applied manifest with other replicas)
wins, and the autoscaler carries on from it. Entries without ``specReplicas`` (older servers)
always apply."""


def autoscaler_notes(hive: Obj) -> dict[str, Obj]:
    """The annotation's entries by stage name; ``{}`` when absent or unreadable."""
    raw = ((hive.get("metadata") or {}).get("annotations") or {}).get(AUTOSCALER_ANNOTATION)
    try:
        notes = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    if not isinstance(notes, dict):
        return {}
    return {str(k): v for k, v in notes.items() if isinstance(v, dict)}


def set_autoscaler_notes(hive: Obj, notes: dict[str, Obj]) -> None:
    """Write ``notes`` into ``hive``'s annotation (in place). With no entries left it is ``{}``:
    the store keeps a ``status.apiary.io/`` annotation an update leaves out, so it cannot go."""
    meta = hive.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    annotations[AUTOSCALER_ANNOTATION] = json.dumps(notes, sort_keys=True, separators=(",", ":"))
    meta["annotations"] = annotations


def _applies(entry: Obj, declared: int) -> bool:
    count, base = entry.get("replicas"), entry.get("specReplicas", declared)
    valid = isinstance(count, int) and not isinstance(count, bool) and count >= 0
    return valid and base == declared


def is_autoscaled(agentspec: Obj | None) -> bool:
    """Whether an AgentSpec's stages follow the autoscaler (it has a ``scaling`` mapping)."""
    return agentspec is not None and isinstance((agentspec.get("spec") or {}).get("scaling"), dict)


def effective_replicas(stage: Stage, agentspec: Obj | None) -> int:
    """What a stage runs: the autoscaler's count while its AgentSpec has ``scaling``, else the
    spec's ``replicas`` — an annotation left from when it had ``scaling`` is ignored (and pruned
    by the Hive reconciler)."""
    return stage.replicas if is_autoscaled(agentspec) else stage.spec_replicas


A2A_BRIDGE = (sys.executable, "-m", "apiary.agent.a2a_bridge")
"""What a drone of an ``interface.type: a2a`` AgentSpec runs: the bridge to the remote agent."""


def a2a_bridge(spec: Obj) -> tuple[Obj, Obj]:
    """``interface.type: a2a``: the drone runs the A2A bridge, a stdin (Waggle) agent to its
    keeper, towards ``interface.url``; a runtime the AgentSpec gives lends only its ``env``."""
    interface = _mapping(spec.get("interface"))
    env = [e for e in (_mapping(spec.get("runtime")).get("env") or [])
           if not (isinstance(e, dict) and e.get("name") == "APIARY_A2A_URL")]  # fmt: skip
    url = {"name": "APIARY_A2A_URL", "value": str(interface.get("url"))}
    runtime = {"command": list(A2A_BRIDGE), "env": [url, *env]}
    bridged: Obj = {"type": "stdin", "format": "waggle",
                    "concurrency": interface.get("concurrency", 1)}  # fmt: skip
    for probe in ("readinessProbe", "livenessProbe"):
        if probe in interface:
            bridged[probe] = copy.deepcopy(interface[probe])
    return runtime, bridged


def mcp_servers(cell: Obj | None, spec: Obj) -> list[Obj]:
    """The MCP servers a drone's keeper proxies: the Cell's (``spec.mcpServers``), each replaced
    by the AgentSpec's entry of the same name, then the AgentSpec's others (docs/interop.md)."""
    own = [s for s in spec.get("mcpServers") or [] if isinstance(s, dict)]
    names = {s.get("name") for s in own}
    shared = [s for s in _mapping((cell or {}).get("spec")).get("mcpServers") or []
              if isinstance(s, dict) and s.get("name") not in names]  # fmt: skip
    return copy.deepcopy([*shared, *own])


def hive_stages(hive: Obj) -> tuple[list[Stage], list[tuple[str, str]]]:
    """The stages of a Hive and the problems found, as (field path, message). A stage's
    ``replicas`` is the autoscaler's count where its annotation entry applies
    (:data:`AUTOSCALER_ANNOTATION`); ``declared`` is always the spec's."""
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
    notes = autoscaler_notes(hive)
    if notes:
        stages = [_annotated(s, notes.get(s.name)) for s in stages]
    return stages, errors


def _annotated(stage: Stage, entry: Obj | None) -> Stage:
    if entry is None or not _applies(entry, stage.spec_replicas):
        return stage
    return dataclasses.replace(stage, replicas=int(entry["replicas"]))


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


def cell_tiers(cell: Obj | None) -> Any:
    """``Cell.spec.tiers`` (None without a Cell)."""
    return None if cell is None else (cell.get("spec") or {}).get("tiers")


def drone_template(
    agentspec: Obj,
    *,
    cell: Obj | None,
    hive: Obj | None = None,
    stage: Stage | None = None,
    tiers: Mapping[str, Any] | None = None,
) -> Obj:
    """The part of a Drone spec shared by all replicas of a stage (or standalone AgentSpec).

    Guardrails merge from general to specific: Cell defaults, AgentSpec, Hive, stage; ``llm``
    is the AgentSpec's over the Cell's ``spec.llm`` (:func:`apiary.resources.llm.merged_llm`). A
    ``taskTier`` is resolved into ``resolvedTier`` from the Cell's ``spec.tiers`` over ``tiers``
    (the server's map) over the built-in one, so a change of either rolls the tier's drones.
    Raises :class:`QuantityError` (naming the AgentSpec field) when its requests are unreadable.
    """
    spec = agentspec.get("spec") or {}
    requests_of(spec, f"agentspec {agentspec['metadata']['name']!r}: spec")
    template: Obj = {"agentSpec": agentspec["metadata"]["name"]}
    for key in RUNTIME_FIELDS:
        if key in spec:
            template[key] = copy.deepcopy(spec[key])
    if (_mapping(spec.get("interface"))).get("type") == "a2a":
        template["runtime"], template["interface"] = a2a_bridge(spec)
    servers = mcp_servers(cell, spec)
    if servers:
        template["mcpServers"] = servers
    llm, _ = merged_llm(spec.get("llm"), _mapping((cell or {}).get("spec")).get("llm"))
    if llm is not None:
        template["llm"] = llm
    if isinstance(spec.get("taskTier"), str):
        resolved = resolve_tier(spec["taskTier"], cell_tiers(cell), tiers)
        if resolved is not None:
            template["resolvedTier"] = resolved
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
    "AUTOSCALER_ANNOTATION",
    "SEGMENT_ENTRY_KEYS",
    "QuantityError",
    "Stage",
    "autoscaler_notes",
    "cell_default_guardrails",
    "cell_tiers",
    "drone_template",
    "effective_replicas",
    "hive_stages",
    "is_autoscaled",
    "set_autoscaler_notes",
    "template_hash",
]
