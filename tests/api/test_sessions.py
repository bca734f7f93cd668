"""The sessions API over a real Router, memory bus and memory journal, with a fake drone in the
test that takes every stage's dispatches from the bus and answers them (upper-casing text).

Payload conventions the fake drone understands: ``"hold…"`` waits until the test releases it,
``"empty"`` answers with no output at all (the flow fails: NoOutput), ``"boom"`` answers with an
agent error (retried per the hive's retryPolicy, then dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from apiary.api import ApiConfig, api_state, create_app
from apiary.bus import Bus, Delivery, open_bus
from apiary.journal import Journal, open_journal
from apiary.router import Router, SessionDirectory
from apiary.router.status import SessionStatusWriter
from apiary.store import open_store
from apiary.waggle.envelope import Dispatch, Outcome, outcome_subject

from .conftest import AUTH, TOKEN

CELL = "/api/v1/cells/default"
Obj = dict[str, Any]


@dataclass
class FakeDrone:
    """Answers dispatches like a real drone's bus side would (Outcome on the hive's out)."""

    bus: Bus
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[Dispatch] = field(default_factory=list)

    async def handle(self, delivery: Delivery) -> None:
        d = Dispatch.decode(delivery.data)
        self.seen.append(d)
        payload = d.message.get("payload")
        outputs: list[Obj] = []
        if isinstance(payload, str) and payload.startswith("hold"):
            await self.gate.wait()
        if payload == "boom":
            outputs = [{"type": "error", "payload": "the agent gave up"}]
        elif payload == "empty":
            outputs = []
        else:
            text = payload.upper() if isinstance(payload, str) else payload
            usage = {"promptTokens": 3, "completionTokens": 5}
            outputs = [{"type": "result", "payload": text, "usage": usage}]
        cell, _, _ = d.session.partition("/")
        out = Outcome(d.dispatch, d.session, d.hive, d.stage, f"drone-{d.stage}", outputs, 1.5)
        await self.bus.publish(
            outcome_subject(cell, d.hive), out.encode(), msg_id=d.dispatch + ":out"
        )
        await delivery.ack()


@dataclass
class Env:
    client: httpx.AsyncClient
    journal: Journal
    router: Router
    drone: FakeDrone
    app: Any

    async def hive(
        self, name: str = "h", stages: tuple[str, ...] = ("shout",), **extra: Any
    ) -> None:
        spec = {"pattern": "pipeline", "stages": [{"name": s, "agentRef": "a"} for s in stages]}
        spec.update(extra)
        r = await self.client.post(f"{CELL}/hives", json={"metadata": {"name": name}, "spec": spec})
        assert r.status_code == 201, r.text

    async def session(self, name: str, hive: str = "h", **spec: Any) -> Obj:
        body = {"metadata": {"name": name}, "spec": {"hiveRef": hive, **spec}}
        r = await self.client.post(f"{CELL}/sessions", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def send(self, name: str, payload: Any, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"{CELL}/sessions/{name}/messages", json={"payload": payload, **extra}
        )

    async def until(self, name: str, kinds: set[str], count: int = 1) -> list[Obj]:
        """Long-poll the session until ``count`` entries of ``kinds`` are in."""
        after, got = 0, []
        for _ in range(50):
            r = await self.client.get(
                f"{CELL}/sessions/{name}/messages", params={"after": after, "wait": 5}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            got += [e for e in body["items"] if e["kind"] in kinds]
            after = body["last"]
            if len(got) >= count:
                return got
        raise AssertionError(f"no {kinds} entries in session {name}")

    async def phase(self, name: str) -> str:
        r = await self.client.get(f"{CELL}/sessions/{name}")
        return str((r.json().get("status") or {}).get("phase") or "")


@contextlib.asynccontextmanager
async def environment(config: ApiConfig | None = None, router: bool = True) -> AsyncIterator[Env]:
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store("memory://"))
        bus = await stack.enter_async_context(open_bus("memory://"))
        journal = await stack.enter_async_context(open_journal("memory://", poll_interval=0.05))
        rt = Router(journal, bus, SessionDirectory(store, ttl=0.2), sweep_on_start=False)
        rt.on_status = SessionStatusWriter(store, journal).update
        app = create_app(store, TOKEN, config)
        if router:
            api_state(app).router, api_state(app).journal = rt, journal
        drone = FakeDrone(bus)
        sub = await bus.subscribe("apiary.*.*.*.in", "fake-drones", drone.handle, max_in_flight=64)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop))
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://apiary", headers=AUTH)
        try:
            yield Env(client, journal, rt, drone, app)
        finally:
            drone.gate.set()
            await client.aclose()
            stop.set()
            await task
            await sub.drain()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with environment(ApiConfig(max_message_bytes=2000)) as e:
        await e.hive()
        yield e


@contextlib.asynccontextmanager
async def served(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    """The same app behind a real uvicorn on an ephemeral port (SSE needs real streaming)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    server = uvicorn.Server(
        uvicorn.Config(env.app, lifespan="off", access_log=False, log_config=None)
    )
    serving = asyncio.create_task(server._serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as client:
            yield client
    finally:
        api_state(env.app).stopping.set()
        server.should_exit = True
        server.force_exit = True
        await serving
        sock.close()


async def sse(client: httpx.AsyncClient, path: str, **headers: str) -> list[tuple[int, str, Obj]]:
    """Read a whole event stream: (id, event, data) per event; the server must end it."""
    events: list[tuple[int, str, Obj]] = []
    async with client.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in r.aiter_lines():
            if line == "":
                if "data" in fields:
                    events.append(
                        (int(fields["id"]), fields["event"], orjson.loads(fields["data"]))
                    )
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    return events


# ------------------------------------------------------------------------------- messages


async def test_send_then_long_poll_until_the_final_answers_that_input(env: Env) -> None:
    await env.session("s1")
    assert await env.phase("s1") == ""
    r = await env.send("s1", "hello", metadata={"lang": "en"})
    assert r.status_code == 202
    sent = r.json()
    assert sent["session"] == "s1" and sent["id"]
    (final,) = await env.until("s1", {"final"})
    assert final["message"]["payload"] == "HELLO"
    assert final["parent"] == sent["id"]
    assert await env.phase("s1") == "Running"
    status = (await env.client.get(f"{CELL}/sessions/s1")).json()["status"]
    assert status["startTime"]
    # a client-chosen id is kept, and sending it again does not run it twice
    for _ in range(2):
        r = await env.send("s1", "again", id="my-input-1")
        assert r.status_code == 202 and r.json()["id"] == "my-input-1"
    finals = await env.until("s1", {"final"}, 2)
    assert [f["parent"] for f in finals] == [sent["id"], "my-input-1"]
    inputs = [d for d in env.drone.seen if d.message["payload"] == "again"]
    assert len(inputs) == 1


async def test_long_poll_waits_for_the_next_entry_and_times_out_empty(env: Env) -> None:
    await env.session("s2")
    r = await env.client.get(f"{CELL}/sessions/s2/messages", params={"wait": 0.2})
    assert r.json() == {"items": [], "last": 0}
    poll = asyncio.create_task(
        env.client.get(f"{CELL}/sessions/s2/messages", params={"after": 0, "wait": 10})
    )
    await asyncio.sleep(0.1)
    assert not poll.done()
    await env.send("s2", "x")
    body = (await asyncio.wait_for(poll, 5)).json()
    assert body["items"][0]["kind"] == "input" and body["items"][0]["seq"] == 1
    assert body["last"] == body["items"][-1]["seq"]
    # limit pages the answer
    await env.until("s2", {"final"})
    r = await env.client.get(f"{CELL}/sessions/s2/messages", params={"after": 1, "limit": 1})
    assert [e["seq"] for e in r.json()["items"]] == [2] and r.json()["last"] == 2


async def test_transcript_shows_stages_drones_latency_and_tokens(env: Env) -> None:
    await env.hive("two", ("shout", "echo"))
    await env.session("t", hive="two")
    await env.send("t", "hi")
    await env.until("t", {"final"})
    r = await env.client.get(f"{CELL}/sessions/t/transcript")
    assert r.status_code == 200
    body = r.json()
    kinds = [e["kind"] for e in body["items"]]
    assert kinds == ["input", "dispatch", "output", "dispatch", "output", "final"]
    outputs = [e for e in body["items"] if e["kind"] == "output"]
    assert [e["stage"] for e in outputs] == ["shout", "echo"]
    assert [e["drone"] for e in outputs] == ["drone-shout", "drone-echo"]
    assert all(e["latencyMs"] == 1.5 for e in outputs)
    assert outputs[0]["usage"] == {"promptTokens": 3, "completionTokens": 5}
    assert body["usage"] == {"promptTokens": 6, "completionTokens": 10}
    assert body["hive"] == "two" and body["entries"] == 6
    assert [e["seq"] for e in body["items"]] == list(range(1, 7))


async def test_close_stops_messages_with_409(env: Env) -> None:
    await env.session("c")
    await env.send("c", "one")
    r = await env.client.post(f"{CELL}/sessions/c/close")
    assert r.status_code == 200
    assert r.json()["status"]["phase"] == "Closed"
    r = await env.send("c", "two")
    assert r.status_code == 409
    assert "Closed" in r.json()["message"]
    again = await env.client.post(f"{CELL}/sessions/c/close")
    assert again.status_code == 200 and again.json()["status"]["phase"] == "Closed"
    # reads still work after closing
    r = await env.client.get(f"{CELL}/sessions/c/transcript")
    assert r.status_code == 200 and r.json()["phase"] == "Closed"


async def test_unknown_session_and_unknown_hive_are_404_naming_them(env: Env) -> None:
    for method, path in [
        ("POST", "messages"),
        ("GET", "messages"),
        ("GET", "stream"),
        ("GET", "transcript"),
        ("POST", "close"),
    ]:
        body = {"payload": 1} if method == "POST" else None
        r = await env.client.request(method, f"{CELL}/sessions/nope/{path}", json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert "nope" in r.json()["message"]
    await env.session("orphan", hive="missing")  # creation may precede the hive
    r = await env.send("orphan", "x")
    assert r.status_code == 404
    assert r.json()["details"][0]["field"] == "spec.hiveRef"
    assert "missing" in r.json()["message"]
    assert await env.phase("orphan") == ""  # nothing was sent, nothing changed


async def test_bad_message_bodies_name_the_field(env: Env) -> None:
    await env.session("b")
    url = f"{CELL}/sessions/b/messages"
    cases: list[tuple[Any, int, str]] = [
        ({"type": "task"}, 422, "payload"),
        ({"payload": 1, "metadata": {"n": 1}}, 422, "metadata.n"),
        ({"payload": 1, "type": "shout"}, 422, "type"),
        ({"payload": 1, "colour": "red"}, 422, "colour"),
        ({"payload": 1, "id": 7}, 422, "id"),
    ]
    for body, status, fld in cases:
        r = await env.client.post(url, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["details"][0]["field"] == fld
    r = await env.client.post(url, content=b"{not json")
    assert r.status_code == 400
    r = await env.client.post(url, json=[1, 2])
    assert r.status_code == 400
    for params in ({"after": "x"}, {"after": "-1"}, {"wait": "soon"}, {"limit": "0"}):
        r = await env.client.get(url, params=params)
        assert r.status_code == 400, params
        assert next(iter(params)) in r.json()["message"]
    assert env.drone.seen == []


async def test_oversized_payload_is_413(env: Env) -> None:
    await env.session("big")
    r = await env.send("big", "x" * 3000)
    assert r.status_code == 413
    assert r.json()["details"][0]["field"] == "payload"
    r = await env.send("big", "x" * 1000)
    assert r.status_code == 202
    body = {"metadata": {"name": "big2"}, "spec": {"hiveRef": "h", "input": "y" * 3000}}
    r = await env.client.post(f"{CELL}/sessions", json=body)
    assert r.status_code == 413 and r.json()["details"][0]["field"] == "spec.input"
    assert (await env.client.get(f"{CELL}/sessions/big2")).status_code == 404


async def test_spec_input_is_sent_on_create_with_the_uid_as_its_id(env: Env) -> None:
    created = await env.session("si", input="from spec")
    (final,) = await env.until("si", {"final"})
    assert final["message"]["payload"] == "FROM SPEC"
    assert final["parent"] == created["metadata"]["uid"]
    assert await env.phase("si") == "Running"
    # the hive must exist when the input is sent at creation: 404, and nothing is stored
    body = {"metadata": {"name": "si2"}, "spec": {"hiveRef": "ghost", "input": "x"}}
    r = await env.client.post(f"{CELL}/sessions", json=body)
    assert r.status_code == 404 and r.json()["details"][0]["field"] == "spec.hiveRef"
    assert (await env.client.get(f"{CELL}/sessions/si2")).status_code == 404
    # dry run sends nothing
    body = {"metadata": {"name": "si3"}, "spec": {"hiveRef": "h", "input": "dry"}}
    r = await env.client.post(f"{CELL}/sessions", params={"dryRun": "All"}, json=body)
    assert r.status_code == 201
    assert not [d for d in env.drone.seen if d.message["payload"] == "dry"]


async def test_failure_is_an_error_entry_correlated_to_its_input(env: Env) -> None:
    await env.session("f")
    sent = (await env.send("f", "empty")).json()
    (error,) = await env.until("f", {"error"})
    assert error["message"]["correlationId"] == sent["id"]
    assert error["message"]["payload"]["reason"] == "NoOutput"


async def test_dispatch_answered_check(env: Env) -> None:
    await env.session("d")
    await env.send("d", "x")
    await env.until("d", {"final"})
    (dispatch,) = [d for d in env.drone.seen if d.session == "default/d"]
    r = await env.client.get(f"{CELL}/sessions/d/dispatches/{dispatch.dispatch}")
    assert r.json() == {"answered": True}
    r = await env.client.get(f"{CELL}/sessions/d/dispatches/unknown")
    assert r.json() == {"answered": False}


async def test_deleting_a_session_drops_its_transcript(env: Env) -> None:
    await env.session("del")
    await env.send("del", "x")
    await env.until("del", {"final"})
    assert (await env.client.delete(f"{CELL}/sessions/del")).status_code == 200
    await env.session("del")
    r = await env.client.get(f"{CELL}/sessions/del/transcript")
    assert r.json()["items"] == []


async def test_without_a_router_the_message_routes_answer_503() -> None:
    async with environment(router=False) as e:
        await e.hive()
        await e.session("s")  # plain CRUD still works
        r = await e.send("s", "x")
        assert r.status_code == 503
        assert "router" in r.json()["message"]
        body = {"metadata": {"name": "s2"}, "spec": {"hiveRef": "h", "input": "x"}}
        r = await e.client.post(f"{CELL}/sessions", json=body)
        assert r.status_code == 503
        assert (await e.client.get(f"{CELL}/sessions/s2")).status_code == 404


# ------------------------------------------------------------------------------------ jobs


async def test_job_lifecycle_running_then_succeeded_with_results(env: Env) -> None:
    r = await env.client.post(f"{CELL}/jobs", json={"hive": "h", "input": "hold on"})
    assert r.status_code == 201
    job = r.json()
    name = job["id"]
    assert name.startswith("job-") and job["input"]
    got = (await env.client.get(f"{CELL}/jobs/{name}")).json()
    assert got["phase"] == "Running" and got["hive"] == "h" and "output" not in got
    r = await env.client.get(f"{CELL}/jobs/{name}/results")
    assert r.status_code == 409 and "Running" in r.json()["message"]
    obj = (await env.client.get(f"{CELL}/sessions/{name}")).json()
    assert obj["metadata"]["labels"]["apiary.io/job"] == "true"
    # a job takes one input
    r = await env.send(name, "second")
    assert r.status_code == 409
    env.drone.gate.set()
    await env.until(name, {"final"})
    got = (await env.client.get(f"{CELL}/jobs/{name}")).json()
    assert got["phase"] == "Succeeded" and got["output"] == "HOLD ON"
    r = await env.client.get(f"{CELL}/jobs/{name}/results")
    assert r.status_code == 200 and r.json()["results"] == ["HOLD ON"]


async def test_failed_job_shows_the_error_and_has_no_results(env: Env) -> None:
    r = await env.client.post(
        f"{CELL}/jobs", json={"hive": "h", "input": "empty", "metadata": {"k": "v"}}
    )
    name = r.json()["id"]
    await env.until(name, {"error"})
    got = (await env.client.get(f"{CELL}/jobs/{name}")).json()
    assert got["phase"] == "Failed"
    assert got["error"]["reason"] == "NoOutput"
    r = await env.client.get(f"{CELL}/jobs/{name}/results")
    assert r.status_code == 409 and "NoOutput" in r.json()["message"]
    (d,) = [d for d in env.drone.seen if d.session == f"default/{name}"]
    assert d.message["metadata"]["k"] == "v"


async def test_dead_lettered_job_is_failed_with_the_reason_from_its_status(env: Env) -> None:
    await env.hive("fragile", routing={"retryPolicy": {"maxRetries": 0}})
    name = (
        await env.client.post(f"{CELL}/jobs", json={"hive": "fragile", "input": "boom"})
    ).json()["id"]
    for _ in range(200):
        got = (await env.client.get(f"{CELL}/jobs/{name}")).json()
        if got["phase"] != "Running":
            break
        await asyncio.sleep(0.02)
    assert got["phase"] == "Failed"
    assert got["error"]["reason"] == "DeadLettered"
    assert "the agent gave up" in got["error"]["message"]
    r = await env.client.get(f"{CELL}/jobs/{name}/results")
    assert r.status_code == 409 and "DeadLettered" in r.json()["message"]
    assert (await env.send(name, "again")).status_code == 409


async def test_job_errors(env: Env) -> None:
    cases: list[tuple[Obj, int, str]] = [
        ({"input": 1}, 422, "hive"),
        ({"hive": "h"}, 422, "input"),
        ({"hive": "h", "input": 1, "extra": 2}, 422, "extra"),
        ({"hive": "h", "input": 1, "metadata": {"a": []}}, 422, "metadata.a"),
        ({"hive": "nohive", "input": 1}, 404, "hive"),
        ({"hive": "h", "input": "z" * 3000}, 413, "input"),
    ]
    for body, status, fld in cases:
        r = await env.client.post(f"{CELL}/jobs", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["details"][0]["field"] == fld
    listed = (await env.client.get(f"{CELL}/sessions")).json()["items"]
    assert listed == []  # nothing half-made
    assert (await env.client.get(f"{CELL}/jobs/none")).status_code == 404
    await env.session("plain")
    r = await env.client.get(f"{CELL}/jobs/plain")
    assert r.status_code == 404 and "not a job" in r.json()["message"]


# ---------------------------------------------------------------------------------- events


async def test_hive_events_go_into_a_new_or_the_given_session(env: Env) -> None:
    r = await env.client.post(
        f"{CELL}/hives/h/events", json={"type": "event", "payload": "ping", "metadata": {"a": "b"}}
    )
    assert r.status_code == 202
    first = r.json()
    assert first["created"] is True and first["session"].startswith("event-")
    (final,) = await env.until(first["session"], {"final"})
    assert final["parent"] == first["id"]
    (inp,) = await env.until(first["session"], {"input"})
    assert inp["message"]["type"] == "event"
    r = await env.client.post(
        f"{CELL}/hives/h/events", json={"payload": "pong", "session": first["session"]}
    )
    assert r.status_code == 202 and r.json()["created"] is False
    assert r.json()["session"] == first["session"]
    await env.hive("other")
    r = await env.client.post(f"{CELL}/hives/other/events", json={"payload": 1, "session": "s"})
    assert r.status_code == 404  # no such session
    r = await env.client.post(
        f"{CELL}/hives/other/events", json={"payload": 1, "session": first["session"]}
    )
    assert r.status_code == 409 and "hive 'h'" in r.json()["message"]
    r = await env.client.post(f"{CELL}/hives/ghost/events", json={"payload": 1})
    assert r.status_code == 404 and "ghost" in r.json()["message"]
    r = await env.client.post(f"{CELL}/hives/h/events", json={"payload": 1, "type": "nope"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "type"


# ------------------------------------------------------------------------------------- SSE


async def test_stream_sends_every_entry_and_ends_when_the_job_answers(env: Env) -> None:
    async with served(env) as client:
        job = (await client.post(f"{CELL}/jobs", json={"hive": "h", "input": "hold"})).json()
        reading = asyncio.create_task(sse(client, f"{CELL}/sessions/{job['id']}/stream"))
        await asyncio.sleep(0.2)
        assert not reading.done()
        env.drone.gate.set()
        events = await asyncio.wait_for(reading, 10)
        assert [e[1] for e in events] == ["input", "dispatch", "output", "final"]
        assert [e[0] for e in events] == [1, 2, 3, 4]
        assert events[-1][2]["message"]["payload"] == "HOLD"
        # resuming with Last-Event-ID (or after=) sends only what came later
        resumed = await sse(client, f"{CELL}/sessions/{job['id']}/stream", **{"Last-Event-ID": "2"})
        assert [e[0] for e in resumed] == [3, 4]
        resumed = await sse(client, f"{CELL}/sessions/{job['id']}/stream?after=3")
        assert [e[0] for e in resumed] == [4]


async def test_stream_of_a_conversation_ends_when_it_is_closed(env: Env) -> None:
    await env.session("conv")
    async with served(env) as client:
        reading = asyncio.create_task(sse(client, f"{CELL}/sessions/conv/stream"))
        await env.send("conv", "a")
        await env.until("conv", {"final"})
        await asyncio.sleep(0.1)
        assert not reading.done()  # a conversation stays open after an answer
        await env.client.post(f"{CELL}/sessions/conv/close")
        events = await asyncio.wait_for(reading, 10)
        assert [e[1] for e in events] == ["input", "dispatch", "output", "final"]
