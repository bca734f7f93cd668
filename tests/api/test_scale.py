"""The /scale subresource: hive stages (plain and composed) and agentspecs, as ordinary spec
updates with admission, quotas and optimistic concurrency; status counted from the drones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .conftest import SEEDS, Api

CELL = "default"
HIVES = f"/api/v1/cells/{CELL}/hives"
SPECS = f"/api/v1/cells/{CELL}/agentspecs"


def hive(name: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name},
        "spec": {"pattern": "pipeline", "stages": stages},
    }


async def drone(api: Api, owner: dict[str, Any], name: str, labels: dict[str, str], ready: bool):
    meta = owner["metadata"]
    created = await api.store.create(
        {
            "apiVersion": "apiary.io/v1",
            "kind": "Drone",
            "metadata": {
                "name": name,
                "namespace": CELL,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "apiary.io/v1",
                        "kind": owner["kind"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"agentSpec": "a", "runtime": {"command": ["cat"]}},
        }
    )
    created["status"] = {"phase": "Running", "ready": ready}
    return await api.store.update(created, subresource="status")


async def test_single_stage_hive_scales_without_naming_the_stage(api: Api) -> None:
    c = api.client
    created = (await c.post(HIVES, json=hive("h", [{"name": "s", "agentRef": "a"}]))).json()
    labels = {"apiary.io/hive": "h", "apiary.io/stage": "s"}
    await drone(api, created, "h-s-0", labels, ready=True)
    await drone(api, created, "h-s-1", labels, ready=False)
    r = await c.get(f"{HIVES}/h/scale")
    assert r.status_code == 200
    body = r.json()
    assert body["kind"] == "Scale" and body["spec"]["replicas"] == 1
    assert body["spec"]["stage"] == "s"
    assert body["status"]["replicas"] == 2 and body["status"]["readyReplicas"] == 1
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 3})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 3
    stored = (await c.get(f"{HIVES}/h")).json()
    assert stored["spec"]["stages"][0]["replicas"] == 3
    assert stored["metadata"]["generation"] == created["metadata"]["generation"] + 1


async def test_multi_stage_hive_needs_a_known_stage(api: Api) -> None:
    c = api.client
    stages = [{"name": "one", "agentRef": "a"}, {"name": "two", "agentRef": "a", "replicas": 2}]
    await c.post(HIVES, json=hive("h", stages))
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 3})
    assert r.status_code == 400
    assert r.json()["details"][0]["field"] == "stage"
    assert "one, two" in r.json()["message"]
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 3, "stage": "three"})
    assert r.status_code == 404 and r.json()["details"][0]["field"] == "stage"
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 0, "stage": "two"})
    assert r.status_code == 200
    spec = (await c.get(f"{HIVES}/h")).json()["spec"]
    assert [s["replicas"] for s in spec["stages"]] == [1, 0]
    whole = (await c.get(f"{HIVES}/h/scale")).json()
    assert whole["spec"]["replicas"] == 1
    assert whole["spec"]["stages"] == [
        {"name": "one", "replicas": 1},
        {"name": "two", "replicas": 0},
    ]
    one = (await c.get(f"{HIVES}/h/scale", params={"stage": "one"})).json()
    assert one["spec"] == {
        "replicas": 1,
        "stages": [{"name": "one", "replicas": 1}],
        "stage": "one",
    }
    # Kubernetes-style Scale body works too
    r = await c.put(f"{HIVES}/h/scale", json={"spec": {"replicas": 4, "stage": "one"}})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 4


async def test_composed_hive_stage_names_map_to_segment_entries(api: Api) -> None:
    c = api.client
    composed = yaml.safe_load((SEEDS / "09-hive-composed.yaml").read_text())
    assert (await c.post(HIVES, json=composed)).status_code == 201
    # admission names unnamed members (subscriber1, agent1), the controllers prefix the segment
    names = [
        s["name"] for s in (await c.get(f"{HIVES}/composed-hive/scale")).json()["spec"]["stages"]
    ]
    assert names == [
        "event-stage-subscriber1",
        "pipeline-stage-stage1",
        "pipeline-stage-stage2",
        "swarm-stage-agent1",
    ]
    for stage, n in (
        ("pipeline-stage-stage2", 4),
        ("event-stage-subscriber1", 0),
        ("swarm-stage-agent1", 5),
    ):
        r = await c.put(f"{HIVES}/composed-hive/scale", json={"replicas": n, "stage": stage})
        assert r.status_code == 200, r.text
    segs = (await c.get(f"{HIVES}/composed-hive")).json()["spec"]["patternSegments"]
    assert segs[1]["config"]["stages"][1]["replicas"] == 4
    assert segs[1]["config"]["stages"][0]["replicas"] == 2  # untouched
    assert segs[0]["config"]["subscribers"][0]["replicas"] == 0
    assert segs[2]["config"]["agents"][0]["replicas"] == 5


async def test_agentspec_scale_respects_scaling_bounds_and_counts_standalone_drones(
    api: Api,
) -> None:
    c = api.client
    spec = yaml.safe_load((SEEDS / "03-agentspec-simple.yaml").read_text())  # min 1, max 10
    created = (await c.post(SPECS, json=spec)).json()
    await drone(api, created, "echo-agent-x-0", {"apiary.io/agentspec": "echo-agent"}, True)
    hived = {"apiary.io/agentspec": "echo-agent", "apiary.io/hive": "h"}
    await drone(api, created, "h-s-x-0", hived, True)  # a hive's drone is not standalone
    body = (await c.get(f"{SPECS}/echo-agent/scale")).json()
    assert body["spec"] == {"replicas": 1}  # from scaling.minReplicas
    assert body["status"] == {"replicas": 1, "readyReplicas": 1}
    r = await c.put(f"{SPECS}/echo-agent/scale", json={"replicas": 4})
    assert r.status_code == 200 and r.json()["spec"] == {"replicas": 4}
    assert (await c.get(f"{SPECS}/echo-agent")).json()["spec"]["replicas"] == 4
    r = await c.put(f"{SPECS}/echo-agent/scale", json={"replicas": 11})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "spec.replicas"
    assert "1..10" in r.json()["details"][0]["message"]
    r = await c.put(f"{SPECS}/echo-agent/scale", json={"replicas": 2, "stage": "s"})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "stage"


async def test_bad_input_conflicts_quotas_and_dry_run(api: Api) -> None:
    c = api.client
    await c.post(
        "/api/v1/cells",
        json={"metadata": {"name": "tight"}, "spec": {"resourceQuota": {"maxDronesPerHive": 3}}},
    )
    tight = "/api/v1/cells/tight/hives"
    created = (await c.post(tight, json=hive("h", [{"name": "s", "agentRef": "a"}]))).json()
    for bad in ({"replicas": -1}, {"replicas": "3"}, {"replicas": True}, {}, {"replicas": 1.5}):
        r = await c.put(f"{tight}/h/scale", json=bad)
        assert r.status_code == 422, bad
        assert r.json()["details"][0]["field"] == "replicas"
    r = await c.put(
        f"{tight}/h/scale", content=b"[1]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await c.put(f"{tight}/h/scale", json={"replicas": 4})
    assert r.status_code == 403 and "maxDronesPerHive" in r.json()["message"]
    stale = {"replicas": 2, "metadata": {"resourceVersion": "1"}}
    assert (await c.put(f"{tight}/h/scale", json=stale)).status_code == 409
    fresh = {"replicas": 2, "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    assert (await c.put(f"{tight}/h/scale", json=fresh)).status_code == 200
    r = await c.put(f"{tight}/h/scale", params={"dryRun": "All"}, json={"replicas": 3})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 3
    assert (await c.get(f"{tight}/h")).json()["spec"]["stages"][0]["replicas"] == 2
    assert (await c.get(f"{tight}/missing/scale")).status_code == 404
    assert (await c.put(f"{tight}/missing/scale", json={"replicas": 1})).status_code == 404
    r = await c.get("/api/v1/cells/tight/drones/x/scale")
    assert r.status_code == 404 and "no scale subresource" in r.json()["message"]


def test_seed_path_exists() -> None:
    assert Path(SEEDS / "09-hive-composed.yaml").exists()


# ------------------------------------------------------------------ stages the autoscaler counted

NOTE = "status.apiary.io/autoscaler"


def agentspec(name: str, scaling: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"runtime": {"command": ["cat"]}, "interface": {"type": "stdin"}}
    if scaling is not None:
        spec["scaling"] = scaling
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec", "metadata": {"name": name},
            "spec": spec}  # fmt: skip


async def counted_by_the_autoscaler(api: Api, replicas: int) -> None:
    """Hive h's stage s as the autoscaler leaves it: its count in the annotation, decided
    against the spec's replicas (1)."""
    h = await api.store.get("Hive", CELL, "h")
    note = {"s": {"replicas": replicas, "specReplicas": 1, "direction": "up",
                  "lastScaleUp": "2020-01-01T00:00:00Z"}}  # fmt: skip
    h["metadata"]["annotations"] = {NOTE: json.dumps(note)}
    await api.store.update(h)


