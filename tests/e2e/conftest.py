"""The two apiaryd set-ups the end-to-end tests run against: embedded (SQLite + in-process bus)
and scaled out (PostgreSQL + NATS JetStream, on a fresh database and stream)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services import fresh_postgres_url, require_nats, require_postgres

from .cluster import Apiaryd, drop_stale_test_streams, reap_retired, retire

HERE = Path(__file__).parent


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the directory's last test (its fixtures torn down), every apiaryd a fixture
    retired has ended."""
    if nextitem is None or Path(nextitem.path).parent != HERE:
        reap_retired()


@pytest.fixture
def embedded(tmp_path: Path) -> AsyncIterator[Apiaryd]:
    server = Apiaryd(tmp_path / "data").start()
    yield server  # type: ignore[misc]
    retire(server)


@contextlib.asynccontextmanager
async def scaled_apiaryd(
    data: Path, *, prefix: str = "E2E", bus_query: str = "", args: tuple[str, ...] = ()
) -> AsyncIterator[Apiaryd]:
    """An apiaryd on a fresh PostgreSQL database and its own JetStream stream (dropped after)."""
    require_postgres()
    nats = require_nats()
    await drop_stale_test_streams(nats)
    stream = f"{prefix}{int(time.time() * 1000) % 10**9}"
    async with fresh_postgres_url() as pg:
        bus = f"{nats}?stream={stream}{bus_query}"
        server = Apiaryd(data, [*args, "--store", pg, "--bus", bus]).start()
        try:
            yield server
        finally:
            server.stop()
            import nats as nats_py

            nc = await nats_py.connect(nats)
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
            await nc.close()


@pytest.fixture
async def scaled(tmp_path: Path) -> AsyncIterator[Apiaryd]:
    async with scaled_apiaryd(tmp_path / "data") as server:
        yield server
