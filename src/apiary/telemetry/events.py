"""Counting Events as they are recorded: autoscaler decisions and everything else controllers say.

Why a watch and not a scrape-time list: an Event is counted again (``count`` + 1) and expires, so
the objects in the store cannot give a counter that only goes up. Watching the change log from
apiaryd's start sees each recording once: an added Event counts 1, each update (a recount) 1
more. Every apiaryd replica watches the same log, so every replica reports the same counts
(aggregate with ``max``); a restart starts from zero, as counters do.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter

from apiary.errors import ApiaryError, Gone
from apiary.store import Store

log = logging.getLogger("apiary.telemetry")

RETRY_SECONDS = 5.0
"""Wait before watching again after the store failed us."""


class EventMetrics:
    """``apiary_events_total`` and ``apiary_autoscaler_decisions_total``, fed by :meth:`run`."""

    def __init__(self, store: Store, registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "apiary_events",
            "Events recorded (each recount too), by the involved object's kind, reason and type",
            ["cell", "kind", "reason", "type"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "apiary_autoscaler_decisions",
            "stage scalings the autoscaler made (its ScaledUp/ScaledDown Events), by direction",
            ["cell", "hive", "direction"],
            registry=self.registry,
        )

    def count(self, event: dict[str, object]) -> None:
        involved = event.get("involvedObject")
        inv = involved if isinstance(involved, dict) else {}
        meta = event.get("metadata")
        cell = str((meta if isinstance(meta, dict) else {}).get("namespace") or "")
        kind, reason = str(inv.get("kind") or ""), str(event.get("reason") or "")
        self.events.labels(cell, kind, reason, str(event.get("type") or "Normal")).inc()
        if kind == "Hive" and reason in ("ScaledUp", "ScaledDown"):
            direction = "up" if reason == "ScaledUp" else "down"
            self.decisions.labels(cell, str(inv.get("name") or ""), direction).inc()

    async def run(self) -> None:
        """Watch Events until cancelled; store trouble is logged and retried, never raised."""
        since: int | None = None
        while True:
            try:
                if since is None:
                    since = await self.store.resource_version()
                async for change in self.store.watch("Event", None, since=since):
                    since = change.rv
                    if change.type in ("ADDED", "MODIFIED"):
                        self.count(change.object)
            except Gone:  # compacted past us: what happened meanwhile is not counted
                since = None
            except (ApiaryError, OSError) as exc:
                log.warning("event metrics: watch failed, retrying", extra={"error": str(exc)})
                await asyncio.sleep(RETRY_SECONDS)
