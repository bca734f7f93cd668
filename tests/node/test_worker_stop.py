"""Stopping a drone's worker is bounded: after ``stop_grace`` the messages its agent still holds
go back to the bus for another replica (real agent processes, in-process bus). Before, stop
waited for an agent that never answered — and with it apiaryd's SIGTERM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from test_guardrails_worker import ECHO, Rig

from apiary.bus import open_bus

SINK = ["/bin/sh", "-c", "cat > /dev/null"]  # takes every message, never answers


@pytest.fixture
async def rig(cell: str) -> AsyncIterator[Rig]:
    async with open_bus("memory://") as bus:
        r = Rig(bus, cell)
        await r.collect()
        try:
            yield r
        finally:
            await r.close()


async def test_stop_hands_held_messages_back_after_the_grace(rig: Rig) -> None:
    sink = await rig.drone("sink", SINK, stop_grace=0.3)
    await rig.send(1)
    await asyncio.sleep(0.3)  # the sink holds it
    assert sink.keeper.stats.in_flight == 1
    await rig.drone("echo", ECHO)
    t0 = time.monotonic()
    await sink.stop()
    assert time.monotonic() - t0 < 3
    (outcome,) = await rig.until(1)
    assert (outcome.drone, outcome.outputs[0]["payload"]) == ("echo", "Echo: m0")
