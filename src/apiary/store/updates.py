"""What an update stores: the incoming body with the server's metadata and the current status,
and the controller-owned annotations kept — one definition for :meth:`Store.update` and the API's
dry run — plus what ``generation`` tracks, and a status-only change (``update_status_many``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apiary.store.model import Mutate, Obj, StatusChange

MANAGED_METADATA = ("uid", "creationTimestamp", "generation", "deletionTimestamp")
"""Metadata only the server sets: an update keeps the stored values whatever it sends."""


def replaced(current: Obj, incoming: Obj) -> Obj:
    """What an update of ``current`` by ``incoming`` stores, before its new resourceVersion and
    generation: the incoming body with the current status, the server-managed metadata of
    ``current``, and the controller-owned annotations ``incoming`` leaves out. Shared by
    :meth:`Store.update` and the API's dry run, so the two cannot disagree."""
    new = {k: v for k, v in incoming.items() if k != "status"}
    new["status"] = current.get("status") or {}
    cur_meta = current["metadata"]
    meta = dict(incoming.get("metadata") or {})
    for managed in MANAGED_METADATA:
        if managed in cur_meta:
            meta[managed] = cur_meta[managed]
        else:
            meta.pop(managed, None)
    keep_owned_annotations(meta, cur_meta)
    new["metadata"] = meta
    return new


OWNED_ANNOTATION_PREFIX = "status.apiary.io/"
"""Annotations under this prefix belong to controllers (the autoscaler's count, say): an update
that leaves them out keeps them, as it keeps ``status`` — so re-applying a manifest changes
nothing a controller decided."""


def keep_owned_annotations(meta: Obj, current: Obj) -> None:
    owned = {k: v for k, v in (current.get("annotations") or {}).items()
             if k.startswith(OWNED_ANNOTATION_PREFIX)}  # fmt: skip
    if not owned:
        return
    annotations = dict(meta.get("annotations") or {})
    for k, v in owned.items():
        annotations.setdefault(k, v)
    meta["annotations"] = annotations


def desired_part(obj: Obj) -> Any:
    """What ``generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def status_mutation(change: StatusChange, from_stored: Callable[[Obj], Obj | None]) -> Mutate:
    """The backend mutation that sets the status ``change`` returns, nothing else, for
    :meth:`Store.update_status_many`. The backend's ``current`` is its private copy (decoded,
    or deep-copied by the memory store), so only what ``change`` may touch is copied — the top
    level and the status's keys, not the whole object twice (which was most of a status
    write)."""

    def mutate(current: Obj | None, rv: int) -> Obj | None:
        if current is None:
            return None
        old = current.get("status")
        view = {**current, "status": dict(old) if old else {}}
        wanted = change(from_stored(view) or {})
        if wanted is None or wanted.get("status") == old:
            return current
        new = {**current, "status": wanted.get("status") or {}}
        new["metadata"] = {**current["metadata"], "resourceVersion": str(rv)}
        return new

    return mutate
