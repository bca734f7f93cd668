"""Closing a session stops its work (issue 9.5), on a real apiaryd with real agent processes,
embedded and on PostgreSQL + NATS: the message stage 1 holds is cancelled — its agent gets the
Waggle cancel notice — stage 2 is never dispatched, and the transcript records the cancel."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from apiary.client import ApiClient

from .cluster import REPO, Apiaryd, n_ready, new_cell, wait_drones

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
HOLD = 3.0
"""Seconds stage 1's agent holds a task before it answers: ten times what the close takes to
reach it here (0.3 s), and the test waits past it to see that no answer ever comes."""
AFTER = 1.5
"""Seconds past the moment the agent would have answered until the transcript is read."""


def manifests(cell: str, hold: float = HOLD) -> list[Obj]:
    def spec(name: str, script: str, **env: str) -> Obj:
        return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                "metadata": {"name": name, "namespace": cell},
                "spec": {"runtime": {"command": [sys.executable, str(REPO / script)],
                                     "env": [{"name": k, "value": v} for k, v in env.items()]},
                         "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}}  # fmt: skip

    return [
        spec("hold", "tests/fakes/holding_agent.py", HOLD_SECONDS=str(hold)),
        spec("upper", "examples/agents/upper.py"),
        {"apiVersion": "apiary.io/v1", "kind": "Hive",
         "metadata": {"name": "two", "namespace": cell},
         "spec": {"pattern": "pipeline",
                  "stages": [{"name": "first", "agentRef": "hold"},
                             {"name": "second", "agentRef": "upper"}]}},
    ]  # fmt: skip


def transcript(c: ApiClient, base: str) -> list[Obj]:
    return list(c.request("GET", f"{base}/transcript").body["items"])


def check(server: Apiaryd) -> None:
    cell = new_cell()
    c = server.client(cell)
    for obj in manifests(cell):
        c.create(obj)
    wait_drones(c, cell, n_ready(2), 30, "2 drones Ready")
    time.sleep(0.3)  # workers subscribe right after Ready is reported
    c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
              "metadata": {"name": "s", "namespace": cell},
              "spec": {"hiveRef": "two"}})  # fmt: skip
    base = f"/api/v1/cells/{cell}/sessions/s"
    c.request("POST", f"{base}/messages", json_body={"id": "m-1", "payload": "hello"})
    (drone,) = [d["metadata"]["name"] for d in c.list("Drone", cell)["items"]
                if d["metadata"]["labels"].get("apiary.io/stage") == "first"]  # fmt: skip
    logs = f"/api/v1/cells/{cell}/drones/{drone}/logs"
    deadline = time.monotonic() + 10
    while "holding" not in str(c.request("GET", logs).body):
        assert time.monotonic() < deadline, "stage 1 never got the message"
        time.sleep(0.1)
    answer_due = time.monotonic() + HOLD  # it held the task already when its log said so

    c.request("POST", f"{base}/close")

    deadline = time.monotonic() + 10
    while "cancelled" not in str(c.request("GET", logs).body):  # the agent got the notice
        assert time.monotonic() < deadline, str(c.request("GET", logs).body)
        time.sleep(0.1)
    time.sleep(max(0.0, answer_due + AFTER - time.monotonic()))  # past its answer's moment
    entries = transcript(c, base)
    assert [e["stage"] for e in entries if e["kind"] == "dispatch"] == ["first"]
    errors = [e for e in entries if e["kind"] == "error"]
    assert {e["message"]["payload"]["reason"] for e in errors} == {"Cancelled"}
    assert {e["parent"] for e in errors} >= {"m-1"}  # the input's end is recorded
    assert not [e for e in entries if e["kind"] in ("output", "final")]
    session = c.get("Session", "s", cell)
    assert session["status"]["phase"] == "Closed"


def test_close_cancels_in_flight_work_embedded(embedded: Apiaryd) -> None:
    check(embedded)


def test_close_cancels_in_flight_work_on_postgres_and_nats(scaled: Apiaryd) -> None:
    check(scaled)


def test_a_timed_out_session_is_cancelled_too(embedded: Apiaryd) -> None:
    """The session reaper's TimedOut cancels the work as a close does."""
    cell = new_cell()
    c = embedded.client(cell)
    for obj in manifests(cell, hold=30):
        c.create(obj)
    wait_drones(c, cell, n_ready(2), 30, "2 drones Ready")
    time.sleep(0.3)
    c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
              "metadata": {"name": "t", "namespace": cell},
              "spec": {"hiveRef": "two", "maxDurationMinutes": 0.02}})  # fmt: skip
    base = f"/api/v1/cells/{cell}/sessions/t"
    c.request("POST", f"{base}/messages", json_body={"id": "m-1", "payload": "hello"})
    (drone,) = [d["metadata"]["name"] for d in c.list("Drone", cell)["items"]
                if d["metadata"]["labels"].get("apiary.io/stage") == "first"]  # fmt: skip
    logs = f"/api/v1/cells/{cell}/drones/{drone}/logs"
    deadline = time.monotonic() + 20  # 1.2 s to time out, a reaper pass every 5 s
    while "cancelled" not in str(c.request("GET", logs).body):
        assert time.monotonic() < deadline, str(c.request("GET", logs).body)
        time.sleep(0.2)
    assert c.get("Session", "t", cell)["status"]["phase"] == "TimedOut"
    errors = [e for e in transcript(c, base) if e["kind"] == "error"]
    assert {e["message"]["payload"]["reason"] for e in errors} == {"Cancelled"}
