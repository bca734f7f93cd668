"""Drone and hive logs over real HTTP: POSTed batches (deduplicated), tail/since/timestamps,
follow streams that end when the drone or hive goes, hive merges, and clear 4xx for bad input."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from apiary.api import api_state, create_app
from apiary.api.logs import LogStore, parse_since
from apiary.crypto import AesGcmCodec
from apiary.store import Store, open_store

from .conftest import AUTH, TOKEN

CELL = "default"
DRONES = f"/api/v1/cells/{CELL}/drones"


@dataclass
class Served:
    client: httpx.AsyncClient
    store: Store
    log_dir: Path
    logs: LogStore


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, *, log_dir: bool = True) -> AsyncIterator[Served]:
    store = open_store("memory://", codec=AesGcmCodec([b"k" * 32]))
    await store.open()
    app = create_app(store, TOKEN, log_dir=tmp_path / "logs" if log_dir else None)
    logs = app.state.apiary_logs
    if logs is not None:
        logs.gone_poll_seconds = 0.05
        logs.poll_interval = 0.02
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, http="httptools")
    )
    serving = asyncio.create_task(server._serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as client:
            yield Served(client, store, tmp_path / "logs", logs)
    finally:
        api_state(app).stopping.set()
        server.should_exit = True
        await serving
        sock.close()
        await store.close()


async def make_drone(store: Store, name: str, hive: str | None = None) -> dict[str, Any]:
    labels = {"apiary.io/hive": hive} if hive else {}
    return await store.create(
        {
            "apiVersion": "apiary.io/v1",
            "kind": "Drone",
            "metadata": {"name": name, "namespace": CELL, "labels": labels},
            "spec": {"agentSpec": "a", "runtime": {"command": ["cat"]}},
        }
    )


def line(text: str, t: str, stream: str = "stderr") -> dict[str, str]:
    return {"time": f"2030-01-01T00:00:{t}Z", "stream": stream, "text": text}


async def post(c: httpx.AsyncClient, drone: str, body: dict[str, Any]) -> httpx.Response:
    return await c.post(f"{DRONES}/{drone}/logs", json=body)


async def test_posted_lines_read_back_with_tail_since_and_timestamps(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        await make_drone(s.store, "d1")
        lines = [line(f"l{i}", f"{i:02d}.000001") for i in range(10)]
        r = await post(s.client, "d1", {"lines": lines})
        assert r.status_code == 200 and r.json()["written"] == 10
        r = await s.client.get(f"{DRONES}/d1/logs")
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text == "".join(f"l{i}\n" for i in range(10))
        r = await s.client.get(f"{DRONES}/d1/logs", params={"tail": "2", "timestamps": "true"})
        assert r.text == ("2030-01-01T00:00:08.000001Z l8\n2030-01-01T00:00:09.000001Z l9\n")
        r = await s.client.get(f"{DRONES}/d1/logs", params={"since": "2030-01-01T00:00:07Z"})
        assert r.text == "l7\nl8\nl9\n"
        r = await s.client.get(f"{DRONES}/d1/logs", params={"since": "5m"})  # 2030 > now-5m
        assert r.text.count("\n") == 10
        # Stored in the same format as the node's files (time, stream, text).
        raw = (s.log_dir / CELL / "d1.log").read_text().splitlines()
        assert raw[0] == "2030-01-01T00:00:00.000001Z stderr l0"


async def test_a_resent_batch_is_written_once_per_source(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        drone = await make_drone(s.store, "d1")
        uid = drone["metadata"]["uid"]
        batch = {"uid": uid, "source": "n1", "seq": 0, "lines": [line("a", "01"), line("b", "01")]}
        assert (await post(s.client, "d1", batch)).json() == {"written": 2, "next": 2}
        assert (await post(s.client, "d1", batch)).json() == {"written": 0, "next": 2}
        # overlapping resend: only the new tail is written
        batch2 = {**batch, "seq": 1, "lines": [line("b", "01"), line("c", "02")]}
        assert (await post(s.client, "d1", batch2)).json() == {"written": 1, "next": 3}
        # another node's lines are counted apart
        other = {**batch, "source": "n2", "lines": [line("x", "03")]}
        assert (await post(s.client, "d1", other)).json() == {"written": 1, "next": 1}
        assert (await s.client.get(f"{DRONES}/d1/logs")).text == "a\nb\nc\nx\n"
        # the cursor survives a restart of the API (a new LogStore reads it from disk)
        fresh = LogStore(s.log_dir)
        from apiary.node.logs import LogLine

        again = [LogLine(parse_since("2030-01-01T00:00:02Z"), "stderr", "c")]
        assert fresh.append(CELL, "d1", uid, "n1", 2, again) == (0, 3)


async def test_bad_batches_and_names_are_clear_4xx(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        drone = await make_drone(s.store, "d1")
        r = await post(s.client, "nope", {"lines": []})
        assert r.status_code == 404 and "nope" in r.json()["message"]
        r = await post(
            s.client,
            "d1",
            {"lines": [{"text": "ok"}, {"time": "yesterday", "text": "x"}, {"stream": "a b"}, 5]},
        )
        assert r.status_code == 422
        fields = {d["field"] for d in r.json()["details"]}
        assert fields == {"lines[1].time", "lines[2].stream", "lines[2].text", "lines[3]"}
        r = await post(s.client, "d1", {"source": "n1", "lines": []})
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "seq"
        r = await post(s.client, "d1", {"lines": "nope"})
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "lines"
        r = await post(s.client, "d1", {"uid": "other-uid", "lines": [line("x", "01")]})
        assert r.status_code == 404 and "no longer exists" in r.json()["message"]
        assert drone["metadata"]["uid"] != "other-uid"
        for query, field in (({"tail": "-1"}, "tail"), ({"since": "soon"}, "since")):
            r = await s.client.get(f"{DRONES}/d1/logs", params=query)
            assert r.status_code == 400 and field in r.json()["message"], r.text
        r = await s.client.get(f"{DRONES}/d1/logs", params={"follow": "maybe"})
        assert r.status_code == 400 and "follow" in r.json()["message"]
        r = await s.client.get(f"{DRONES}/../logs")
        assert r.status_code == 404
        r = await s.client.get(f"/api/v1/cells/{CELL}/hives/none/logs")
        assert r.status_code == 404
        r = await s.client.get(f"{DRONES}/d1/logs", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401


async def test_without_a_log_dir_the_endpoints_say_so(tmp_path: Path) -> None:
    async with serve(tmp_path, log_dir=False) as s:
        await make_drone(s.store, "d1")
        r = await s.client.get(f"{DRONES}/d1/logs")
        assert r.status_code == 503 and "no logs" in r.json()["message"]


async def read_until(lines: AsyncIterator[str], want: int, timeout: float = 5.0) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(timeout):
        async for text in lines:
            got.append(text)
            if len(got) >= want:
                break
    return got


async def test_follow_streams_new_lines_and_ends_when_the_drone_is_deleted(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as s:
        await make_drone(s.store, "d1")
        await post(s.client, "d1", {"lines": [line("old1", "01"), line("old2", "02")]})
        params = {"follow": "true", "tail": "1"}
        async with s.client.stream("GET", f"{DRONES}/d1/logs", params=params) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            assert await read_until(lines, 1) == ["old2"]
            await post(s.client, "d1", {"lines": [line("new1", "03"), line("new2", "03")]})
            assert await read_until(lines, 2) == ["new1", "new2"]
            await s.store.delete("Drone", CELL, "d1")
            async with asyncio.timeout(5):
                rest = [x async for x in lines]
            assert rest == []  # the stream ended by itself


async def test_follow_with_tail_zero_shows_only_new_lines(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        await make_drone(s.store, "d1")
        await post(s.client, "d1", {"lines": [line("old", "01")]})
        params = {"follow": "1", "tail": "0", "timestamps": "1"}
        async with s.client.stream("GET", f"{DRONES}/d1/logs", params=params) as r:
            lines = r.aiter_lines()
            await asyncio.sleep(0.1)
            await post(s.client, "d1", {"lines": [line("new", "02")]})
            assert await read_until(lines, 1) == ["2030-01-01T00:00:02.000000Z new"]


async def test_hive_logs_merge_by_time_with_prefixes_and_follow_new_drones(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as s:
        hive = await s.store.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "Hive",
                "metadata": {"name": "h", "namespace": CELL},
                "spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]},
            }
        )
        await make_drone(s.store, "h-a", hive="h")
        await make_drone(s.store, "h-b", hive="h")
        await make_drone(s.store, "other", hive="x")
        await post(s.client, "h-a", {"lines": [line("a1", "01"), line("a3", "03")]})
        await post(s.client, "h-b", {"lines": [line("b2", "02"), line("b4", "04")]})
        await post(s.client, "other", {"lines": [line("zz", "02")]})
        hive_logs = f"/api/v1/cells/{CELL}/hives/h/logs"
        r = await s.client.get(hive_logs)
        assert r.text == "[h-a] a1\n[h-b] b2\n[h-a] a3\n[h-b] b4\n"
        r = await s.client.get(hive_logs, params={"tail": "2", "timestamps": "true"})
        assert r.text == (
            "[h-a] 2030-01-01T00:00:03.000000Z a3\n[h-b] 2030-01-01T00:00:04.000000Z b4\n"
        )
        async with s.client.stream("GET", hive_logs, params={"follow": "true", "tail": "1"}) as r:
            lines = r.aiter_lines()
            assert await read_until(lines, 1) == ["[h-b] b4"]
            await post(s.client, "h-a", {"lines": [line("a5", "05")]})
            assert await read_until(lines, 1) == ["[h-a] a5"]
            await make_drone(s.store, "h-c", hive="h")  # scaled up while following
            await asyncio.sleep(0.2)
            await post(s.client, "h-c", {"lines": [line("c6", "06")]})
            assert await read_until(lines, 1) == ["[h-c] c6"]
            await s.store.delete("Hive", CELL, "h")
            async with asyncio.timeout(5):
                assert [x async for x in lines] == []
        assert hive["metadata"]["uid"]


def test_since_accepts_durations_and_rfc3339() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_since("5m", now) == now - timedelta(minutes=5)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("90", now) == now - timedelta(seconds=90)
    assert parse_since("2030-01-01T00:00:00+01:00") == datetime(2029, 12, 31, 23, tzinfo=UTC)
    with pytest.raises(Exception, match="since"):
        parse_since("-5m")


async def test_follows_end_once_their_token_is_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follow can outlive its token, as a watch can: it checks the token again every
    REAUTH_SECONDS and ends once it is revoked, for a drone and for a hive."""
    from apiary.api import watch

    monkeypatch.setattr(watch, "REAUTH_SECONDS", 0.1)
    async with serve(tmp_path) as s:
        await s.store.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "Hive",
                "metadata": {"name": "h", "namespace": CELL},
                "spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]},
            }
        )
        await make_drone(s.store, "h-a", hive="h")
        await post(s.client, "h-a", {"lines": [line("a1", "01")]})
        body = {"metadata": {"name": "reader"}, "spec": {"role": "viewer", "cell": CELL}}
        r = await s.client.post("/api/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        auth = {"Authorization": f"Bearer {r.json()['status']['token']}"}
        params = {"follow": "true", "tail": "1"}
        paths = [f"{DRONES}/h-a/logs", f"/api/v1/cells/{CELL}/hives/h/logs"]
        async with contextlib.AsyncExitStack() as streams:
            follows = [
                await streams.enter_async_context(
                    s.client.stream("GET", path, params=params, headers=auth)
                )
                for path in paths
            ]
            readers = [f.aiter_lines() for f in follows]
            assert [await read_until(lines, 1) for lines in readers] == [["a1"], ["[h-a] a1"]]
            await asyncio.sleep(0.3)  # rechecked with a good token: still following
            await post(s.client, "h-a", {"lines": [line("a2", "02")]})
            assert [await read_until(lines, 1) for lines in readers] == [["a2"], ["[h-a] a2"]]
            assert (await s.client.delete("/api/v1/tokens/reader")).status_code == 200
            async with asyncio.timeout(5):
                for lines in readers:
                    assert [x async for x in lines] == []  # ended by itself
