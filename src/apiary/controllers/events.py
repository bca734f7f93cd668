"""Recording Events: what happened to an object, shown by ``apiaryctl describe``.

An Event is named after its involved object plus a hash of (object uid, reason, message), so
the same occurrence recorded again — by this controller on its next pass, or by a second
controller instance — bumps ``count`` and ``lastTimestamp`` of one object instead of piling up.
The wire shape follows Kubernetes' core/v1 Event (fields at the top level, no ``spec``).
"""

from __future__ import annotations

import logging

from apiary.controllers.meta import Obj, dns_name, rfc3339, short_hash
from apiary.controllers.settings import QueenSettings
from apiary.errors import AlreadyExists, ApiaryError
from apiary.resources import API_VERSION
from apiary.store import Store

log = logging.getLogger("apiary.controllers.events")

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    def __init__(self, store: Store, settings: QueenSettings) -> None:
        self.store = store
        self.settings = settings

    async def record(self, involved: Obj, reason: str, message: str, *, type: str = NORMAL) -> None:
        """Record (or count again) an Event about ``involved``; never raises, because failing
        to write an Event must not fail the reconcile that caused it."""
        try:
            await self._record(involved, reason, message, type)
        except ApiaryError as exc:
            meta = involved["metadata"]
            log.warning(
                "could not record an event",
                extra={
                    "reason": reason,
                    "kind": involved.get("kind"),
                    "cell": meta.get("namespace"),
                    "object": meta.get("name"),
                    "error": exc.message,
                },
            )

    async def _record(self, involved: Obj, reason: str, message: str, etype: str) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        identity = [involved["kind"], meta["name"], meta.get("uid"), reason, message]
        name = dns_name(meta["name"], suffix=short_hash(identity, 10))
        now = rfc3339(self.settings.clock())

        def bump(current: Obj) -> Obj:
            current["count"] = int(current.get("count") or 1) + 1
            current["lastTimestamp"] = now
            return current

        if await self.store.update_with_retry("Event", namespace, name, bump) is not None:
            return
        event: Obj = {
            "apiVersion": API_VERSION,
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"apiary.io/involved-kind": involved["kind"].lower()},
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", API_VERSION),
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace") or None,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": etype,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.settings.events.component},
        }
        try:
            await self.store.create(event)
        except AlreadyExists:  # another instance recorded it between our read and create
            await self.store.update_with_retry("Event", namespace, name, bump)
