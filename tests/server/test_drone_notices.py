"""Node-side notices against a real webhook receiver on 127.0.0.1 and a real (memory) store:
status writes that imitate the node (crash loops, circuit breaker) and the Queen (stage sizes)
become crash_loop / circuit_open / scaled notices — once per transition, filtered by the hive's
``events``, as Warning Events and counters."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiary.server.drone_notices import DroneNotices, stable_message
from apiary.server.notify import Notifier
from apiary.store import Store, open_store

from .daemon_proc import start
from .test_notify import Receiver, make_notifier, running, sample, serving

Obj = dict[str, Any]
CELL = "default"


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store("memory://") as s:
        yield s


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as r:
        yield r


@contextlib.asynccontextmanager
async def watching(store: Store, notifier: Notifier) -> AsyncIterator[DroneNotices]:
    """The notifier's worker and a watcher, as the leader runs them; both gone afterwards."""
    watcher = DroneNotices(store, notifier)
    stop = asyncio.Event()
    async with running(notifier):
        task = asyncio.create_task(watcher.run(stop))
        try:
            await asyncio.wait_for(watcher.caught_up(await store.resource_version()), 5)
            yield watcher
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)


async def settle(store: Store, watcher: DroneNotices, notifier: Notifier) -> None:
    """Every write so far handled by the watcher, every notice delivered."""
    await asyncio.wait_for(watcher.caught_up(await store.resource_version()), 5)
    await asyncio.wait_for(notifier.drain(), 5)


async def add_hive(store: Store, name: str, webhook: Obj | None = None) -> Obj:
    spec: Obj = {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]}
    if webhook is not None:
        spec["webhook"] = webhook
    meta = {"name": name, "namespace": CELL}
    return await store.create(
        {"apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": meta, "spec": spec}
    )


async def add_drone(store: Store, name: str, owner: Obj, *, stage: str = "s") -> Obj:
    """A drone as the Queen creates it: owned by its Hive (or AgentSpec), hive/stage in spec."""
    meta = owner["metadata"]
    ref = {"apiVersion": "apiary.io/v1", "kind": owner["kind"], "name": meta["name"],
           "uid": meta["uid"], "controller": True}  # fmt: skip
    spec: Obj = {"runtime": {"command": ["agent"]}}
    if owner["kind"] == "Hive":
        spec.update(hive=meta["name"], stage=stage)
    return await store.create({"apiVersion": "apiary.io/v1", "kind": "Drone",
                               "metadata": {"name": name, "namespace": CELL,
                                            "ownerReferences": [ref]},
                               "spec": spec})  # fmt: skip


async def add_agentspec(store: Store, name: str) -> Obj:
    return await store.create({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                               "metadata": {"name": name, "namespace": CELL},
                               "spec": {"runtime": {"command": ["agent"]}}})  # fmt: skip


async def write_status(store: Store, kind: str, name: str, status: Obj) -> None:
    def change(current: Obj) -> Obj:
        current["status"] = status
        return current

    await store.update_with_retry(kind, CELL, name, change, subresource="status")


def running_status(restarts: int) -> Obj:
    return {"phase": "Running", "restartCount": restarts, "ready": True, "nodeName": "n1"}


def crashed(restarts: int, reason: str, delay: float) -> Obj:
    return {"phase": "Failed", "restartCount": restarts, "exitCode": 1, "reason": reason,
            "message": f"exited with code 1; last stderr: boom; restarting in {delay:g}s",
            "nextRestartAt": "2030-01-01T00:00:00Z", "nodeName": "n1", "ready": False}  # fmt: skip


def circuit(state: str, countdown: float = 4.9) -> Obj:
    message = (f"circuit open after 3 consecutive failed attempts; a trial message in "
               f"{countdown:.1f}s")  # fmt: skip
    return {**running_status(0), "ready": False, "reason": state, "message": message}


async def events_of(store: Store, kind: str, name: str) -> list[Obj]:
    items = (await store.list("Event", CELL)).items
    return [
        e
        for e in items
        if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
    ]


