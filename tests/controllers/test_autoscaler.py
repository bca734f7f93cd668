"""The autoscaler: the decision rules alone, then passes over a real store with a fake backlog,
real Queen-made drones and a fake clock (cooldowns without sleeping)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from apiary.controllers import Queen
from apiary.controllers.autoscaler import (
    ANNOTATION,
    Autoscaler,
    AutoscalerSettings,
    History,
    ScalingPolicy,
    StageLoad,
    decide,
    read_history,
)
from apiary.controllers.manual_scale import manual_scale
from apiary.controllers.templates import hive_stages
from apiary.router.policy import StageBacklog
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, drones_of, hive, settle

Obj = dict[str, Any]
NOW = 1_000_000.0
POLICY = ScalingPolicy(min_replicas=1, max_replicas=5, cooldown_seconds=60)


def load(replicas: int, ready: int, backlog: int, **kw: Any) -> StageLoad:
    return StageLoad(replicas=replicas, ready=ready, backlog=backlog, **kw)


# ---------------------------------------------------------------------------- decide()


def test_scale_up_is_proportional_and_capped() -> None:
    up = decide(POLICY, load(1, 1, 3), History(), NOW)
    assert up is not None and (up.replicas, up.direction) == (4, "up")  # ceil(3 / 0.8)
    assert "utilization 3.00 above scaleUpThreshold 0.8" in up.reason
    capped = decide(POLICY, load(1, 1, 50), History(), NOW)
    assert capped is not None and capped.replicas == 5
    assert decide(POLICY, load(5, 5, 50), History(), NOW) is None  # at maxReplicas


def test_scale_up_counts_concurrency_and_waits_for_starting_drones() -> None:
    # 8 messages on drones holding 4 each: ceil(8 / (4 * 0.8)) = 3
    up = decide(POLICY, load(1, 1, 8, concurrency=4), History(), NOW)
    assert up is not None and up.replicas == 3
    # already asked for 3, only 1 ready: utilization is high but nothing more to ask
    assert decide(POLICY, load(3, 1, 8, concurrency=4), History(), NOW) is None


def test_scale_up_ignores_the_cooldown() -> None:
    just = History(last_up=NOW - 1, last_down=NOW - 1)
    up = decide(POLICY, load(2, 2, 10), just, NOW)
    assert up is not None and up.replicas == 5


def test_scale_from_zero_at_once() -> None:
    policy = ScalingPolicy(min_replicas=0, max_replicas=3, cooldown_seconds=60)
    up = decide(policy, load(0, 0, 1), History(last_down=NOW), NOW)  # cooldown or not
    assert up is not None and (up.replicas, up.direction) == (2, "up")  # ceil(1 / 0.8)
    assert "scale from zero" in up.reason
    one = ScalingPolicy(min_replicas=0, max_replicas=3, scale_up_threshold=1.0)
    first = decide(one, load(0, 0, 1), History(), NOW)
    assert first is not None and first.replicas == 1
    burst = decide(policy, load(0, 0, 2), History(), NOW)
    assert burst is not None and burst.replicas == 3  # ceil(2 / 0.8)
    assert decide(policy, load(0, 0, 0), History(), NOW) is None  # nothing waiting


def test_bounds_win() -> None:
    low = decide(POLICY, load(0, 0, 0), History(), NOW)
    assert low is not None and (low.replicas, low.reason) == (1, "below minReplicas 1")
    high = decide(POLICY, load(9, 9, 0), History(last_down=NOW), NOW)
    assert high is not None and (high.replicas, high.direction) == (5, "down")


def test_scale_down_by_one_after_the_cooldown() -> None:
    idle = load(4, 4, 0)
    assert decide(POLICY, idle, History(last_up=NOW - 59), NOW) is None  # after a scale-up
    assert decide(POLICY, idle, History(last_down=NOW - 59), NOW) is None  # after a scale-down
    down = decide(POLICY, idle, History(last_up=NOW - 61, last_down=NOW - 60), NOW)
    assert down is not None and (down.replicas, down.direction) == (3, "down")
    assert "below scaleDownThreshold 0.2" in down.reason
    assert decide(POLICY, load(1, 1, 0), History(), NOW) is None  # at minReplicas


def test_scale_down_needs_low_utilization_and_does_not_flap() -> None:
    assert decide(POLICY, load(4, 4, 1), History(), NOW) is None  # 0.25: in the band
    policy = ScalingPolicy(min_replicas=1, max_replicas=5, scale_down_threshold=0.6)
    # 1/2 = 0.5 < 0.6, but 1/1 would be 1.0 > 0.8 at once: stay
    assert decide(policy, load(2, 2, 1), History(), NOW) is None


def test_latency_scales_up_only_when_measured_since_the_last_change() -> None:
    policy = ScalingPolicy(min_replicas=1, max_replicas=5, target_latency_ms=100)
    slow = load(2, 2, 1, latency_p50_ms=250.0, latency_fresh=True)
    up = decide(policy, slow, History(), NOW)
    assert up is not None and up.replicas == 3 and "latency p50 250 ms" in up.reason
    stale = load(2, 2, 1, latency_p50_ms=250.0, latency_fresh=False)
    assert decide(policy, stale, History(), NOW) is None
    idle = load(2, 2, 0, latency_p50_ms=250.0, latency_fresh=True)
    assert decide(policy, idle, History(last_up=NOW - 1), NOW) is None  # idle: old latency


def test_a_manual_scale_counts_as_a_change_for_the_cooldown() -> None:
    idle = load(4, 4, 0)
    assert decide(POLICY, idle, History(last_up=NOW - 600, last_manual=NOW - 10), NOW) is None
    down = decide(POLICY, idle, History(last_manual=NOW - 61), NOW)
    assert down is not None and down.replicas == 3
    up = decide(POLICY, load(2, 2, 10), History(last_manual=NOW), NOW)
    assert up is not None and up.replicas == 5  # load still wins at once


def test_in_flight_counts_what_the_router_did_not_see() -> None:
    up = decide(POLICY, load(1, 1, 0, in_flight=2), History(), NOW)
    assert up is not None and up.replicas == 3


def test_policy_defaults() -> None:
    assert ScalingPolicy.of(agentspec("a")) is None
    p = ScalingPolicy.of(agentspec("a", scaling={"minReplicas": 2, "maxReplicas": 20}))
    assert p == ScalingPolicy(2, 20, None, 0.8, 0.2, 60.0)


# ---------------------------------------------------------------------------- StageBacklog


def test_stage_backlog_counts_open_dispatches() -> None:
    t = [0.0]
    b = StageBacklog(ttl=10, clock=lambda: t[0])
    b.published("c", "h", "s", "c/1", "d1", 0)
    b.published("c", "h", "s", "c/2", "d2", 0)
    b.published("c", "h", "s", "c/2", "d2", 0)  # a republish counts once
    assert b.count("c", "h", "s") == 2
    b.published("c", "h", "s", "c/1", "d1", 1)  # a retry
    b.handled("c", "h", "s", "c/1", "d1", 0)  # a late outcome of the first attempt
    assert b.snapshot() == {("c", "h", "s"): 2}
    b.handled("c", "h", "s", "c/1", "d1", 1)
    b.handled("c", "h", "s", "c/9", "d9", 0)  # never published here (another replica)
    assert b.count("c", "h", "s") == 1
    t[0] = 11  # a stale entry (its outcome went to another replica) ages out
    assert b.snapshot() == {} and b.count("c", "h", "s") == 0


# ---------------------------------------------------------------------------- passes


class Backlog:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}

    def __call__(self) -> dict[tuple[str, str, str], int]:
        return self.counts


async def _stage(store: Store, name: str = "h", stage: int = 0) -> Obj:
    """The stage as the Queen sees it: the autoscaler's count where it set one."""
    h = await store.get("Hive", "default", name)
    effective = hive_stages(h)[0][stage]
    return {**h["spec"]["stages"][stage], "replicas": effective.replicas}


