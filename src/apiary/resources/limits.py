"""Admission limits: how big an object may be, so that one request cannot make the control plane
build unbounded work.

A Hive stage with ``replicas: 1000000000000000000`` used to be stored, and every pass of the
rollout controller then built ``range(n)`` until the server ran out of memory — at every restart
too, since the object stayed stored. Kubernetes bounds what one object may ask for: 1.5 MiB per
object (etcd's request limit), label values of 63 characters, 256 KiB of annotations in all, and
its decoders refuse deep nesting. Apiary takes those and adds bounds on what its controllers
multiply: stages per Hive and replicas per stage (or per AgentSpec).

:class:`AdmissionLimits` holds the server's defaults (``apiaryd`` settings); a Cell's
``spec.resourceQuota`` may *lower* the per-cell ones (``maxObjectBytes``, ``maxStagesPerHive``,
``maxReplicasPerStage``) for what lives in it, never raise them: the server's limit protects the
server. Every problem is a ``(field path, message)`` naming the limit and where it comes from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from apiary.resources.depth import MAX_DEPTH
from apiary.resources.paths import render_path

Problem = tuple[str, str]

MEMBER_LISTS = ("stages", "agents", "subscribers")
"""Where a pattern segment's ``config`` lists its members (each one is a stage of the hive)."""

CELL_OVERRIDES: dict[str, str] = {
    "maxObjectBytes": "max_object_bytes",
    "maxStagesPerHive": "max_stages_per_hive",
    "maxReplicasPerStage": "max_replicas_per_stage",
}
"""``spec.resourceQuota`` fields of a Cell → the limit each one lowers for the Cell's objects."""


@dataclass(frozen=True)
class AdmissionLimits:
    """Upper bounds admission enforces on every create and update (a 422 naming the field)."""

    max_object_bytes: int = 1536 * 1024
    """Largest object, measured as the JSON the store would keep (after defaults, and after YAML
    aliases are expanded): 1.5 MiB, etcd's limit in Kubernetes. A Cell may lower it with
    ``resourceQuota.maxObjectBytes``."""

    max_stages_per_hive: int = 64
    """Most stages a Hive may have (``spec.stages``, or every member of every pattern segment
    together). A Cell may lower it with ``resourceQuota.maxStagesPerHive``."""

    max_replicas_per_stage: int = 1000
    """Most replicas one stage may ask for; also bounds an AgentSpec's ``spec.replicas`` and
    ``scaling.maxReplicas`` and every ``PUT …/scale``. A Cell may lower it with
    ``resourceQuota.maxReplicasPerStage`` (its ``maxDronesPerHive``/``maxTotalDrones`` quotas
    bound the totals too, with a 403)."""

    max_depth: int = MAX_DEPTH
    """Deepest nesting of mappings and lists in an object (Kubernetes manifests use < 20)."""

    max_annotations_bytes: int = 256 * 1024
    """Total size of all annotation keys and values of one object, as in Kubernetes. (Label
    values are at most 63 characters and keys 63 plus a 253-character prefix: that is their
    syntax, as in Kubernetes, not a setting.)"""

    cell: str | None = None
    """The Cell whose quota lowered some of these limits (for the messages), if any."""

    lowered: frozenset[str] = frozenset()
    """Which limits the Cell lowered (attribute names)."""

    def for_cell(self, cell: str, quota: Mapping[str, Any] | None) -> AdmissionLimits:
        """These limits as lowered by ``quota``, a Cell's ``spec.resourceQuota`` (or None)."""
        changes: dict[str, int] = {}
        for wire, attr in CELL_OVERRIDES.items():
            value = (quota or {}).get(wire)
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            if value < getattr(self, attr):
                changes[attr] = value
        if not changes:
            return self
        return dataclasses.replace(self, cell=cell, lowered=frozenset(changes), **changes)

    def source(self, attr: str) -> str:
        """Where limit ``attr`` comes from, for a message."""
        if attr in self.lowered:
            wire = next(w for w, a in CELL_OVERRIDES.items() if a == attr)
            return f"resourceQuota.{wire} of cell {self.cell!r}"
        return "the server's limit"


DEFAULT_LIMITS = AdmissionLimits()


# ------------------------------------------------------------------ before model validation


def precheck(obj: Mapping[str, Any], limits: AdmissionLimits) -> list[Problem]:
    """Cheap checks on the raw body, run before the model sees it: a 20,000-stage Hive is
    refused without validating 20,000 stages."""
    problems = list(_annotation_problems(obj, limits))
    if obj.get("kind") == "Hive":
        problems.extend(_stage_count_problems(obj.get("spec"), limits))
    return problems


def _annotation_problems(obj: Mapping[str, Any], limits: AdmissionLimits) -> Iterator[Problem]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(annotations, Mapping):
        return
    size = 0
    for key, value in annotations.items():
        size += len(str(key).encode()) + (len(value.encode()) if isinstance(value, str) else 0)
    if size > limits.max_annotations_bytes:
        yield (
            "metadata.annotations",
            f"annotations total {size} bytes, more than {limits.max_annotations_bytes} "
            f"({limits.source('max_annotations_bytes')})",
        )