async def test_a_crash_loop_is_announced_once_per_entry(store: Store, receiver: Receiver) -> None:
    hive = await add_hive(store, "h", {"url": receiver.url, "events": ["crash_loop"]})
    await add_drone(store, "h-s-0", hive)
    notifier = make_notifier(store)
    async with watching(store, notifier) as watcher:
        await write_status(store, "Drone", "h-s-0", running_status(0))
        await write_status(store, "Drone", "h-s-0", crashed(0, "Error", 0.5))  # first crash
        await write_status(store, "Drone", "h-s-0", running_status(1))
        await write_status(store, "Drone", "h-s-0", crashed(1, "CrashLoopBackOff", 1))
        # more writes while it stays in the crash loop: the node rewrites its status
        await write_status(store, "Drone", "h-s-0", {**crashed(1, "CrashLoopBackOff", 1),
                                                     "lastStderr": ["boom"]})  # fmt: skip
        await write_status(store, "Drone", "h-s-0", running_status(2))
        await write_status(store, "Drone", "h-s-0", crashed(2, "CrashLoopBackOff", 2))
        await settle(store, watcher, notifier)
    got = [r.json for r in receiver.received]
    assert [(g["event"], g["hive"], g["detail"]["restartCount"]) for g in got] == [
        ("crash_loop", "h", 1), ("crash_loop", "h", 2)]  # fmt: skip
    assert got[0]["detail"] == {
        "drone": "h-s-0", "stage": "s", "node": "n1", "reason": "CrashLoopBackOff",
        "restartCount": 1, "exitCode": 1, "message": "exited with code 1; last stderr: boom",
        "nextRestartAt": "2030-01-01T00:00:00Z"}  # fmt: skip
    assert got[0]["session"] is None
    # the same crash reads the same each time (no back-off countdown): one Event counted twice
    (on_hive,) = await events_of(store, "Hive", "h")
    assert (on_hive["type"], on_hive["reason"], on_hive["count"]) == (
        "Warning", "CrashLoopBackOff", 2)  # fmt: skip
    assert on_hive["message"] == "stage s: exited with code 1; last stderr: boom"
    (on_drone,) = await events_of(store, "Drone", "h-s-0")
    assert (on_drone["reason"], on_drone["count"]) == ("CrashLoopBackOff", 2)
    m = notifier.metrics
    assert sample(m, "apiary_notices_total", event="crash_loop", cell=CELL, hive="h") == 2
    assert sample(m, "apiary_webhook_deliveries_total", result="delivered") == 2


async def test_circuit_open_follows_the_hives_events_filter(
    store: Store, receiver: Receiver
) -> None:
    quiet = await add_hive(store, "quiet", {"url": receiver.url, "events": ["crash_loop"]})
    loud = await add_hive(store, "loud", {"url": receiver.url})  # every event
    await add_drone(store, "quiet-s-0", quiet)
    await add_drone(store, "loud-s-0", loud)
    notifier = make_notifier(store)
    async with watching(store, notifier) as watcher:
        await write_status(store, "Drone", "quiet-s-0", running_status(0))
        await write_status(store, "Drone", "quiet-s-0", circuit("CircuitOpen"))
        await write_status(store, "Drone", "loud-s-0", running_status(0))
        await write_status(store, "Drone", "loud-s-0", circuit("CircuitOpen", 4.9))
        await write_status(store, "Drone", "loud-s-0", circuit("CircuitOpen", 2.3))  # same open
        await write_status(store, "Drone", "loud-s-0", circuit("CircuitHalfOpen"))
        await write_status(store, "Drone", "loud-s-0", circuit("CircuitOpen", 5.0))  # re-opened
        await write_status(store, "Drone", "loud-s-0", running_status(0))
        await settle(store, watcher, notifier)
    got = [r.json for r in receiver.received]
    assert [(g["event"], g["hive"]) for g in got] == [("circuit_open", "loud")] * 2
    assert got[0]["detail"] == {
        "drone": "loud-s-0", "stage": "s", "node": "n1", "reason": "CircuitOpen",
        "restartCount": 0,
        "message": "circuit open after 3 consecutive failed attempts"}  # fmt: skip
    # filtered out of the webhook, but still an Event and a counted violation
    (on_quiet,) = await events_of(store, "Hive", "quiet")
    assert (on_quiet["reason"], on_quiet["type"]) == ("CircuitOpen", "Warning")
    m = notifier.metrics
    assert sample(m, "apiary_guardrail_violations_total", reason="CircuitOpen", cell=CELL,
                  hive="quiet") == 1  # fmt: skip
    assert sample(m, "apiary_notices_total", event="circuit_open", cell=CELL, hive="loud") == 2