@pytest.fixture
async def world(store: Store, queen: Queen, clock: FakeClock) -> tuple[Autoscaler, Backlog]:
    scaling = {"minReplicas": 0, "maxReplicas": 4, "cooldownSeconds": 30}
    await store.create(agentspec("auto", scaling=scaling))
    await store.create(agentspec("fixed"))
    await store.create(hive("h", ("s", "auto", 1), ("f", "fixed", 1)))
    await settle(queen, [await FakeNode(store, clock, "n1").register()])
    backlog = Backlog()
    return Autoscaler(store, backlog, AutoscalerSettings(clock=clock)), backlog


async def test_burst_scales_up_writes_why_and_the_queen_follows(
    store: Store, queen: Queen, clock: FakeClock, world: tuple[Autoscaler, Backlog]
) -> None:
    scaler, backlog = world
    backlog.counts[("default", "h", "s")] = 3
    backlog.counts[("default", "h", "f")] = 50  # no scaling on its AgentSpec: untouched
    made = await scaler.run_once()
    assert [(k, d.replicas) for k, d in made.items()] == [(("default", "h", "s"), 4)]
    h = await store.get("Hive", "default", "h")
    assert [s.replicas for s in hive_stages(h)[0]] == [4, 1]
    assert [s["replicas"] for s in h["spec"]["stages"]] == [1, 1]  # the user's spec stays
    entry = read_history(h)["s"]
    assert (
        entry["direction"] == "up" and entry["previous"] == 1 and "utilization" in entry["reason"]
    )
    events = [e for e in (await store.list("Event", "default")).items if e["reason"] == "ScaledUp"]
    assert len(events) == 1 and events[0]["message"].startswith("stage s: 1 -> 4 replicas")
    # level-triggered and idempotent: the same world asks for nothing more
    rv = h["metadata"]["resourceVersion"]
    assert await scaler.run_once() == {}
    assert (await store.get("Hive", "default", "h"))["metadata"]["resourceVersion"] == rv
    await settle(queen, [FakeNode(store, clock, "n1")])
    stage_s = [d for d in await drones_of(store, "h") if d["spec"]["stage"] == "s"]
    assert len(stage_s) == 4 and all(d["status"]["ready"] for d in stage_s)


