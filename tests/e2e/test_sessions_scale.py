"""1,000 concurrent sessions through a 3-stage pipeline with 2 replicas per stage, over HTTP, on a
real apiaryd: every answer right, none lost, none duplicated — embedded (SQLite + in-process bus)
and scaled-out backends (PostgreSQL + NATS JetStream)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx
import pytest

from .cluster import (
    REPO,
    Apiaryd,
    is_ready,
    n_ready,
    new_cell,
    wait_drones,
)
from .crashkit import pool_of, sharded_clients

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
SESSIONS = 1000


def pipeline(cell: str) -> list[Obj]:
    def spec(name: str, command: list[str], fmt: str) -> Obj:
        return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                "metadata": {"name": name, "namespace": cell},
                "spec": {"runtime": {"command": command},
                         "interface": {"type": "stdin", "format": fmt},
                         "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}}  # fmt: skip

    def prefix(p: str) -> list[str]:
        return ["/bin/sh", "-c", f'while IFS= read -r line; do echo "{p}$line"; done']

    return [
        spec("upper", [sys.executable, str(REPO / "examples/agents/upper.py")], "waggle"),
        spec("a", prefix("A:"), "text"),
        spec("b", prefix("B:"), "text"),
        {"apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": {"name": "p", "namespace": cell},
         "spec": {"pattern": "pipeline", "stages": [
             {"name": "s1", "agentRef": "upper", "replicas": 2},
             {"name": "s2", "agentRef": "a", "replicas": 2},
             {"name": "s3", "agentRef": "b", "replicas": 2}]}},
    ]  # fmt: skip


async def run_sessions(server: Apiaryd, cell: str, n: int, concurrency: int = 64) -> list[Obj]:
    """Create n sessions and send each one input, all with the same message id; return, per
    session, its final/error entries."""
    base = f"{server.url}/api/v1/cells/{cell}/sessions"
    gate = asyncio.Semaphore(concurrency)
    # small pools, a session on one (one pool of 64 made the client the bottleneck: crashkit)
    pools = sharded_clients(server.token, concurrency, httpx.Timeout(60))
    try:

        async def one(i: int) -> Obj:
            http = pool_of(pools, f"s{i}")
            async with gate:
                r = await http.post(base, json={
                    "apiVersion": "apiary.io/v1", "kind": "Session",
                    "metadata": {"name": f"s{i}", "namespace": cell},
                    "spec": {"hiveRef": "p"}})  # fmt: skip
                assert r.status_code == 201, r.text
                # Every session uses the same client message id: ids are the client's per
                # session (DESIGN §9), so each is its own message, none dropped as a duplicate.
                r = await http.post(f"{base}/s{i}/messages", json={"id": "m-1", "payload": f"m{i}"})
                assert r.status_code in (200, 202), r.text
            after, ends = 0, []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                async with gate:
                    r = await http.get(f"{base}/s{i}/messages",
                                       params={"after": after, "wait": 10})  # fmt: skip
                assert r.status_code == 200, r.text
                body = r.json()
                for e in body["items"]:
                    after = max(after, e["seq"])
                    if e["kind"] in ("final", "error"):
                        ends.append(e)
                if ends:
                    # Anything else already recorded would have come with this page or earlier.
                    return {"session": i, "ends": ends}
            return {"session": i, "ends": ends}

        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for pool in pools:
            await pool.aclose()


async def check_run(server: Apiaryd) -> None:
    cell = new_cell()
    c = server.client(cell)
    for obj in pipeline(cell):
        c.create(obj)
    wait_drones(c, cell, n_ready(6), 30, "6 drones Ready")
    await asyncio.sleep(0.3)  # workers subscribe right after Ready is reported
    t0 = time.monotonic()
    results = await run_sessions(server, cell, SESSIONS)
    took = time.monotonic() - t0
    wrong = [r for r in results
             if [(e["kind"], e["message"]["payload"]) for e in r["ends"]]
             != [("final", f"B:A:M{r['session']}")]]  # fmt: skip
    assert not wrong, wrong[:5]
    # Read every transcript once more: exactly one final each (no late duplicate).
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        finals = 0
        for i in range(0, SESSIONS, 97):  # a sample across the run
            r = await http.get(f"{server.url}/api/v1/cells/{cell}/sessions/s{i}/transcript")
            entries = r.json()["items"]
            finals += sum(1 for e in entries if e["kind"] == "final")
            assert [e["stage"] for e in entries if e["kind"] == "output"] == ["s1", "s2", "s3"]
        assert finals == len(range(0, SESSIONS, 97))
    drones = c.list("Drone", cell)["items"]
    assert all(map(is_ready, drones))
    print(f"{SESSIONS} sessions in {took:.1f}s ({SESSIONS / took:.0f}/s)")


async def test_thousand_sessions_embedded(embedded: Apiaryd) -> None:
    await check_run(embedded)


async def test_thousand_sessions_on_postgres_and_nats(scaled: Apiaryd) -> None:
    await check_run(scaled)
