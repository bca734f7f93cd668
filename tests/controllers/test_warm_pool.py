"""Warm pools over real stores (issue 14.1, 14.2): a ``poolMode: warm`` stage keeps
``warmPoolSize`` extra started drones that take no traffic; a scale-up, a crash replacement or a
scale from zero claims them (the same Drone, relabelled — no new drone, so no process start) and
the pool refills; ``hybrid`` releases its pool after ``pool.idleSeconds`` without traffic and
brings it back with traffic; ``cold`` keeps none; pool drones count against the Cell's quota but
never take the room a serving drone waits for; pools are per Hive stage, never shared."""

from __future__ import annotations

import copy

import pytest

from apiary.controllers import Queen, QueenSettings
from apiary.controllers.autoscaler import Autoscaler, AutoscalerSettings
from apiary.controllers.meta import get_condition
from apiary.resources.admission import ValidationFailed, admit
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, cell, drones_of, hive, settle

POOL = "apiary.io/warm-pool"
STAGE = "apiary.io/stage"


def warm(name: str, *stages: tuple[str, str, int], size: int = 2, mode: str = "warm", **spec):
    return hive(name, *stages, poolMode=mode, warmPoolSize=size, **spec)


def pool_of(drones: list[dict], stage: str = "s") -> list[dict]:
    return [d for d in drones if d["metadata"]["labels"].get(POOL) == stage]


def serving(drones: list[dict], stage: str = "s") -> list[dict]:
    return [d for d in drones if d["metadata"]["labels"].get(STAGE) == stage]


async def started(store: Store, clock: FakeClock, queen: Queen, *objs: dict) -> FakeNode:
    node = await FakeNode(store, clock, "n1").register()
    for obj in objs:
        await store.create(obj)
    await settle(queen, [node])
    return node


async def mark(store: Store, drone: dict, **status: object) -> None:
    def change(current: dict) -> dict:
        current["status"] = {**current["status"], **status}
        return current

    meta = drone["metadata"]
    await store.update_with_retry(
        "Drone", meta["namespace"], meta["name"], change, subresource="status"
    )


async def test_a_warm_stage_keeps_its_pool_beside_the_serving_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 2), size=2))
    drones = await drones_of(store, "h")
    pool, live = pool_of(drones), serving(drones)
    assert len(live) == 2 and len(pool) == 2 and len(drones) == 4
    thash = live[0]["spec"]["templateHash"]
    assert sorted(d["metadata"]["name"] for d in pool) == [f"h-s-{thash}-w0", f"h-s-{thash}-w1"]
    for d in pool:
        assert d["spec"]["warm"] is True and "ordinal" not in d["spec"]
        assert STAGE not in d["metadata"]["labels"]
        assert d["metadata"]["labels"]["apiary.io/hive"] == "h"
        assert d["spec"]["stage"] == "s" and d["spec"]["templateHash"] == thash
        assert d["status"]["ready"] is True and d["spec"]["nodeName"] == "n1"
    assert all("warm" not in d["spec"] for d in live)
    status = (await store.get("Hive", "default", "h"))["status"]
    assert status["replicas"] == 2 and status["readyReplicas"] == 2  # the pool is not counted
    assert status["phase"] == "Running"
    (stage,) = status["stages"]
    assert stage["ready"] == stage["current"] == stage["wanted"] == 2
    assert stage["pool"] == {"mode": "warm", "wanted": 2, "current": 2, "ready": 2}
    rv = await store.resource_version()
    await queen.sync_once()
    assert await store.resource_version() == rv  # settled: a pass writes nothing


async def test_a_cold_stage_keeps_none(store: Store, queen: Queen, clock: FakeClock) -> None:
    await started(store, clock, queen, agentspec("echo"), hive("h", ("s", "echo", 2)))
    drones = await drones_of(store, "h")
    assert len(drones) == 2 and not pool_of(drones)
    assert "pool" not in (await store.get("Hive", "default", "h"))["status"]["stages"][0]


