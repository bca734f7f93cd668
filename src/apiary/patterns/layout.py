"""How the engine sees a Hive: an ordered list of segments, each one pattern over its stages.

A plain hive is one segment (``name`` None); a composed hive has one per ``patternSegments``
entry. Stage names come from :func:`apiary.controllers.templates.hive_stages`, the same function
the controllers use to label drones (``apiary.io/stage``), so a dispatch for stage ``S`` lands on
the drones the controllers made for ``S`` — including composed names ``{segment}-{entry}``.

The hive is normally admitted already; the checks here only guard against a hand-made dict, and
report the field by path (``spec.swarm.rounds``) rather than failing later in the middle of a
session.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from apiary.controllers.templates import hive_stages
from apiary.errors import FieldDetail, Invalid

PATTERNS = ("pipeline", "hierarchical", "swarm", "event-driven")
AGGREGATIONS = ("all", "first", "majority")
DEFAULT_MAX_TURNS = 10
DEFAULT_MAX_HOPS = 8


@dataclass(frozen=True)
class StageInfo:
    """One stage as the router addresses it, with what the patterns read from its entry."""

    name: str
    role: str | None = None
    filter_type: str | None = None
    filter_metadata: dict[str, str] = field(default_factory=dict)
    max_turns: int | None = None
    """The stage's own ``guardrails.maxTurns`` (a supervisor's wins over the Hive's)."""

    def matches(self, event_type: str, metadata: dict[str, str]) -> bool:
        """Event-driven filter: every condition given must hold; no conditions match all."""
        if self.filter_type is not None and self.filter_type != event_type:
            return False
        return all(metadata.get(k) == v for k, v in self.filter_metadata.items())


@dataclass(frozen=True)
class Segment:
    """One pattern over its stages, with the settings that pattern reads."""

    index: int
    name: str | None
    pattern: str
    stages: tuple[StageInfo, ...]
    aggregation: str = "all"
    rounds: int = 1
    max_hops: int = DEFAULT_MAX_HOPS
    max_turns: int = DEFAULT_MAX_TURNS

    @property
    def supervisor(self) -> str:
        """The stage with ``role: supervisor``, else the first (hierarchical)."""
        for stage in self.stages:
            if stage.role == "supervisor":
                return stage.name
        return self.stages[0].name

    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]


class _Reader:
    """Reads optional settings, collecting every problem before raising one Invalid."""

    def __init__(self) -> None:
        self.problems: list[FieldDetail] = []

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(FieldDetail(path, "must be a mapping"))
            return {}
        return value

    def integer(self, value: Any, path: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problems.append(FieldDetail(path, f"must be a positive integer, got {value!r}"))
            return default
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            self.problems.append(FieldDetail(path, f"must be one of {', '.join(choices)}"))
            return default
        return str(value)

    def stage(self, name: str, config: dict[str, Any], path: str) -> StageInfo:
        role = config.get("role")
        if role is not None and role not in ("supervisor", "worker"):
            self.problems.append(FieldDetail(f"{path}.role", "must be supervisor or worker"))
            role = None
        flt = self.mapping(config.get("filter"), f"{path}.filter")
        ftype = flt.get("type")
        if ftype is not None and not isinstance(ftype, str):
            self.problems.append(FieldDetail(f"{path}.filter.type", "must be a string"))
            ftype = None
        meta = self.mapping(flt.get("metadata"), f"{path}.filter.metadata")
        for key, value in meta.items():
            if not isinstance(value, str):
                self.problems.append(
                    FieldDetail(f"{path}.filter.metadata.{key}", "must be a string")
                )
        clean = {str(k): v for k, v in meta.items() if isinstance(v, str)}
        guardrails = self.mapping(config.get("guardrails"), f"{path}.guardrails")
        turns = self.integer(guardrails.get("maxTurns"), f"{path}.guardrails.maxTurns", 0)
        return StageInfo(name, role, ftype, clean, turns or None)


def layout(hive: Any) -> list[Segment]:
    """The segments of ``hive`` (a Hive object in wire form). Raises :class:`Invalid` naming
    each field the engine cannot route by."""
    if not isinstance(hive, dict) or not isinstance(hive.get("spec"), dict):
        raise Invalid("a Hive needs a spec", [FieldDetail("spec", "field required")])
    spec: dict[str, Any] = hive["spec"]
    stages, errors = hive_stages(hive)
    read = _Reader()
    read.problems.extend(FieldDetail(f, m) for f, m in errors)
    guardrails = read.mapping(spec.get("guardrails"), "spec.guardrails")
    hive_turns = read.integer(guardrails.get("maxTurns"), "spec.guardrails.maxTurns", 0)
    segments: list[Segment] = []
    if spec.get("patternSegments") is None:
        pattern = read.choice(spec.get("pattern"), "spec.pattern", PATTERNS, "pipeline")
        swarm = read.mapping(spec.get("swarm"), "spec.swarm")
        events = read.mapping(spec.get("eventDriven"), "spec.eventDriven")
        infos = [read.stage(s.name, s.config, s.field) for s in stages]
        settings = {
            "aggregation": swarm.get("aggregation"),
            "rounds": swarm.get("rounds"),
            "maxHops": events.get("maxHops"),
        }
        paths = {"aggregation": "spec.swarm", "rounds": "spec.swarm", "maxHops": "spec.eventDriven"}
        segments.append(_segment(read, 0, None, pattern, infos, settings, paths, hive_turns))
    else:
        raw = spec["patternSegments"]
        for s, entry in enumerate(raw if isinstance(raw, list) else []):
            path = f"spec.patternSegments[{s}]"
            entry = read.mapping(entry, path)
            name = str(entry.get("name") or f"segment{s}")
            pattern = read.choice(entry.get("pattern"), f"{path}.pattern", PATTERNS, "pipeline")
            config = read.mapping(entry.get("config"), f"{path}.config")
            own = [st for st in stages if st.segment == name]
            infos = [read.stage(st.name, st.config, st.field) for st in own]
            settings = {k: config.get(k) for k in ("aggregation", "rounds", "maxHops")}
            paths = dict.fromkeys(settings, f"{path}.config")
            segments.append(_segment(read, s, name, pattern, infos, settings, paths, hive_turns))
    if not segments:
        read.problems.append(FieldDetail("spec.patternSegments", "no segments to route through"))
    if read.problems:
        name = (hive.get("metadata") or {}).get("name", "?")
        raise Invalid(f"hive {name!r} cannot be routed", read.problems)
    return segments


def _segment(
    read: _Reader,
    index: int,
    name: str | None,
    pattern: str,
    stages: list[StageInfo],
    settings: dict[str, Any],
    paths: dict[str, str],
    hive_turns: int,
) -> Segment:
    if not stages:
        where = "spec.stages" if name is None else f"spec.patternSegments[{index}].config"
        read.problems.append(FieldDetail(where, "no stages to route to"))
        stages = [StageInfo("?")]
    aggregation = read.choice(
        settings["aggregation"], f"{paths['aggregation']}.aggregation", AGGREGATIONS, "all"
    )
    rounds = read.integer(settings["rounds"], f"{paths['rounds']}.rounds", 1)
    fallback_hops = hive_turns or DEFAULT_MAX_HOPS
    max_hops = read.integer(settings["maxHops"], f"{paths['maxHops']}.maxHops", fallback_hops)
    segment = Segment(index, name, pattern, tuple(stages), aggregation, rounds, max_hops)
    supervisor = next(s for s in stages if s.name == segment.supervisor)
    turns = supervisor.max_turns or hive_turns or DEFAULT_MAX_TURNS
    return dataclasses.replace(segment, max_turns=turns)
