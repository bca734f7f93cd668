"""The bus contract, run against every backend (see conftest ``env``)."""

from __future__ import annotations

import asyncio
import time

import pytest
from buskit import BusEnv, Collector, wait_until

from apiary.bus import Bus, Delivery, Publish
from apiary.errors import BadRequest, Invalid

pytestmark = pytest.mark.services


async def test_publish_subscribe_delivers_data_headers_and_id(env: BusEnv, bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(env.subject("a.in"), "g", got)
    await bus.publish(env.subject("a.in"), b"hello", msg_id="m-1", headers={"trace": "t1"})
    await got.wait_for(1)
    d = got.deliveries[0]
    assert (d.subject, d.data, d.msg_id) == (env.subject("a.in"), b"hello", "m-1")
    assert d.num_delivered == 1
    assert d.headers.get("trace") == "t1"
    assert "Nats-Msg-Id" not in d.headers


async def test_queue_group_load_balances_each_message_once(env: BusEnv, bus: Bus) -> None:
    a, b = Collector(), Collector()
    await bus.subscribe(env.subject("lb"), "workers", a)
    await bus.subscribe(env.subject("lb"), "workers", b)
    await bus.publish_many([(env.subject("lb"), str(i).encode()) for i in range(200)])
    await wait_until(lambda: len(a) + len(b) >= 200)
    await asyncio.sleep(0.2)
    seen = a.data + b.data
    assert sorted(seen) == sorted(str(i).encode() for i in range(200))
    assert len(a) > 0 and len(b) > 0


async def test_every_group_gets_its_own_copy(env: BusEnv, bus: Bus) -> None:
    g1, g2 = Collector(), Collector()
    await bus.subscribe(env.subject("x"), "one", g1)
    await bus.subscribe(env.subject("x"), "two", g2)
    for i in range(20):
        await bus.publish(env.subject("x"), b"%d" % i)
    await g1.wait_for(20)
    await g2.wait_for(20)
    assert g1.data == g2.data == [b"%d" % i for i in range(20)]


async def test_wildcards_follow_nats_syntax(env: BusEnv, bus: Bus) -> None:
    star, tail = Collector(), Collector()
    await bus.subscribe(env.subject("c.*.in"), "s", star)
    await bus.subscribe(env.subject("c.>"), "t", tail)
    for rest in ("c.h1.in", "c.h2.in", "c.h1.out", "c.h1.s1.in", "d.h1.in"):
        await bus.publish(env.subject(rest), rest.encode())
    await tail.wait_for(4)
    await star.wait_for(2)
    await asyncio.sleep(0.2)
    assert sorted(star.data) == [b"c.h1.in", b"c.h2.in"]
    assert sorted(tail.data) == [b"c.h1.in", b"c.h1.out", b"c.h1.s1.in", b"c.h2.in"]


async def test_unacked_message_is_redelivered_after_ack_wait(env: BusEnv, bus: Bus) -> None:
    got = Collector(ack=False)
    await bus.subscribe(env.subject("r"), "g", got, ack_wait=0.5)
    start = time.monotonic()
    await bus.publish(env.subject("r"), b"again")
    await got.wait_for(2, timeout=5)
    assert [d.num_delivered for d in got.deliveries[:2]] == [1, 2]
    assert got.times[1] - start >= 0.45
    await got.deliveries[1].ack()


async def test_nak_redelivers_and_nak_delay_waits(env: BusEnv, bus: Bus) -> None:
    async def first_nak(d: Delivery) -> None:
        if d.num_delivered == 1:
            await d.nak()
        elif d.num_delivered == 2:
            await d.nak(delay=0.4)
        else:
            await d.ack()

    got = Collector(ack=False, action=first_nak)
    await bus.subscribe(env.subject("n"), "g", got, ack_wait=10)
    await bus.publish(env.subject("n"), b"x")
    await got.wait_for(3, timeout=5)
    assert [d.num_delivered for d in got.deliveries] == [1, 2, 3]
    assert got.times[1] - got.times[0] < 0.3
    assert got.times[2] - got.times[1] >= 0.35
    await asyncio.sleep(0.3)
    assert len(got) == 3


async def test_in_progress_keeps_long_work_from_redelivery(env: BusEnv, bus: Bus) -> None:
    async def long_work(d: Delivery) -> None:
        for _ in range(6):
            await asyncio.sleep(0.2)
            await d.in_progress()
        await d.ack()

    got = Collector(ack=False, action=long_work)
    await bus.subscribe(env.subject("long"), "g", got, ack_wait=0.5, max_in_flight=2)
    await bus.publish(env.subject("long"), b"slow")
    await got.wait_for(1)
    await asyncio.sleep(1.8)
    assert len(got) == 1


async def test_term_is_never_redelivered(env: BusEnv, bus: Bus) -> None:
    got = Collector(ack=False, action=lambda d: d.term())
    await bus.subscribe(env.subject("t"), "g", got, ack_wait=0.3)
    await bus.publish(env.subject("t"), b"poison")
    await got.wait_for(1)
    await asyncio.sleep(0.9)
    assert len(got) == 1


async def test_max_in_flight_bounds_outstanding_deliveries(env: BusEnv, bus: Bus) -> None:
    outstanding: list[Delivery] = []
    peak = 0

    async def hold(d: Delivery) -> None:
        nonlocal peak
        outstanding.append(d)
        peak = max(peak, len(outstanding))

    sub_handler = Collector(ack=False, action=hold)
    await bus.subscribe(env.subject("mif"), "g", sub_handler, max_in_flight=3, ack_wait=20)
    await bus.publish_many([(env.subject("mif"), b"%d" % i) for i in range(10)])
    await sub_handler.wait_for(3)
    await asyncio.sleep(0.3)
    assert len(sub_handler) == 3 and peak == 3
    acked = 0
    while acked < 10:
        await wait_until(lambda: bool(outstanding))
        await outstanding.pop(0).ack()
        acked += 1
        await asyncio.sleep(0.02)
        assert len(outstanding) <= 3
    await wait_until(lambda: len(sub_handler) == 10)
    assert peak == 3
    assert sorted(sub_handler.data) == sorted(b"%d" % i for i in range(10))


async def test_repeated_msg_id_is_dropped(env: BusEnv, bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(env.subject("d"), "g", got)
    await bus.publish(env.subject("d"), b"first", msg_id="same")
    await bus.publish(env.subject("d"), b"second", msg_id="same")
    await bus.publish_many([Publish(env.subject("d"), b"third", msg_id="same")])
    await bus.publish(env.subject("d"), b"other", msg_id="different")
    await got.wait_for(2)
    await asyncio.sleep(0.2)
    assert got.data == [b"first", b"other"]


async def test_drain_waits_for_running_handlers(env: BusEnv, bus: Bus) -> None:
    finished: list[bytes] = []

    async def slow(d: Delivery) -> None:
        await asyncio.sleep(0.3)
        finished.append(d.data)

    got = Collector(action=slow)
    sub = await bus.subscribe(env.subject("dr"), "g", got, max_in_flight=2)
    await bus.publish(env.subject("dr"), b"1")
    await bus.publish(env.subject("dr"), b"2")
    await got.wait_for(2)
    await sub.drain()
    assert sorted(finished) == [b"1", b"2"]
    await bus.publish(env.subject("dr"), b"3")
    await asyncio.sleep(0.2)
    assert len(got) == 2


async def test_drained_member_hands_unacked_work_to_the_other(env: BusEnv, bus: Bus) -> None:
    lazy = Collector(ack=False)
    sub = await bus.subscribe(env.subject("die"), "g", lazy, max_in_flight=5, ack_wait=30)
    await bus.publish_many([(env.subject("die"), b"%d" % i) for i in range(5)])
    await lazy.wait_for(5)
    worker = Collector()
    await bus.subscribe(env.subject("die"), "g", worker, ack_wait=30)
    await sub.drain()
    await worker.wait_for(5, timeout=5)
    assert sorted(worker.data) == sorted(b"%d" % i for i in range(5))
    assert all(d.num_delivered == 2 for d in worker.deliveries)


async def test_handler_exception_is_redelivered(env: BusEnv, bus: Bus) -> None:
    def explode(d: Delivery) -> None:
        if d.num_delivered == 1:
            raise RuntimeError("agent blew up")

    got = Collector(action=explode)
    await bus.subscribe(env.subject("boom"), "g", got, ack_wait=10)
    await bus.publish(env.subject("boom"), b"x")
    await got.wait_for(2, timeout=5)
    assert [d.num_delivered for d in got.deliveries] == [1, 2]


async def test_ten_thousand_messages_two_members_none_lost_none_twice(
    env: BusEnv, bus: Bus
) -> None:
    a, b = Collector(), Collector()
    await bus.subscribe(env.subject("bulk"), "g", a, max_in_flight=64)
    await bus.subscribe(env.subject("bulk"), "g", b, max_in_flight=64)
    n = 10_000
    for start in range(0, n, 1000):
        await bus.publish_many(
            [(env.subject("bulk"), b"%d" % i) for i in range(start, start + 1000)]
        )
    await wait_until(lambda: len(a) + len(b) >= n, timeout=60)
    await asyncio.sleep(0.3)
    seen = a.data + b.data
    assert len(seen) == n
    assert set(seen) == {b"%d" % i for i in range(n)}
    assert all(d.num_delivered == 1 for d in a.deliveries + b.deliveries)
    assert len(a) > 0 and len(b) > 0


async def test_bus_close_returns_unsettled_work_for_others(env: BusEnv, bus: Bus) -> None:
    """A member that goes away without acking (close) loses nothing: the group gets it again."""
    lazy = Collector(ack=False)
    await bus.subscribe(env.subject("cl"), "g", lazy, max_in_flight=3, ack_wait=30)
    await bus.publish_many([(env.subject("cl"), b"%d" % i) for i in range(3)])
    await lazy.wait_for(3)
    if env.kind != "memory":
        other = await env.new_bus()
        worker = Collector()
        await other.subscribe(env.subject("cl"), "g", worker)
        await bus.close()
        await worker.wait_for(3, timeout=5)
        assert sorted(worker.data) == [b"0", b"1", b"2"]
    else:
        await bus.close()
        with pytest.raises(Exception, match="not open"):
            await bus.publish(env.subject("cl"), b"late")


async def test_messages_published_before_any_subscriber_wait_for_the_first_group(
    env: BusEnv, bus: Bus
) -> None:
    """Work sent to a stage whose drones are still starting is not lost (both backends)."""
    await bus.publish_many([(env.subject("early"), b"%d" % i) for i in range(5)])
    got = Collector()
    await bus.subscribe(env.subject("early"), "late-joiner", got)
    await got.wait_for(5)
    assert got.data == [b"%d" % i for i in range(5)]


async def test_publish_many_keeps_the_order_given(env: BusEnv, bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(env.subject("order"), "g", got, max_in_flight=1)
    await bus.publish_many(
        [Publish(env.subject("order"), b"%d" % i, msg_id=f"o{i}") for i in range(50)]
    )
    await got.wait_for(50)
    assert got.data == [b"%d" % i for i in range(50)]
    assert [d.msg_id for d in got.deliveries] == [f"o{i}" for i in range(50)]


async def test_publish_many_with_a_bad_item_publishes_nothing(env: BusEnv, bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(env.subject("all"), "g", got)
    batch: list[Publish | tuple[str, bytes]] = [
        (env.subject("all"), b"fine"),
        Publish(env.subject("all"), "not bytes"),  # type: ignore[arg-type]
        (env.subject("all"), b"also fine"),
    ]
    with pytest.raises(Invalid, match="data must be bytes"):
        await bus.publish_many(batch)
    with pytest.raises(BadRequest, match="whitespace"):
        await bus.publish_many([(env.subject("all"), b"fine"), ("bad subject", b"x")])
    await bus.publish_many([(env.subject("all"), b"after")])
    await got.wait_for(1)
    await asyncio.sleep(0.2)
    assert got.data == [b"after"]


async def test_publish_many_of_nothing_returns(env: BusEnv, bus: Bus) -> None:
    await bus.publish_many([])


async def test_a_retried_batch_stores_each_message_once(env: BusEnv, bus: Bus) -> None:
    got = Collector()
    await bus.subscribe(env.subject("retry"), "g", got)
    batch = [Publish(env.subject("retry"), b"%d" % i, msg_id=f"r{i}") for i in range(20)]
    await bus.publish_many(batch[:10])  # as if the first attempt got only half through
    await bus.publish_many(batch)
    await got.wait_for(20)
    await asyncio.sleep(0.2)
    assert sorted(got.data) == sorted(b"%d" % i for i in range(20))