async def test_a_change_of_wanted_replicas_is_scaled(store: Store, receiver: Receiver) -> None:
    await add_hive(store, "h", {"url": receiver.url, "events": ["scaled"]})
    notifier = make_notifier(store)

    def stages(**wanted: int) -> Obj:
        rows = [{"name": n, "wanted": w, "ready": 0} for n, w in wanted.items()]
        return {"phase": "Running", "replicas": sum(wanted.values()), "stages": rows}

    async with watching(store, notifier) as watcher:
        await write_status(store, "Hive", "h", {"phase": "Pending"})  # refs resolved, no sizes
        await write_status(store, "Hive", "h", stages(s=1))  # where the hive starts
        await write_status(store, "Hive", "h", {**stages(s=1), "readyReplicas": 1})  # not a scale
        await write_status(store, "Hive", "h", stages(s=3))  # `apiaryctl scale --replicas 3`
        await write_status(store, "Hive", "h", {**stages(s=3), "readyReplicas": 3})
        await write_status(store, "Hive", "h", stages(s=3, t=2))  # a stage added to the spec
        await write_status(store, "Hive", "h", stages(t=0))  # s removed, t scaled to zero
        await settle(store, watcher, notifier)
    got = [r.json for r in receiver.received]
    assert [g["event"] for g in got] == ["scaled"] * 3
    assert got[0]["detail"] == {"stages": {"s": {"from": 1, "to": 3}},
                                "replicas": {"from": 1, "to": 3},
                                "message": "stage s: 1 → 3"}  # fmt: skip
    assert got[1]["detail"]["stages"] == {"t": {"from": 0, "to": 2}}
    assert got[2]["detail"]["stages"] == {"s": {"from": 3, "to": 0}, "t": {"from": 2, "to": 0}}
    assert got[2]["detail"]["replicas"] == {"from": 5, "to": 0}
    # scaling is Normal: the Queen records ScalingUp/Down; no Warning Event from the notice
    assert await events_of(store, "Hive", "h") == []
    assert sample(notifier.metrics, "apiary_notices_total", event="scaled", cell=CELL,
                  hive="h") == 3  # fmt: skip


async def test_a_standalone_drone_gets_events_but_no_webhook(
    store: Store, receiver: Receiver
) -> None:
    await add_hive(store, "h", {"url": receiver.url})  # listens to everything, hears nothing
    spec = await add_agentspec(store, "solo")
    await add_drone(store, "solo-0", spec)
    notifier = make_notifier(store)
    async with watching(store, notifier) as watcher:
        await write_status(store, "Drone", "solo-0", crashed(1, "CrashLoopBackOff", 1))
        await write_status(store, "Drone", "solo-0", running_status(1))
        await write_status(store, "Drone", "solo-0", circuit("CircuitOpen"))
        await settle(store, watcher, notifier)
    assert receiver.received == []
    assert {e["reason"] for e in await events_of(store, "Drone", "solo-0")} == {
        "CrashLoopBackOff", "CircuitOpen"}  # fmt: skip
    on_spec = {e["reason"]: e["message"] for e in await events_of(store, "AgentSpec", "solo")}
    assert on_spec["CrashLoopBackOff"] == "drone solo-0: exited with code 1; last stderr: boom"
    m = notifier.metrics
    assert sample(m, "apiary_notices_total", event="crash_loop", cell=CELL, hive="") == 1
    assert sample(m, "apiary_notices_total", event="circuit_open", cell=CELL, hive="") == 1


