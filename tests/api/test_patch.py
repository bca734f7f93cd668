"""PATCH (RFC 7386 merge patch, RFC 6902 JSON patch) on object routes and status subresources:
the same admission, dry run and optimistic concurrency as a PUT, over memory and SQLite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apiary.api.patch import field_of, merge_patch

from .conftest import Api, path_of, sample

MERGE = {"Content-Type": "application/merge-patch+json"}
JSONP = {"Content-Type": "application/json-patch+json"}


async def patch(api: Api, path: str, body: Any, headers: dict[str, str], **params: str) -> Any:
    return await api.client.patch(path, content=json.dumps(body), headers=headers, params=params)


async def hive(api: Api, name: str = "h") -> dict[str, Any]:
    r = await api.client.post(path_of("Hive"), json=sample("Hive", name))
    assert r.status_code == 201, r.text
    return r.json()


def test_merge_patch_is_rfc_7386() -> None:
    # the examples of RFC 7386 appendix A
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b", "b": "c"}, {"a": None}) == {"b": "c"}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
    assert field_of("/spec/stages/0/replicas") == "spec.stages[0].replicas"
    assert field_of("/metadata/labels/a~1b") == "metadata.labels.a/b"


async def test_merge_patch_changes_the_spec_and_bumps_generation(api: Api) -> None:
    created = await hive(api)
    body = {"metadata": {"labels": {"team": "a"}}, "spec": {"stages": [
        {"name": "s", "agentRef": "a", "replicas": 3}]}}  # fmt: skip
    r = await patch(api, path_of("Hive", "h"), body, MERGE)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["spec"]["stages"][0]["replicas"] == 3
    assert got["metadata"]["labels"] == {"team": "a"}
    assert got["metadata"]["generation"] == created["metadata"]["generation"] + 1
    r = await patch(api, path_of("Hive", "h"), {"metadata": {"labels": {"team": None}}}, MERGE)
    assert r.json()["metadata"].get("labels") in (None, {})
    assert (await api.client.get(path_of("Hive", "h"))).json()["spec"]["stages"][0]["replicas"] == 3


async def test_json_patch_operations(api: Api) -> None:
    await hive(api)
    ops = [
        {"op": "test", "path": "/spec/stages/0/name", "value": "s"},
        {"op": "add", "path": "/spec/stages/-", "value": {"name": "t", "agentRef": "a"}},
        {"op": "copy", "from": "/spec/stages/0/agentRef", "path": "/metadata/labels"},
        {"op": "remove", "path": "/metadata/labels"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "1"}},
        {"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/y"},
        {"op": "add", "path": "/spec/stages/1/replicas", "value": 2},
    ]
    r = await patch(api, path_of("Hive", "h"), ops, JSONP)
    assert r.status_code == 200, r.text
    got = r.json()
    assert [s["name"] for s in got["spec"]["stages"]] == ["s", "t"]
    assert got["spec"]["stages"][1]["replicas"] == 2
    assert got["metadata"]["labels"] == {"y": "1"}


async def test_json_patch_that_cannot_apply_is_422_naming_the_path(api: Api) -> None:
    await hive(api)
    before = (await api.client.get(path_of("Hive", "h"))).json()
    ops = [
        {"op": "replace", "path": "/spec/stages/0/replicas", "value": 5},
        {"op": "test", "path": "/spec/pattern", "value": "swarm"},
    ]
    r = await patch(api, path_of("Hive", "h"), ops, JSONP)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == "spec.pattern"
    r = await patch(api, path_of("Hive", "h"), [{"op": "remove", "path": "/spec/nope"}], JSONP)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "spec.nope"
    assert (await api.client.get(path_of("Hive", "h"))).json() == before  # all or nothing


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("{not json", MERGE),
        ("[1, 2]", MERGE),
        ('{"op": "add"}', JSONP),
        ('[{"op": "frobnicate", "path": "/a"}]', JSONP),
        ('[{"op": "add", "path": "/a"}]', JSONP),
        ('[{"op": "add", "path": "a", "value": 1}]', JSONP),
        ("", MERGE),
    ],
)
async def test_malformed_patches_are_400(api: Api, body: str, headers: dict[str, str]) -> None:
    await hive(api)
    r = await api.client.patch(path_of("Hive", "h"), content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "BadRequest"


@pytest.mark.parametrize(
    "media", ["application/json", "application/strategic-merge-patch+json", "text/plain", ""]
)
async def test_other_content_types_are_415_with_accept_patch(api: Api, media: str) -> None:
    await hive(api)
    r = await api.client.patch(path_of("Hive", "h"), content="{}", headers={"Content-Type": media})
    assert r.status_code == 415, r.text
    assert r.json()["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in r.headers["accept-patch"]


async def test_resource_version_in_the_patch_is_optimistic_concurrency(api: Api) -> None:
    created = await hive(api)
    rv = created["metadata"]["resourceVersion"]
    ok = {"metadata": {"resourceVersion": rv, "labels": {"v": "1"}}}
    r = await patch(api, path_of("Hive", "h"), ok, MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["resourceVersion"] != rv
    r = await patch(api, path_of("Hive", "h"), {"metadata": {"resourceVersion": rv}}, MERGE)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": rv}]
    assert (await patch(api, path_of("Hive", "h"), ops, JSONP)).status_code == 409
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
    assert (await patch(api, path_of("Hive", "h"), ops, JSONP)).status_code == 422
    bad = {"metadata": {"resourceVersion": {"x": 1}}}
    r = await patch(api, path_of("Hive", "h"), bad, MERGE)
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "metadata.resourceVersion"


async def test_patched_object_goes_through_admission(api: Api) -> None:
    await hive(api)
    before = (await api.client.get(path_of("Hive", "h"))).json()
    bad = {"spec": {"stages": [{"name": "s", "agentRef": "a", "replicas": "many"}]}}
    r = await patch(api, path_of("Hive", "h"), bad, MERGE)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == "spec.stages[0].replicas"
    for change, field in (
        ({"metadata": {"name": "other"}}, "metadata.name"),
        ({"metadata": {"namespace": None}}, "metadata.namespace"),
        ({"kind": "AgentSpec"}, "kind"),
    ):
        r = await patch(api, path_of("Hive", "h"), change, MERGE)
        assert r.status_code == 422, r.text
        assert r.json()["details"][0]["field"] == field
    assert (await api.client.get(path_of("Hive", "h"))).json() == before
    r = await patch(api, path_of("Hive", "h"), {"spec": {"frob": 1}}, MERGE, strict="true")
    assert r.status_code == 422
    r = await patch(api, path_of("Hive", "h"), {"spec": {"frob": 1}}, MERGE)
    assert r.status_code == 200 and "frob" in r.headers["warning"]


async def test_dry_run_stores_nothing(api: Api) -> None:
    await hive(api)
    before = (await api.client.get(path_of("Hive", "h"))).json()
    body = {"metadata": {"labels": {"dry": "yes"}}}
    r = await patch(api, path_of("Hive", "h"), body, MERGE, dryRun="All")
    assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"dry": "yes"}
    assert (await api.client.get(path_of("Hive", "h"))).json() == before


async def test_status_subresource_and_object_route_keep_to_their_parts(api: Api) -> None:
    await hive(api)
    r = await patch(api, path_of("Hive", "h") + "/status", {"status": {"phase": "Ready"}}, MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["status"]["phase"] == "Ready"
    ops = [{"op": "add", "path": "/status/observedGeneration", "value": 1}]
    r = await patch(api, path_of("Hive", "h") + "/status", ops, JSONP)
    assert r.status_code == 200 and r.json()["status"]["observedGeneration"] == 1
    r = await patch(api, path_of("Hive", "h"), {"status": {"phase": "Broken"}}, MERGE)
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Ready"
    r = await patch(api, path_of("Hive", "h") + "/status", {"status": "x"}, MERGE)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "status"


async def test_cluster_scoped_kinds_secrets_and_tokens(api: Api) -> None:
    assert (await api.client.post(path_of("Cell", None), json=sample("Cell", "c1"))).is_success
    r = await patch(api, path_of("Cell", "c1"), {"metadata": {"labels": {"a": "b"}}}, MERGE)
    assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"a": "b"}
    assert (await api.client.post(path_of("Secret"), json=sample("Secret", "s"))).is_success
    r = await patch(api, path_of("Secret", "s"), {"stringData": {"other": "v2"}}, MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"token": "<redacted>", "other": "<redacted>"}
    revealed = (await api.client.get(path_of("Secret", "s"), params={"reveal": "true"})).json()
    assert set(revealed["data"]) == {"token", "other"}
    probe = [{"op": "test", "path": "/data/token", "value": revealed["data"]["token"]}]
    assert (await patch(api, path_of("Secret", "s"), probe, JSONP)).status_code == 422
    r = await patch(api, "/api/v1/tokens/x", {"spec": {}}, MERGE)
    assert r.status_code == 405
    assert (await patch(api, path_of("Hive", "nope"), {}, MERGE)).status_code == 404
    assert (await patch(api, "/api/v1/cells/default/frobs/x", {}, MERGE)).status_code == 404


async def test_operations_of_the_wrong_shape_are_400(api: Api) -> None:
    await hive(api)
    for ops in ([{"op": {"x": 1}, "path": "/a"}], [{"op": "add", "path": {}, "value": 1}], [1]):
        r = await patch(api, path_of("Hive", "h"), ops, JSONP)
        assert r.status_code == 400, (ops, r.text)


async def test_concurrent_patches_without_a_version_all_land(api: Api) -> None:
    import asyncio

    await hive(api)
    bodies = [{"metadata": {"labels": {f"k{i}": "v"}}} for i in range(8)]
    answers = await asyncio.gather(*(patch(api, path_of("Hive", "h"), b, MERGE) for b in bodies))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    labels = (await api.client.get(path_of("Hive", "h"))).json()["metadata"]["labels"]
    assert labels == {f"k{i}": "v" for i in range(8)}
