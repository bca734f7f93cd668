"""Secrets redaction/reveal, quota refusals and cascading deletion."""

from __future__ import annotations

import base64
from pathlib import Path

from .conftest import Api, path_of, running_api, sample

PLAINTEXT = "sk-very-secret-plaintext-9f8e7d"


async def test_secret_values_are_redacted_unless_revealed(api: Api) -> None:
    c = api.client
    body = sample("Secret", "key")
    body["stringData"] = {"apiKey": PLAINTEXT}
    body["data"] = {"other": base64.b64encode(b"second").decode()}
    r = await c.post(path_of("Secret"), json=body)
    assert r.status_code == 201
    assert r.json()["data"] == {"apiKey": "<redacted>", "other": "<redacted>"}
    assert "stringData" not in r.json()
    for url in (path_of("Secret", "key"), path_of("Secret")):
        assert PLAINTEXT not in (await c.get(url)).text
        assert base64.b64encode(PLAINTEXT.encode()).decode() not in (await c.get(url)).text
    revealed = (await c.get(path_of("Secret", "key") + "?reveal=true")).json()
    assert base64.b64decode(revealed["data"]["apiKey"]).decode() == PLAINTEXT
    assert "stringData" not in revealed

    # a read-modify-write without reveal keeps the values it could not see
    current = (await c.get(path_of("Secret", "key"))).json()
    current["metadata"]["labels"] = {"x": "y"}
    current["data"]["new"] = base64.b64encode(b"added").decode()
    assert (await c.put(path_of("Secret", "key"), json=current)).status_code == 200
    after = (await c.get(path_of("Secret", "key") + "?reveal=1")).json()
    assert base64.b64decode(after["data"]["apiKey"]).decode() == PLAINTEXT
    assert base64.b64decode(after["data"]["new"]) == b"added"


async def test_secret_plaintext_never_reaches_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "apiary.db"
    async with running_api(f"sqlite:///{db}") as api:
        body = sample("Secret", "key")
        body["stringData"] = {"apiKey": PLAINTEXT}
        assert (await api.client.post(path_of("Secret"), json=body)).status_code == 201
        current = (await api.client.get(path_of("Secret", "key"))).json()
        current["metadata"]["labels"] = {"rotated": "yes"}
        assert (await api.client.put(path_of("Secret", "key"), json=current)).status_code == 200
    files = [p for p in tmp_path.iterdir() if p.name.startswith("apiary.db")]  # noqa: ASYNC240
    raw = b"".join(p.read_bytes() for p in files)
    assert b"rotated" in raw  # the object is there ...
    assert PLAINTEXT.encode() not in raw  # ... its value is not, in any form
    assert base64.b64encode(PLAINTEXT.encode()) not in raw


async def test_quotas_refuse_with_403_naming_the_quota(api: Api) -> None:
    c = api.client
    cell = sample("Cell", "small")
    cell["spec"] = {"resourceQuota": {"maxAgentSpecs": 2, "maxHives": 1, "maxDronesPerHive": 3}}
    assert (await c.post("/api/v1/cells", json=cell)).status_code == 201
    for i in range(2):
        r = await c.post(
            path_of("AgentSpec", None, "small"), json=sample("AgentSpec", f"a{i}", "small")
        )
        assert r.status_code == 201
    r = await c.post(path_of("AgentSpec", None, "small"), json=sample("AgentSpec", "a2", "small"))
    assert r.status_code == 403
    assert r.json()["reason"] == "QuotaExceeded" and "maxAgentSpecs" in r.json()["message"]
    big = sample("Hive", "big", "small")
    big["spec"]["stages"][0]["replicas"] = 4
    r = await c.post(path_of("Hive", None, "small"), json=big)
    assert r.status_code == 403 and "maxDronesPerHive" in r.json()["message"]
    assert (
        await c.post(path_of("Hive", None, "small"), json=sample("Hive", "h1", "small"))
    ).status_code == 201
    r = await c.post(path_of("Hive", None, "small"), json=sample("Hive", "h2", "small"))
    assert r.status_code == 403 and "maxHives" in r.json()["message"]
    r = await c.post(
        path_of("Hive", None, "small") + "?dryRun=All", json=sample("Hive", "h2", "small")
    )
    assert r.status_code == 403  # dry-run admits fully
    # other cells (and cells that do not exist) are not limited
    assert (
        await c.post(path_of("Hive", None, "nowhere"), json=sample("Hive", "h2", "nowhere"))
    ).status_code == 201


async def test_delete_cascades_through_owner_references(api: Api) -> None:
    c = api.client
    hive = (await c.post(path_of("Hive"), json=sample("Hive", "owner"))).json()
    ref = {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "name": "owner",
        "uid": hive["metadata"]["uid"],
    }
    drone = sample("Drone", "d1")
    drone["metadata"]["ownerReferences"] = [ref]
    d1 = (await c.post(path_of("Drone"), json=drone)).json()
    session = sample("Session", "s1")  # owned by the drone: a grandchild of the hive
    session["metadata"]["ownerReferences"] = [
        {"apiVersion": "apiary.io/v1", "kind": "Drone", "name": "d1", "uid": d1["metadata"]["uid"]}
    ]
    assert (await c.post(path_of("Session"), json=session)).status_code == 201
    bystander = sample("Drone", "free")
    assert (await c.post(path_of("Drone"), json=bystander)).status_code == 201

    r = await c.delete(path_of("Hive", "owner"))
    assert r.status_code == 200 and r.json()["metadata"]["name"] == "owner"
    assert (await c.get(path_of("Drone", "d1"))).status_code == 404
    assert (await c.get(path_of("Session", "s1"))).status_code == 404
    assert (await c.get(path_of("Drone", "free"))).status_code == 200


async def test_deleting_a_cell_deletes_everything_in_it(api: Api) -> None:
    c = api.client
    assert (await c.post("/api/v1/cells", json=sample("Cell", "doomed"))).status_code == 201
    for kind in ("Secret", "AgentSpec", "Hive", "Session"):
        r = await c.post(path_of(kind, None, "doomed"), json=sample(kind, "x", "doomed"))
        assert r.status_code == 201
    assert (await c.post(path_of("Hive"), json=sample("Hive", "x"))).status_code == 201
    r = await c.delete("/api/v1/cells/doomed")
    assert r.status_code == 200
    for kind in ("Secret", "AgentSpec", "Hive", "Session"):
        assert (await c.get(path_of(kind, "x", "doomed"))).status_code == 404
    assert (await c.get(path_of("Hive", "x"))).status_code == 200  # other cells untouched
