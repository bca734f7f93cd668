"""Cascading deletion through ``ownerReferences``, and of everything in a deleted Cell.

Dependents go first, then the owner: if the process dies half-way the owner still exists and the
delete can simply be repeated, so nothing is ever orphaned. Controllers that delete objects should
call :func:`cascade_delete` too, so they mean the same thing as the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from apiary.errors import Conflict, NotFound
from apiary.resources import KINDS
from apiary.store import Store

_NAMESPACED = tuple(k.kind for k in KINDS if k.namespaced)
_ALL = tuple(k.kind for k in KINDS)

OnDeleted = Callable[[dict[str, Any]], Awaitable[None]]
"""Called with the last body of every object the cascade deleted (e.g. to clear its Comb)."""


async def cascade_delete(
    store: Store,
    kind: str,
    namespace: str,
    name: str,
    *,
    resource_version: str | None = None,
    on_deleted: OnDeleted | None = None,
) -> dict[str, Any]:
    """Delete an object and, first, everything it owns (recursively). Returns its last body."""
    obj = await store.get(kind, namespace, name)
    if resource_version and resource_version != obj["metadata"]["resourceVersion"]:
        raise Conflict(
            f"{kind} {name!r} was modified: resourceVersion {resource_version} is stale "
            f"(now {obj['metadata']['resourceVersion']})"
        )
    await _delete_dependents(store, obj, {obj["metadata"]["uid"]}, on_deleted)
    last = await store.delete(kind, namespace, name, resource_version=resource_version)
    if on_deleted is not None:
        await on_deleted(last)
    return last


async def _delete_dependents(
    store: Store, owner: dict[str, Any], seen: set[str], on_deleted: OnDeleted | None = None
) -> None:
    meta = owner["metadata"]
    uid = meta["uid"]
    owner_ns = meta.get("namespace") or ""
    if owner["kind"] == "Cell":
        for kind in _NAMESPACED:
            for item in (await store.list(kind, meta["name"])).items:
                await _delete_one(store, item, seen, on_deleted)
    kinds = _NAMESPACED if owner_ns else _ALL
    for kind in kinds:
        listed = await store.list(kind, owner_ns or None)
        for item in listed.items:
            refs = item["metadata"].get("ownerReferences") or []
            if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                await _delete_one(store, item, seen, on_deleted)


async def _delete_one(
    store: Store, obj: dict[str, Any], seen: set[str], on_deleted: OnDeleted | None = None
) -> None:
    uid = obj["metadata"]["uid"]
    if uid in seen:
        return
    seen.add(uid)
    await _delete_dependents(store, obj, seen, on_deleted)
    try:
        last = await store.delete(
            obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
        )
    except NotFound:
        return  # someone else deleted it meanwhile: what we wanted
    if on_deleted is not None:
        await on_deleted(last)