async def test_scale_up_claims_the_pool_then_refills_it(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 1)))
    before = {d["metadata"]["uid"]: d for d in pool_of(await drones_of(store, "h"))}

    def scale(h: dict) -> dict:
        h["spec"]["stages"][0]["replicas"] = 3
        return h

    await store.update_with_retry("Hive", "default", "h", scale)
    await queen.sync_once()  # one pass: the claims, and the refill behind them
    drones = await drones_of(store, "h")
    live = serving(drones)
    assert sorted(d["spec"]["ordinal"] for d in live) == [0, 1, 2]
    claimed = [d for d in live if d["metadata"]["uid"] in before]
    assert sorted(d["spec"]["ordinal"] for d in claimed) == [1, 2]  # the same drones, no new
    for d in claimed:
        assert (
            d["status"]["ready"] is True
            and d["status"]["pid"] == before[d["metadata"]["uid"]]["status"]["pid"]
        )
        assert "warm" not in d["spec"] and POOL not in d["metadata"]["labels"]
        assert d["metadata"]["name"] == before[d["metadata"]["uid"]]["metadata"]["name"]
    refill = pool_of(drones)
    assert len(refill) == 2 and not {d["metadata"]["uid"] for d in refill} & before.keys()
    assert sorted(d["metadata"]["name"][-2:] for d in refill) == ["w2", "w3"]  # names not reused
    events = (await store.list("Event", "default")).items
    assert any(e["reason"] == "ClaimedFromPool" and "2 drone(s)" in e["message"] for e in events)
    await settle(queen, [node])
    hv = await store.get("Hive", "default", "h")
    assert hv["status"]["readyReplicas"] == 3
    assert hv["status"]["stages"][0]["pool"]["ready"] == 2


async def test_scale_from_zero_is_served_from_the_pool(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 0), size=1))
    (w,) = pool_of(await drones_of(store, "h"))
    assert not serving(await drones_of(store, "h"))

    def scale(h: dict) -> dict:
        h["spec"]["stages"][0]["replicas"] = 1
        return h

    await store.update_with_retry("Hive", "default", "h", scale)
    await queen.sync_once()
    (live,) = serving(await drones_of(store, "h"))
    assert live["metadata"]["uid"] == w["metadata"]["uid"] and live["status"]["ready"] is True


async def test_a_crashed_drone_is_replaced_by_a_ready_pool_drone(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 1)))
    (victim,) = serving(await drones_of(store, "h"))
    pool = {d["metadata"]["uid"]: d for d in pool_of(await drones_of(store, "h"))}
    await mark(store, victim, phase="Failed", ready=False, reason="Error", restartCount=0)
    await queen.sync_once()
    drones = await drones_of(store, "h")
    (live,) = serving(drones)
    assert live["metadata"]["uid"] in pool and live["spec"]["ordinal"] == 0
    assert live["status"]["pid"] == pool[live["metadata"]["uid"]]["status"]["pid"]
    assert victim["metadata"]["uid"] not in {d["metadata"]["uid"] for d in drones}
    assert len(pool_of(drones)) == 2  # refilled in the same pass
    events = (await store.list("Event", "default")).items
    assert any(
        e["reason"] == "ReplacedFromPool" and victim["metadata"]["name"] in e["message"]
        for e in events
    )
    await settle(queen, [node])
    assert (await store.get("Hive", "default", "h"))["status"]["phase"] == "Running"


async def test_a_restarting_drone_is_replaced_too_but_not_without_a_ready_pool_drone(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 1)))
    for d in pool_of(await drones_of(store, "h")):
        await mark(store, d, ready=False, phase="Starting")
    node.auto_ready = False
    (victim,) = serving(await drones_of(store, "h"))
    await mark(store, victim, phase="Starting", ready=False, restartCount=1)
    await queen.sync_once()
    (still,) = serving(await drones_of(store, "h"))
    assert still["metadata"]["uid"] == victim["metadata"]["uid"]  # no Ready pool drone: kept
    first = pool_of(await drones_of(store, "h"))[0]
    await mark(store, first, ready=True, phase="Running")
    await queen.sync_once()
    (live,) = serving(await drones_of(store, "h"))
    assert live["metadata"]["uid"] == first["metadata"]["uid"]


