"""Admission limits (issue 10.1) against the real app under uvicorn: what one object may ask for,
the server's defaults for a cell without a quota, a Cell's quota lowering them, and ``/scale``
bounded the same way. Every refusal is a 422 naming the field and the limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apiary.resources.limits import AdmissionLimits

from .conftest import Api, path_of, sample, served_api

DEFAULTS = AdmissionLimits()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with served_api("memory://") as running:
        yield running


def hive(name: str, stages: list[dict[str, Any]], cell: str = "default") -> dict[str, Any]:
    body = sample("Hive", name, cell)
    body["spec"]["stages"] = stages
    return body


def details(r: Any) -> dict[str, str]:
    return {d["field"]: d["message"] for d in r.json().get("details", [])}


async def cell(api: Api, name: str, **quota: Any) -> None:
    body = sample("Cell", name)
    body["spec"] = {"resourceQuota": quota} if quota else {}
    r = await api.client.post("/api/v1/cells", json=body)
    assert r.status_code == 201, r.text


async def test_a_stage_with_a_quintillion_replicas_is_refused(api: Api) -> None:
    body = hive("huge", [{"name": "s", "agentRef": "a", "replicas": 10**18}])
    r = await api.client.post(path_of("Hive"), json=body)  # no Cell object at all: defaults
    assert r.status_code == 422, r.text
    message = details(r)["spec.stages[0].replicas"]
    assert "1000000000000000000 is more than 1000" in message and "server's limit" in message
    assert (await api.client.get(path_of("Hive", "huge"))).status_code == 404
    ok = hive("ok", [{"name": "s", "agentRef": "a", "replicas": DEFAULTS.max_replicas_per_stage}])
    assert (await api.client.post(path_of("Hive"), json=ok)).status_code == 201
    ok["spec"]["stages"][0]["replicas"] += 1
    r = await api.client.put(path_of("Hive", "ok"), json=ok)  # updates too
    assert r.status_code == 422 and "spec.stages[0].replicas" in details(r)


async def test_twenty_thousand_stages_are_refused(api: Api) -> None:
    stages = [{"name": f"s{i}", "agentRef": "a"} for i in range(20_000)]
    r = await api.client.post(path_of("Hive"), json=hive("wide", stages))
    assert r.status_code == 422, r.text
    assert details(r) == {
        "spec.stages": "20000 stages, more than 64, the most a Hive may have (the server's limit)"
    }
    members = [{"agentRef": "a"} for _ in range(40)]
    composed = sample("Hive", "composed")
    composed["spec"] = {
        "patternSegments": [
            {"name": f"seg{i}", "pattern": "swarm", "config": {"agents": members}} for i in range(2)
        ]
    }
    r = await api.client.post(path_of("Hive"), json=composed)
    assert r.status_code == 422 and "80 stages, more than 64" in details(r)["spec.patternSegments"]


async def test_scale_is_bounded_like_a_stage(api: Api) -> None:
    body = hive("h", [{"name": "s", "agentRef": "a"}])
    assert (await api.client.post(path_of("Hive"), json=body)).status_code == 201
    r = await api.client.put(f"{path_of('Hive', 'h')}/scale", json={"replicas": 1_000_000_000})
    assert r.status_code == 422, r.text
    assert "1000000000 is more than 1000" in details(r)["replicas"]
    hive_now = (await api.client.get(path_of("Hive", "h"))).json()
    assert hive_now["spec"]["stages"][0]["replicas"] == 1  # nothing was written
    r = await api.client.put(f"{path_of('Hive', 'h')}/scale", json={"replicas": 1000})
    assert r.status_code == 200, r.text


async def test_agentspec_replicas_are_bounded(api: Api) -> None:
    spec = sample("AgentSpec", "a")
    spec["spec"]["replicas"] = 5000
    r = await api.client.post(path_of("AgentSpec"), json=spec)
    assert r.status_code == 422 and "5000 is more than 1000" in details(r)["spec.replicas"]
    spec["spec"].pop("replicas")
    spec["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 10**9}
    r = await api.client.post(path_of("AgentSpec"), json=spec)
    assert r.status_code == 422 and "spec.scaling.maxReplicas" in details(r)


async def test_a_cell_quota_lowers_the_limits_and_names_itself(api: Api) -> None:
    await cell(api, "small", maxReplicasPerStage=5, maxStagesPerHive=2, maxObjectBytes=4096)
    r = await api.client.post(
        path_of("Hive", None, "small"),
        json=hive("h", [{"name": "s", "agentRef": "a", "replicas": 6}], "small"),
    )
    assert r.status_code == 422
    assert details(r)["spec.stages[0].replicas"] == (
        "6 is more than 5, the most replicas a stage may have "
        "(resourceQuota.maxReplicasPerStage of cell 'small')"
    )
    three = [{"name": f"s{i}", "agentRef": "a"} for i in range(3)]
    r = await api.client.post(path_of("Hive", None, "small"), json=hive("h", three, "small"))
    assert r.status_code == 422
    assert "maxStagesPerHive of cell 'small'" in details(r)["spec.stages"]
    big = sample("AgentSpec", "big", "small")
    big["spec"]["runtime"]["env"] = [{"name": f"V{i}", "value": "x" * 100} for i in range(50)]
    r = await api.client.post(path_of("AgentSpec", None, "small"), json=big)
    assert r.status_code == 422, r.text
    assert "more than 4096" in details(r)["spec"] and "maxObjectBytes" in details(r)["spec"]
    r = await api.client.put(f"{path_of('Hive', 'x', 'small')}/scale", json={"replicas": 6})
    assert r.status_code == 422 and "maxReplicasPerStage" in details(r)["replicas"]
    # the same objects are fine in a cell without a quota: the server's defaults apply there
    await cell(api, "roomy")
    ok = hive("h", [{"name": "s", "agentRef": "a", "replicas": 6}, *three[1:]], "roomy")
    assert (await api.client.post(path_of("Hive", None, "roomy"), json=ok)).status_code == 201


async def test_a_cell_cannot_raise_the_servers_limits(api: Api) -> None:
    body = sample("Cell", "greedy")
    body["spec"] = {"resourceQuota": {"maxReplicasPerStage": 5000, "maxStagesPerHive": 65}}
    r = await api.client.post("/api/v1/cells", json=body)
    assert r.status_code == 422, r.text
    found = details(r)
    assert (
        "5000 is more than 1000, the server's limit"
        in (found["spec.resourceQuota.maxReplicasPerStage"])
    )
    assert "spec.resourceQuota.maxStagesPerHive" in found


async def test_a_stage_beyond_the_cells_drone_quotas_is_a_403_naming_it(api: Api) -> None:
    await cell(api, "tight", maxTotalDrones=4)
    body = hive("h", [{"name": "s", "agentRef": "a", "replicas": 5}], "tight")
    r = await api.client.post(path_of("Hive", None, "tight"), json=body)
    assert r.status_code == 403 and r.json()["reason"] == "QuotaExceeded", r.text
    assert (
        details(r)["spec.stages[0].replicas"] == "5 is more than 4, the cell's quota maxTotalDrones"
    )
    spec = sample("AgentSpec", "a", "tight")
    spec["spec"]["replicas"] = 5
    r = await api.client.post(path_of("AgentSpec", None, "tight"), json=spec)
    assert r.status_code == 403 and "maxTotalDrones" in details(r)["spec.replicas"]


async def test_labels_annotations_and_depth(api: Api) -> None:
    body = hive("h", [{"name": "s", "agentRef": "a"}])
    body["metadata"]["labels"] = {"tier": "x" * 64}
    r = await api.client.post(path_of("Hive"), json=body)
    assert r.status_code == 422
    assert "at most 63 characters" in details(r)["metadata.labels"]
    assert "'tier'" in details(r)["metadata.labels"]
    body["metadata"]["labels"] = {"tier": "x" * 63}
    body["metadata"]["annotations"] = {"a": "x" * 140_000, "b": "y" * 140_000}
    r = await api.client.post(path_of("Hive"), json=body)
    assert r.status_code == 422
    assert details(r)["metadata.annotations"] == (
        "annotations total 280002 bytes, more than 262144 (the server's limit)"
    )
    body["metadata"].pop("annotations")
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(DEFAULTS.max_depth + 5):
        node["x"] = {}
        node = node["x"]
    body["metadata"]["annotations"] = {}
    body["spec"]["deep"] = deep
    r = await api.client.post(path_of("Hive"), json=body)
    assert r.status_code == 422 and "nested more than 100 levels deep" in r.text


async def test_yaml_aliases_count_at_their_expanded_size(api: Api) -> None:
    """1.5 MiB is measured on what would be stored: a 5 KB YAML body whose aliases expand it
    past the object limit (but not past the parser's bound) is refused by admission."""
    blob = "x" * 5000
    rows = "\n".join(f"      k{i}: *blob" for i in range(400))
    text = (
        "apiVersion: apiary.io/v1\nkind: AgentSpec\nmetadata: {name: a}\n"
        f"spec:\n  runtime: {{command: [cat]}}\n  extra: {{blob: &blob {blob}}}\n"
        f"  more:\n    all:\n{rows}\n"
    )
    assert len(text) < 20_000
    r = await api.client.post(
        path_of("AgentSpec"), content=text, headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 422, r.text
    assert "more than 1572864" in details(r)["spec"]


async def test_the_servers_configured_limits_are_the_ones_enforced() -> None:
    from apiary.api.state import ApiConfig

    config = ApiConfig(admission=AdmissionLimits(max_stages_per_hive=2))
    async with served_api("memory://", config=config) as api:
        stages = [{"name": f"s{i}", "agentRef": "a"} for i in range(3)]
        r = await api.client.post(path_of("Hive"), json=hive("three", stages))
        assert r.status_code == 422 and "more than 2" in str(r.json()), r.text
        r = await api.client.post(path_of("Hive"), json=hive("two", stages[:2]))
        assert r.status_code == 201, r.text


async def test_a_patch_is_held_to_the_cells_limits_too(api: Api) -> None:
    await cell(api, "small", maxReplicasPerStage=5)
    body = hive("h", [{"name": "s", "agentRef": "a", "replicas": 1}], "small")
    assert (await api.client.post(path_of("Hive", None, "small"), json=body)).status_code == 201
    patch = [{"op": "replace", "path": "/spec/stages/0/replicas", "value": 6}]
    r = await api.client.patch(
        path_of("Hive", "h", "small"),
        content=json.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 422, r.text
    assert "maxReplicasPerStage of cell 'small'" in details(r)["spec.stages[0].replicas"]
