"""The OpenAPI document describes the real API; /docs works offline and in a browser without a
token; /version and discovery answer as in Kubernetes."""

from __future__ import annotations

import re

import httpx
import pytest

from apiary.resources import KINDS

from .conftest import Api


@pytest.fixture
async def doc(mem_api: Api) -> dict:
    r = await mem_api.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def bare(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=api.client._transport, base_url="http://apiary")


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


async def test_one_schema_per_kind_from_the_models(doc: dict) -> None:
    schemas = doc["components"]["schemas"]
    for info in KINDS:
        assert info.kind in schemas and f"{info.kind}List" in schemas, info.kind
    stages = schemas["HiveSpec"]["properties"]["stages"]["anyOf"][0]  # or null
    stage = resolve(doc, stages["items"])
    assert stage["properties"]["replicas"]["type"] == "integer"
    assert stage["properties"]["replicas"]["minimum"] == 0
    hive_get = doc["paths"]["/api/v1/cells/{cell}/hives/{name}"]["get"]
    ok = hive_get["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Hive"}
    listed = doc["paths"]["/api/v1/cells/{cell}/hives"]["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"] == {"$ref": "#/components/schemas/HiveList"}
    assert "application/x-ndjson" in listed
    assert not any("{plural}" in p for p in doc["paths"])
    assert "/api/v1/cells/{cell}/hives/{name}/scale" in doc["paths"]


async def test_query_parameters_of_every_route(doc: dict) -> None:
    def names(path: str, method: str) -> set[str]:
        return {p["name"] for p in doc["paths"][path][method]["parameters"] if p["in"] == "query"}

    listing = names("/api/v1/cells/{cell}/hives", "get")
    assert {"labelSelector", "limit", "continue", "watch", "resourceVersion"} <= listing
    assert {"dryRun", "strict"} <= names("/api/v1/cells/{cell}/hives", "post")
    assert "reveal" in names("/api/v1/cells/{cell}/secrets/{name}", "get")
    assert "reveal" not in names("/api/v1/cells/{cell}/hives/{name}", "get")
    assert {"tail", "since", "follow"} <= names("/api/v1/cells/{cell}/drones/{name}/logs", "get")
    assert "involvedObject.name" in names("/api/v1/cells/{cell}/events", "get")
    assert {"after", "wait"} <= names("/api/v1/cells/{cell}/sessions/{name}/messages", "get")


async def test_errors_security_and_content_types(doc: dict) -> None:
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "reason", "message"}
    assert "details" in error["properties"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    put = doc["paths"]["/api/v1/cells/{cell}/hives/{name}"]["put"]["responses"]
    for code in ("400", "401", "403", "404", "409", "413", "415", "422"):
        assert put[code]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    patch = doc["paths"]["/api/v1/cells/{cell}/hives/{name}"]["patch"]["requestBody"]["content"]
    assert set(patch) == {"application/merge-patch+json", "application/json-patch+json"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/version"]["get"]["security"] == []
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code, resp in op["responses"].items():
                for media in resp.get("content", {}).values():
                    assert media["schema"] != {"type": "string"} or code[0] == "2", (path, method)
            assert op["operationId"], (path, method)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_docs_are_public_and_need_no_internet(mem_api: Api) -> None:
    async with bare(mem_api) as c:
        page = await c.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert (await c.get("/openapi.json")).status_code == 200
        assert (await c.get("/redoc")).status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls and all(u.startswith("/docs/static/") for u in urls), urls
        for url in urls:
            r = await c.get(url)
            assert r.status_code == 200 and r.content, url
        assert "http" not in (await c.get("/redoc")).text.split("<body>", 1)[1].split("Redoc")[0]
        assert (await c.get("/docs/static/nope.js")).status_code == 404
        assert (await c.get("/api/v1")).status_code == 401  # discovery needs a token
        assert (await c.get("/api/v1/cells")).status_code == 401


async def test_version_and_discovery(mem_api: Api) -> None:
    async with bare(mem_api) as c:
        version = (await c.get("/version")).json()
    assert {"major", "minor", "gitVersion", "platform"} <= set(version)
    assert version["gitVersion"].startswith("v")
    found = (await mem_api.client.get("/api/v1")).json()
    assert found["kind"] == "APIResourceList" and found["groupVersion"] == "apiary.io/v1"
    by_name = {r["name"]: r for r in found["resources"]}
    hives = by_name["hives"]
    assert hives["kind"] == "Hive" and hives["namespaced"] and "patch" in hives["verbs"]
    assert hives["shortNames"] == ["hv"] and hives["singularName"] == "hive"
    assert not by_name["cells"]["namespaced"]
    assert {"hives/status", "hives/scale", "drones/logs"} <= set(by_name)
    assert "patch" not in by_name["tokens"]["verbs"]
    assert (await mem_api.client.get("/api")).json()["versions"] == ["v1"]
