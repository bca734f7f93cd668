"""Seed manifests in any order; ResolvedRefs False then True; EventRecorder count bumps."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import yaml

from apiary.api import EventRecorder, ReferenceResolver
from apiary.api.references import agent_refs, secret_key_refs

from .conftest import SEEDS, Api, path_of, running_api


def seeds() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(SEEDS.glob("*.yaml"))]
    assert len(docs) == 9
    return docs


def condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "ResolvedRefs":
            return c
    return None


def url_for(doc: dict[str, Any]) -> str:
    return path_of(doc["kind"], None, doc["metadata"].get("namespace", "default"))


def _shuffled(seed: int) -> Any:
    return lambda docs: random.Random(seed).sample(docs, len(docs))


ORDERS = {"reversed": lambda d: d[::-1], **{f"shuffle{s}": _shuffled(s) for s in (1, 2, 3)}}


@pytest.mark.parametrize("order", list(ORDERS))
async def test_every_seed_manifest_applies_in_any_order(api: Api, order: str) -> None:
    docs = ORDERS[order](seeds())
    hives = [d for d in docs if d["kind"] == "Hive"]
    created: set[str] = set()
    for doc in docs:
        if doc["kind"] == "Cell":  # the default cell may exist: apply = create or replace
            r = await api.client.post(url_for(doc), json=doc)
            if r.status_code == 409:
                r = await api.client.put(f"{url_for(doc)}/{doc['metadata']['name']}", json=doc)
            assert r.status_code in (200, 201), r.text
            continue
        r = await api.client.post(url_for(doc), json=doc)
        assert r.status_code == 201, (doc["metadata"]["name"], r.text)
        agents = {n for _, n, _ in agent_refs(doc.get("spec"))}
        warned = r.headers.get_list("warning")  # a Hive ahead of its AgentSpecs says so
        assert len(warned) == len(agents - created), warned
        assert all(any(f"AgentSpec '{m}' does not exist" in w for w in warned)
                   for m in agents - created), warned  # fmt: skip
        created.add(doc["metadata"]["name"])
        refs = set(agents)
        refs |= {n for _, n, _ in secret_key_refs(doc.get("spec"))}
        missing = refs - created
        if missing:  # shown as not resolved, naming what is missing
            path = f"{url_for(doc)}/{doc['metadata']['name']}"
            body = await api.wait_for(path, condition)
            cond = condition(body)
            assert cond is not None and cond["status"] == "False", cond
            assert all(f"'{m}'" in cond["message"] for m in missing), cond
    # ... and every hive and agentspec ends up resolved
    for doc in hives + [d for d in docs if d["kind"] == "AgentSpec"]:
        path = f"{url_for(doc)}/{doc['metadata']['name']}"
        await api.wait_for(path, lambda b: (condition(b) or {}).get("status") == "True")


async def test_missing_references_are_named_then_resolved(mem_api: Api) -> None:
    c = mem_api.client
    hive = next(d for d in seeds() if d["metadata"]["name"] == "pipeline-hive")
    assert (await c.post(path_of("Hive"), json=hive)).status_code == 201
    body = await mem_api.wait_for(path_of("Hive", "pipeline-hive"), condition)
    cond = condition(body)
    assert cond is not None and cond["status"] == "False"
    assert "'echo-agent'" in cond["message"] and "'llm-agent'" in cond["message"]
    assert "spec.stages[1].agentRef" in cond["message"]

    llm = next(d for d in seeds() if d["metadata"]["name"] == "llm-agent")
    assert (await c.post(path_of("AgentSpec"), json=llm)).status_code == 201
    spec = await mem_api.wait_for(path_of("AgentSpec", "llm-agent"), condition)
    assert "Secret 'api-key-secret' not found" in condition(spec)["message"]  # type: ignore[index]
    body = await mem_api.wait_for(
        path_of("Hive", "pipeline-hive"),
        lambda b: "llm-agent" not in (condition(b) or {}).get("message", "llm-agent"),
    )
    assert "'echo-agent'" in condition(body)["message"]  # type: ignore[index]

    secret = {
        "kind": "Secret",
        "metadata": {"name": "api-key-secret"},
        "stringData": {"wrong-key": "x"},
    }
    assert (await c.post(path_of("Secret"), json=secret)).status_code == 201
    await mem_api.wait_for(
        path_of("AgentSpec", "llm-agent"),
        lambda b: "has no key 'openai-api-key'" in condition(b)["message"],
    )
    secret = (await c.get(path_of("Secret", "api-key-secret"))).json()
    secret["stringData"] = {"openai-api-key": "sk"}
    assert (await c.put(path_of("Secret", "api-key-secret"), json=secret)).status_code == 200
    await mem_api.wait_for(
        path_of("AgentSpec", "llm-agent"), lambda b: condition(b)["status"] == "True"
    )

    echo = next(d for d in seeds() if d["metadata"]["name"] == "echo-agent")
    assert (await c.post(path_of("AgentSpec"), json=echo)).status_code == 201
    await mem_api.wait_for(
        path_of("Hive", "pipeline-hive"), lambda b: condition(b)["status"] == "True"
    )
    # deleting a referenced agent makes it unresolved again (level-triggered)
    assert (await c.delete(path_of("AgentSpec", "echo-agent"))).status_code == 200
    await mem_api.wait_for(
        path_of("Hive", "pipeline-hive"), lambda b: condition(b)["status"] == "False"
    )
    events = await c.get(path_of("Event"), params={"involvedObject.name": "pipeline-hive"})
    reasons = {e["reason"]: e for e in events.json()["items"]}
    assert {"UnresolvedReferences", "ResolvedReferences"} <= set(reasons)


async def test_two_resolvers_side_by_side_agree() -> None:
    async with running_api("memory://", resolver=False) as api:
        recorder = EventRecorder(api.store, component="test")
        tasks = [asyncio.create_task(ReferenceResolver(api.store, recorder).run()) for _ in "ab"]
        try:
            for doc in seeds():
                if doc["kind"] != "Cell":
                    assert (await api.client.post(url_for(doc), json=doc)).status_code == 201
            for name in ("pipeline-hive", "composed-hive", "swarm-hive"):
                await api.wait_for(
                    path_of("Hive", name), lambda b: (condition(b) or {}).get("status") == "True"
                )
            rv = await api.store.resource_version()
            await asyncio.sleep(0.2)
            assert await api.store.resource_version() == rv  # converged: nobody keeps writing
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_event_recorder_bumps_count(mem_api: Api) -> None:
    hive = (
        await mem_api.client.post(
            path_of("Hive"),
            json={
                "kind": "Hive",
                "metadata": {"name": "h"},
                "spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]},
            },
        )
    ).json()
    recorder = EventRecorder(mem_api.store, component="test")
    first = await recorder.record(hive, "Warning", "Crashed", "exit code 1")
    again = await asyncio.gather(
        *(recorder.record(hive, "Warning", "Crashed", "exit code 1") for _ in range(5))
    )
    assert first["count"] == 1 and max(e["count"] for e in again) == 6
    other = await recorder.record(hive, "Normal", "Started", "ok")
    assert other["metadata"]["name"] != first["metadata"]["name"]
    listed = (
        await mem_api.client.get(
            path_of("Event"),
            params={"involvedObject.kind": "Hive", "involvedObject.name": "h", "labelSelector": ""},
        )
    ).json()["items"]
    crashed = next(e for e in listed if e["reason"] == "Crashed")
    assert crashed["count"] == 6 and crashed["type"] == "Warning"
    assert crashed["involvedObject"]["uid"] == hive["metadata"]["uid"]
    assert crashed["firstTimestamp"] <= crashed["lastTimestamp"]
    # the events the recorder writes are valid Event objects for the API too
    r = await mem_api.client.put(path_of("Event", crashed["metadata"]["name"]), json=crashed)
    assert r.status_code == 200, r.text