def stage_count(spec: Any) -> tuple[str, int]:
    """(field, how many stages) of a raw Hive spec: ``spec.stages``, else every member of every
    pattern segment."""
    if not isinstance(spec, Mapping):
        return "spec.stages", 0
    stages = spec.get("stages")
    if isinstance(stages, list):
        return "spec.stages", len(stages)
    segments = spec.get("patternSegments")
    total = 0
    for segment in segments if isinstance(segments, list) else []:
        config = segment.get("config") if isinstance(segment, Mapping) else None
        for key in MEMBER_LISTS:
            members = config.get(key) if isinstance(config, Mapping) else None
            total += len(members) if isinstance(members, list) else 0
    return "spec.patternSegments", total


def _stage_count_problems(spec: Any, limits: AdmissionLimits) -> Iterator[Problem]:
    field, count = stage_count(spec)
    if count > limits.max_stages_per_hive:
        yield (
            field,
            f"{count} stages, more than {limits.max_stages_per_hive}, the most a Hive may have "
            f"({limits.source('max_stages_per_hive')})",
        )


# ------------------------------------------------------------------- after model validation


def check(obj: Mapping[str, Any], limits: AdmissionLimits) -> list[Problem]:
    """Limits on the admitted object (defaults filled in): replicas, and the object's size."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    problems: list[Problem] = []
    if kind == "Hive":
        problems.extend(_replica_problems(hive_replicas(spec), limits))
    elif kind == "AgentSpec":
        problems.extend(_replica_problems(agentspec_replicas(spec), limits))
    elif kind == "Cell":
        problems.extend(_override_problems(spec, limits))
    problems.extend(size_problems(obj, limits))
    return problems


def hive_replicas(spec: Any) -> Iterator[tuple[str, Any]]:
    """(field path, replicas) of every stage of a Hive spec in wire form."""
    if not isinstance(spec, Mapping):
        return
    for i, stage in enumerate(_list(spec.get("stages"))):
        yield render_path(("spec", "stages", i, "replicas")), _get(stage, "replicas")
    for j, segment in enumerate(_list(spec.get("patternSegments"))):
        config = _get(segment, "config")
        for key in MEMBER_LISTS:
            for k, member in enumerate(_list(_get(config, key))):
                loc = ("spec", "patternSegments", j, "config", key, k, "replicas")
                yield render_path(loc), _get(member, "replicas")


def agentspec_replicas(spec: Any) -> Iterator[tuple[str, Any]]:
    """(field path, count) of what an AgentSpec may ask drones for."""
    yield "spec.replicas", _get(spec, "replicas")
    scaling = _get(spec, "scaling")
    yield "spec.scaling.minReplicas", _get(scaling, "minReplicas")
    yield "spec.scaling.maxReplicas", _get(scaling, "maxReplicas")


def replicas_problem(field: str, replicas: Any, limits: AdmissionLimits) -> Problem | None:
    """The problem with asking for ``replicas`` drones in one stage, or None."""
    limit = limits.max_replicas_per_stage
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas <= limit:
        return None
    return (
        field,
        f"{replicas} is more than {limit}, the most replicas a stage may have "
        f"({limits.source('max_replicas_per_stage')})",
    )


def _replica_problems(
    counts: Iterator[tuple[str, Any]], limits: AdmissionLimits
) -> Iterator[Problem]:
    for field, replicas in counts:
        problem = replicas_problem(field, replicas, limits)
        if problem is not None:
            yield problem


def _override_problems(spec: Any, limits: AdmissionLimits) -> Iterator[Problem]:
    """A Cell may lower the server's limits, not raise them: say so rather than ignore it."""
    quota = _get(spec, "resourceQuota")
    for wire, attr in CELL_OVERRIDES.items():
        value = _get(quota, wire)
        limit = getattr(limits, attr)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            yield (
                f"spec.resourceQuota.{wire}",
                f"{value} is more than {limit}, the server's limit: a Cell may lower it, "
                "not raise it",
            )


def size_problems(obj: Mapping[str, Any], limits: AdmissionLimits) -> list[Problem]:
    """The object as JSON over ``max_object_bytes``: a problem naming its biggest field. (A value
    JSON cannot carry — an integer beyond 64 bits, which only a caller of :func:`admit` that skipped
    the API's body parser can hand in — is a problem too, not a TypeError.)"""
    try:
        size = len(orjson.dumps(obj))
    except TypeError as exc:
        where = next((str(k) for k in obj if not _encodes(obj[k])), "")
        return [(where, f"holds a value JSON cannot carry: {exc}")]
    limit = limits.max_object_bytes
    if size <= limit:
        return []
    biggest = max(obj, key=lambda k: len(orjson.dumps(obj[k])), default="")
    return [
        (
            str(biggest),
            f"the object is {size} bytes as JSON, more than {limit}, the largest an object may "
            f"be ({limits.source('max_object_bytes')}); most of it is in {biggest}",
        )
    ]


def _encodes(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None
