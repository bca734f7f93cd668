"""The dead-letter queue API over a real Router, memory bus, journal and store.

The drone here is the bus side of a drone, in the test: it takes every stage's dispatches and
answers them like the node's worker would — with an agent error while ``broken`` is set (the
router retries, then dead-letters), upper-cased text otherwise. Real agent processes and a real
apiaryd are in tests/e2e/test_dlq_approval.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from apiary.api import ApiConfig, api_state, create_app
from apiary.bus import Bus, Delivery, open_bus
from apiary.journal import open_journal
from apiary.router import Router, SessionDirectory
from apiary.router.status import SessionStatusWriter
from apiary.store import Store, open_store
from apiary.waggle.envelope import Dispatch, Outcome, outcome_subject

from .conftest import AUTH, TOKEN

CELL = "/api/v1/cells/default"
DLQ = f"{CELL}/hives/h/dlq"
Obj = dict[str, Any]


@dataclass
class Drone:
    """Answers dispatches as a drone's worker does: an Outcome per attempt on the hive's out."""

    bus: Bus
    broken: bool = True
    refuse: tuple[str, str] | None = None
    """When set, answer with this (reason, message) error instead: one that is not retried."""
    hold: asyncio.Event | None = None
    """When set, answer only once this event is set (a dispatch stays in flight meanwhile)."""
    seen: list[Dispatch] = field(default_factory=list)

    async def handle(self, delivery: Delivery) -> None:
        d = Dispatch.decode(delivery.data)
        self.seen.append(d)
        if self.hold is not None:
            await self.hold.wait()
        payload = d.message.get("payload")
        if self.broken:
            outputs: list[Obj] = [{"type": "error", "payload": {"message": "model offline"}}]
        else:
            outputs = [{"type": "result", "payload": str(payload).upper()}]
        cell = d.session.partition("/")[0]
        out = Outcome(d.dispatch, d.session, d.hive, d.stage, f"drone-{d.stage}", outputs,
                      1.0, self.refuse, d.attempt)  # fmt: skip
        await self.bus.publish(outcome_subject(cell, d.hive), out.encode(), msg_id=out.msg_id)
        await delivery.ack()


@dataclass
class Env:
    client: httpx.AsyncClient
    store: Store
    router: Router
    drone: Drone

    async def hive(self, name: str = "h", approval: str | None = None, retries: int = 1) -> None:
        stages: list[Obj] = [{"name": "a", "agentRef": "x"}, {"name": "b", "agentRef": "x"}]
        if approval:
            stages[1]["approval"] = approval
        spec = {"pattern": "pipeline", "stages": stages,
                "routing": {"retryPolicy": {"maxRetries": retries, "initialDelaySeconds": 0.01,
                                            "maxDelaySeconds": 0.02}}}  # fmt: skip
        r = await self.client.post(f"{CELL}/hives", json={"metadata": {"name": name}, "spec": spec})
        assert r.status_code == 201, r.text

    async def session(self, name: str, payload: Any, hive: str = "h") -> None:
        body = {"metadata": {"name": name}, "spec": {"hiveRef": hive, "input": payload}}
        r = await self.client.post(f"{CELL}/sessions", json=body)
        assert r.status_code == 201, r.text

    async def ends(self, name: str, count: int = 1) -> list[Obj]:
        """Long-poll until ``count`` final/error entries of the session are in."""
        after, got = 0, []
        for _ in range(20):
            r = await self.client.get(
                f"{CELL}/sessions/{name}/messages", params={"after": after, "wait": 2}
            )
            assert r.status_code == 200, r.text
            got += [e for e in r.json()["items"] if e["kind"] in ("final", "error")]
            after = r.json()["last"]
            if len(got) >= count:
                return got
        raise AssertionError(f"session {name}: no final or error")

    async def status(self, name: str, check: Any, timeout: float = 5.0) -> Obj:
        """The session's status once ``check(status)`` holds (the router writes it async)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            r = await self.client.get(f"{CELL}/sessions/{name}")
            status = dict(r.json().get("status") or {})
            if check(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"session {name}: status never matched: {status}")
            await asyncio.sleep(0.02)

    async def letter(self, ident: str, phase: str) -> Obj:
        """The dead letter once the router has moved it to ``phase``."""
        for _ in range(250):
            shown = dict((await self.client.get(f"{DLQ}/{ident}")).json())
            if shown["status"]["phase"] == phase:
                return shown
            await asyncio.sleep(0.02)
        raise AssertionError(f"dead letter {ident} never became {phase}: {shown['status']}")

    async def letters(self, count: int, hive: str = "h") -> list[Obj]:
        for _ in range(250):
            r = await self.client.get(f"{CELL}/hives/{hive}/dlq")
            assert r.status_code == 200, r.text
            items = list(r.json()["items"])
            if len(items) >= count:
                return items
            await asyncio.sleep(0.02)
        raise AssertionError(f"fewer than {count} dead letters in hive {hive}")


