"""The audit log: mutating requests become JSON lines (never bodies), reads do not; rotation by
size; ``GET /api/v1/audit`` for admins. Real app, real store, real files."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from apiary.api import api_state, create_app
from apiary.api.audit import AuditLog, describe
from apiary.api.auth import Principal
from apiary.store import Store, open_store

from .conftest import AUTH, TOKEN, path_of, sample

VIEWER_TOKEN = "viewer-token-0123456789"


@dataclass
class Audited:
    client: httpx.AsyncClient
    store: Store
    audit: AuditLog

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.audit.path.read_bytes().splitlines()]


@contextlib.asynccontextmanager
async def audited(tmp_path: Path, **kw: Any) -> AsyncIterator[Audited]:
    audit = AuditLog(tmp_path / "data" / "audit.log", **kw)
    async with open_store("memory://") as store:
        app = create_app(store, TOKEN, audit=audit)
        api_state(app).authenticator.tokens[VIEWER_TOKEN] = Principal("viewer")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://apiary", headers=AUTH
        ) as client:
            try:
                yield Audited(client, store, audit)
            finally:
                audit.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Audited]:
    async with audited(tmp_path) as a:
        yield a


async def test_writes_are_recorded_and_reads_are_not(api: Audited) -> None:
    c = api.client
    assert (await c.post(path_of("Hive"), json=sample("Hive", "h1"))).status_code == 201
    assert (await c.get(path_of("Hive", "h1"))).status_code == 200
    assert (await c.get(path_of("Hive"))).status_code == 200
    current = (await c.get(path_of("Hive", "h1"))).json()
    current["spec"]["stages"][0]["replicas"] = 2
    assert (await c.put(path_of("Hive", "h1"), json=current)).status_code == 200
    r = await c.post(path_of("Hive") + "?dryRun=All", json=sample("Hive", "h2"))
    assert r.status_code == 201
    assert (await c.delete(path_of("Hive", "h1"))).status_code == 200
    lines = api.lines()
    assert [(x["method"], x["status"], x["dryRun"]) for x in lines] == [
        ("POST", 201, False),
        ("PUT", 200, False),
        ("POST", 201, True),
        ("DELETE", 200, False),
    ]
    first = lines[0]
    assert first["principal"] == "admin"
    assert first["path"] == "/api/v1/cells/default/hives"
    assert (first["kind"], first["cell"], first["name"]) == ("Hive", "default", None)
    assert (lines[1]["kind"], lines[1]["cell"], lines[1]["name"]) == ("Hive", "default", "h1")
    assert first["time"].endswith("Z") and first["durationMs"] >= 0


async def test_refused_writes_are_recorded_too(api: Audited) -> None:
    c = api.client
    r = await c.post(path_of("Hive"), json=sample("Hive", "h"), headers={"Authorization": "x"})
    assert r.status_code == 401
    bad = sample("Hive", "h")
    bad["spec"]["stages"][0]["agentRef"] = "Not A Name"
    assert (await c.post(path_of("Hive"), json=bad)).status_code == 422
    r = await c.delete(path_of("Hive", "h"), headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
    assert r.status_code == 403
    assert [(x["principal"], x["status"]) for x in api.lines()] == [
        (None, 401), ("admin", 422), ("viewer", 403)]  # fmt: skip


async def test_no_request_body_reaches_the_log(api: Audited) -> None:
    secret = sample("Secret", "creds")  # stringData: s3cr3t-value
    assert (await api.client.post(path_of("Secret"), json=secret)).status_code == 201
    text = api.audit.path.read_text()
    assert "s3cr3t-value" not in text and "czNjcjN0LXZhbHVl" not in text  # nor its base64
    (line,) = api.lines()
    assert line["kind"] == "Secret" and line["status"] == 201


async def test_the_file_is_private(api: Audited) -> None:
    await api.client.post(path_of("Hive"), json=sample("Hive", "h"))
    assert api.audit.path.stat().st_mode & 0o777 == 0o600


async def test_audit_endpoint_reads_the_tail_for_admins(api: Audited) -> None:
    c = api.client
    for i in range(5):
        await c.post(path_of("Hive"), json=sample("Hive", f"h{i}"))
        await c.delete(path_of("Hive", f"h{i}"))
    r = await c.get("/api/v1/audit?limit=3")
    assert r.status_code == 200
    body = r.json()
    assert body["kind"] == "AuditLog"
    assert [(x["method"], x["name"]) for x in body["items"]] == [
        ("DELETE", "h3"), ("POST", None), ("DELETE", "h4")]  # fmt: skip
    assert len((await c.get("/api/v1/audit")).json()["items"]) == 10
    assert (await c.get("/api/v1/audit?limit=x")).status_code == 400
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert (await c.get("/api/v1/audit", headers=viewer)).status_code == 403
    assert (await c.get("/api/v1/audit", headers={"Authorization": "Bearer no"})).status_code == 401
    lines = api.lines()
    assert len(lines) == 12  # reading the audit log is not audited; being refused it is
    assert [(x["method"], x["status"]) for x in lines[10:]] == [("GET", 403), ("GET", 401)]
    assert lines[10]["reason"] == 'user "viewer" (no role) may not get AuditLog'
    assert lines[11]["reason"] == "invalid bearer token"


async def test_rotation_by_size_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    async with audited(tmp_path, max_bytes=2000, backups=2) as api:
        for i in range(40):
            await api.client.post(path_of("Hive"), json=sample("Hive", f"h{i}"))
        files = sorted(p.name for p in api.audit.path.parent.iterdir())
        assert files == ["audit.log", "audit.log.1", "audit.log.2"]
        for p in api.audit.path.parent.iterdir():
            assert p.stat().st_size < 2000 + 400
        tail = api.audit.tail(10)
        assert len(tail) == 10
        newest = (await api.client.get("/api/v1/audit?limit=1000")).json()["items"]
        names = [x["path"] for x in newest]
        assert len(names) < 40 and len(names) == len(api.audit.tail(1000))
        assert newest[-10:] == tail  # same records, across the rotated files, oldest first
        times = [x["time"] for x in newest]
        assert times == sorted(times)


async def test_without_an_audit_log_the_endpoint_is_503(tmp_path: Path) -> None:
    async with open_store("memory://") as store:
        app = create_app(store, TOKEN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a", headers=AUTH) as c:
            assert (await c.post(path_of("Hive"), json=sample("Hive", "h"))).status_code == 201
            r = await c.get("/api/v1/audit")
            assert r.status_code == 503 and "audit" in r.json()["message"]
    assert not (tmp_path / "audit.log").exists()


def test_a_damaged_line_is_skipped(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    audit.write({"method": "POST"})
    with (tmp_path / "audit.log").open("ab") as f:
        f.write(b'{"method": "PUT", "trunc\n')
    audit.write({"method": "DELETE"})
    audit.close()
    assert [x["method"] for x in audit.tail(10)] == ["POST", "DELETE"]
    assert audit.tail(0) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/cells/c/hives/h/scale", ("Hive", "c", "h", "scale")),
        ("/api/v1/cells/c/hives", ("Hive", "c", None, None)),
        ("/api/v1/cells/c", ("Cell", None, "c", None)),
        ("/api/v1/cells/c/status", ("Cell", None, "c", "status")),
        ("/api/v1/cells", ("Cell", None, None, None)),
        ("/api/v1/nodes/n1/status", ("Node", None, "n1", "status")),
        ("/api/v1/cells/c/sessions/s/approve", ("Session", "c", "s", "approve")),
        ("/api/v1/cells/c/sessions/s/comb/k/incr", ("Session", "c", "s", "comb/k/incr")),
        ("/api/v1/cells/c/memory/m1", ("memory", "c", "m1", None)),
        ("/metrics", (None, None, None, None)),
        ("/api/v1", (None, None, None, None)),
    ],
)
def test_describe_paths(path: str, expected: tuple[str | None, ...]) -> None:
    assert describe(path) == expected
