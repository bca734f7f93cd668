"""The autoscaler on a real apiaryd: a slow agent at minReplicas 0 gets a burst of sessions; the
stage scales up within 2 s, every answer arrives (none dropped while scaling from zero), and once
idle the stage scales back down to zero after its (small) cooldown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import Apiaryd, new_cell, wait_no_agent_processes

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
BURST = 12
SLOW = ["/bin/sh", "-c", 'while IFS= read -r line; do sleep 0.3; echo "slow:$line"; done']


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Apiaryd]:
    s = Apiaryd(tmp_path / "data").start()
    yield s
    s.stop()


def manifests(cell: str) -> list[Obj]:
    return [
        {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
         "metadata": {"name": "slow", "namespace": cell},
         "spec": {"runtime": {"command": SLOW},
                  "interface": {"type": "stdin", "format": "text"},
                  "resources": {"requests": {"cpu": 10, "memory": 8_000_000}},
                  "scaling": {"minReplicas": 0, "maxReplicas": 4, "cooldownSeconds": 1}}},
        {"apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": {"name": "h", "namespace": cell},
         "spec": {"pattern": "pipeline",
                  "stages": [{"name": "work", "agentRef": "slow", "replicas": 0}]}},
    ]  # fmt: skip


async def answer(http: httpx.AsyncClient, base: str, i: int) -> list[Obj]:
    """Create session ``i`` with one input; its final/error entries once there are any."""
    r = await http.post(base, json={
        "apiVersion": "apiary.io/v1", "kind": "Session",
        "metadata": {"name": f"s{i}"}, "spec": {"hiveRef": "h", "input": f"m{i}"}})  # fmt: skip
    assert r.status_code == 201, r.text
    after, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        r = await http.get(f"{base}/s{i}/messages", params={"after": after, "wait": 10})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        after = max([after, *(e["seq"] for e in items)])
        ends = [e for e in items if e["kind"] in ("final", "error")]
        if ends:
            return ends
    return []


async def stage(http: httpx.AsyncClient, url: str) -> tuple[int, Obj]:
    r = await http.get(url)
    assert r.status_code == 200, r.text
    hive = r.json()
    annotations = hive["metadata"].get("annotations", {})
    notes = json.loads(annotations.get("status.apiary.io/autoscaler", "{}"))
    work = notes.get("work", {})
    return work.get("replicas", hive["spec"]["stages"][0]["replicas"]), work


async def until(what: str, timeout: float, check: Any) -> float:
    """Seconds until ``await check()`` is true."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_burst_scales_from_zero_and_back(server: Apiaryd) -> None:
    cell = new_cell()
    client = server.client(cell)
    client.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
    for obj in manifests(cell):
        client.create(obj)
    api = f"{server.url}/api/v1/cells/{cell}"
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        await asyncio.sleep(1.2)  # a couple of autoscaler passes over the idle stage
        assert (await stage(http, f"{api}/hives/h"))[0] == 0  # idle at minReplicas 0

        t0 = time.monotonic()
        burst = asyncio.gather(*(answer(http, f"{api}/sessions", i) for i in range(BURST)))

        async def scaled_up() -> bool:
            return (await stage(http, f"{api}/hives/h"))[0] >= 2

        reaction = await until("the stage to scale up", 10, scaled_up)
        results = await burst
        took = time.monotonic() - t0
        replicas, why = await stage(http, f"{api}/hives/h")
        print(f"scaled up in {reaction:.2f}s; {BURST} answers in {took:.2f}s; now {replicas}")
        assert reaction < 2.0, f"scale-up took {reaction:.2f}s"
        got = sorted(e[0]["message"]["payload"] for e in results if len(e) == 1)
        assert got == sorted(f"slow:m{i}" for i in range(BURST)), results  # none dropped
        assert all(e[0]["kind"] == "final" for e in results)

        async def back_to_zero() -> bool:
            return (await stage(http, f"{api}/hives/h"))[0] == 0

        await until("the stage to scale back to zero", 30, back_to_zero)
        _, why = await stage(http, f"{api}/hives/h")
        assert why["direction"] == "down" and "scaleDownThreshold" in why["reason"]
        r = await http.get(f"{api}/events")
        reasons = [e["reason"] for e in r.json()["items"]]
        assert "ScaledUp" in reasons and "ScaledDown" in reasons, reasons

        async def no_drones() -> bool:
            r = await http.get(f"{api}/drones")
            return not r.json()["items"]

        await until("the drones to go", 30, no_drones)
    wait_no_agent_processes(cell)