async def test_what_a_new_leader_finds_is_not_replayed(store: Store, receiver: Receiver) -> None:
    hive = await add_hive(store, "h", {"url": receiver.url})
    await add_drone(store, "h-s-0", hive)
    await add_drone(store, "h-s-1", hive)
    await write_status(store, "Drone", "h-s-0", crashed(3, "CrashLoopBackOff", 8))
    await write_status(store, "Drone", "h-s-1", circuit("CircuitOpen"))
    await write_status(store, "Hive", "h", {"stages": [{"name": "s", "wanted": 2}]})
    for _ in range(2):  # a leader, then the next one: neither replays the state it finds
        notifier = make_notifier(store)
        async with watching(store, notifier) as watcher:
            await write_status(store, "Drone", "h-s-0", crashed(3, "CrashLoopBackOff", 16))
            await write_status(store, "Drone", "h-s-1", circuit("CircuitOpen", 1.0))
            await settle(store, watcher, notifier)
        assert receiver.received == []
    notifier = make_notifier(store)
    async with watching(store, notifier) as watcher:
        await write_status(store, "Drone", "h-s-0", running_status(4))
        await write_status(store, "Drone", "h-s-0", crashed(4, "CrashLoopBackOff", 16))
        await settle(store, watcher, notifier)
    assert [(r.json["event"], r.json["detail"]["restartCount"]) for r in receiver.received] == [
        ("crash_loop", 4)]  # fmt: skip


async def test_a_resync_catches_a_transition_the_watch_missed(
    store: Store, receiver: Receiver
) -> None:
    hive = await add_hive(store, "h", {"url": receiver.url})
    await add_drone(store, "h-s-0", hive)
    await add_drone(store, "h-s-1", hive)
    await write_status(store, "Drone", "h-s-1", running_status(0))
    await write_status(store, "Hive", "h", {"stages": [{"name": "s", "wanted": 2}]})
    notifier = make_notifier(store)
    watcher = DroneNotices(store, notifier)
    async with running(notifier):
        await watcher.sync()  # learns
        assert len(watcher._drones) == 2
        await write_status(store, "Drone", "h-s-0", crashed(1, "CrashLoopBackOff", 1))
        await write_status(store, "Hive", "h", {"stages": [{"name": "s", "wanted": 1}]})
        await store.delete("Drone", CELL, "h-s-1")
        await watcher.sync()  # no watch ran: the listing sees the new state
        await watcher.sync()  # and a second listing announces nothing again
        await notifier.drain()
    assert sorted(r.json["event"] for r in receiver.received) == ["crash_loop", "scaled"]
    assert len(watcher._drones) == 1  # the deleted drone is forgotten


async def test_a_restarted_node_counting_from_zero_is_announced_again(
    store: Store, receiver: Receiver
) -> None:
    hive = await add_hive(store, "h", {"url": receiver.url, "events": ["crash_loop"]})
    await add_drone(store, "h-s-0", hive)
    notifier = make_notifier(store)
    async with watching(store, notifier) as watcher:
        await write_status(store, "Drone", "h-s-0", crashed(1, "CrashLoopBackOff", 1))
        await write_status(store, "Drone", "h-s-0", running_status(0))  # a new node process
        await write_status(store, "Drone", "h-s-0", crashed(1, "CrashLoopBackOff", 1))
        await settle(store, watcher, notifier)
    assert [r.json["detail"]["restartCount"] for r in receiver.received] == [1, 1]


async def test_malformed_statuses_are_read_without_a_traceback(
    store: Store, receiver: Receiver
) -> None:
    hive = await add_hive(store, "h", {"url": receiver.url})
    await add_drone(store, "h-s-0", hive)
    notifier = make_notifier(store)
    async with watching(store, notifier) as watcher:
        await write_status(store, "Drone", "h-s-0", {"reason": "CrashLoopBackOff",
                                                     "restartCount": "many", "exitCode": True,
                                                     "message": 42})  # fmt: skip
        await write_status(store, "Hive", "h", {"stages": "all of them"})
        await write_status(store, "Hive", "h", {"stages": [{"name": "s", "wanted": 2}, 7]})
        await write_status(store, "Hive", "h", {"stages": [{"name": "s", "wanted": "x"}]})
        await write_status(store, "Hive", "h", {"stages": [{"name": "s", "wanted": 4}]})
        await settle(store, watcher, notifier)
    got = [r.json for r in receiver.received]
    assert [g["event"] for g in got] == ["crash_loop", "scaled"]
    assert (got[0]["detail"]["restartCount"], got[0]["detail"]["exitCode"]) == (0, None)
    assert got[0]["detail"]["message"] == "CrashLoopBackOff"
    assert got[1]["detail"]["stages"] == {"s": {"from": 2, "to": 4}}


