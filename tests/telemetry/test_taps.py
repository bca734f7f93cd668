"""The pieces of apiary.telemetry.taps in isolation: the model a stage's tokens are counted
under, the backlog's hop times, the timed bus, and labels kept bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from apiary.api.metrics import ApiMetrics
from apiary.bus import open_bus
from apiary.store import Store, open_store
from apiary.telemetry.metrics import Recorder
from apiary.telemetry.taps import StageModels, TimedBacklog, TimedBus

Obj = dict[str, Any]


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store("memory://") as s:
        yield s


def sample(r: Recorder, name: str, **labels: str) -> float:
    return r.registry.get_sample_value(name, labels) or 0.0


async def test_a_stage_counts_under_its_agentspecs_model(store: Store) -> None:
    await store.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "c"}})
    llm = {"provider": {"secretRef": {"name": "openai"}}, "model": "gpt-4o-mini"}
    for name, extra in (("writer", {"llm": llm}), ("plain", {})):
        await store.create({
            "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": name, "namespace": "c"},
            "spec": {"runtime": {"command": ["cat"]}, **extra},
        })  # fmt: skip
    await store.create({
        "apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": {"name": "h", "namespace": "c"},
        "spec": {"pattern": "pipeline", "stages": [{"name": "draft", "agentRef": "writer"},
                                                   {"name": "check", "agentRef": "plain"}]},
    })  # fmt: skip
    now = [0.0]
    models = StageModels(store, ttl=60, clock=lambda: now[0])
    assert await models.model("c", "h", "draft") == "gpt-4o-mini"
    assert await models.model("c", "h", "check") == ""
    assert await models.model("c", "gone", "draft") == ""  # a deleted hive: unnamed, no error
    await store.delete("Hive", "c", "h")
    assert await models.model("c", "h", "draft") == "gpt-4o-mini"  # cached for ttl
    now[0] = 61
    assert await models.model("c", "h", "draft") == ""


async def test_a_stage_without_an_llm_of_its_own_counts_under_its_cells(store: Store) -> None:
    """As its drones get it (``merged_llm``): the Cell's provider and model."""
    cell_llm = {"provider": {"secretRef": {"name": "openai"}}, "model": "gpt-4o"}
    await store.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "c"},
                        "spec": {"llm": cell_llm}})  # fmt: skip
    await store.create({
        "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
        "metadata": {"name": "plain", "namespace": "c"}, "spec": {"runtime": {"command": ["cat"]}},
    })  # fmt: skip
    await store.create({
        "apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": {"name": "h", "namespace": "c"},
        "spec": {"pattern": "pipeline", "stages": [{"name": "check", "agentRef": "plain"}]},
    })  # fmt: skip
    assert await StageModels(store).model("c", "h", "check") == "gpt-4o"


def test_the_backlog_times_each_answered_dispatch_once() -> None:
    now = [100.0]
    r = Recorder(CollectorRegistry())
    backlog = TimedBacklog(clock=lambda: now[0], recorder=r)
    backlog.published("c", "h", "s", "c/x", "d1", 0)
    now[0] = 100.25
    backlog.handled("c", "h", "s", "c/x", "d1", 0)
    assert backlog.hops == {("c/x", "d1"): 0.25}
    backlog.handled("c", "h", "s", "c/x", "d1", 0)  # a duplicate answer: no second hop
    assert backlog.hops == {("c/x", "d1"): 0.25} and backlog.count("c", "h", "s") == 0
    assert sample(r, "apiary_stage_dispatches_total", cell="c", hive="h", stage="s") == 1


def test_answers_keep_reasons_bounded_and_split_queue_wait_from_agent_time() -> None:
    r = Recorder(CollectorRegistry())
    where = {"cell": "c", "hive": "h", "stage": "s"}
    r.answered("c", "h", "s", "retry", reason="ResponseTimeout", hop_seconds=3.0,
               agent_seconds=2.0)  # fmt: skip
    r.answered("c", "h", "s", "error", reason="a reason an agent made up")
    assert sample(r, "apiary_stage_errors_total", **where, reason="ResponseTimeout") == 1
    assert sample(r, "apiary_stage_errors_total", **where, reason="other") == 1
    assert sample(r, "apiary_stage_queue_wait_seconds_sum", **where) == 1.0
    assert sample(r, "apiary_agent_duration_seconds_sum", **where) == 2.0
    assert sample(r, "apiary_stage_messages_total", **where, outcome="retry") == 1


async def test_the_timed_bus_times_publishes_and_passes_the_rest_through() -> None:
    r = Recorder(CollectorRegistry())
    got: list[bytes] = []

    async def handler(delivery: Any) -> None:
        got.append(delivery.data)
        await delivery.ack()

    async with open_bus("memory://") as inner:
        bus = TimedBus(inner, r)
        sub = await bus.subscribe("t.>", "g", handler)
        await bus.publish("t.a", b"1")
        await bus.publish_many([("t.b", b"2"), ("t.c", b"3")])
        for _ in range(100):
            if len(got) == 3:
                break
            await asyncio.sleep(0.01)
        await sub.drain()
    assert sorted(got) == [b"1", b"2", b"3"]
    assert sample(r, "apiary_bus_publish_duration_seconds_count", result="ok") == 2


def test_exemplars_carry_the_trace_id_in_the_openmetrics_format() -> None:
    r = Recorder(CollectorRegistry())
    trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    r.answered("c", "h", "s", "ok", hop_seconds=0.3, agent_seconds=0.2, exemplar=trace)
    api = ApiMetrics(CollectorRegistry())
    api.attach(r.registry)
    body, content_type = api.negotiate("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert '# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.3' in text
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    plain, plain_type = api.negotiate("text/plain")
    assert plain_type.startswith("text/plain") and b"trace_id" not in plain
