"""The bus over a socket pair (``fd://N``) beyond the contract suite: bad URLs and descriptors, the
server's errors, a connection that ends, a peer that sends garbage."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest
from buskit import Collector, wait_until

from apiary.bus import open_bus
from apiary.bus.memory import MemoryBus
from apiary.bus.remote import RemoteBus
from apiary.bus.serve import serve_bus
from apiary.bus.wire import frame
from apiary.errors import BadRequest, Unavailable


def pair(served: MemoryBus) -> tuple[RemoteBus, asyncio.Task[None], socket.socket]:
    mine, theirs = socket.socketpair()
    server = asyncio.create_task(serve_bus(served, mine))
    return RemoteBus(f"fd://{theirs.detach()}"), server, mine


@pytest.mark.parametrize("url", ["fd://", "fd://x", "fd://-1"])
def test_a_bad_fd_url_names_the_field(url: str) -> None:
    with pytest.raises(BadRequest, match="fd://N") as err:
        open_bus(url)
    assert err.value.details[0].field == "bus"


async def test_a_descriptor_that_is_no_socket_is_unavailable() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(Unavailable, match="not a socket"):
            await RemoteBus(f"fd://{r}").open()
    finally:
        os.close(r)
        os.close(w)


async def test_the_servers_errors_come_back_as_themselves() -> None:
    async with MemoryBus() as served:
        client, server, _ = pair(served)
        await client.open()
        await served.close()  # the bus behind the socket refuses now
        with pytest.raises(Unavailable, match="in-process bus is not open"):
            await client.publish("a.b", b"x")
        await client.close()
        await asyncio.wait_for(server, 5)


async def test_a_connection_that_ends_fails_calls_and_says_so() -> None:
    async with MemoryBus() as served:
        client, server, mine = pair(served)
        await client.open()
        await client.publish("a.b", b"first")
        server.cancel()
        mine.close()
        await asyncio.wait_for(client.lost.wait(), 5)
        with pytest.raises(Unavailable, match="not connected"):
            await client.publish("a.b", b"second")
        await client.close()


async def test_garbage_ends_that_connection_and_its_work_goes_back() -> None:
    """A peer that breaks the protocol is cut off; what it held unsettled is redelivered."""
    async with MemoryBus() as served:
        raw, theirs = socket.socketpair()
        server = asyncio.create_task(serve_bus(served, theirs))
        reader, writer = await asyncio.open_unix_connection(sock=raw)
        writer.write(frame(["s", 1, 1, "w.x", "g", 1, 30.0]))
        await served.publish("w.x", b"job")
        await reader.read(1)  # the "ok" and the delivery begin to arrive: it holds the job
        writer.write(struct.pack(">II", 5, 0) + b"nope!")  # a head that is not JSON
        await asyncio.wait_for(server, 5)
        writer.close()
        other = Collector()
        await served.subscribe("w.x", "g", other)
        await other.wait_for(1)
        assert other.data == [b"job"] and other.deliveries[0].num_delivered == 2


async def test_a_frame_over_the_limit_ends_the_connection() -> None:
    async with MemoryBus() as served:
        raw, theirs = socket.socketpair()
        server = asyncio.create_task(serve_bus(served, theirs))
        raw.sendall(struct.pack(">II", 1 << 30, 1 << 30))
        await asyncio.wait_for(server, 5)
        raw.close()


async def test_deliveries_for_a_drained_subscription_go_to_the_next_member() -> None:
    async with MemoryBus() as served:
        a, server_a, _ = pair(served)
        b, server_b, _ = pair(served)
        await a.open()
        await b.open()
        held = Collector(ack=False)
        sub = await a.subscribe("q.x", "g", held, max_in_flight=4)
        await a.publish_many([("q.x", b"%d" % i) for i in range(4)])
        await held.wait_for(4)
        got = Collector()
        await b.subscribe("q.x", "g", got)
        await sub.drain()
        await wait_until(lambda: len(got) >= 4)
        assert sorted(got.data) == [b"0", b"1", b"2", b"3"]
        for bus in (a, b):
            await bus.close()
        await asyncio.wait_for(asyncio.gather(server_a, server_b), 5)


async def test_a_delivery_that_expires_on_the_client_is_forgotten_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client's "forget" is one-way: no error logged, no answer that could hit a call."""
    async with MemoryBus() as served:
        client, server, _ = pair(served)
        await client.open()
        held = Collector(ack=False)
        await client.subscribe("e.x", "g", held, ack_wait=0.2)
        await client.publish("e.x", b"job")
        await held.wait_for(2)  # expired on both sides, then delivered again
        assert held.deliveries[1].num_delivered == 2
        await client.publish("e.x", b"more")  # calls still get their own answers
        await held.wait_for(3)
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        await client.close()
        await asyncio.wait_for(server, 5)
