"""Cascading deletion through ``ownerReferences``, and of everything in a deleted Cell.

Dependents go first, then the owner: if the process dies half-way the owner still exists and the
delete can simply be repeated, so nothing is ever orphaned. Controllers that delete objects should
call :func:`cascade_delete` too, so they mean the same thing as the API.
"""

from __future__ import annotations

from typing import Any

from apiary.errors import Conflict, NotFound
from apiary.resources import KINDS
from apiary.store import Store

_NAMESPACED = tuple(k.kind for k in KINDS if k.namespaced)
_ALL = tuple(k.kind for k in KINDS)


async def cascade_delete(
    store: Store, kind: str, namespace: str, name: str, *, resource_version: str | None = None
) -> dict[str, Any]:
    """Delete an object and, first, everything it owns (recursively). Returns its last body."""
    obj = await store.get(kind, namespace, name)
    if resource_version and resource_version != obj["metadata"]["resourceVersion"]:
        raise Conflict(
            f"{kind} {name!r} was modified: resourceVersion {resource_version} is stale "
            f"(now {obj['metadata']['resourceVersion']})"
        )
    await _delete_dependents(store, obj, {obj["metadata"]["uid"]})
    return await store.delete(kind, namespace, name, resource_version=resource_version)


async def _delete_dependents(store: Store, owner: dict[str, Any], seen: set[str]) -> None:
    meta = owner["metadata"]
    uid = meta["uid"]
    owner_ns = meta.get("namespace") or ""
    if owner["kind"] == "Cell":
        for kind in _NAMESPACED:
            for item in (await store.list(kind, meta["name"])).items:
                await _delete_one(store, item, seen)
    kinds = _NAMESPACED if owner_ns else _ALL
    for kind in kinds:
        listed = await store.list(kind, owner_ns or None)
        for item in listed.items:
            refs = item["metadata"].get("ownerReferences") or []
            if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                await _delete_one(store, item, seen)


async def _delete_one(store: Store, obj: dict[str, Any], seen: set[str]) -> None:
    uid = obj["metadata"]["uid"]
    if uid in seen:
        return
    seen.add(uid)
    await _delete_dependents(store, obj, seen)
    try:
        await store.delete(
            obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
        )
    except NotFound:
        pass  # someone else deleted it meanwhile: what we wanted