async def test_scale_down_one_at_a_time_after_each_cooldown(
    store: Store, clock: FakeClock, world: tuple[Autoscaler, Backlog], queen: Queen
) -> None:
    scaler, backlog = world
    backlog.counts[("default", "h", "s")] = 3
    await scaler.run_once()  # up to 4
    await settle(queen, [FakeNode(store, clock, "n1")])
    backlog.counts.clear()
    clock.advance(29)
    assert await scaler.run_once() == {}  # cooldown after the scale-up
    seen = []
    for _ in range(4):
        clock.advance(30)
        made = await scaler.run_once()
        seen.append((await _stage(store))["replicas"])
        assert [d.direction for d in made.values()] == ["down"]
        assert await scaler.run_once() == {}  # cooldown after a scale-down
        await settle(queen, [FakeNode(store, clock, "n1")])
    assert seen == [3, 2, 1, 0]  # down to minReplicas 0
    clock.advance(300)
    assert await scaler.run_once() == {}
    reasons = [e["reason"] for e in (await store.list("Event", "default")).items]
    assert reasons.count("ScaledDown") == 4
    # scale from zero: a backlog and no drones, at once (cooldown or not)
    backlog.counts[("default", "h", "s")] = 1
    made = await scaler.run_once()
    assert [d.replicas for d in made.values()] == [2]  # ceil(1 / 0.8)
    assert "scale from zero" in read_history(await store.get("Hive", "default", "h"))["s"]["reason"]


async def test_bounds_follow_the_agentspec(store: Store, world: tuple[Autoscaler, Backlog]) -> None:
    scaler, _ = world
    spec = await store.get("AgentSpec", "default", "auto")
    spec["spec"]["scaling"] = {"minReplicas": 2, "maxReplicas": 3}
    await store.update(spec)
    made = await scaler.run_once()
    assert [(d.replicas, d.reason) for d in made.values()] == [(2, "below minReplicas 2")]