def notes(hive: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(hive["metadata"].get("annotations", {}).get(NOTE, "{}")))


async def test_scaling_an_autoscaled_stage_is_where_the_autoscaler_carries_on(api: Api) -> None:
    c = api.client
    scaling = {"minReplicas": 1, "maxReplicas": 4}
    assert (await c.post(SPECS, json=agentspec("auto", scaling))).status_code == 201
    await c.post(HIVES, json=hive("h", [{"name": "s", "agentRef": "auto", "replicas": 1}]))
    await counted_by_the_autoscaler(api, 3)
    view = (await c.get(f"{HIVES}/h/scale")).json()
    assert view["spec"]["stages"] == [
        {"name": "s", "replicas": 3, "minReplicas": 1, "maxReplicas": 4}
    ]
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 2})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 2  # not the autoscaler's 3
    assert r.json()["message"] == "autoscaled 1..4: the autoscaler carries on from 2"
    stored = (await c.get(f"{HIVES}/h")).json()
    entry = notes(stored)["s"]
    assert (entry["replicas"], entry["previous"], entry["direction"]) == (2, 3, "manual")
    assert entry["lastScaleUp"] == "2020-01-01T00:00:00Z" and "lastScaleManual" in entry
    assert stored["spec"]["stages"][0]["replicas"] == 2
    assert (await c.get(f"{HIVES}/h/scale")).json()["spec"]["replicas"] == 2
    # the same count as the spec already says still takes effect over the autoscaler's
    await counted_by_the_autoscaler(api, 4)
    h = await api.store.get("Hive", CELL, "h")
    h["spec"]["stages"][0]["replicas"] = 1
    await api.store.update(h)
    assert (await c.get(f"{HIVES}/h/scale")).json()["spec"]["replicas"] == 4
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 1})
    assert r.json()["spec"]["replicas"] == 1
    assert notes(await api.store.get("Hive", CELL, "h"))["s"]["replicas"] == 1