async def test_hybrid_releases_its_pool_after_idle_and_brings_it_back_on_traffic(
    store: Store, settings: QueenSettings, clock: FakeClock
) -> None:
    backlog: dict[tuple[str, str, str], int] = {}
    queen = Queen(store, settings, backlog=lambda: backlog)
    node = await started(
        store, clock, queen, agentspec("echo"),
        warm("h", ("s", "echo", 1), mode="hybrid", size=1, pool={"idleSeconds": 4}),
    )  # fmt: skip
    drones = await drones_of(store, "h")
    assert len(pool_of(drones)) == 1  # the Hive's creation counts as traffic
    stage = (await store.get("Hive", "default", "h"))["status"]["stages"][0]
    assert stage["pool"] == {"mode": "hybrid", "wanted": 1, "current": 1, "ready": 1,
                             "active": True}  # fmt: skip
    (live,) = serving(drones)
    await mark(store, live, usage={"messages": 0, "inFlight": 0})
    clock.advance(3)
    await queen.sync_once()
    assert len(pool_of(await drones_of(store, "h"))) == 1  # 3 s idle: kept

    clock.advance(2)  # 5 s without traffic (within the node's lease)
    assert await queen.pools.run_once() == [("default", "h")]  # the flip requeues the Hive
    await settle(queen, [node])
    assert not pool_of(await drones_of(store, "h"))
    stage = (await store.get("Hive", "default", "h"))["status"]["stages"][0]
    assert stage["pool"]["active"] is False and stage["pool"]["wanted"] == 0
    events = (await store.list("Event", "default")).items
    assert any(e["reason"] == "WarmPoolReleased" for e in events)

    (live,) = serving(await drones_of(store, "h"))
    await mark(store, live, usage={"messages": 3, "inFlight": 0})  # it answered something
    await settle(queen, [node])
    assert len(pool_of(await drones_of(store, "h"))) == 1

    await node.renew()
    clock.advance(5)
    await settle(queen, [node])
    assert not pool_of(await drones_of(store, "h"))
    backlog[("default", "h", "s")] = 2  # the router has messages queued for it
    assert await queen.pools.run_once() == [("default", "h")]
    await settle(queen, [node])
    assert len(pool_of(await drones_of(store, "h"))) == 1


async def test_turning_the_pool_off_or_dropping_the_stage_deletes_its_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await started(
        store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 1), ("t", "echo", 1))
    )
    assert len(pool_of(await drones_of(store, "h"), "t")) == 2

    def drop_t(h: dict) -> dict:
        h["spec"]["stages"] = h["spec"]["stages"][:1]
        return h

    await store.update_with_retry("Hive", "default", "h", drop_t)
    await settle(queen, [node])
    drones = await drones_of(store, "h")
    assert not pool_of(drones, "t") and len(pool_of(drones, "s")) == 2

    def cold(h: dict) -> dict:
        h["spec"]["poolMode"], h["spec"]["warmPoolSize"] = "cold", 0
        return h

    await store.update_with_retry("Hive", "default", "h", cold)
    await settle(queen, [node])
    drones = await drones_of(store, "h")
    assert len(drones) == 1 and not pool_of(drones)


async def test_a_template_change_renews_the_pool(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 2)))
    old = (await drones_of(store, "h"))[0]["spec"]["templateHash"]

    def change(a: dict) -> dict:
        a["spec"]["runtime"]["command"] = ["/bin/cat", "-u"]
        return a

    await store.update_with_retry("AgentSpec", "default", "echo", change)
    await settle(queen, [node])
    drones = await drones_of(store, "h")
    assert len(serving(drones)) == 2 and len(pool_of(drones)) == 2
    assert {d["spec"]["templateHash"] for d in drones} != {old}
    assert len({d["spec"]["templateHash"] for d in drones}) == 1


async def test_quotas_count_pool_drones_and_pools_wait_behind_serving_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await store.create(cell("default", maxTotalDrones=3))
    await started(store, clock, queen, agentspec("echo"), warm("a", ("s", "echo", 1)))
    drones = await drones_of(store, "a")
    assert len(drones) == 3 and all(d["spec"].get("nodeName") for d in drones)
    used = (await store.get("Cell", "", "default"))["status"]["used"]
    assert used["maxTotalDrones"] == 3

    # the quota is full of a's drones: b's serving drone waits, and so does b's pool, behind it
    await store.create(warm("b", ("s", "echo", 1), size=1))
    await queen.sync_once()
    b = await drones_of(store, "b")
    assert len(b) == 2 and not any(d["spec"].get("nodeName") for d in b)
    assert all(d["status"]["reason"] == "QuotaExceeded" for d in b)
    assert "maxTotalDrones=3" in serving(b)[0]["status"]["message"]

    # room for one: it goes to b's serving drone, not to b's pool created before it
    await store.delete("Hive", "default", "a")
    await queen.sync_once()
    await queen.sync_once()
    b = await drones_of(store, "b")
    assert serving(b)[0]["spec"].get("nodeName") == "n1"


