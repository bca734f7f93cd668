"""Duplicate-name checks for a Hive, run on the raw input.

They look at the input rather than the validated model so that a duplicate stage name is
reported together with, say, a bad ``replicas`` elsewhere in the same hive: a model-level check
would only run once every field of the spec had validated.
"""

from __future__ import annotations

from typing import Any

from apiary.resources.base import Loc

DEFAULT_PREFIX = {"agents": "agent", "subscribers": "subscriber"}
"""Unnamed swarm agents and subscribers are named ``agent1``, ``subscriber1``... by position."""


def _duplicates(items: list[Any], at: Loc, prefix: str | None, out: list[tuple[Loc, str]]) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        name = item.get("name")
        if name is None and prefix is not None:
            name = f"{prefix}{index + 1}"
        if not isinstance(name, str):
            continue
        if name in seen:
            out.append(
                ((*at, index, "name"), f"duplicate name {name!r} (also at index {seen[name]})")
            )
        else:
            seen[name] = index


def duplicate_names(spec: Any) -> list[tuple[Loc, str]]:
    """Stage, segment and segment-member names used twice, as (location in spec, message)."""
    out: list[tuple[Loc, str]] = []
    if not isinstance(spec, dict):
        return out
    stages = spec.get("stages")
    if isinstance(stages, list):
        _duplicates(stages, ("stages",), None, out)
    segments = spec.get("patternSegments")
    if not isinstance(segments, list):
        return out
    _duplicates(segments, ("patternSegments",), None, out)
    for index, segment in enumerate(segments):
        config = segment.get("config") if isinstance(segment, dict) else None
        if not isinstance(config, dict):
            continue
        for key in ("stages", "agents", "subscribers"):
            members = config.get(key)
            if isinstance(members, list):
                at: Loc = ("patternSegments", index, "config", key)
                _duplicates(members, at, DEFAULT_PREFIX.get(key), out)
    return out