async def test_a_scale_outside_the_bounds_is_clamped_and_said(api: Api) -> None:
    c = api.client
    await c.post(SPECS, json=agentspec("auto", {"minReplicas": 1, "maxReplicas": 4}))
    await c.post(HIVES, json=hive("h", [{"name": "s", "agentRef": "auto", "replicas": 1}]))
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 10})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 4
    assert r.json()["message"] == (
        "asked for 10, clamped to maxReplicas 4; autoscaled 1..4: the autoscaler carries on from 4"
    )
    assert (await c.get(f"{HIVES}/h")).json()["spec"]["stages"][0]["replicas"] == 4
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 0})
    assert r.json()["spec"]["replicas"] == 1
    assert r.json()["message"].startswith("asked for 0, clamped to minReplicas 1;")
    r = await c.put(f"{HIVES}/h/scale", params={"dryRun": "All"}, json={"replicas": 7})
    assert r.json()["spec"]["replicas"] == 4 and "clamped to maxReplicas 4" in r.json()["message"]
    assert (await c.get(f"{HIVES}/h")).json()["spec"]["stages"][0]["replicas"] == 1


async def test_without_scaling_a_left_over_count_is_ignored_and_dropped(api: Api) -> None:
    c = api.client
    await c.post(SPECS, json=agentspec("fixed"))  # it had scaling once; not any more
    stages = [{"name": "s", "agentRef": "fixed", "replicas": 1},
              {"name": "t", "agentRef": "fixed", "replicas": 1}]  # fmt: skip
    await c.post(HIVES, json=hive("h", stages))
    await counted_by_the_autoscaler(api, 5)
    view = (await c.get(f"{HIVES}/h/scale", params={"stage": "s"})).json()
    assert view["spec"]["replicas"] == 1  # the spec decides, whatever the annotation says
    r = await c.put(f"{HIVES}/h/scale", json={"replicas": 3, "stage": "s"})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 3 and "message" not in r.json()
    stored = await api.store.get("Hive", CELL, "h")
    assert notes(stored) == {} and stored["spec"]["stages"][0]["replicas"] == 3