@contextlib.asynccontextmanager
async def environment(router: bool = True) -> AsyncIterator[Env]:
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store("memory://"))
        bus = await stack.enter_async_context(open_bus("memory://"))
        journal = await stack.enter_async_context(open_journal("memory://", poll_interval=0.05))
        rt = Router(journal, bus, SessionDirectory(store, ttl=0.2), sweep_on_start=False)
        writer = SessionStatusWriter(store, journal)
        rt.on_status = writer.update
        app = create_app(store, TOKEN, ApiConfig())
        if router:
            api_state(app).router, api_state(app).journal = rt, journal
        drone = Drone(bus)
        sub = await bus.subscribe("apiary.*.*.*.in", "drones", drone.handle, max_in_flight=64)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop))
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://apiary", headers=AUTH)
        try:
            yield Env(client, store, rt, drone)
        finally:
            await client.aclose()
            stop.set()
            await task
            await sub.drain()
            for t in [*rt._tasks, writer._task]:
                if t is not None and not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with environment() as e:
        await e.hive()
        yield e


# ------------------------------------------------------------------------------ tests


async def test_dead_letter_is_listed_shown_and_replayed_after_a_fix(env: Env) -> None:
    await env.session("s1", "hello")
    (letter,) = await env.letters(1)
    ident = letter["spec"]["dispatch"]
    assert letter["kind"] == "DeadLetter" and letter["metadata"]["name"] == f"dl-{ident}"
    assert letter["status"]["phase"] == "Pending"
    spec = letter["spec"]
    assert (spec["session"], spec["stage"], spec["attempts"]) == ("s1", "a", 2)
    assert spec["reason"] == "AgentError" and spec["message"] == "model offline"
    assert spec["original"]["payload"] == "hello" and spec["topic"] == "dlq/h"
    # The session says why it stopped, and points at the DLQ.
    status = await env.status("s1", lambda s: s.get("reason") == "DeadLettered")
    assert status["phase"] == "Failed" and "dlq" in status["message"]
    # Shown by dispatch id or by object name.
    for ref in (ident, f"dl-{ident}"):
        r = await env.client.get(f"{DLQ}/{ref}")
        assert r.status_code == 200 and r.json()["spec"]["dispatch"] == ident
    # Fix the agent, replay: the flow continues where it stopped and answers.
    env.drone.broken = False
    r = await env.client.post(f"{DLQ}/{ident}/replay")
    assert r.status_code == 200, r.text
    assert r.json()["status"]["phase"] == "Replayed" and r.json()["status"]["replayedAt"]
    (end,) = await env.ends("s1")
    assert end["kind"] == "final" and end["message"]["payload"] == "HELLO"
    await env.status("s1", lambda s: s.get("phase") == "Running" and not s.get("reason"))
    # The replayed dispatch was answered: the router settled the letter as Resolved.
    shown = await env.letter(ident, "Resolved")
    status = shown["status"]
    assert status["replays"] == 1 and status["resolvedAt"] >= status["replayedAt"]
    again = await env.client.post(f"{DLQ}/{ident}/replay")
    assert again.status_code == 409
    assert "is Resolved: its replay succeeded" in again.json()["message"]


async def test_a_replay_in_flight_is_replayed_then_resolved(env: Env) -> None:
    await env.session("s1", "hello")
    (letter,) = await env.letters(1)
    ident = letter["spec"]["dispatch"]
    env.drone.broken = False
    env.drone.hold = gate = asyncio.Event()
    await env.client.post(f"{DLQ}/{ident}/replay")
    await asyncio.sleep(0.2)
    shown = (await env.client.get(f"{DLQ}/{ident}")).json()
    assert shown["status"]["phase"] == "Replayed" and "resolvedAt" not in shown["status"]
    again = await env.client.post(f"{DLQ}/{ident}/replay")
    assert again.status_code == 409 and "in flight" in again.json()["message"]
    gate.set()
    await env.letter(ident, "Resolved")


