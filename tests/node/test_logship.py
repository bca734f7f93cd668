"""The node's log shipper against a real API on loopback: lines arrive, an API restart in the
middle loses and doubles nothing, a restarted shipper resumes from its cursor, and a deleted
drone stops its shipping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from apiary.api import api_state, create_app
from apiary.client import AsyncApiClient
from apiary.crypto import AesGcmCodec
from apiary.node.logs import LogWriter, drone_log_path, read_logs
from apiary.node.logship import Cursor, LogShipper, ShipperSettings
from apiary.store import Store, open_store

TOKEN = "logship-test-token"
CELL = "default"


class Api:
    """A real API (uvicorn) over one memory store that can be stopped and started again on the
    same port, as an apiaryd restart looks to a node."""

    def __init__(self, store: Store, log_dir: Path) -> None:
        self.store = store
        self.log_dir = log_dir
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._app: Any = None

    async def start(self) -> None:
        self._app = create_app(self.store, TOKEN, log_dir=self.log_dir)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        cfg = uvicorn.Config(self._app, lifespan="off", access_log=False, log_config=None)
        self._server = uvicorn.Server(cfg)
        self._task = asyncio.create_task(self._server._serve(sockets=[sock]))
        while not self._server.started:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        assert self._server and self._task and self._sock
        api_state(self._app).stopping.set()
        self._server.should_exit = True
        await self._task
        self._sock.close()

    def lines(self, drone: str) -> list[str]:
        return [ln.text for ln in read_logs(drone_log_path(self.log_dir, CELL, drone))]


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Api]:
    store = open_store("memory://", codec=AesGcmCodec([b"k" * 32]))
    await store.open()
    api = Api(store, tmp_path / "api-logs")
    await api.start()
    try:
        yield api
    finally:
        with contextlib.suppress(Exception):
            await api.stop()
        await store.close()


async def make_drone(store: Store, name: str) -> dict[str, Any]:
    return await store.create(
        {
            "apiVersion": "apiary.io/v1",
            "kind": "Drone",
            "metadata": {"name": name, "namespace": CELL},
            "spec": {"agentSpec": "a", "runtime": {"command": ["cat"]}},
        }
    )


@contextlib.asynccontextmanager
async def shipping(
    api: Api, node_dir: Path, **kw: Any
) -> AsyncIterator[tuple[LogShipper, AsyncApiClient]]:
    settings = ShipperSettings(
        log_dir=str(node_dir / "logs"),
        cursor_dir=str(node_dir / "logship"),
        node="n1",
        batch_seconds=0.05,
        poll_interval=0.02,
        retry_initial=0.05,
        retry_max=0.2,
        **kw,
    )
    async with AsyncApiClient(api.url, TOKEN, timeout=2.0) as client:
        shipper = LogShipper(client.post_logs, settings)
        task = asyncio.create_task(shipper.run())
        try:
            yield shipper, client
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(check: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_lines_survive_an_api_restart_without_loss_or_duplicates(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        drone = await make_drone(api.store, "d1")
        node = tmp_path / "node"
        writer = LogWriter(drone_log_path(node / "logs", CELL, "d1"))
        expected: list[str] = []

        def write(n: int) -> None:
            for _ in range(n):
                text = f"line {len(expected)}"
                writer.write("stderr", text)
                expected.append(text)

        async with shipping(api, node, batch_lines=7) as (shipper, _):
            shipper.track(drone["metadata"]["uid"], CELL, "d1", None)
            write(30)
            await until(lambda: api.lines("d1") == expected, what="first lines")
            await api.stop()
            write(25)  # written while the API is away: wait on disk
            await asyncio.sleep(0.3)
            await api.start()
            write(10)
            await until(lambda: len(api.lines("d1")) >= len(expected), what="the rest")
            await asyncio.sleep(0.2)
            assert api.lines("d1") == expected
        writer.close()


async def test_a_resent_batch_after_a_lost_answer_is_not_doubled(tmp_path: Path) -> None:
    """The API wrote the batch but the node never heard back: it sends it again."""
    async with running(tmp_path) as api:
        drone = await make_drone(api.store, "d1")
        uid = drone["metadata"]["uid"]
        async with AsyncApiClient(api.url, TOKEN) as client:
            batch = {
                "uid": uid,
                "source": "n1",
                "seq": 0,
                "lines": [{"time": "2030-01-01T00:00:00Z", "stream": "stderr", "text": "once"}],
            }
            await client.post_logs(CELL, "d1", batch)
            await api.stop()
            await api.start()  # a fresh app: its dedupe state comes from disk
            assert (await client.post_logs(CELL, "d1", batch))["written"] == 0
        assert api.lines("d1") == ["once"]


async def test_a_restarted_shipper_resumes_from_its_cursor(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        drone = await make_drone(api.store, "d1")
        uid = drone["metadata"]["uid"]
        node = tmp_path / "node"
        writer = LogWriter(drone_log_path(node / "logs", CELL, "d1"))
        # one node write of many lines shares a timestamp: the cursor must count within it
        writer.write_lines("stderr", [f"a{i}" for i in range(12)])
        async with shipping(api, node, batch_lines=5) as (shipper, _):
            shipper.track(uid, CELL, "d1", None)
            await until(lambda: len(api.lines("d1")) == 12, what="first run")
        saved = Cursor.from_json(json.loads((node / "logship" / CELL / "d1.json").read_text()), uid)
        assert saved is not None and saved.seq == 12 and saved.at_time == 12
        writer.write_lines("stderr", ["b0", "b1"])
        async with shipping(api, node) as (shipper, _):
            shipper.track(uid, CELL, "d1", None)
            await until(lambda: len(api.lines("d1")) >= 14, what="second run")
            await asyncio.sleep(0.2)
        assert api.lines("d1") == [f"a{i}" for i in range(12)] + ["b0", "b1"]
        writer.close()


async def test_first_follow_starts_at_creation_and_a_deleted_drone_stops(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        node = tmp_path / "node"
        path = drone_log_path(node / "logs", CELL, "d1")
        old = LogWriter(path, clock=lambda: 1_000_000.0)  # a predecessor with the same name
        old.write("stderr", "from the old drone")
        old.close()
        drone = await make_drone(api.store, "d1")
        writer = LogWriter(path)
        writer.write("stderr", "mine")
        async with shipping(api, node, linger_seconds=0.1) as (shipper, _):
            uid = drone["metadata"]["uid"]
            shipper.track(uid, CELL, "d1", drone["metadata"]["creationTimestamp"])
            await until(lambda: api.lines("d1") == ["mine"], what="own lines only")
            await api.store.delete("Drone", CELL, "d1")
            writer.write("stderr", "after deletion")
            await until(lambda: shipper.tracked() == [], what="shipping to stop")
            assert not (node / "logship" / CELL / "d1.json").exists()
            # untrack lets a drone that left the node drain, then stops
            other = await make_drone(api.store, "d2")
            w2 = LogWriter(drone_log_path(node / "logs", CELL, "d2"))
            shipper.track(other["metadata"]["uid"], CELL, "d2", None)
            w2.write("stderr", "bye")
            shipper.untrack(other["metadata"]["uid"])
            await until(lambda: shipper.tracked() == [], what="linger to end")
            assert api.lines("d2") == ["bye"]
            w2.close()
        writer.close()


def test_cursor_counts_lines_sharing_the_last_time() -> None:
    from datetime import UTC, datetime

    from apiary.node.logs import LogLine

    t1, t2 = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
    c = Cursor("u")
    c.advance([LogLine(t1, "stderr", "a"), LogLine(t2, "stderr", "b")])
    assert (c.seq, c.time, c.at_time) == (2, t2, 1)
    c.advance([LogLine(t2, "stderr", "c")])
    assert (c.seq, c.at_time) == (3, 2)
    assert Cursor.from_json(c.as_json(), "u") == c
    assert Cursor.from_json(c.as_json(), "other") is None
    assert Cursor.from_json({"uid": "u", "seq": "x"}, "u") is None
