"""Garbage collection: objects whose controlling owner is gone, and Events past their TTL.

The API deletes dependents when an owner is deleted (cascading deletion through
``ownerReferences``); this sweep is the safety net for a cascade that was interrupted (a crash
between the owner's deletion and its dependents'), and for an owner deleted and recreated under
the same name (its uid differs, so the old dependents are orphans).
"""

from __future__ import annotations

import logging

from apiary.controllers.meta import Obj, controller_ref, parse_time, terminating
from apiary.controllers.settings import QueenSettings
from apiary.errors import Conflict, NotFound
from apiary.resources import lookup_kind
from apiary.store import Store

log = logging.getLogger("apiary.controllers.gc")

DEPENDENT_KINDS = ("Drone", "Session")
"""Kinds whose orphans are collected."""


class GarbageCollector:
    def __init__(self, store: Store, settings: QueenSettings) -> None:
        self.store = store
        self.settings = settings

    async def run_once(self) -> list[str]:
        """One sweep; returns ``Kind/namespace/name`` of everything deleted."""
        deleted: list[str] = []
        owners: dict[tuple[str, str, str], str | None] = {}
        for kind in DEPENDENT_KINDS:
            for obj in (await self.store.list(kind)).items:
                ref = controller_ref(obj)
                if ref is None or terminating(obj):
                    continue
                alive = await self._owner_alive(obj, ref, owners)
                if not alive and await self._delete(obj):
                    deleted.append(self._describe(obj))
        deleted.extend(await self._expire_events())
        return deleted

    async def _owner_alive(
        self, obj: Obj, ref: Obj, cache: dict[tuple[str, str, str], str | None]
    ) -> bool:
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        info = lookup_kind(kind)
        if info is None or not name:
            return True  # an owner kind we do not know: not ours to judge
        namespace = str(obj["metadata"].get("namespace") or "") if info.namespaced else ""
        key = (info.kind, namespace, name)
        if key not in cache:
            try:
                owner = await self.store.get(info.kind, namespace, name)
                cache[key] = owner["metadata"].get("uid")
            except NotFound:
                cache[key] = None
        uid = cache[key]
        return uid is not None and (not ref.get("uid") or ref.get("uid") == uid)

    async def _delete(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        try:
            await self.store.delete(
                obj["kind"],
                meta.get("namespace") or "",
                meta["name"],
                resource_version=meta["resourceVersion"],
            )
            return True
        except (NotFound, Conflict):
            return False

    async def _expire_events(self) -> list[str]:
        now = self.settings.clock()
        ttl = self.settings.events.ttl
        gone: list[str] = []
        for event in (await self.store.list("Event")).items:
            last = parse_time(event.get("lastTimestamp")) or parse_time(
                event["metadata"].get("creationTimestamp")
            )
            if (
                last is not None
                and (now - last).total_seconds() > ttl
                and await self._delete(event)
            ):
                gone.append(self._describe(event))
        return gone

    @staticmethod
    def _describe(obj: Obj) -> str:
        meta = obj["metadata"]
        return f"{obj['kind']}/{meta.get('namespace') or ''}/{meta['name']}"