async def test_a_replay_answered_by_an_error_not_retried_is_failed(env: Env) -> None:
    await env.session("s1", "hello")
    (letter,) = await env.letters(1)
    ident = letter["spec"]["dispatch"]
    env.drone.refuse = ("RateLimited", "over the model's rate limit")
    assert (await env.client.post(f"{DLQ}/{ident}/replay")).status_code == 200
    (end,) = await env.ends("s1")
    assert end["kind"] == "error" and end["message"]["payload"]["reason"] == "RateLimited"
    shown = await env.letter(ident, "Failed")
    assert shown["status"]["reason"] == "RateLimited" and shown["status"]["failedAt"]
    assert shown["spec"]["attempts"] == letter["spec"]["attempts"]  # it did not die again
    again = await env.client.post(f"{DLQ}/{ident}/replay")
    assert again.status_code == 409 and "not retried" in again.json()["message"]
    purged = (await env.client.delete(f"{DLQ}/{ident}")).json()
    assert purged["flowFailed"] is False and (await env.client.get(DLQ)).json()["items"] == []


async def test_list_by_phase(env: Env) -> None:
    for i in range(2):
        await env.session(f"s{i}", f"m{i}")
    letters = await env.letters(2)
    done, open_ = letters[1]["spec"]["dispatch"], letters[0]["spec"]["dispatch"]
    env.drone.broken = False
    await env.client.post(f"{DLQ}/{done}/replay")
    await env.letter(done, "Resolved")

    async def listed(phase: str | None) -> list[str]:
        query = {"phase": phase} if phase is not None else {}
        r = await env.client.get(DLQ, params=query)
        assert r.status_code == 200, r.text
        return [o["spec"]["dispatch"] for o in r.json()["items"]]

    assert await listed(None) == [open_, done] and await listed("") == [open_, done]
    assert await listed("Pending,Replayed,Failed") == [open_]
    assert await listed("Resolved") == [done]
    assert await listed(" Pending , Resolved ") == [open_, done]
    bad = await env.client.get(DLQ, params={"phase": "Pending,Done"})
    assert bad.status_code == 400
    assert "phase='Pending,Done': unknown phase(s) Done" in bad.json()["message"]
    # Paging works within the filter.
    page = (await env.client.get(DLQ, params={"phase": "Resolved", "limit": 1})).json()
    assert [o["spec"]["dispatch"] for o in page["items"]] == [done]
    assert "continue" not in page["metadata"]


async def test_a_replay_that_dies_again_is_pending_again(env: Env) -> None:
    await env.session("s1", "hello")
    (letter,) = await env.letters(1)
    ident = letter["spec"]["dispatch"]
    attempts_before = len(env.drone.seen)
    r = await env.client.post(f"{DLQ}/{ident}/replay")
    assert r.json()["status"]["phase"] == "Replayed"
    for _ in range(250):
        shown = (await env.client.get(f"{DLQ}/{ident}")).json()
        if shown["status"]["phase"] == "Pending":
            break
        await asyncio.sleep(0.02)
    assert shown["status"]["phase"] == "Pending"
    assert shown["spec"]["attempts"] > letter["spec"]["attempts"]
    assert len(env.drone.seen) > attempts_before
    # Pending again means replayable again.
    env.drone.broken = False
    assert (await env.client.post(f"{DLQ}/{ident}/replay")).status_code == 200
    (end,) = await env.ends("s1")
    assert end["message"]["payload"] == "HELLO"


async def test_list_is_newest_first_and_pages(env: Env) -> None:
    for i in range(3):
        await env.session(f"s{i}", f"m{i}")
        await env.letters(i + 1)
    r = await env.client.get(DLQ, params={"limit": 2})
    body = r.json()
    assert body["kind"] == "DeadLetterList"
    assert [o["spec"]["session"] for o in body["items"]] == ["s2", "s1"]
    token = body["metadata"]["continue"]
    rest = (await env.client.get(DLQ, params={"limit": 2, "continue": token})).json()
    assert [o["spec"]["session"] for o in rest["items"]] == ["s0"]
    assert "continue" not in rest["metadata"]
    bad = await env.client.get(DLQ, params={"continue": "nonsense!"})
    assert bad.status_code == 400 and "continue" in bad.json()["message"]
    neg = await env.client.get(DLQ, params={"limit": "-1"})
    assert neg.status_code == 400 and "limit" in neg.json()["message"]


