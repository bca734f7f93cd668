"""The bus contract suite runs against every backend: in-process and remote (the in-process bus
served over a socket pair) always, NATS when reachable.

NATS tests get a unique stream and subject prefix each, so parallel runs never see each other's
messages, and the stream is deleted afterwards; without NATS they skip (or fail under
``APIARY_REQUIRE_SERVICES=1``) through ``services.require_nats``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from buskit import BusEnv

from apiary.bus import Bus
from services import require_nats


@pytest.fixture(params=["memory", "remote", "nats"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[BusEnv]:
    kind = str(request.param)
    world = BusEnv(kind, require_nats() if kind == "nats" else None)
    try:
        yield world
    finally:
        await world.teardown()


@pytest.fixture
async def nats_env() -> AsyncIterator[BusEnv]:
    world = BusEnv("nats", require_nats())
    try:
        yield world
    finally:
        await world.teardown()


@pytest.fixture
async def bus(env: BusEnv) -> Bus:
    return await env.new_bus()
