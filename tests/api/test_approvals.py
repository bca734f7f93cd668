"""Approve and reject over the API: a 2-stage pipeline whose 2nd stage needs a human's yes.

Same environment as the DLQ tests (real Router, bus, journal and store; the drone's bus side in
the test). A real apiaryd restarted while a session waits is in tests/e2e/test_dlq_approval.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .test_dlq import CELL, Env, environment


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with environment() as e:
        e.drone.broken = False
        await e.hive(approval="required")
        yield e


def waiting(status: dict) -> bool:
    return status.get("phase") == "WaitingForApproval" and status.get("pendingApproval") == "b"


async def test_a_held_stage_runs_once_approved(env: Env) -> None:
    await env.session("s1", "hello")
    await env.status("s1", waiting)
    assert [d.stage for d in env.drone.seen] == ["a"]  # stage b has not run
    r = await env.client.post(f"{CELL}/sessions/s1/approve", json={"stage": "b"})
    assert r.status_code == 200, r.text
    assert r.json() == {"session": "s1", "stage": "b", "released": 1}
    (end,) = await env.ends("s1")
    assert end["kind"] == "final" and end["message"]["payload"] == "HELLO"
    assert [d.stage for d in env.drone.seen] == ["a", "b"]
    status = await env.status("s1", lambda s: s.get("phase") == "Running")
    assert "pendingApproval" not in status
    again = await env.client.post(f"{CELL}/sessions/s1/approve")
    assert again.status_code == 409
    assert "nothing waiting for approval" in again.json()["message"]


async def test_approve_without_a_body_releases_every_stage(env: Env) -> None:
    await env.session("s1", "hi")
    await env.status("s1", waiting)
    r = await env.client.post(f"{CELL}/sessions/s1/approve")
    assert r.status_code == 200 and r.json()["released"] == 1
    (end,) = await env.ends("s1")
    assert end["message"]["payload"] == "HI"


async def test_reject_fails_the_flow_with_the_reason(env: Env) -> None:
    await env.session("s1", "hello")
    await env.status("s1", waiting)
    r = await env.client.post(f"{CELL}/sessions/s1/reject", json={"reason": "not today"})
    assert r.status_code == 200, r.text
    assert r.json() == {"session": "s1", "stage": None, "rejected": 1, "reason": "not today"}
    (end,) = await env.ends("s1")
    assert end["kind"] == "error"
    assert end["message"]["payload"] == {"reason": "Rejected", "message": "not today"}
    assert [d.stage for d in env.drone.seen] == ["a"]
    status = await env.status("s1", lambda s: s.get("reason") == "Rejected")
    assert "pendingApproval" not in status
    assert status["phase"] == "Running"  # nothing waits for approval any more
    again = await env.client.post(f"{CELL}/sessions/s1/reject")
    assert again.status_code == 409


async def test_bad_requests_name_the_field(env: Env) -> None:
    r = await env.client.post(f"{CELL}/sessions/ghost/approve")
    assert r.status_code == 404 and "session 'ghost' not found" in r.json()["message"]
    await env.session("s1", "hello")
    await env.status("s1", waiting)
    r = await env.client.post(f"{CELL}/sessions/s1/approve", json={"stage": "zz"})
    assert r.status_code == 422
    assert r.json()["details"] == [
        {"field": "stage", "message": "hive 'h' has no stage 'zz' (has a, b)"}
    ]
    r = await env.client.post(f"{CELL}/sessions/s1/approve", json={"stage": 3})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "stage"
    r = await env.client.post(f"{CELL}/sessions/s1/approve", json={"reason": "x"})
    assert r.status_code == 422 and r.json()["details"][0] == {
        "field": "reason",
        "message": "unknown field",
    }
    r = await env.client.post(f"{CELL}/sessions/s1/reject", json={"reason": "x" * 2000})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "reason"
    r = await env.client.post(
        f"{CELL}/sessions/s1/reject", content=b"[1]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "must be an object" in r.json()["message"]
    r = await env.client.post(f"{CELL}/sessions/s1/approve", json={"stage": "a"})
    assert r.status_code == 409 and "at stage 'a'" in r.json()["message"]
    # None of that touched the held dispatch.
    assert (await env.client.post(f"{CELL}/sessions/s1/approve")).json()["released"] == 1


async def test_without_a_router_it_is_503() -> None:
    async with environment(router=False) as env:
        r = await env.client.post(f"{CELL}/sessions/s1/approve")
        assert r.status_code == 503
