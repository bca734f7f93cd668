"""Cascading deletion through ``ownerReferences``, and of everything in a deleted Cell.

The owner goes first, then what it owns (Kubernetes' background deletion): deleting a Hive's
drones first would let the Queen, seeing the Hive still there, recreate them in between. If the
process dies half-way, the dependents are orphans and the Queen's garbage collector deletes them.
A Cell is the exception — its contents go first, so a half-deleted Cell can be deleted again;
the Tokens bound to it are deleted with it.
Controllers that delete objects should call :func:`cascade_delete` too, so they mean the same
thing as the API.
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
    seen = {obj["metadata"]["uid"]}
    if kind == "Cell":
        await _delete_dependents(store, obj, seen, on_deleted)
    last = await store.delete(kind, namespace, name, resource_version=resource_version)
    if on_deleted is not None:
        await on_deleted(last)
    if kind != "Cell":
        await _delete_dependents(store, obj, seen, on_deleted)
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
        # Tokens bound to the cell go with it: a new Cell of the same name is not theirs.
        for token in (await store.list("Token", None)).items:
            if (token.get("spec") or {}).get("cell") == meta["name"]:
                await _delete_one(store, token, seen, on_deleted)
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
    try:
        last = await store.delete(
            obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
        )
    except NotFound:
        last = None  # someone else deleted it meanwhile: what we wanted
    await _delete_dependents(store, obj, seen, on_deleted)
    if last is None:
        return
    if on_deleted is not None:
        await on_deleted(last)
