"""Job creation is idempotent: a retry after a lost answer gets the job the first request made.

Over a real Router, memory bus and journal, a real store (memory and SQLite) and, where requests
race, a real uvicorn: the fake drone of test_sessions answers every dispatch, so each test can
count how many jobs, inputs and dispatches a burst of retries really made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiary.api import ApiConfig, api_state, create_app
from apiary.api import session_ops as session_ops_module
from apiary.bus import open_bus
from apiary.errors import Unavailable
from apiary.journal import open_journal
from apiary.router import Router, SessionDirectory
from apiary.router.status import SessionStatusWriter
from apiary.store import open_store

from .conftest import AUTH, TOKEN
from .test_sessions import Env, FakeDrone, served

CELL = "/api/v1/cells/default"
JOBS = f"{CELL}/jobs"
Obj = dict[str, Any]


@contextlib.asynccontextmanager
async def environment(store_url: str) -> AsyncIterator[Env]:
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(store_url))
        bus = await stack.enter_async_context(open_bus("memory://"))
        journal = await stack.enter_async_context(open_journal("memory://", poll_interval=0.05))
        rt = Router(journal, bus, SessionDirectory(store, ttl=0.2), sweep_on_start=False)
        writer = SessionStatusWriter(store, journal)
        rt.on_status = writer.update
        app = create_app(store, TOKEN, ApiConfig())
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
            for t in [*rt._tasks, writer._task]:
                if t is not None and not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t


@pytest.fixture(params=["memory", "sqlite"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'apiary.db'}"
    async with environment(url) as e:
        await e.hive("h")
        await e.hive("other")
        yield e


async def jobs(env: Env) -> list[str]:
    r = await env.client.get(f"{CELL}/sessions", params={"labelSelector": "apiary.io/job=true"})
    assert r.status_code == 200, r.text
    return sorted(o["metadata"]["name"] for o in r.json()["items"])


async def inputs(env: Env, name: str) -> list[Obj]:
    r = await env.client.get(f"{CELL}/sessions/{name}/transcript")
    assert r.status_code == 200, r.text
    return [e for e in r.json()["items"] if e["kind"] == "input"]


def dispatched(env: Env, name: str) -> int:
    return sum(1 for d in env.drone.seen if d.session == f"default/{name}")


# ------------------------------------------------------------------------------ tests


async def test_the_same_id_gets_the_same_job_with_200(env: Env) -> None:
    body = {"hive": "h", "input": "hello", "id": "order-17"}
    first = await env.client.post(JOBS, json=body)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    name = first.json()["id"]
    assert first.json()["input"] == "order-17"
    (final,) = await env.until(name, {"final"})
    assert final["message"]["payload"] == "HELLO"
    again = await env.client.post(JOBS, json=body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await jobs(env) == [name]
    assert len(await inputs(env, name)) == 1 and dispatched(env, name) == 1
    job = (await env.client.get(f"{JOBS}/{name}")).json()
    assert job["phase"] == "Succeeded" and job["output"] == "HELLO"


async def test_an_idempotency_key_header_gets_the_same_job(env: Env) -> None:
    headers = {"Idempotency-Key": "7f1c2b9e-retry-me"}
    body = {"hive": "h", "input": {"n": 1, "text": "hi"}, "metadata": {"k": "v"}}
    first = await env.client.post(JOBS, json=body, headers=headers)
    assert first.status_code == 201, first.text
    name, input_id = first.json()["id"], first.json()["input"]
    # The same JSON with its keys in another order is the same request.
    same = {"metadata": {"k": "v"}, "input": {"text": "hi", "n": 1}, "hive": "h"}
    for _ in range(3):
        again = await env.client.post(JOBS, json=same, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == {"id": name, "session": name, "input": input_id, "hive": "h"}
    await env.until(name, {"final"})
    assert await jobs(env) == [name]
    assert [e["id"] for e in await inputs(env, name)] == [input_id]
    assert dispatched(env, name) == 1
    # Without a key every POST is a new job, as before.
    plain = [(await env.client.post(JOBS, json=body)).status_code for _ in range(2)]
    assert plain == [201, 201] and len(await jobs(env)) == 3


async def test_a_reused_key_with_another_body_is_a_409_naming_the_difference(env: Env) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = await env.client.post(JOBS, json={"hive": "h", "input": "a"}, headers=headers)
    assert first.status_code == 201
    name = first.json()["id"]
    cases: list[tuple[Obj, str]] = [
        ({"hive": "other", "input": "a"}, "hive"),
        ({"hive": "h", "input": "b"}, "input"),
        ({"hive": "h", "input": "a", "metadata": {"x": "y"}}, "metadata"),
        ({"hive": "h", "input": "a", "id": "mine"}, "metadata"),
    ]
    for body, field in cases:
        r = await env.client.post(JOBS, json=body, headers=headers)
        assert r.status_code == 409, (body, r.text)
        err = r.json()
        assert err["details"][0]["field"] == field, err
        assert "Idempotency-Key 'k-1' was already used" in err["message"]
        assert name in err["message"] and "new key" in err["message"]
    r = await env.client.post(JOBS, json={"hive": "other", "input": "a"}, headers=headers)
    assert "hive 'h', not 'other'" in r.json()["message"]
    # The body's id is a key too.
    assert (await env.client.post(JOBS, json={"hive": "h", "input": 1, "id": "i"})).is_success
    r = await env.client.post(JOBS, json={"hive": "h", "input": 2, "id": "i"})
    assert r.status_code == 409 and "id 'i' was already used" in r.json()["message"]
    assert len(await jobs(env)) == 2


async def test_concurrent_posts_with_one_key_make_one_job(env: Env) -> None:
    env.drone.gate.set()
    body = {"hive": "h", "input": "together"}
    async with served(env) as client:
        answers = await asyncio.gather(
            *(client.post(JOBS, json=body, headers={"Idempotency-Key": "burst"}) for _ in range(16))
        )
        by_id = await asyncio.gather(
            *(client.post(JOBS, json={**body, "id": "burst-2"}) for _ in range(16))
        )
    for group in (answers, by_id):
        codes = sorted(r.status_code for r in group)
        assert codes == [200] * 15 + [201], [r.text for r in group if r.status_code >= 300]
        assert len({r.text for r in group}) == 1  # every caller got the same job and input id
    names = [answers[0].json()["id"], by_id[0].json()["id"]]
    assert await jobs(env) == sorted(names)
    for name in names:
        (final,) = await env.until(name, {"final"})
        assert final["message"]["payload"] == "TOGETHER"
        assert len(await inputs(env, name)) == 1 and dispatched(env, name) == 1


async def test_a_retry_sends_the_input_the_first_attempt_lost(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request stored the job, then died before journaling its input (here: the send
    fails): the retry must not return a job that never runs."""
    real_send = session_ops_module.SessionOps.send
    calls = 0

    async def flaky_send(self: Any, cell: str, name: str, message: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("the message bus is unavailable: simulated")
        assert not kw.get("fresh")  # the retry's input id may be journaled: it is looked up
        return await real_send(self, cell, name, message, **kw)

    monkeypatch.setattr(session_ops_module.SessionOps, "send", flaky_send)
    headers = {"Idempotency-Key": "lost"}
    body = {"hive": "h", "input": "again"}
    lost = await env.client.post(JOBS, json=body, headers=headers)
    assert lost.status_code == 503
    (name,) = await jobs(env)
    assert await inputs(env, name) == []
    retry = await env.client.post(JOBS, json=body, headers=headers)
    assert retry.status_code == 200 and retry.json()["id"] == name
    (final,) = await env.until(name, {"final"})
    assert final["message"]["payload"] == "AGAIN" and final["parent"] == retry.json()["input"]
    # The input is there now: a further retry sends nothing.
    assert (await env.client.post(JOBS, json=body, headers=headers)).status_code == 200
    assert calls == 2 and len(await inputs(env, name)) == 1 and dispatched(env, name) == 1


async def test_bad_keys_and_squatted_names_are_refused(env: Env) -> None:
    for bad in ("", "   ", "x" * 257):
        r = await env.client.post(
            JOBS, json={"hive": "h", "input": 1}, headers={"Idempotency-Key": bad}
        )
        assert r.status_code == 422, r.text
        assert r.json()["details"][0]["field"] == "Idempotency-Key"
    # A key for an unknown hive stores nothing, like any job.
    r = await env.client.post(
        JOBS, json={"hive": "ghost", "input": 1}, headers={"Idempotency-Key": "g"}
    )
    assert r.status_code == 404 and r.json()["details"][0]["field"] == "hive"
    assert await jobs(env) == []
    # A session that merely has the derived name is not taken for the key's job.
    made = await env.client.post(
        JOBS, json={"hive": "h", "input": 1}, headers={"Idempotency-Key": "s"}
    )
    name = made.json()["id"]
    assert (await env.client.delete(f"{CELL}/sessions/{name}")).status_code == 200
    await env.session(name)
    r = await env.client.post(
        JOBS, json={"hive": "h", "input": 1}, headers={"Idempotency-Key": "s"}
    )
    assert r.status_code == 409 and "not the job of this key" in r.json()["message"]


async def test_a_deleted_job_frees_its_key(env: Env) -> None:
    headers = {"Idempotency-Key": "once"}
    first = await env.client.post(JOBS, json={"hive": "h", "input": "x"}, headers=headers)
    name = first.json()["id"]
    await env.until(name, {"final"})
    assert (await env.client.delete(f"{CELL}/sessions/{name}")).status_code == 200
    env.router.sessions.forget("default", name)
    again = await env.client.post(JOBS, json={"hive": "h", "input": "y"}, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == name
    (final,) = await env.until(name, {"final"})
    assert final["message"]["payload"] == "Y"


async def test_session_messages_with_a_reused_id_are_sent_once(env: Env) -> None:
    """Already idempotent before jobs were (the router skips an input id it has): kept so."""
    await env.session("s")
    async with served(env) as client:
        path = f"{CELL}/sessions/s/messages"
        sent = await asyncio.gather(
            *(client.post(path, json={"payload": "once", "id": "m-1"}) for _ in range(8))
        )
    assert {r.status_code for r in sent} == {202} and {r.json()["id"] for r in sent} == {"m-1"}
    await env.until("s", {"final"})
    again = await env.send("s", "once", id="m-1")
    assert again.status_code == 202
    assert [e["id"] for e in await inputs(env, "s")] == ["m-1"] and dispatched(env, "s") == 1
