"""kill -9 of apiaryd while an agent's child holds descriptors: the restart gets the same port.

Before, the API socket was inheritable and an agent's grandchild (``sh -c 'sleep 90 & exec
cat'``) kept it open after the crash, so the next apiaryd died with "Address already in use";
and the orphans were reaped only after the bind.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest

from server.daemon_proc import Apiaryd, start

pytestmark = pytest.mark.slow
LEAVES_A_CHILD = ["/bin/sh", "-c", "sleep 90 & exec cat"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sleepers(marker: str) -> list[psutil.Process]:
    """The agent's leftover ``sleep 90`` processes (found by the cell in their environment)."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == "sleep" and p.environ().get("APIARY_CELL") == marker:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _create(d: Apiaryd, path: str, kind: str, name: str, spec: dict[str, object]) -> None:
    body = {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    httpx.post(f"{d.url}{path}", json=body, headers=d.headers).raise_for_status()


def _wait_ready(d: Apiaryd, cell: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{d.url}/api/v1/cells/{cell}/drones", headers=d.headers)
        items = r.json()["items"] if r.status_code == 200 else []
        if items and all((x.get("status") or {}).get("ready") for x in items):
            return
        time.sleep(0.05)
    pytest.fail("the drone never became ready")


def test_apiaryd_restarts_on_its_port_after_kill9_with_an_agent_child(tmp_path: Path) -> None:
    port, cell = _free_port(), "orphans"
    d = start(tmp_path / "data", "--port", str(port))
    try:
        spec = {"runtime": {"command": LEAVES_A_CHILD}, "interface": {"format": "text"}}
        hive = {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]}
        _create(d, "/api/v1/cells", "Cell", cell, {})
        _create(d, f"/api/v1/cells/{cell}/agentspecs", "AgentSpec", "a", spec)
        _create(d, f"/api/v1/cells/{cell}/hives", "Hive", "h", hive)
        _wait_ready(d, cell)
        deadline = time.monotonic() + 10  # ready at attach: sh may not have forked it yet
        while not _sleepers(cell) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleepers(cell), "the agent's child should be running"
        d.kill9()
        assert _sleepers(cell), "the child outlives apiaryd's kill -9 (it is in its own group)"
        t0 = time.monotonic()
        d = start(tmp_path / "data", "--port", str(port))
        took = time.monotonic() - t0
        assert d.url.endswith(f":{port}")
        assert took < 5, f"restart took {took:.1f}s"
        assert not _sleepers(cell), "orphans are reaped (before the bind)"
        _wait_ready(d, cell)
    finally:
        d.terminate()
