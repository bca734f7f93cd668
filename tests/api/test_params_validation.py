"""Every parameter is validated (issue 10.4 and 10.8), against the real app under uvicorn over
SQLite — where a 23-digit ``limit`` used to be a 500 from the scan and a 26-digit watch
``resourceVersion`` broke the stream off mid-body: each is a 400 naming the parameter now, before
a byte of the answer is sent. Forged ``continue`` tokens and impossible names in the path are 400
too, and a 405 lists every method the path has."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from apiary.api.allow import AllowHeaders

from .conftest import AUTH, Api, path_of, running_api, sample, served_api

HIVES = path_of("Hive")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with served_api(f"sqlite:///{tmp_path / 'apiary.db'}") as running:
        for i in range(3):
            r = await running.client.post(HIVES, json=sample("Hive", f"h{i}"))
            assert r.status_code == 201, r.text
        yield running


def bad(r: httpx.Response, parameter: str) -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["reason"] == "BadRequest"
    assert [d["field"] for d in body["details"]] == [parameter], body
    return str(body["message"])


def token(*parts: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


async def test_integers_out_of_range_are_400_naming_them(api: Api) -> None:
    c = api.client
    message = bad(await c.get(HIVES, params={"limit": "99999999999999999999999"}), "limit")
    assert "must be at most 9223372036854775807" in message
    for value in ("-1", "ten", "1e3", "5_0", "+5"):
        bad(await c.get(HIVES, params={"limit": value}), "limit")
    page = await c.get(HIVES, params={"limit": str(2**63 - 1)})  # the int64 maximum is fine
    assert page.status_code == 200 and len(page.json()["items"]) == 3


async def test_selectors_and_flags_name_the_parameter(api: Api) -> None:
    c = api.client
    for selector in ("a in (", "tier=" + "x" * 64, "bad key=1", "-x=1", "a=" + ",b" * 3000):
        bad(await c.get(HIVES, params={"labelSelector": selector}), "labelSelector")
    bad(await c.get(HIVES, params={"fieldSelector": "spec.x=1"}), "fieldSelector")
    bad(await c.get(HIVES, params={"watch": "maybe"}), "watch")
    bad(await c.post(HIVES, params={"dryRun": "sometimes"}, json=sample("Hive", "x")), "dryRun")
    r = await c.get(HIVES, params={"labelSelector": "apiary.io/tier in (gold, x-1),!team"})
    assert r.status_code == 200 and r.json()["items"] == []


async def test_watch_resource_versions_are_checked_before_the_stream(api: Api) -> None:
    c = api.client
    for rv in ("12345678901234567890123456", "abc", "-3"):
        r = await c.get(HIVES, params={"watch": "true", "resourceVersion": rv})
        bad(r, "resourceVersion")
    current = int((await c.get(HIVES)).json()["metadata"]["resourceVersion"])
    r = await c.get(HIVES, params={"watch": "true", "resourceVersion": str(current + 1000)})
    assert "newer than the store's newest version" in bad(r, "resourceVersion")
    async with c.stream(
        "GET", HIVES, params={"watch": "true", "resourceVersion": str(current - 1)}
    ) as stream:  # a real one still streams
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            assert orjson.loads(line)["object"]["metadata"]["name"] == "h2"
            break


async def test_resource_version_preconditions_must_be_numbers(api: Api) -> None:
    c = api.client
    bad(await c.delete(path_of("Hive", "h0"), params={"resourceVersion": "abc"}), "resourceVersion")
    assert (await c.get(path_of("Hive", "h0"))).status_code == 200  # not deleted
    current = (await c.get(path_of("Hive", "h0"))).json()
    current["metadata"]["resourceVersion"] = "abc"
    r = await c.put(path_of("Hive", "h0"), json=current)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == "metadata.resourceVersion"
    status = {"metadata": {"resourceVersion": "1 OR 1=1"}, "status": {"phase": "x"}}
    r = await c.put(path_of("Hive", "h0") + "/status", json=status)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "metadata.resourceVersion"


async def test_continue_tokens_are_checked_strictly(api: Api) -> None:
    c = api.client
    first = (await c.get(HIVES, params={"limit": "2"})).json()
    issued = first["metadata"]["continue"]
    rest = (await c.get(HIVES, params={"limit": "2", "continue": issued})).json()
    assert [h["metadata"]["name"] for h in first["items"] + rest["items"]] == ["h0", "h1", "h2"]
    assert "continue" not in rest["metadata"]
    forged = [
        "Zm9v",  # "foo"
        "%%%",
        token("default", "h0"),  # the old two-part shape, made up by hand
        token(1, "Hive", "other", "other", "h0"),  # another cell's list
        token(1, "AgentSpec", "default", "default", "h0"),  # another kind's list
        token(1, "Hive", "default", "default", "' OR '1'='1"),
        token(1, "Hive", "default", "default", "x" * 300),
        token(2, "Hive", "default", "default", "h0"),
        "A" * 2000,
    ]
    for value in forged:
        bad(await c.get(HIVES, params={"limit": "2", "continue": value}), "continue")
    r = await c.get("/api/v1/hives", params={"limit": "1"})  # across all cells: its own tokens
    across = r.json()["metadata"]["continue"]
    assert (await c.get("/api/v1/hives", params={"continue": across})).status_code == 200
    bad(await c.get(HIVES, params={"continue": across}), "continue")


async def test_names_in_the_path_are_dns_labels(api: Api) -> None:
    c = api.client
    for path in (
        "/api/v1/cells/x' OR '1'='1/hives",
        "/api/v1/cells/UPPER/hives",
        "/api/v1/cells/" + "a" * 64 + "/hives",
        "/api/v1/cells/-x/hives/h0",
    ):
        bad(await c.get(path), "cell")
    bad(await c.get(f"{HIVES}/x' OR '1'='1"), "name")
    bad(await c.delete(f"{HIVES}/Bad_Name"), "name")
    bad(await c.put(f"{HIVES}/a..b", json=sample("Hive", "a..b")), "name")
    bad(await c.get("/api/v1/cells/Bad"), "name")
    assert (await c.get(f"{HIVES}/nope")).status_code == 404  # a valid name is still a 404


async def check_allow_headers(c: httpx.AsyncClient) -> None:
    r = await c.post(path_of("Hive", "h0"), json={})
    assert r.status_code == 405
    allowed = set(r.headers["allow"].split(", "))
    assert {"GET", "PUT", "DELETE"} <= allowed and "POST" not in allowed
    r = await c.delete(HIVES)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = await c.post("/api/v1/hives", json=sample("Hive", "x"))
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = await c.post(f"{path_of('Hive', 'h0')}/scale", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"


async def test_405_lists_every_method_of_the_path(api: Api) -> None:
    await check_allow_headers(api.client)


async def test_the_allow_middleware_over_a_real_app() -> None:
    """The middleware on its own, over a real app."""
    async with running_api("memory://") as inner:
        app = AllowHeaders(inner.client._transport.app)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://apiary", headers=AUTH
        ) as c:
            await check_allow_headers(c)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/cells/x'%20OR%20'1'='1/hives/h/scale",
        "/api/v1/cells/x'%20OR%20'1'='1/hives/h/dlq",
        "/api/v1/cells/x'%20OR%20'1'='1/sessions/s/messages",
        "/api/v1/cells/default/sessions/Bad_Name/messages",
        "/api/v1/cells/x'%20OR%20'1'='1/drones/d/logs",
        "/api/v1/cells/x'%20OR%20'1'='1/memory",
    ],
)
async def test_every_route_checks_the_names_in_its_path(api: Api, path: str) -> None:
    r = await api.client.get(path)
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["field"] in ("cell", "name")
