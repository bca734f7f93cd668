"""CRUD on every kind at its path, over the memory and SQLite stores."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .conftest import AUTH, PLURALS, Api, path_of, sample

KINDS = list(PLURALS)


def replicas(hive: dict, n: int) -> dict:
    """A copy of a Hive whose first stage asks for ``n`` replicas."""
    stages = [dict(s) for s in hive["spec"]["stages"]]
    stages[0]["replicas"] = n
    return {**hive, "spec": {**hive["spec"], "stages": stages}}


async def test_auth_is_required_except_health(api: Api) -> None:
    bare = httpx.AsyncClient(transport=api.client._transport, base_url="http://apiary")
    async with bare:
        for path in ("/api/v1/cells", "/metrics", "/api/v1/whoami", "/api/v1", "/nope"):
            r = await bare.get(path)
            assert r.status_code == 401, path
            assert r.json()["reason"] == "Unauthorized"
        r = await bare.get("/api/v1/cells", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["code"] == 401
        r = await bare.get("/api/v1/cells", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        assert (await bare.get("/healthz")).json() == {"status": "ok"}
        assert (await bare.get("/readyz")).status_code == 200
        r = await bare.get("/api/v1/whoami", headers=AUTH)
        assert r.json() == {"user": "admin", "role": "cluster-admin"}


@pytest.mark.parametrize("kind", KINDS)
async def test_crud_every_kind(api: Api, kind: str) -> None:
    c = api.client
    r = await c.post(path_of(kind), json=sample(kind, "one"))
    assert r.status_code == 201, r.text
    created = r.json()
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and int(meta["resourceVersion"]) > 0
    assert (await c.post(path_of(kind), json=sample(kind, "one"))).status_code == 409

    got = (await c.get(path_of(kind, "one"))).json()
    assert got["metadata"]["uid"] == meta["uid"]
    listed = (await c.get(path_of(kind))).json()
    assert listed["kind"] == f"{kind}List" and listed["apiVersion"] == "apiary.io/v1"
    assert "one" in [i["metadata"]["name"] for i in listed["items"]]
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])

    changed = dict(got)
    changed["metadata"] = {**got["metadata"], "labels": {"team": "x"}}
    if kind == "Hive":
        changed["spec"] = replicas(got, 2)["spec"]
    r = await c.put(path_of(kind, "one"), json=changed)
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["metadata"]["labels"] == {"team": "x"}
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert updated["metadata"]["generation"] == (2 if kind == "Hive" else 1)

    r = await c.put(path_of(kind, "one") + "/status", json={"status": {"phase": "Testing"}})
    assert r.status_code == 200, r.text
    assert r.json()["status"]["phase"] == "Testing"
    status = (await c.get(path_of(kind, "one") + "/status")).json()
    assert status["status"]["phase"] == "Testing"
    assert status["metadata"]["generation"] == updated["metadata"]["generation"]

    r = await c.delete(path_of(kind, "one"))
    assert r.status_code == 200 and r.json()["metadata"]["name"] == "one"
    r = await c.get(path_of(kind, "one"))
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"


async def test_cell_scoped_list_across_cells(api: Api) -> None:
    for cell in ("a", "b"):
        r = await api.client.post(path_of("Session", None, cell), json=sample("Session", "s", cell))
        assert r.status_code == 201
    items = (await api.client.get("/api/v1/sessions")).json()["items"]
    assert sorted(i["metadata"]["namespace"] for i in items) == ["a", "b"]


async def test_two_concurrent_puts_with_the_same_version_exactly_one_wins(api: Api) -> None:
    c = api.client
    obj = (await c.post(path_of("Hive"), json=sample("Hive", "race"))).json()
    bodies = []
    for n in (1, 2):
        body = replicas(obj, n)
        bodies.append(body)
    results = await asyncio.gather(*(c.put(path_of("Hive", "race"), json=b) for b in bodies))
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409]
    loser = next(r for r in results if r.status_code == 409).json()
    assert loser["reason"] == "Conflict" and "resourceVersion" in loser["message"]


async def test_put_without_version_is_unconditional_and_status_checks_version(api: Api) -> None:
    c = api.client
    obj = (await c.post(path_of("Hive"), json=sample("Hive", "h"))).json()
    stale = obj["metadata"]["resourceVersion"]
    body = {**obj, "metadata": {"name": "h"}}
    assert (await c.put(path_of("Hive", "h"), json=body)).status_code == 200
    r = await c.put(
        path_of("Hive", "h") + "/status",
        json={"metadata": {"resourceVersion": stale}, "status": {"phase": "X"}},
    )
    assert r.status_code == 409


async def test_put_of_missing_object_is_404(api: Api) -> None:
    r = await api.client.put(path_of("Hive", "ghost"), json=sample("Hive", "ghost"))
    assert r.status_code == 404


async def test_dry_run_stores_nothing(api: Api) -> None:
    c = api.client
    before = await api.store.resource_version()
    for flag in ("All", "true"):
        r = await c.post(path_of("Hive") + f"?dryRun={flag}", json=sample("Hive", "dry"))
        assert r.status_code == 201, r.text
        assert r.json()["metadata"]["name"] == "dry"
        assert r.json()["spec"]["stages"][0]["replicas"] == 1  # defaults applied
        assert "resourceVersion" not in r.json()["metadata"]
    assert (await c.get(path_of("Hive", "dry"))).status_code == 404
    assert await api.store.resource_version() == before

    real = (await c.post(path_of("Hive"), json=sample("Hive", "real"))).json()
    rv = await api.store.resource_version()
    r = await c.put(path_of("Hive", "real") + "?dryRun=All", json=replicas(real, 3))
    assert r.status_code == 200 and r.json()["spec"]["stages"][0]["replicas"] == 3
    r = await c.delete(path_of("Hive", "real") + "?dryRun=All")
    assert r.status_code == 200
    assert await api.store.resource_version() == rv
    assert (await c.get(path_of("Hive", "real"))).json()["spec"]["stages"][0]["replicas"] == 1
    r = await c.post(path_of("Hive") + "?dryRun=All", json=sample("Hive", "real"))
    assert r.status_code == 409  # dry-run create still sees conflicts


async def test_warnings_header_and_strict_mode(api: Api) -> None:
    c = api.client
    assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "a"))).is_success
    body = sample("Hive", "warn")
    body["spec"]["foo"] = 1
    r = await c.post(path_of("Hive"), json=body)
    assert r.status_code == 201
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"spec.foo\\""']
    body["metadata"]["name"] = "strict"
    r = await c.post(path_of("Hive") + "?strict=true", json=body)
    assert r.status_code == 422
    assert {"field": "spec.foo", "message": "unknown field"} in r.json()["details"]
    assert (await c.get(path_of("Hive", "strict"))).status_code == 404


async def test_yaml_bodies(api: Api) -> None:
    text = "kind: AgentSpec\nmetadata:\n  name: y\nspec:\n  runtime:\n    command: [cat]\n"
    r = await api.client.post(
        path_of("AgentSpec"), content=text, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["namespace"] == "default"


async def test_labels_pagination_field_and_event_filters(api: Api) -> None:
    c = api.client
    for i in range(7):
        body = sample("AgentSpec", f"a{i}")
        body["metadata"]["labels"] = {"tier": "even" if i % 2 == 0 else "odd"}
        assert (await c.post(path_of("AgentSpec"), json=body)).status_code == 201
    even = (await c.get(path_of("AgentSpec"), params={"labelSelector": "tier=even"})).json()
    assert [i["metadata"]["name"] for i in even["items"]] == ["a0", "a2", "a4", "a6"]
    names, token = [], None
    while True:
        q = {"limit": "3", **({"continue": token} if token else {})}
        page = (await c.get(path_of("AgentSpec"), params=q)).json()
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert names == [f"a{i}" for i in range(7)]
    one = (await c.get(path_of("AgentSpec"), params={"fieldSelector": "metadata.name=a3"})).json()
    assert [i["metadata"]["name"] for i in one["items"]] == ["a3"]

    for name, kind in (("e1", "Hive"), ("e2", "AgentSpec")):
        ev = sample("Event", name)
        ev["involvedObject"] = {"kind": kind, "name": "x"}
        assert (await c.post(path_of("Event"), json=ev)).status_code == 201
    r = await c.get(
        path_of("Event"), params={"involvedObject.kind": "AgentSpec", "involvedObject.name": "x"}
    )
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["e2"]


async def test_generate_name(api: Api) -> None:
    body = sample("Session", "x")
    body["metadata"] = {"generateName": "sess-"}
    r = await api.client.post(path_of("Session"), json=body)
    assert r.status_code == 201
    assert r.json()["metadata"]["name"].startswith("sess-")
    assert len(r.json()["metadata"]["name"]) == len("sess-") + 5


async def test_deleting_with_finalizers_marks_then_status_clear_removes(api: Api) -> None:
    c = api.client
    body = sample("Drone", "fin")
    body["metadata"]["finalizers"] = ["apiary.io/stop"]
    obj = (await c.post(path_of("Drone"), json=body)).json()
    r = await c.delete(path_of("Drone", "fin"))
    assert r.status_code == 200 and r.json()["metadata"]["deletionTimestamp"]
    current = (await c.get(path_of("Drone", "fin"))).json()
    current["metadata"]["finalizers"] = []
    assert (await c.put(path_of("Drone", "fin"), json=current)).status_code == 200
    assert (await c.get(path_of("Drone", "fin"))).status_code == 404
    assert obj["metadata"]["uid"]


async def test_metrics_count_by_route_template(api: Api) -> None:
    await api.client.get(path_of("Hive", "nope"))
    text = (await api.client.get("/metrics")).text
    assert 'route="/api/v1/cells/{cell}/{plural}/{name}",status="404"' in text
    assert "apiary_api_request_duration_seconds_bucket" in text


async def test_openapi_and_docs(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert "/api/v1/cells/{cell}/hives/{name}" in spec["paths"]  # per kind: docs/api.md
    assert (await api.client.get("/docs")).status_code == 200
