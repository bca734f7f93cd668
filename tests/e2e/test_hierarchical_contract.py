"""DESIGN §5/§6 as written, on a real apiaryd with real agent processes: a supervisor that knows
only the standard library (tests/fakes/word_supervisor.py) prints one task per word with its own
uuid, gets each result back on its own with its task's id as ``correlationId``, and answers when
all are back — for 3 and for 50 words with ``maxTurns: 10``, embedded and on PostgreSQL + NATS."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import pytest

from apiary.client import ApiClient

from .cluster import REPO, Apiaryd, n_ready, new_cell, wait_drones

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
SUPERVISOR = REPO / "tests/fakes/word_supervisor.py"
UPPER = REPO / "examples/agents/upper.py"


def manifests(cell: str) -> list[Obj]:
    def spec(name: str, script: Any) -> Obj:
        return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                "metadata": {"name": name, "namespace": cell},
                "spec": {"runtime": {"command": [sys.executable, str(script)]},
                         "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}}  # fmt: skip

    return [
        spec("words", SUPERVISOR),
        spec("upper", UPPER),
        {"apiVersion": "apiary.io/v1", "kind": "Hive",
         "metadata": {"name": "team", "namespace": cell},
         "spec": {"pattern": "hierarchical", "guardrails": {"maxTurns": 10},
                  "stages": [{"name": "boss", "agentRef": "words"},
                             {"name": "worker", "agentRef": "upper", "replicas": 2}]}},
    ]  # fmt: skip


def ask(c: ApiClient, cell: str, text: str, timeout: float = 60) -> tuple[Obj, list[Obj]]:
    """One session, one input: (its final or error entry, the whole transcript)."""
    name = f"s-{uuid.uuid4().hex[:8]}"
    c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
              "metadata": {"name": name, "namespace": cell},
              "spec": {"hiveRef": "team"}})  # fmt: skip
    base = f"/api/v1/cells/{cell}/sessions/{name}"
    c.request("POST", f"{base}/messages", json_body={"id": "m-1", "payload": text})
    after, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = c.request("GET", f"{base}/messages", params={"after": str(after), "wait": "5"})
        for entry in page.body["items"]:
            after = max(after, entry["seq"])
            if entry["kind"] in ("final", "error"):
                return entry, c.request("GET", f"{base}/transcript").body["items"]
    pytest.fail(f"no answer to {text[:40]!r}... within {timeout}s")


def check(server: Apiaryd) -> None:
    cell = new_cell()
    c = server.client(cell)
    for obj in manifests(cell):
        c.create(obj)
    wait_drones(c, cell, n_ready(3), 30, "3 drones Ready")
    time.sleep(0.3)  # workers subscribe right after Ready is reported
    for n in (3, 50):
        words = [f"w{i}x" for i in range(n)]
        end, transcript = ask(c, cell, " ".join(words))
        assert end["kind"] == "final", end["message"]["payload"]
        assert end["message"]["payload"] == " ".join(w.upper() for w in words)
        tasks = [e for e in transcript if e["kind"] == "dispatch" and e["stage"] == "worker"]
        backs = [e for e in transcript if e["kind"] == "dispatch" and e["stage"] == "boss"]
        assert len(tasks) == n  # every line the supervisor printed was routed, none dropped
        task_ids = {e["message"]["id"] for e in tasks}
        assert all(uuid.UUID(t) for t in task_ids) and len(task_ids) == n  # the agent's own ids
        results = [e["message"] for e in backs if e["message"]["type"] == "result"]
        assert sorted(r["correlationId"] for r in results) == sorted(task_ids)  # one by one
        assert {r["metadata"].get("reply") for r in results} == {"optional"}


def test_stdlib_supervisor_embedded(embedded: Apiaryd) -> None:
    check(embedded)


def test_stdlib_supervisor_on_postgres_and_nats(scaled: Apiaryd) -> None:
    check(scaled)
