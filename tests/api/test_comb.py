"""Comb endpoints: session memory and long-term memory over HTTP.

Most tests drive the app in-process (ASGI) over a memory store and a real SQLite comb with a fake
clock; the last ones run a real ``apiaryd`` subprocess to check the daemon's wiring: the default
comb file in the data dir survives a restart, ``--comb-session-bytes`` is enforced, and with a
PostgreSQL store the comb lives in the same database.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from apiary.api import create_app
from apiary.comb import CombSettings, open_comb
from apiary.store import open_store
from services import fresh_postgres_url

from .conftest import AUTH, TOKEN, sample

C = "default"
SESSION = f"/api/v1/cells/{C}/sessions/chat"
COMB = SESSION + "/comb"
MEMORY = f"/api/v1/cells/{C}/memory"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def comb_api(
    tmp_path: Path, limit: int = 1 << 20
) -> AsyncIterator[tuple[httpx.AsyncClient, Clock]]:
    clock = Clock()
    store = open_store("memory://")
    comb = open_comb(f"sqlite://{tmp_path / 'comb.db'}", CombSettings(limit, clock))
    async with store, comb:
        app = create_app(store, TOKEN, comb=comb)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
            r = await c.post(f"/api/v1/cells/{C}/sessions", json=sample("Session", "chat"))
            assert r.status_code == 201, r.text
            yield c, clock


async def test_set_get_incr_keys_delete_clear(tmp_path: Path) -> None:
    async with comb_api(tmp_path) as (c, _):
        r = await c.put(COMB + "/profile", json={"value": {"name": "Ada", "langs": ["en"]}})
        assert r.status_code == 200, r.text
        assert r.json() == {"key": "profile", "value": {"name": "Ada", "langs": ["en"]}}
        assert (await c.get(COMB + "/profile")).json()["value"] == {"name": "Ada", "langs": ["en"]}
        assert (await c.post(COMB + "/visits/incr")).json() == {"key": "visits", "value": 1}
        assert (await c.post(COMB + "/visits/incr", json={"by": 5})).json()["value"] == 6
        r = await c.put(
            COMB + "/notes", content="value: [1, 2]", headers={"Content-Type": "application/yaml"}
        )
        assert r.status_code == 200
        listing = (await c.get(COMB)).json()
        assert listing["keys"] == ["notes", "profile", "visits"]
        assert listing["limitBytes"] == 1 << 20
        assert listing["usageBytes"] > 0
        assert (await c.get(COMB, params={"pattern": "p*"})).json()["keys"] == ["profile"]
        assert (await c.delete(COMB + "/notes")).json() == {"key": "notes", "deleted": True}
        r = await c.delete(COMB + "/notes")
        assert r.status_code == 404 and "notes" in r.json()["message"]
        assert (await c.delete(COMB)).json() == {"cleared": 2}
        r = await c.get(COMB + "/profile")
        assert r.status_code == 404
        assert r.json()["reason"] == "NotFound"


async def test_lists_for_conversation_and_artifacts(tmp_path: Path) -> None:
    async with comb_api(tmp_path) as (c, _):
        for i, text in enumerate(["hello", "how are you?", "fine"]):
            r = await c.post(SESSION + "/lists/conversation", json={"item": {"n": i, "text": text}})
            assert r.json() == {"name": "conversation", "length": i + 1}
        r = await c.get(SESSION + "/lists/conversation", params={"start": "-2"})
        assert [m["text"] for m in r.json()["items"]] == ["how are you?", "fine"]
        r = await c.get(SESSION + "/lists/conversation", params={"start": "x"})
        assert r.status_code == 400 and "start" in r.json()["message"]
        r = await c.post(SESSION + "/lists/conversation", json={})
        assert r.status_code == 422 and r.json()["details"] == [
            {"field": "item", "message": "required"}
        ]


async def test_ttl_seconds_expire_with_the_clock(tmp_path: Path) -> None:
    async with comb_api(tmp_path) as (c, clock):
        r = await c.put(COMB + "/otp", json={"value": "123456", "ttlSeconds": 30})
        assert r.json()["ttlSeconds"] == 30
        clock.now += 29
        assert (await c.get(COMB + "/otp")).status_code == 200
        clock.now += 2
        assert (await c.get(COMB + "/otp")).status_code == 404
        assert (await c.get(COMB)).json()["keys"] == []


async def test_the_memory_limit_is_a_413_naming_it(tmp_path: Path) -> None:
    async with comb_api(tmp_path, limit=1000) as (c, _):
        assert (await c.put(COMB + "/a", json={"value": "x" * 900})).status_code == 200
        r = await c.put(COMB + "/b", json={"value": "y" * 200})
        assert r.status_code == 413
        assert r.json()["reason"] == "PayloadTooLarge"
        assert "limit of 1000 bytes" in r.json()["message"]
        assert (await c.get(COMB)).json()["keys"] == ["a"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("GET", "/api/v1/cells/default/sessions/nope/comb/k", None, 404, "Session 'nope'"),
        ("PUT", COMB + "/k", {"valu": 1}, 422, "valu"),
        ("PUT", COMB + "/k", {}, 422, "value"),
        ("PUT", COMB + "/k", {"value": 1, "ttlSeconds": -5}, 422, "ttlSeconds"),
        ("PUT", COMB + "/k", {"value": 1, "ttlSeconds": "soon"}, 422, "ttlSeconds"),
        ("PUT", COMB + "/k", [1, 2], 400, "object"),
        ("POST", COMB + "/k/incr", {"by": "two"}, 422, "by"),
        ("GET", COMB + "/" + "k" * 300, None, 422, "key"),
        ("POST", MEMORY, {"metadata": {}}, 422, "text"),
        ("POST", MEMORY, {"text": "x", "metadata": "no"}, 422, "metadata"),
        ("GET", MEMORY + "/search", None, 400, "q"),
        ("GET", MEMORY + "/search?q=cat&limit=0", None, 422, "limit"),
        ("GET", MEMORY + "/search?q=cat&limit=many", None, 400, "limit"),
        ("DELETE", MEMORY + "/nope", None, 404, "nope"),
    ],
)
async def test_bad_requests_name_the_problem(
    tmp_path: Path, method: str, path: str, body: object, status: int, needle: str
) -> None:
    async with comb_api(tmp_path) as (c, _):
        r = await c.request(method, path, json=body)
        assert r.status_code == status, r.text
        assert needle in r.text


async def test_incr_of_a_string_is_a_409(tmp_path: Path) -> None:
    async with comb_api(tmp_path) as (c, _):
        await c.put(COMB + "/name", json={"value": "Ada"})
        r = await c.post(COMB + "/name/incr", json={"by": 1})
        assert r.status_code == 409 and "not a number" in r.json()["message"]


async def test_long_term_memory_search_is_ranked(tmp_path: Path) -> None:
    async with comb_api(tmp_path) as (c, _):
        ids = []
        for text in (
            "Invoice 42 is due on Friday",
            "The user prefers dark mode and short answers",
            "Dark roast coffee, dark chocolate: the user likes everything dark",
        ):
            r = await c.post(MEMORY, json={"text": text, "metadata": {"src": "chat"}})
            assert r.status_code == 201
            ids.append(r.json()["id"])
        r = await c.get(MEMORY + "/search", params={"q": "dark", "limit": "5"})
        items = r.json()["items"]
        assert [i["id"] for i in items] == [ids[2], ids[1]]
        assert items[0]["metadata"] == {"src": "chat"} and items[0]["score"] > items[1]["score"]
        assert (await c.delete(MEMORY + "/" + ids[2])).json() == {"id": ids[2], "deleted": True}
        r = await c.get(MEMORY + "/search", params={"q": "dark"})
        assert [i["id"] for i in r.json()["items"]] == [ids[1]]


async def test_deleting_the_session_or_cell_clears_its_memory(tmp_path: Path) -> None:
    async with comb_api(tmp_path) as (c, _):
        await c.put(COMB + "/k", json={"value": 1})
        await c.post(SESSION + "/lists/conversation", json={"item": "hi"})
        assert (await c.delete(SESSION)).status_code == 200
        r = await c.post(f"/api/v1/cells/{C}/sessions", json=sample("Session", "chat"))
        assert r.status_code == 201
        assert (await c.get(COMB)).json()["keys"] == []  # a new session of that name starts empty
        assert (await c.get(SESSION + "/lists/conversation")).json()["items"] == []

        # a cell's deletion takes its sessions' memory and its long-term memory along
        await c.post("/api/v1/cells", json=sample("Cell", "team"))
        await c.post("/api/v1/cells/team/sessions", json=sample("Session", "s", "team"))
        await c.put("/api/v1/cells/team/sessions/s/comb/k", json={"value": 1})
        await c.post("/api/v1/cells/team/memory", json={"text": "team secret plan"})
        assert (await c.delete("/api/v1/cells/team")).status_code == 200
        r = await c.get("/api/v1/cells/team/memory/search", params={"q": "plan"})
        assert r.json()["items"] == []
        await c.post("/api/v1/cells/team/sessions", json=sample("Session", "s", "team"))
        assert (await c.get("/api/v1/cells/team/sessions/s/comb")).json()["keys"] == []


# ------------------------------------------------------------------ a real apiaryd process


def _daemon(data_dir: Path, *args: str):  # type: ignore[no-untyped-def]
    from server.daemon_proc import start

    return start(data_dir, "--no-local-node", *args)


def test_apiaryd_keeps_the_comb_in_its_data_dir_across_restarts(tmp_path: Path) -> None:
    d = _daemon(tmp_path / "data", "--comb-session-bytes", "4096")
    try:
        h = d.headers
        r = httpx.post(
            f"{d.url}/api/v1/cells/default/sessions", json=sample("Session", "chat"), headers=h
        )
        assert r.status_code == 201, r.text
        assert httpx.post(f"{d.url}{COMB}/n/incr", json={"by": 7}, headers=h).json()["value"] == 7
        r = httpx.put(f"{d.url}{COMB}/big", json={"value": "x" * 5000}, headers=h)
        assert r.status_code == 413 and "4096" in r.json()["message"]
        r = httpx.post(
            f"{d.url}{MEMORY}", json={"text": "the deploy key rotates monthly"}, headers=h
        )
        assert r.status_code == 201
    finally:
        assert d.terminate() == 0
    assert (tmp_path / "data" / "comb.db").exists()
    d = _daemon(tmp_path / "data")
    try:
        h = d.headers
        assert httpx.get(f"{d.url}{COMB}/n", headers=h).json()["value"] == 7
        r = httpx.get(f"{d.url}{MEMORY}/search", params={"q": "deploy"}, headers=h)
        assert [i["text"] for i in r.json()["items"]] == ["the deploy key rotates monthly"]
    finally:
        d.terminate()


async def test_apiaryd_on_postgresql_keeps_the_comb_in_the_store_database(tmp_path: Path) -> None:
    async with fresh_postgres_url() as url:
        d = _daemon(tmp_path / "data", "--store", url)
        try:
            async with httpx.AsyncClient(base_url=d.url, headers=d.headers) as c:
                r = await c.post("/api/v1/cells/default/sessions", json=sample("Session", "chat"))
                assert r.status_code == 201, r.text
                assert (await c.post(COMB + "/n/incr")).json()["value"] == 1
                await c.post(MEMORY, json={"text": "cats purr", "metadata": {"a": 1}})
                r = await c.get(MEMORY + "/search", params={"q": "cat"})
                assert [i["metadata"] for i in r.json()["items"]] == [{"a": 1}]
        finally:
            d.terminate()
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT value FROM comb_kv WHERE key = 'n'") == "1"
        finally:
            await conn.close()
        assert not (tmp_path / "data" / "comb.db").exists()
