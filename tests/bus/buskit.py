"""Helpers for the bus contract suite: a per-test environment and a delivery collector."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from apiary.bus import Bus, Delivery
from apiary.bus.jetstream import JetStreamBus
from apiary.bus.memory import MemoryBus
from apiary.bus.remote import RemoteBus
from apiary.bus.serve import serve_bus


class BusEnv:
    """One test's bus world: a unique subject prefix (and, for NATS, a unique stream).

    ``new_bus()`` opens another client on the same world — for NATS that is what another process
    would be; for ``remote`` it is another socket-pair client of one served in-process bus (what
    ``apiaryd --node-process`` gives its node). Buses are closed and the stream deleted at
    teardown.
    """

    def __init__(self, kind: str, nats_url: str | None = None) -> None:
        self.kind = kind
        tag = secrets.token_hex(4)
        self.prefix = f"t{tag}"
        self.stream = f"TEST_{tag.upper()}"
        self.url = (
            f"{nats_url}?stream={self.stream}&subjects={self.prefix}.>&pull_expires=2"
            if nats_url
            else "memory://"
        )
        self.buses: list[Bus] = []
        self.served: MemoryBus | None = None
        self.servers: list[asyncio.Task[None]] = []

    def subject(self, rest: str) -> str:
        return f"{self.prefix}.{rest}"

    async def new_bus(self, **kw: Any) -> Bus:
        bus: Bus
        if self.kind == "remote":
            bus = await self._remote_client(**kw)
        else:
            bus = MemoryBus(**kw) if self.kind == "memory" else JetStreamBus(self.url, **kw)
        await bus.open()
        self.buses.append(bus)
        return bus

    async def _remote_client(self, **kw: Any) -> Bus:
        if self.served is None:
            self.served = MemoryBus(**kw)
            await self.served.open()
        mine, theirs = socket.socketpair()
        self.servers.append(asyncio.create_task(serve_bus(self.served, mine)))
        return RemoteBus(f"fd://{theirs.detach()}")

    async def teardown(self) -> None:
        for bus in self.buses:
            await bus.close()
        if self.servers:
            await asyncio.wait_for(asyncio.gather(*self.servers), 5)
        if self.served is not None:
            await self.served.close()
        if self.kind == "nats":
            cleaner = JetStreamBus(self.url)
            await cleaner.open()
            await cleaner.delete_stream()
            await cleaner.close()


class Collector:
    """A handler that records deliveries; acks them unless told otherwise."""

    def __init__(
        self, *, ack: bool = True, action: Callable[[Delivery], Any] | None = None
    ) -> None:
        self.ack = ack
        self.action = action
        self.deliveries: list[Delivery] = []
        self.times: list[float] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.times.append(time.monotonic())
        if self.action is not None:
            result = self.action(delivery)
            if asyncio.iscoroutine(result):
                await result
        if self.ack:
            await delivery.ack()

    @property
    def data(self) -> list[bytes]:
        return [d.data for d in self.deliveries]

    def __len__(self) -> int:
        return len(self.deliveries)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        await wait_until(lambda: len(self.deliveries) >= count, timeout)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