def test_stable_message_drops_the_countdowns() -> None:
    assert stable_message("exited with code 1; restarting in 2.5s", "R") == "exited with code 1"
    assert stable_message("open after 3; a trial message in 0.4s", "R") == "open after 3"
    assert stable_message(None, "CrashLoopBackOff") == "CrashLoopBackOff"


def test_a_resync_interval_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="resync_interval"):
        DroneNotices(store, make_notifier(store), resync_interval=0)


# ------------------------------------------------------------------ end to end, real apiaryd


async def test_a_crashing_agent_and_a_scale_reach_the_webhook_from_apiaryd(tmp_path: Path) -> None:
    """The leader of a real apiaryd runs the watcher: a real agent that exits at once goes into
    CrashLoopBackOff on the embedded node, and ``/scale`` changes the stage's wanted size."""
    daemon = start(tmp_path / "data")
    try:
        async with (
            serving(Receiver()) as receiver,
            httpx.AsyncClient(base_url=daemon.url, headers=daemon.headers, timeout=10) as c,
        ):
            for plural, obj in crashing_objects(receiver.url):
                r = await c.post(f"/api/v1/cells/{CELL}/{plural}", json=obj)
                assert r.status_code == 201, r.text

            def events(name: str) -> list[Obj]:
                return [r.json for r in receiver.received if r.json["event"] == name]

            await until("a crash_loop webhook", lambda: events("crash_loop"))
            first = events("crash_loop")[0]
            assert first["hive"] == "h" and first["detail"]["stage"] == "work"
            assert first["detail"]["exitCode"] == 3
            assert first["detail"]["restartCount"] >= 1
            r = await c.put(f"/api/v1/cells/{CELL}/hives/h/scale", json={"replicas": 2})
            assert r.status_code == 200, r.text
            (scaled,) = await until("a scaled webhook", lambda: events("scaled"))
            assert scaled["detail"]["stages"] == {"work": {"from": 1, "to": 2}}
            restarts = [(e["detail"]["drone"], e["detail"]["restartCount"])
                        for e in events("crash_loop")]  # fmt: skip
            assert len(restarts) == len(set(restarts))  # once per entry, never per status write
            text = (await c.get("/metrics")).text
            assert 'apiary_notices_total{cell="default",event="crash_loop",hive="h"}' in text
            items = (await c.get(f"/api/v1/cells/{CELL}/events")).json()["items"]
            assert any(e["involvedObject"]["kind"] == "Drone" and e["reason"] ==
                       "CrashLoopBackOff" for e in items)  # fmt: skip
    finally:
        if daemon.terminate(15) != 0:
            print("".join(daemon.lines), file=sys.stderr)


def crashing_objects(url: str) -> list[tuple[str, Obj]]:
    agent = {
        "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
        "metadata": {"name": "crashy", "namespace": CELL},
        "spec": {"runtime": {"command": [sys.executable, "-I", "-S", "-c", "raise SystemExit(3)"]},
                 "resources": {"requests": {"cpu": 50, "memory": 16_000_000}}},
    }  # fmt: skip
    hive = {
        "apiVersion": "apiary.io/v1", "kind": "Hive",
        "metadata": {"name": "h", "namespace": CELL},
        "spec": {"pattern": "pipeline", "stages": [{"name": "work", "agentRef": "crashy"}],
                 "webhook": {"url": url, "events": ["crash_loop", "scaled"]}},
    }  # fmt: skip
    return [("agentspecs", agent), ("hives", hive)]


async def until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return got
