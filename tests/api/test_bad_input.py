"""Bad input gets the right 4xx naming the problem — never a 500."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiary.api import ApiConfig

from .conftest import Api, path_of, running_api, sample

HIVES = path_of("Hive")


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        (b'{"kind": "Hive", ', "application/json", 400, "malformed JSON"),
        (b"[1, 2]", "application/json", 400, "must be an object"),
        (b"", "application/json", 400, "empty"),
        (b"kind: [unclosed", "application/yaml", 400, "malformed YAML"),
        (b"a: 1\n---\nb: 2\n", "application/yaml", 400, "exactly one document"),
        (b"1: x\nkind: Hive\n", "application/yaml", 400, "must be a string"),
        (
            b"metadata: {name: x}\nn: 99999999999999999999999\n",
            "application/yaml",
            400,
            "out of range",
        ),
        (b"<xml/>", "application/xml", 415, "Content-Type"),
        (b'{"kind": "AgentSpec", "metadata": {"name": "x"}}', "application/json", 400, "kind"),
        (
            b'{"metadata": {"name": "x", "namespace": "other"}}',
            "application/json",
            400,
            "metadata.namespace",
        ),
        (b'{"metadata": "x"}', "application/json", 422, "metadata"),
        (
            b'{"metadata": {"name": "Bad_Name"}, "spec": {"pattern": "pipeline", "stages": '
            b'[{"name": "s", "agentRef": "a"}]}}',
            "application/json",
            422,
            "metadata.name",
        ),
        (b'{"metadata": {}, "spec": {}}', "application/json", 422, "metadata.name"),
        (
            b'{"metadata": {"name": "x"}, "spec": {"pattern": "pipeline", "stages": '
            b'[{"name": "s", "agentRef": 5, "replicas": "three"}]}}',
            "application/json",
            422,
            "spec.stages[0]",
        ),
        (
            b'{"apiVersion": "v2", "metadata": {"name": "x"}, "spec": {"pattern": "pipeline", '
            b'"stages": [{"name": "s", "agentRef": "a"}]}}',
            "application/json",
            422,
            "apiVersion",
        ),
    ],
)
async def test_bad_bodies(mem_api: Api, body: bytes, ctype: str, status: int, needle: str) -> None:
    r = await mem_api.client.post(HIVES, content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == status and err["reason"] and needle in r.text, err
    if status == 422:
        assert err["details"] and all(d["field"] is not None for d in err["details"])


async def test_missing_field_details_name_the_field(mem_api: Api) -> None:
    body = sample("Hive", "h")
    del body["spec"]["stages"]
    r = await mem_api.client.post(HIVES, json=body)
    assert r.status_code == 422
    assert any(d["field"].startswith("spec.stages") for d in r.json()["details"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/widgets", 404),
        ("GET", "/api/v1/cells/default/widgets", 404),
        ("GET", "/api/v1/cells/default/cells", 404),  # cells are cluster-scoped
        ("GET", "/api/v1/hives/x", 404),  # hives live in a cell
        ("POST", "/api/v1/hives", 405),
        ("POST", "/api/v1/cells/default/hives/x", 405),
        ("DELETE", "/api/v1/cells/default/hives", 405),
        ("GET", "/no/such/route", 404),
        ("GET", "/api/v1/cells/default/hives?limit=-1", 400),
        ("GET", "/api/v1/cells/default/hives?limit=ten", 400),
        ("GET", "/api/v1/cells/default/hives?labelSelector=a%20in%20(", 400),
        ("GET", "/api/v1/cells/default/hives?continue=%%%", 400),
        ("GET", "/api/v1/cells/default/hives?watch=maybe", 400),
        ("GET", "/api/v1/cells/default/hives?fieldSelector=spec.x%3D1", 400),
        ("GET", "/api/v1/cells/default/hives?watch=true&resourceVersion=abc", 400),
        ("POST", "/api/v1/cells/default/hives?dryRun=sometimes", 400),
        ("GET", "/api/v1/cells/default/hives/nope", 404),
        ("DELETE", "/api/v1/cells/default/hives/nope", 404),
    ],
)
async def test_bad_routes_and_parameters(mem_api: Api, method: str, path: str, status: int) -> None:
    r = await mem_api.client.request(method, path, json=sample("Hive", "x"))
    assert r.status_code == status, r.text
    assert r.json()["code"] == status and r.json()["message"]


async def test_name_in_body_must_match_path(mem_api: Api) -> None:
    await mem_api.client.post(HIVES, json=sample("Hive", "a"))
    r = await mem_api.client.put(path_of("Hive", "a"), json=sample("Hive", "b"))
    assert r.status_code == 400 and "metadata.name" in r.json()["message"]


async def test_oversized_body_is_413() -> None:
    async with running_api("memory://", config=ApiConfig(max_body_bytes=2048)) as api:
        body = sample("Hive", "big")
        body["metadata"]["annotations"] = {"blob": "x" * 4096}
        r = await api.client.post(HIVES, json=body)
        assert r.status_code == 413 and r.json()["reason"] == "PayloadTooLarge"
        assert "2048" in r.json()["message"]

        async def chunks():  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b" " * 1024

        r = await api.client.post(
            HIVES, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413


# ------------------------------------------------------------------------------ fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "apiVersion",
                    "kind",
                    "metadata",
                    "spec",
                    "status",
                    "name",
                    "namespace",
                    "stages",
                    "agentRef",
                    "replicas",
                    "data",
                    "stringData",
                    "labels",
                    "resourceQuota",
                    "ownerReferences",
                    "finalizers",
                    "involvedObject",
                    "resourceVersion",
                    "pattern",
                    "runtime",
                    "env",
                    "valueFrom",
                    "secretKeyRef",
                    "generateName",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)
plurals = st.sampled_from(
    ["cells", "nodes", "secrets", "agentspecs", "hives", "drones", "sessions", "events", "bogus"]
)
segment = st.text(
    alphabet=string.ascii_lowercase + string.digits + "-_.%A", min_size=1, max_size=12
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, object, dict[str, str]]:
    plural = draw(plurals)
    name = draw(st.sampled_from(["x", "default"]) | segment)
    shape = draw(st.sampled_from(["list", "cell-list", "one", "cell-one", "status", "cell-status"]))
    path = {
        "list": f"/api/v1/{plural}",
        "cell-list": f"/api/v1/cells/{name}/{plural}",
        "one": f"/api/v1/{plural}/{name}",
        "cell-one": f"/api/v1/cells/default/{plural}/{name}",
        "status": f"/api/v1/{plural}/{name}/status",
        "cell-status": f"/api/v1/cells/default/{plural}/{name}/status",
    }[shape]
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    query = draw(
        st.dictionaries(
            st.sampled_from(["dryRun", "strict", "reveal", "limit", "labelSelector", "continue"]),
            st.text(max_size=6),
            max_size=2,
        )
    )
    body = draw(json_values)
    return method, path, body, query


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=requests())
async def test_fuzz_random_json_to_random_routes_never_500(mem_api: Api, req: tuple) -> None:
    """One server for every example: state left by earlier ones makes later ones meaner."""
    method, path, body, query = req
    payload = body if method in ("POST", "PUT") else None
    r = await mem_api.client.request(method, path, json=payload, params=query)
    assert r.status_code < 500, (method, path, body, query, r.text)
    if r.status_code >= 400:
        err = r.json()
        assert err["code"] == r.status_code and isinstance(err["message"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    ctype=st.sampled_from(["application/yaml", "application/json", "text/plain", ""]),
)
async def test_fuzz_random_bytes_never_500(mem_api: Api, text: str, ctype: str) -> None:
    r = await mem_api.client.post(
        HIVES, content=text.encode("utf-8", "surrogatepass"), headers={"Content-Type": ctype}
    )
    assert r.status_code < 500, (text, ctype, r.text)
