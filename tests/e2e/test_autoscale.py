"""The autoscaler on a real apiaryd: a slow agent at minReplicas 0 gets a burst of sessions; the
stage scales up within 2 s, every answer arrives (none dropped while scaling from zero), and once
idle the stage scales back down to zero after its (small) cooldown.

And ``apiaryctl scale`` against it, with real drone processes: on an autoscaled stage it sets the
count the autoscaler carries on from (clamped to the bounds, and saying so); once ``scaling`` is
gone from the AgentSpec the spec's replicas are back in charge, and a scale is just a scale."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from apiary.client import ApiClient
from apiary.ctl.main import app as ctl_app

from .cluster import (
    ECHO,
    Apiaryd,
    agent_processes,
    n_ready,
    new_cell,
    retire,
    wait_drones,
    wait_no_agent_processes,
)

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
BURST = 12
SLOW = ["/bin/sh", "-c", 'while IFS= read -r line; do sleep 0.3; echo "slow:$line"; done']


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Apiaryd]:
    s = Apiaryd(tmp_path / "data").start()
    yield s
    retire(s)


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
    """(the replicas stage ``work`` runs, the autoscaler's note on it)."""
    r, scale = await http.get(url), await http.get(f"{url}/scale")
    assert r.status_code == 200 and scale.status_code == 200, (r.text, scale.text)
    annotations = r.json()["metadata"].get("annotations", {})
    notes = json.loads(annotations.get("status.apiary.io/autoscaler", "{}"))
    return scale.json()["spec"]["replicas"], notes.get("work", {})


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


# ------------------------------------------------------------------------------ apiaryctl scale


def ctl(server: Apiaryd, home: Path, *args: str) -> tuple[int, str]:
    """``apiaryctl ARGS`` in-process against ``server`` (a throwaway config)."""
    env = {"APIARY_SERVER": server.url, "APIARY_TOKEN": server.token,
           "APIARY_CONFIG": str(home / "config.yaml"), "APIARY_CELL": None}  # fmt: skip
    result = CliRunner().invoke(ctl_app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout.strip()


def echo_spec(cell: str, scaling: Obj | None) -> Obj:
    spec: Obj = {"runtime": {"command": ECHO}, "interface": {"type": "stdin", "format": "text"},
                 "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}  # fmt: skip
    if scaling is not None:
        spec["scaling"] = scaling
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": "echo", "namespace": cell}, "spec": spec}  # fmt: skip


def echo_hive(cell: str, replicas: int) -> Obj:
    stage = {"name": "work", "agentRef": "echo", "replicas": replicas}
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": "h", "namespace": cell},
            "spec": {"pattern": "pipeline", "stages": [stage]}}  # fmt: skip


def note(client: ApiClient, cell: str) -> Obj:
    """The autoscaler's entry for stage ``work`` ({} when there is none)."""
    raw = client.get("hive", "h", cell)["metadata"].get("annotations", {})
    entry = json.loads(raw.get("status.apiary.io/autoscaler", "{}")).get("work", {})
    return dict(entry)


def hive_processes(cell: str) -> int:
    """Agent processes of hive ``h``'s drones (the AgentSpec's ``minReplicas`` also runs
    standalone drones, which are not the stage's)."""
    found = 0
    for proc in agent_processes(cell):
        with contextlib.suppress(psutil.Error):
            found += proc.environ().get("APIARY_HIVE") == "h"
    return found


def running(client: ApiClient, cell: str, n: int) -> None:
    """Exactly ``n`` Ready drones in stage ``work``, and ``n`` agent processes behind them."""

    def stage_ready(ds: list[Obj]) -> bool:
        mine = [d for d in ds if d["metadata"].get("labels", {}).get("apiary.io/hive") == "h"]
        return n_ready(n)(mine)

    wait_drones(client, cell, stage_ready, 30, f"{n} ready drones in stage work")
    wait_for(f"{n} agent processes of hive h", lambda: hive_processes(cell) == n, 15)


def wait_for(what: str, check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


def test_without_scaling_the_spec_is_back_and_scale_is_just_a_scale(
    server: Apiaryd, tmp_path: Path
) -> None:
    cell = new_cell()
    client = server.client(cell)
    client.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
    client.apply(echo_spec(cell, {"minReplicas": 2, "maxReplicas": 4, "cooldownSeconds": 60}))
    client.apply(echo_hive(cell, 1))
    wait_for("the autoscaler's count", lambda: note(client, cell).get("replicas") == 2)
    running(client, cell, 2)  # minReplicas 2 over the spec's 1

    client.apply(echo_spec(cell, None))  # `apiaryctl apply` of the AgentSpec without scaling
    running(client, cell, 1)  # the spec's replicas again
    wait_for("the autoscaler's count to go", lambda: note(client, cell) == {})

    code, out = ctl(server, tmp_path, "-n", cell, "scale", "hive/h", "--replicas", "3")
    assert (code, out) == (0, "hive/h scaled (stage work) to 3")
    running(client, cell, 3)
    assert note(client, cell) == {}
    client.delete("hive", "h", cell)
    wait_no_agent_processes(cell)


def test_scale_of_an_autoscaled_stage_is_where_the_autoscaler_carries_on(
    server: Apiaryd, tmp_path: Path
) -> None:
    cell = new_cell()
    client = server.client(cell)
    client.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
    scaling = {"minReplicas": 1, "maxReplicas": 4, "cooldownSeconds": 60}
    client.apply(echo_spec(cell, scaling))
    client.apply(echo_hive(cell, 0))
    wait_for("the autoscaler's count", lambda: note(client, cell).get("replicas") == 1)
    running(client, cell, 1)

    code, out = ctl(server, tmp_path, "-n", cell, "scale", "hive/h", "--replicas", "3")
    assert code == 0 and out == (
        "hive/h scaled (stage work) to 3 (autoscaled 1..4: the autoscaler carries on from 3)"
    )
    running(client, cell, 3)
    code, out = ctl(server, tmp_path, "-n", cell, "scale", "hive/h", "--replicas", "10")
    assert code == 0 and out == (
        "hive/h scaled (stage work) to 4 (asked for 10, clamped to maxReplicas 4; "
        "autoscaled 1..4: the autoscaler carries on from 4)"
    )
    running(client, cell, 4)
    assert client.get("hive", "h", cell)["spec"]["stages"][0]["replicas"] == 4
    code, out = ctl(server, tmp_path, "-n", cell, "scale", "hive/h", "--replicas", "2")
    assert code == 0 and out.startswith("hive/h scaled (stage work) to 2 (autoscaled"), out
    running(client, cell, 2)

    # a short cooldown: the idle stage goes down one drone from where the scale left it
    client.apply(echo_spec(cell, {**scaling, "cooldownSeconds": 1}))
    running(client, cell, 1)
    entry = note(client, cell)
    assert (entry["direction"], entry["previous"], entry["replicas"]) == ("down", 2, 1)
    events = [e["message"] for e in client.list("Event", cell)["items"]]
    assert any(m.startswith("stage work: 2 -> 1 replicas") for m in events), events
    client.delete("hive", "h", cell)
    client.delete("agentspec", "echo", cell)  # and its standalone minReplicas drone
    wait_no_agent_processes(cell)