async def test_drone_usage_and_history_survive_a_new_autoscaler(
    store: Store, clock: FakeClock, world: tuple[Autoscaler, Backlog]
) -> None:
    _, _ = world
    stage_s = [d for d in await drones_of(store, "h") if d["spec"]["stage"] == "s"]
    stamp = clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def busy(current: Obj) -> Obj:
        current["status"]["usage"] = {"inFlight": 2, "updatedTime": stamp}
        return current

    meta = stage_s[0]["metadata"]
    await store.update_with_retry("Drone", "default", meta["name"], busy, subresource="status")
    # no router backlog (another replica routed these): the drones' inFlight is the load
    made = await Autoscaler(store, None, AutoscalerSettings(clock=clock)).run_once()
    assert [d.replicas for d in made.values()] == [3]
    h = await store.get("Hive", "default", "h")
    last_up = read_history(h)["s"]["lastScaleUp"]
    assert datetime.fromisoformat(last_up.replace("Z", "+00:00")) == clock().astimezone(UTC)
    # a fresh autoscaler (a new leader) reads the cooldown from the annotation
    fresh = Autoscaler(store, lambda: {}, AutoscalerSettings(clock=clock))
    await store.update_with_retry("Drone", "default", meta["name"], _idle, subresource="status")
    clock.advance(10)
    assert await fresh.run_once() == {}
    clock.advance(25)
    assert [d.replicas for d in (await fresh.run_once()).values()] == [2]


def _idle(current: Obj) -> Obj:
    current["status"]["usage"] = {"inFlight": 0}
    return current


async def test_a_bad_annotation_is_ignored_and_replaced(
    store: Store, world: tuple[Autoscaler, Backlog]
) -> None:
    scaler, backlog = world
    h = await store.get("Hive", "default", "h")
    h["metadata"]["annotations"] = {ANNOTATION: "{not json"}
    await store.update(h)
    backlog.counts[("default", "h", "s")] = 1
    assert len(await scaler.run_once()) == 1
    history = json.loads(
        (await store.get("Hive", "default", "h"))["metadata"]["annotations"][ANNOTATION]
    )
    assert history["s"]["replicas"] == 2


async def test_run_stops_and_leaves_nothing(
    store: Store, world: tuple[Autoscaler, Backlog]
) -> None:
    scaler, backlog = world
    scaler.settings.period = 0.01
    backlog.counts[("default", "h", "s")] = 2
    stop = asyncio.Event()
    task = asyncio.create_task(scaler.run(stop))
    for _ in range(200):
        if (await _stage(store))["replicas"] == 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert (await _stage(store))["replicas"] == 3


def test_a_new_stage_is_not_scaled_down_within_its_cooldown_of_creation() -> None:
    """A stabilization window: a Hive applied a moment ago keeps its replicas (seeds round-trip)."""
    idle = load(replicas=3, ready=3, backlog=0)
    assert decide(POLICY, idle, History(since=1000.0), now=1030.0) is None
    later = decide(POLICY, idle, History(since=1000.0), now=1061.0)
    assert later is not None and later.direction == "down" and later.replicas == 2
    busy = load(replicas=1, ready=1, backlog=10)
    up = decide(POLICY, busy, History(since=1000.0), now=1001.0)
    assert up is not None and up.direction == "up"  # scale-ups never wait


# ---------------------------------------------------------------------------- a person scales


async def _scale_by_hand(store: Store, replicas: int, when: datetime) -> str | None:
    """What ``PUT …/scale`` does to stage ``s``: the annotation through :func:`manual_scale`,
    then the clamped count into the spec, in one update."""
    h = await store.get("Hive", "default", "h")
    spec = await store.get("AgentSpec", "default", "auto")
    result = manual_scale(h, hive_stages(h)[0][0], spec, replicas, when)
    h["spec"]["stages"][0]["replicas"] = result.replicas
    await store.update(h)
    return result.message()


