"""End to end in a real apiaryd with a real (too slow) agent: its timeouts and dead letter reach
a signed-off webhook receiver, become Warning Events, move the counters on /metrics, and every
write shows up in the audit log."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .daemon_proc import Apiaryd, start
from .test_notify import Receiver, serving

REPO = Path(__file__).resolve().parents[2]
SLOW = [sys.executable, str(REPO / "examples/agents/slow.py")]
Obj = dict[str, Any]


@pytest.fixture
def apiaryd(tmp_path: Path) -> Iterator[Apiaryd]:
    daemon = start(tmp_path / "data")
    try:
        yield daemon
    finally:
        if daemon.terminate(15) != 0:
            print("".join(daemon.lines), file=sys.stderr)


def objects(url: str) -> list[Obj]:
    agent = {
        "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"runtime": {"command": SLOW, "env": [{"name": "SLOW_SECONDS", "value": "5"}]},
                 "resources": {"requests": {"cpu": 50, "memory": 16_000_000}},
                 "guardrails": {"responseTimeoutSeconds": 0.3}},
    }  # fmt: skip
    hive = {
        "apiVersion": "apiary.io/v1", "kind": "Hive",
        "metadata": {"name": "h", "namespace": "default"},
        "spec": {"pattern": "pipeline", "stages": [{"name": "work", "agentRef": "slow"}],
                 "routing": {"retryPolicy": {"maxRetries": 1, "initialDelaySeconds": 0.05}},
                 "webhook": {"url": url, "events": ["timeout", "dead_letter"]}},
    }  # fmt: skip
    return [agent, hive]


async def until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_timeouts_reach_webhook_events_metrics_and_audit(apiaryd: Apiaryd) -> None:
    async with (
        serving(Receiver()) as receiver,
        httpx.AsyncClient(base_url=apiaryd.url, headers=apiaryd.headers, timeout=10) as c,
    ):
        for obj in objects(receiver.url):
            plural = {"AgentSpec": "agentspecs", "Hive": "hives"}[obj["kind"]]
            r = await c.post(f"/api/v1/cells/default/{plural}", json=obj)
            assert r.status_code == 201, r.text

        async def ready() -> bool:
            items = (await c.get("/api/v1/cells/default/drones")).json()["items"]
            return any((d.get("status") or {}).get("ready") for d in items)

        await until("a ready drone", ready)
        r = await c.post("/api/v1/cells/default/jobs", json={"hive": "h", "input": "x"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]

        async def dead_lettered() -> bool:
            return any(x.json["event"] == "dead_letter" for x in receiver.received)

        await until("the dead_letter webhook", dead_lettered)
        events = [x.json for x in receiver.received]
        assert [e["event"] for e in events] == ["timeout", "timeout", "dead_letter"]
        assert all(e["hive"] == "h" and e["session"] == job for e in events)
        assert events[0]["detail"]["reason"] == "ResponseTimeout"

        async def warnings() -> list[Obj]:
            items = (await c.get("/api/v1/cells/default/events")).json()["items"]
            return [e for e in items if e["type"] == "Warning" and e["reason"] == "DeadLettered"]

        await until("Warning Events", warnings)
        items = (await c.get("/api/v1/cells/default/events")).json()["items"]
        seen = {(e["involvedObject"]["kind"], e["reason"]): e for e in items}
        assert seen[("Session", "ResponseTimeout")]["count"] == 2
        assert seen[("Session", "ResponseTimeout")]["involvedObject"]["name"] == job
        assert ("Hive", "DeadLettered") in seen

        metrics = (await c.get("/metrics")).text
        assert 'apiary_notices_total{cell="default",event="timeout",hive="h"} 2.0' in metrics
        assert 'reason="ResponseTimeout"} 2.0' in metrics
        assert 'apiary_webhook_deliveries_total{result="delivered"} 3.0' in metrics

        audit = (await c.get("/api/v1/audit?limit=50")).json()["items"]
        writes = [(a["method"], a["kind"], a["status"]) for a in audit]
        assert ("POST", "AgentSpec", 201) in writes and ("POST", "Hive", 201) in writes
        assert ("POST", "jobs", 201) in writes
        assert all(a["method"] != "GET" for a in audit)
        on_disk = (apiaryd.data_dir / "audit.log").read_bytes().splitlines()
        assert any(orjson.loads(line)["principal"] == "admin" for line in on_disk)
