"""Events are counted once per recording as they happen, autoscaler decisions by direction."""

from __future__ import annotations

import asyncio
import contextlib

from apiary.controllers import QueenSettings
from apiary.controllers.events import EventRecorder
from apiary.store import open_store
from apiary.telemetry.events import EventMetrics


async def test_recordings_and_recounts_are_counted_and_scalings_by_direction() -> None:
    async with open_store("memory://") as store:
        await store.create({"apiVersion": "apiary.io/v1", "kind": "Cell",
                            "metadata": {"name": "c"}})  # fmt: skip
        hive = await store.create({
            "apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": "h", "namespace": "c"},
            "spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]},
        })  # fmt: skip
        metrics = EventMetrics(store)
        task = asyncio.create_task(metrics.run())
        await asyncio.sleep(0.05)  # watching from now on
        events = EventRecorder(store, QueenSettings())
        await events.record(hive, "ScaledUp", "stage s: 1 -> 3 replicas: backlog")
        await events.record(hive, "ScaledUp", "stage s: 1 -> 3 replicas: backlog")  # a recount
        await events.record(hive, "ScaledDown", "stage s: 3 -> 1 replicas: idle")
        await events.record(hive, "FailedCreate", "quota", type="Warning")

        def value(name: str, **labels: str) -> float:
            return metrics.registry.get_sample_value(name, labels) or 0.0

        for _ in range(100):
            if value("apiary_events_total", cell="c", kind="Hive", reason="FailedCreate",
                     type="Warning"):  # fmt: skip
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    up = {"cell": "c", "hive": "h"}
    assert value("apiary_autoscaler_decisions_total", **up, direction="up") == 2
    assert value("apiary_autoscaler_decisions_total", **up, direction="down") == 1
    assert value("apiary_events_total", cell="c", kind="Hive", reason="ScaledUp",
                 type="Normal") == 2  # fmt: skip
    assert value("apiary_events_total", cell="c", kind="Hive", reason="FailedCreate",
                 type="Warning") == 1  # fmt: skip