async def test_purge_fails_the_flow_and_removes_the_letter(env: Env) -> None:
    await env.session("s1", "hello")
    (letter,) = await env.letters(1)
    ident = letter["spec"]["dispatch"]
    r = await env.client.delete(f"{DLQ}/{ident}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": ident, "session": "s1", "purged": True, "flowFailed": True}
    (end,) = await env.ends("s1")
    assert end["kind"] == "error" and end["message"]["payload"]["reason"] == "DeadLetterPurged"
    assert (await env.client.get(f"{DLQ}/{ident}")).status_code == 404
    assert (await env.client.get(DLQ)).json()["items"] == []


async def test_replay_all_and_purge_all(env: Env) -> None:
    for i in range(3):
        await env.session(f"s{i}", f"m{i}")
    letters = await env.letters(3)
    env.drone.broken = False
    first = letters[0]["spec"]["dispatch"]
    assert (await env.client.post(f"{DLQ}/{first}/replay")).status_code == 200
    r = await env.client.post(f"{DLQ}/replay")
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["replayed"]) == sorted(o["spec"]["dispatch"] for o in letters[1:])
    assert body["failed"] == []  # the one replayed already is not replayed twice
    for i in range(3):
        (end,) = await env.ends(f"s{i}")
        assert end["message"]["payload"] == f"M{i}"
    for o in letters:
        await env.letter(o["spec"]["dispatch"], "Resolved")
    again = (await env.client.post(f"{DLQ}/replay")).json()
    assert again["replayed"] == [] and again["failed"] == []  # resolved ones are not replayed
    # Purge everything: the letters were replayed and succeeded, so no flow fails any more.
    purged = (await env.client.delete(DLQ)).json()
    assert len(purged["purged"]) == 3 and purged["flowsFailed"] == 0
    assert (await env.client.get(DLQ)).json()["items"] == []
    assert (await env.client.delete(DLQ)).json()["purged"] == []


async def test_errors_name_what_is_missing(env: Env) -> None:
    r = await env.client.get(f"{CELL}/hives/ghost/dlq")
    assert r.status_code == 404 and "hive 'ghost' not found" in r.json()["message"]
    assert (await env.client.post(f"{CELL}/hives/ghost/dlq/replay")).status_code == 404
    assert (await env.client.delete(f"{CELL}/hives/ghost/dlq/abc")).status_code == 404
    r = await env.client.get(f"{DLQ}/nope")
    assert (
        r.status_code == 404 and "dead letter 'nope' not found in hive 'h'" in r.json()["message"]
    )
    await env.session("s1", "hello")
    (letter,) = await env.letters(1)
    await env.hive("other")
    r = await env.client.get(f"{CELL}/hives/other/dlq/{letter['spec']['dispatch']}")
    assert r.status_code == 404  # a dead letter of another hive is not this hive's
    # A deleted session cannot be replayed into: 409 saying so, and the letter stays Pending.
    assert (await env.client.delete(f"{CELL}/sessions/s1")).status_code == 200
    env.router.sessions.forget("default", "s1")
    r = await env.client.post(f"{DLQ}/{letter['spec']['dispatch']}/replay")
    assert r.status_code == 409 and "no longer exists" in r.json()["message"]
    shown = (await env.client.get(f"{DLQ}/{letter['spec']['dispatch']}")).json()
    assert shown["status"]["phase"] == "Pending"
    # A deleted hive's letters can still be listed and purged.
    assert (await env.client.delete(f"{CELL}/hives/h")).status_code == 200
    assert len((await env.client.get(DLQ)).json()["items"]) == 1
    purged = (await env.client.delete(DLQ)).json()
    assert purged["flowsFailed"] == 0 and len(purged["purged"]) == 1
    assert (await env.client.get(DLQ)).status_code == 404


async def test_without_a_router_writes_are_503_and_reads_work() -> None:
    async with environment(router=False) as env:
        await env.hive()
        assert (await env.client.get(DLQ)).json()["items"] == []
        r = await env.client.post(f"{DLQ}/replay")
        assert r.status_code == 503 and "no router" in r.json()["message"]


async def test_dlq_needs_a_token(env: Env) -> None:
    r = await env.client.get(DLQ, headers={"Authorization": ""})
    assert r.status_code == 401
