"""API fixtures: a real app over a real store (memory and SQLite), driven through ASGI.

The reference resolver runs as a real background task in the same loop, so tests see the
status it writes; every task is cancelled and awaited at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from apiary.api import ApiConfig, ReferenceResolver, api_state, create_app
from apiary.crypto import AesGcmCodec
from apiary.store import Store, StoreSettings, open_store

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples" / "seed-manifests"  # identical to the originals


@dataclass
class Api:
    client: httpx.AsyncClient
    store: Store
    url: str

    async def wait_for(self, predicate_path: str, check: object, timeout: float = 5.0) -> dict:
        """Poll GET ``predicate_path`` until ``check(body)`` is true."""
        assert callable(check)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            r = await self.client.get(predicate_path)
            body = r.json()
            if r.status_code == 200 and check(body):
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting on {predicate_path}: {body}")
            await asyncio.sleep(0.02)


def store_url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'apiary.db'}"


@contextlib.asynccontextmanager
async def running_api(
    url: str,
    *,
    config: ApiConfig | None = None,
    settings: StoreSettings | None = None,
    resolver: bool = True,
) -> AsyncIterator[Api]:
    codec = AesGcmCodec([b"k" * 32])
    store = open_store(url, settings, codec=codec)
    await store.open()
    app = create_app(store, TOKEN, config)
    tasks: list[asyncio.Task[None]] = []
    if resolver:
        state = api_state(app)
        tasks.append(
            asyncio.create_task(ReferenceResolver(store, state.recorder, resync_interval=5.0).run())
        )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://apiary", headers=AUTH
        ) as client:
            yield Api(client, store, url)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await store.close()


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(store_url(request.param, tmp_path)) as running:
        yield running


@pytest.fixture
async def mem_api() -> AsyncIterator[Api]:
    async with running_api("memory://") as running:
        yield running


@contextlib.asynccontextmanager
async def served_api(
    url: str = "memory://",
    *,
    config: ApiConfig | None = None,
    settings: StoreSettings | None = None,
) -> AsyncIterator[Api]:
    """The same app behind a real uvicorn on an ephemeral port (streaming needs real HTTP)."""
    import socket

    import uvicorn

    async with running_api(url, config=config, settings=settings) as inner:
        app = inner.client._transport.app  # type: ignore[attr-defined]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                app, lifespan="off", access_log=False, log_config=None, timeout_graceful_shutdown=1
            )
        )
        serving = asyncio.create_task(server._serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.005)
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
                yield Api(client, inner.store, base)
        finally:
            api_state(app).stopping.set()
            server.should_exit = True
            await serving
            sock.close()


def sample(kind: str, name: str, cell: str = "default") -> dict:
    """A minimal valid object of each kind."""
    meta: dict = {"name": name} if kind in ("Cell", "Node") else {"name": name, "namespace": cell}
    body: dict = {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": meta}
    body.update(
        {
            "Cell": {"spec": {}},
            "Node": {"spec": {}},
            "Secret": {"stringData": {"token": "s3cr3t-value"}},
            "AgentSpec": {"spec": {"runtime": {"command": ["cat"]}}},
            "Hive": {"spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]}},
            "Drone": {"spec": {"agentSpec": "a", "runtime": {"command": ["cat"]}}},
            "Session": {"spec": {"hiveRef": "h"}},
            "Event": {"involvedObject": {"kind": "Hive", "name": "h"}, "reason": "Test"},
        }[kind]
    )
    return body


PLURALS = {
    "Cell": "cells",
    "Node": "nodes",
    "Secret": "secrets",
    "AgentSpec": "agentspecs",
    "Hive": "hives",
    "Drone": "drones",
    "Session": "sessions",
    "Event": "events",
}


def path_of(kind: str, name: str | None = None, cell: str = "default") -> str:
    base = (
        f"/api/v1/{PLURALS[kind]}"
        if kind in ("Cell", "Node")
        else f"/api/v1/cells/{cell}/{PLURALS[kind]}"
    )
    return base if name is None else f"{base}/{name}"


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """uvloop, as in apiaryd (the default loop adds ~40 ms per in-process HTTP round trip)."""
    import uvloop

    return uvloop.EventLoopPolicy()