async def test_the_pool_never_takes_the_room_a_serving_drone_waits_for(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await store.create(cell("default", maxTotalDrones=2))
    await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 2), size=2))
    drones = await drones_of(store, "h")
    assert all(d["spec"].get("nodeName") for d in serving(drones))
    pool = pool_of(drones)
    assert len(pool) == 2 and not any(d["spec"].get("nodeName") for d in pool)
    assert all(d["status"]["reason"] == "QuotaExceeded" for d in pool)


async def test_pools_are_per_stage_never_shared_across_hives(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await started(
        store, clock, queen, agentspec("echo"),
        warm("a", ("s", "echo", 1)), warm("b", ("s", "echo", 1)),
    )  # fmt: skip
    b_pool = {d["metadata"]["uid"] for d in pool_of(await drones_of(store, "b"))}
    assert len(b_pool) == 2

    def scale(h: dict) -> dict:
        h["spec"]["stages"][0]["replicas"] = 5
        return h

    await store.update_with_retry("Hive", "default", "a", scale)
    await queen.sync_once()
    a = serving(await drones_of(store, "a"))
    assert len(a) == 5 and not {d["metadata"]["uid"] for d in a} & b_pool
    assert {d["metadata"]["uid"] for d in pool_of(await drones_of(store, "b"))} == b_pool
    assert all(d["metadata"]["ownerReferences"][0]["name"] == "a" for d in a)


def test_an_agentspec_wide_pool_is_refused_with_the_reason() -> None:
    body = copy.deepcopy(agentspec("echo"))
    body["spec"]["warmPool"] = 2
    with pytest.raises(ValidationFailed) as caught:
        admit(body)
    assert "spec.warmPool: not supported: warm pools are kept per Hive stage" in str(caught.value)
    assert "not interchangeable" in str(caught.value)


def test_pool_idle_seconds_is_for_hybrid_only() -> None:
    ok = admit(warm("h", ("s", "echo", 1), mode="hybrid", size=1, pool={"idleSeconds": 2}))
    assert ok.object["spec"]["pool"] == {"idleSeconds": 2.0}
    with pytest.raises(ValidationFailed, match=r"spec\.pool: only used with poolMode hybrid"):
        admit(warm("h", ("s", "echo", 1), pool={"idleSeconds": 2}))


async def test_one_ordinal_held_twice_keeps_the_better_drone(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    node = await started(store, clock, queen, agentspec("echo"), warm("h", ("s", "echo", 1)))
    (live,) = serving(await drones_of(store, "h"))
    w = pool_of(await drones_of(store, "h"))[0]
    twin = copy.deepcopy(w)  # as if a claim had raced a cold create of ordinal 0
    twin["metadata"]["labels"].pop(POOL)
    twin["metadata"]["labels"][STAGE] = "s"
    twin["spec"].pop("warm")
    twin["spec"]["ordinal"] = 0
    await store.update(twin)
    await mark(store, live, ready=False, phase="Starting")
    node.auto_ready = False
    await queen.sync_once()
    (kept,) = serving(await drones_of(store, "h"))
    assert kept["metadata"]["uid"] == w["metadata"]["uid"]  # the Ready one
    assert get_condition(await store.get("Hive", "default", "h"), "Ready") is not None


async def test_an_autoscaler_step_claims_and_pool_drones_are_no_capacity(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    scaling = {"minReplicas": 1, "maxReplicas": 5, "cooldownSeconds": 60}
    node = await started(
        store, clock, queen, agentspec("echo", scaling=scaling), warm("h", ("s", "echo", 1))
    )
    pool = {d["metadata"]["uid"] for d in pool_of(await drones_of(store, "h"))}
    backlog = {("default", "h", "s"): 2}
    scaler = Autoscaler(store, lambda: backlog, AutoscalerSettings(clock=clock))
    made = await scaler.run_once()
    # 2 messages on 1 serving drone: the two Ready pool drones are not counted as capacity
    assert made[("default", "h", "s")].replicas == 3
    await queen.sync_once()
    live = serving(await drones_of(store, "h"))
    assert len(live) == 3 and len({d["metadata"]["uid"] for d in live} & pool) == 2
    await settle(queen, [node])
    assert len(pool_of(await drones_of(store, "h"))) == 2
