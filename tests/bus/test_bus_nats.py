"""JetStream-only promises: durability before subscribers, sharing across processes, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import pytest
from buskit import BusEnv, Collector

from apiary.bus import Delivery, open_bus
from apiary.bus.jetstream import JetStreamBus
from apiary.errors import BadRequest, Invalid

pytestmark = pytest.mark.services


async def test_messages_published_before_any_subscriber_are_kept(nats_env: BusEnv) -> None:
    bus = await nats_env.new_bus()
    await bus.publish_many([(nats_env.subject("early"), b"%d" % i) for i in range(5)])
    got = Collector()
    await bus.subscribe(nats_env.subject("early"), "late-joiner", got)
    await got.wait_for(5)
    assert got.data == [b"%d" % i for i in range(5)]


async def test_a_second_process_in_the_same_group_shares_the_work(nats_env: BusEnv) -> None:
    one, two = await nats_env.new_bus(), await nats_env.new_bus()
    a, b = Collector(), Collector()
    await one.subscribe(nats_env.subject("share"), "g", a, max_in_flight=4)
    await two.subscribe(nats_env.subject("share"), "g", b, max_in_flight=4)
    await one.publish_many([(nats_env.subject("share"), b"%d" % i) for i in range(400)])
    await asyncio.wait_for(_until(lambda: len(a) + len(b) >= 400), 20)
    await asyncio.sleep(0.2)
    assert sorted(a.data + b.data) == sorted(b"%d" % i for i in range(400))
    assert len(a) > 0 and len(b) > 0


async def test_group_state_survives_a_restart_of_the_subscriber(nats_env: BusEnv) -> None:
    bus = await nats_env.new_bus()
    first = Collector()
    sub = await bus.subscribe(nats_env.subject("dur"), "g", first)
    await bus.publish(nats_env.subject("dur"), b"1")
    await first.wait_for(1)
    await sub.drain()
    await bus.publish(nats_env.subject("dur"), b"2")
    again = Collector()
    await (await nats_env.new_bus()).subscribe(nats_env.subject("dur"), "g", again)
    await again.wait_for(1)
    await asyncio.sleep(0.2)
    assert again.data == [b"2"]


async def test_remove_group_forgets_pending_messages(nats_env: BusEnv) -> None:
    bus = await nats_env.new_bus()
    first = Collector()
    await bus.subscribe(nats_env.subject("rm"), "g", first)
    await bus.remove_group(nats_env.subject("rm"), "g")
    await bus.publish(nats_env.subject("rm"), b"after")
    fresh = Collector()
    await bus.subscribe(nats_env.subject("rm"), "g", fresh)
    await fresh.wait_for(1)
    assert len(first) == 0


async def test_publishing_outside_the_stream_names_the_subject(nats_env: BusEnv) -> None:
    bus = await nats_env.new_bus()
    with pytest.raises(BadRequest) as err:
        await bus.publish("nowhere.at.all", b"x")
    assert err.value.details[0].field == "subject"
    assert "nowhere.at.all" in err.value.message


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("stream=a.b", "bus.stream"),
        ("max_age=-1", "bus.max_age"),
        ("storage=tape", "bus.storage"),
        ("colour=blue", "bus.colour"),
        ("subjects=a..b", "subject"),
    ],
)
def test_bad_url_options_name_the_parameter(query: str, field: str) -> None:
    with pytest.raises(Invalid) as err:
        open_bus(f"nats://127.0.0.1:4222?{query}")
    assert err.value.details[0].field == field


class _Proxy:
    """A TCP proxy to NATS whose connections can be cut, to force a client reconnect."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        dst.close()

    def cut(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_pull_loops_survive_a_reconnect(nats_env: BusEnv) -> None:
    """After the connection drops and comes back, pulling resumes. A message published in the
    gap may already have been handed to a pull request of the old connection, whose inbox nobody
    reads until the client has resubscribed; JetStream then delivers it again after ``ack_wait``
    (1 run in 4 here). It is not lost, and a short ``ack_wait`` keeps this test short."""
    parts = urlsplit(nats_env.url)
    proxy = _Proxy((parts.hostname or "127.0.0.1", parts.port or 4222))
    await proxy.start()
    try:
        via_proxy = JetStreamBus(nats_env.url.replace(f":{parts.port}", f":{proxy.port}"))
        await via_proxy.open()
        nats_env.buses.append(via_proxy)
        direct = await nats_env.new_bus()
        got = Collector()
        await via_proxy.subscribe(nats_env.subject("rc"), "g", got, max_in_flight=8, ack_wait=2)
        await direct.publish(nats_env.subject("rc"), b"before")
        await got.wait_for(1)
        proxy.cut()
        await direct.publish(nats_env.subject("rc"), b"during")
        await got.wait_for(2, timeout=15)
        await via_proxy.publish(nats_env.subject("rc"), b"after")
        await got.wait_for(3, timeout=15)
        assert sorted(got.data) == [b"after", b"before", b"during"]
    finally:
        await proxy.stop()


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():
        await asyncio.sleep(0.01)


async def test_group_wide_max_ack_pending_throttles_without_stalling(nats_env: BusEnv) -> None:
    """The consumer's max_ack_pending (URL option) caps the whole group; pulls resume on ack."""
    bus = JetStreamBus(nats_env.url + "&max_ack_pending=2")
    await bus.open()
    nats_env.buses.append(bus)
    held: list[Delivery] = []
    a, b = Collector(ack=False, action=held.append), Collector(ack=False, action=held.append)
    await bus.subscribe(nats_env.subject("cap"), "g", a, max_in_flight=3, ack_wait=30)
    await bus.subscribe(nats_env.subject("cap"), "g", b, max_in_flight=3, ack_wait=30)
    await bus.publish_many([(nats_env.subject("cap"), b"%d" % i) for i in range(6)])
    await asyncio.wait_for(_until(lambda: len(held) >= 2), 5)
    await asyncio.sleep(0.5)
    assert len(held) == 2
    acked = 0
    while acked < 6:
        await asyncio.wait_for(_until(lambda: bool(held)), 5)
        await held.pop(0).ack()
        acked += 1
    assert sorted(a.data + b.data) == [b"%d" % i for i in range(6)]
