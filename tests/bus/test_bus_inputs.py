"""Bad input gets a clear error naming the field; the in-process dedupe window uses a clock."""

from __future__ import annotations

from typing import Any

import pytest
from buskit import BusEnv, Collector

from apiary.bus import Bus, consumer_name, matches, open_bus
from apiary.bus.memory import MemoryBus
from apiary.bus.subjects import check_filter
from apiary.errors import BadRequest, Invalid, Unavailable

pytestmark = pytest.mark.services


async def _noop(d: Any) -> None:
    await d.ack()


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("", "non-empty"),
        ("a..b", "empty token"),
        ("a.*", "wildcards"),
        ("a.>", "wildcards"),
        ("a b", "bad character"),
        (".a", "empty token"),
    ],
)
async def test_bad_publish_subject(env: BusEnv, bus: Bus, subject: str, reason: str) -> None:
    with pytest.raises(Invalid) as err:
        await bus.publish(subject, b"x")
    assert err.value.details[0].field == "subject"
    assert reason in err.value.message or reason in err.value.details[0].message


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"subject": "a.>.b"}, "subject"),
        ({"group": ""}, "group"),
        ({"group": "has space"}, "group"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 1.5}, "max_in_flight"),
        ({"ack_wait": 0}, "ack_wait"),
        ({"ack_wait": "soon"}, "ack_wait"),
    ],
)
async def test_bad_subscribe_arguments(
    env: BusEnv, bus: Bus, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"subject": env.subject("ok.>"), "group": "g", "handler": _noop}
    args.update(kwargs)
    with pytest.raises(Invalid) as err:
        await bus.subscribe(**args)
    assert err.value.details[0].field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": "text"}, "data"),
        ({"msg_id": ""}, "msg_id"),
        ({"headers": {"a": 1}}, "headers.a"),
        ({"headers": {"a": "x\ny"}}, "headers.a"),
    ],
)
async def test_bad_publish_arguments(
    env: BusEnv, bus: Bus, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"subject": env.subject("p"), "data": b"x"}
    args.update(kwargs)
    with pytest.raises(Invalid) as err:
        await bus.publish(**args)
    assert err.value.details[0].field == field


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(BadRequest, match="unknown bus URL scheme"):
        open_bus("kafka://localhost")


async def test_memory_bus_must_be_opened() -> None:
    with pytest.raises(Unavailable):
        await MemoryBus().publish("apiary.x", b"")


async def test_dedupe_window_expires_on_the_injected_clock() -> None:
    now = [1000.0]
    async with MemoryBus(dedupe_window=120, clock=lambda: now[0]) as bus:
        got = Collector()
        await bus.subscribe("apiary.d", "g", got)
        await bus.publish("apiary.d", b"1", msg_id="x")
        now[0] += 119
        await bus.publish("apiary.d", b"2", msg_id="x")
        now[0] += 2
        await bus.publish("apiary.d", b"3", msg_id="x")
        await got.wait_for(2)
        assert got.data == [b"1", b"3"]


def test_matching_and_consumer_names() -> None:
    assert matches(check_filter("a.*.c"), "a.b.c")
    assert not matches(check_filter("a.*.c"), "a.b.c.d")
    assert matches(check_filter("a.>"), "a.b.c")
    assert not matches(check_filter("a.>"), "a")
    assert not matches(check_filter("a.b"), "a.b.c")
    one, two = consumer_name("apiary.x.>", "hive.stage"), consumer_name("apiary.y.>", "hive.stage")
    assert one != two and one.startswith("hive_stage_")
    assert all(c.isalnum() or c in "_-" for c in one)
