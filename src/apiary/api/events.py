"""Events: what happened to an object, for ``apiaryctl describe``.

:class:`EventRecorder` is the one way controllers record them. The same (object, type, reason,
message) bumps ``count`` and ``lastTimestamp`` of one Event instead of piling up new ones, which
is what keeps a crash-looping drone from flooding the store.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from apiary.errors import AlreadyExists
from apiary.logging import get_logger
from apiary.resources import API_VERSION
from apiary.store import Store
from apiary.store.base import now_rfc3339

EventType = Literal["Normal", "Warning"]
CLUSTER_EVENTS_CELL = "default"

log = get_logger("apiary.events")


class EventRecorder:
    def __init__(self, store: Store, component: str) -> None:
        self.store = store
        self.component = component

    @staticmethod
    def event_name(obj: dict[str, Any], type_: str, reason: str, message: str) -> str:
        meta = obj["metadata"]
        digest = hashlib.sha256(
            "\0".join(
                (
                    obj["kind"],
                    meta.get("namespace") or "",
                    meta["name"],
                    meta.get("uid") or "",
                    type_,
                    reason,
                    message,
                )
            ).encode()
        ).hexdigest()
        return f"{meta['name'][:46]}-{digest[:16]}"

    async def record(
        self, obj: dict[str, Any], type_: EventType, reason: str, message: str
    ) -> dict[str, Any]:
        """Create the Event, or bump its count if this exact one was recorded before."""
        meta = obj["metadata"]
        cell = meta.get("namespace") or CLUSTER_EVENTS_CELL
        name = self.event_name(obj, type_, reason, message)
        now = now_rfc3339(self.store.clock)

        def bump(current: dict[str, Any]) -> dict[str, Any]:
            return {**current, "count": int(current.get("count") or 1) + 1, "lastTimestamp": now}

        for _ in range(5):
            bumped = await self.store.update_with_retry("Event", cell, name, bump)
            if bumped is not None:
                return bumped
            event = {
                "apiVersion": API_VERSION,
                "kind": "Event",
                "metadata": {"name": name, "namespace": cell},
                "involvedObject": _reference(obj),
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": self.component},
            }
            try:
                return await self.store.create(event)
            except AlreadyExists:
                continue  # recorded concurrently: bump it instead
        raise RuntimeError(f"could not record event {name}")

    async def try_record(
        self, obj: dict[str, Any], type_: EventType, reason: str, message: str
    ) -> None:
        """Record, logging instead of raising: an event is never worth failing the caller."""
        try:
            await self.record(obj, type_, reason, message)
        except Exception:
            log.exception("could not record event", reason=reason, object=obj["metadata"]["name"])


def _reference(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    ref: dict[str, Any] = {"kind": obj["kind"], "name": meta["name"]}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    if meta.get("uid"):
        ref["uid"] = meta["uid"]
    return ref
