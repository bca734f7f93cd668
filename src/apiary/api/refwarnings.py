"""Warnings (the HTTP ``Warning`` header ``apiaryctl`` prints) about references that dangle.

Objects may be applied in any order, so a Hive naming an AgentSpec that does not exist yet is
accepted — the ``ResolvedRefs`` condition (:mod:`apiary.api.refs`) tracks it. But the person who
applied it should hear at once, as kubectl users hear of unknown fields: a create, replace or
patch of a Hive warns for each ``agentRef`` its Cell has no AgentSpec for, and deleting an
AgentSpec warns for each Hive that still names it (its stages cannot start new drones).
"""

from __future__ import annotations

from typing import Any

from apiary.api.references import agent_refs
from apiary.errors import NotFound
from apiary.store import Store

Obj = dict[str, Any]

MAX_WARNINGS = 10
"""Warnings one answer carries at most (a 64-stage Hive of unknown agents says 10 and a count)."""


async def dangling_agent_refs(store: Store, obj: Obj) -> list[str]:
    """For a Hive: a warning per AgentSpec it names that its Cell does not have."""
    if obj.get("kind") != "Hive":
        return []
    cell = obj["metadata"].get("namespace") or ""
    paths: dict[str, list[str]] = {}
    for path, name, _ in agent_refs(obj.get("spec")):
        paths.setdefault(name, []).append(path)
    out: list[str] = []
    for name, where in paths.items():
        try:
            await store.get("AgentSpec", cell, name)
        except NotFound:
            out.append(
                f"{', '.join(where)}: AgentSpec {name!r} does not exist in cell {cell!r} "
                "(yet): its stages start no drones until it does"
            )
    return _capped(out)


async def users_of_agentspec(store: Store, cell: str, name: str) -> list[str]:
    """For an AgentSpec being deleted: a warning per Hive of its Cell that still names it."""
    out: list[str] = []
    token: str | None = None
    while True:
        page = await store.list("Hive", cell, limit=500, continue_token=token)
        for hive in page.items:
            where = [p for p, ref, _ in agent_refs(hive.get("spec")) if ref == name]
            if where:
                out.append(
                    f"hive/{hive['metadata']['name']} still names AgentSpec {name!r} "
                    f"({', '.join(where)}): those stages start no new drones"
                )
        token = page.continue_token
        if not token:
            return _capped(out)


def _capped(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return [*warnings[:MAX_WARNINGS], f"… and {len(warnings) - MAX_WARNINGS} more"]