async def test_removing_scaling_puts_the_spec_back_in_charge_and_drops_the_count(
    store: Store, queen: Queen, clock: FakeClock, world: tuple[Autoscaler, Backlog]
) -> None:
    scaler, backlog = world
    backlog.counts[("default", "h", "s")] = 3
    await scaler.run_once()  # the annotation now says 4, the spec 1
    await settle(queen, [FakeNode(store, clock, "n1")])
    spec = await store.get("AgentSpec", "default", "auto")
    del spec["spec"]["scaling"]
    await store.update(spec)  # `apiaryctl apply` without scaling
    await settle(queen, [FakeNode(store, clock, "n1")])
    stage_s = [d for d in await drones_of(store, "h") if d["spec"]["stage"] == "s"]
    assert len(stage_s) == 1  # the spec's replicas, not the autoscaler's 4
    h = await store.get("Hive", "default", "h")
    assert "s" not in read_history(h) and h["status"]["stages"][0]["wanted"] == 1
    assert await scaler.run_once() == {}  # nothing autoscaled any more
    # a scale of the now fixed stage is an ordinary spec change
    assert await _scale_by_hand(store, 3, clock()) is None
    await settle(queen, [FakeNode(store, clock, "n1")])
    assert len([d for d in await drones_of(store, "h") if d["spec"]["stage"] == "s"]) == 3


async def test_a_manual_scale_is_where_the_autoscaler_carries_on_from(
    store: Store, queen: Queen, clock: FakeClock, world: tuple[Autoscaler, Backlog]
) -> None:
    scaler, backlog = world
    backlog.counts[("default", "h", "s")] = 3
    await scaler.run_once()  # up to 4
    backlog.counts.clear()
    clock.advance(60)  # past the scale-up's cooldown
    note = await _scale_by_hand(store, 2, clock())
    assert note == "autoscaled 0..4: the autoscaler carries on from 2"
    assert (await _stage(store))["replicas"] == 2
    await settle(queen, [FakeNode(store, clock, "n1")])
    assert len([d for d in await drones_of(store, "h") if d["spec"]["stage"] == "s"]) == 2
    entry = read_history(await store.get("Hive", "default", "h"))["s"]
    assert (entry["direction"], entry["previous"], entry["replicas"]) == ("manual", 4, 2)
    assert await scaler.run_once() == {}  # idle, but the manual scale started a cooldown
    clock.advance(31)
    made = await scaler.run_once()
    assert [(d.direction, d.replicas) for d in made.values()] == [("down", 1)]  # from 2
    backlog.counts[("default", "h", "s")] = 50
    note = await _scale_by_hand(store, 9, clock())  # beyond maxReplicas 4
    assert note == (
        "asked for 9, clamped to maxReplicas 4; autoscaled 0..4: the autoscaler carries on from 4"
    )
    assert (await _stage(store))["replicas"] == 4
    assert (await store.get("Hive", "default", "h"))["spec"]["stages"][0]["replicas"] == 4
    assert await scaler.run_once() == {}  # at maxReplicas: nothing more to do


async def test_a_changed_spec_beats_an_older_autoscaler_count(
    store: Store, queen: Queen, clock: FakeClock, world: tuple[Autoscaler, Backlog]
) -> None:
    """A re-applied manifest with other replicas is a starting point too; the same manifest
    again changes nothing the autoscaler decided."""
    scaler, backlog = world
    backlog.counts[("default", "h", "s")] = 3
    await scaler.run_once()  # 4, decided against the spec's 1
    h = await store.get("Hive", "default", "h")
    h["spec"]["stages"][0]["replicas"] = 2
    await store.update(h)
    assert (await _stage(store))["replicas"] == 2
    backlog.counts.clear()
    clock.advance(60)
    made = await scaler.run_once()
    assert [(d.direction, d.replicas) for d in made.values()] == [("down", 1)]  # from 2
    again = await store.get("Hive", "default", "h")
    again["spec"]["stages"][0]["replicas"] = 2
    again["metadata"].pop("annotations")  # what a manifest has
    await store.update(again)  # the same manifest again: the autoscaler's 1 stands
    assert (await _stage(store))["replicas"] == 1
