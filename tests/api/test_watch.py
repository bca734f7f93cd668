"""Watch streams over real HTTP (uvicorn on an ephemeral port)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from apiary.api import ApiConfig
from apiary.store import StoreSettings

from .conftest import path_of, sample, served_api


@contextlib.asynccontextmanager
async def stream(
    client: httpx.AsyncClient, url: str, params: dict[str, str]
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    async with client.stream("GET", url, params={"watch": "true", **params}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")

        async def lines() -> AsyncIterator[dict[str, Any]]:
            async for line in r.aiter_lines():
                if line:
                    yield orjson.loads(line)

        yield lines()


async def test_watch_sees_1000_rapid_changes_in_order_without_gaps() -> None:
    async with served_api() as api:
        c = api.client
        await c.post(path_of("Session"), json=sample("Session", "seed"))
        since = await api.store.resource_version()
        async with stream(c, path_of("Session"), {"resourceVersion": str(since)}) as events:

            async def writer() -> None:  # as rapid as the store goes, behind the HTTP watch
                for i in range(1000):
                    await api.store.create(sample("Session", f"h{i}"))

            task = asyncio.create_task(writer())
            seen: list[int] = []
            names: set[str] = set()
            try:
                async for ev in events:
                    assert ev["type"] == "ADDED"
                    seen.append(int(ev["object"]["metadata"]["resourceVersion"]))
                    names.add(ev["object"]["metadata"]["name"])
                    if len(seen) == 1000:
                        break
                await task
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        assert seen == sorted(seen) and len(set(seen)) == 1000
        assert seen == list(range(since + 1, since + 1001))  # nothing else wrote: no gap at all
        assert names == {f"h{i}" for i in range(1000)}


async def test_watch_without_version_lists_first_then_bookmarks_and_streams() -> None:
    async with served_api(config=ApiConfig(bookmark_interval=0.2)) as api:
        c = api.client
        for name in ("a", "b"):
            await c.post(path_of("Secret"), json=sample("Secret", name))
        async with stream(c, path_of("Secret"), {}) as events:
            first = [await anext(events) for _ in range(3)]
            assert [e["type"] for e in first] == ["ADDED", "ADDED", "BOOKMARK"]
            assert first[0]["object"]["data"] == {"token": "<redacted>"}
            await c.delete(path_of("Secret", "a"))
            deleted = await anext(events)
            assert deleted["type"] == "DELETED" and deleted["object"]["metadata"]["name"] == "a"
            assert deleted["object"]["data"] == {"token": "<redacted>"}
            bookmark = await asyncio.wait_for(anext(events), 2)
            assert bookmark["type"] == "BOOKMARK"
            assert (
                bookmark["object"]["metadata"]["resourceVersion"]
                == deleted["object"]["metadata"]["resourceVersion"]
            )


async def test_watch_filters_by_label_and_name_and_reveals_on_request() -> None:
    async with served_api() as api:
        c = api.client
        since = str(await api.store.resource_version())
        params = {"resourceVersion": since, "fieldSelector": "metadata.name=want", "reveal": "true"}
        async with stream(c, path_of("Secret"), params) as events:
            await c.post(path_of("Secret"), json=sample("Secret", "other"))
            await c.post(path_of("Secret"), json=sample("Secret", "want"))
            ev = await anext(events)
            assert ev["object"]["metadata"]["name"] == "want"
            assert ev["object"]["data"]["token"] != "<redacted>"


async def test_watch_from_a_compacted_version_is_410_before_streaming() -> None:
    async with served_api(settings=StoreSettings(changelog_retention=5)) as api:
        c = api.client
        for i in range(20):
            await c.post(path_of("Session"), json=sample("Session", f"s{i}"))
        await api.store.compact()
        r = await c.get(path_of("Session"), params={"watch": "true", "resourceVersion": "1"})
        assert r.status_code == 410
        assert r.json()["reason"] == "Gone" and r.json()["code"] == 410
        latest = str(await api.store.resource_version())
        async with stream(c, path_of("Session"), {"resourceVersion": latest}) as events:
            await c.delete(path_of("Session", "s3"))
            assert (await anext(events))["type"] == "DELETED"
