"""Point 2 of issue 16: a remote A2A agent as a stage (``interface.type: a2a``).

A real apiaryd (embedded node) and a remote agent built with the ``a2a-sdk`` server classes
(``a2a_remote.py``, its own process): the answer arrives (with the remote's working message as
a partial line), a failed attempt is retried and then answers, and a call the stage's
``responseTimeoutSeconds`` cuts is retried and dead-lettered — the hive's policy, as for a
local drone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.cluster import Apiaryd, is_ready, new_cell, wait_drones
from e2e.cluster import wait_for as until
from services import free_port

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
Obj = dict[str, Any]


@pytest.fixture
def remote() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "a2a_remote.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url + ".well-known/agent-card.json", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the remote A2A agent did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def ends(c: Any, cell: str, name: str) -> list[Obj]:
    path = f"/api/v1/cells/{cell}/sessions/{name}/transcript"
    return [e for e in c.request("GET", path).body["items"] if e["kind"] in ("final", "error")]


def test_a_remote_a2a_agent_is_a_stage_like_any_other(tmp_path: Path, remote: str) -> None:
    server = Apiaryd(tmp_path / "data").start()
    try:
        cell = new_cell()
        with server.client(cell) as c:
            c.create(
                {
                    "apiVersion": "apiary.io/v1",
                    "kind": "AgentSpec",
                    "metadata": {"name": "remote", "namespace": cell},
                    "spec": {
                        "interface": {"type": "a2a", "url": remote, "concurrency": 4},
                        "guardrails": {"responseTimeoutSeconds": 2},
                    },
                }
            )
            c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                      "metadata": {"name": "h", "namespace": cell},
                      "spec": {"pattern": "pipeline",
                               "stages": [{"name": "ask", "agentRef": "remote"}],
                               "routing": {"retryPolicy": {"maxRetries": 1,
                                                           "initialDelaySeconds": 0.05,
                                                           "maxDelaySeconds": 0.1}}}})  # fmt: skip
            wait_drones(c, cell, lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 30, "Ready")
            time.sleep(0.2)

            def start(name: str, text: str) -> None:
                c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                          "metadata": {"name": name, "namespace": cell},
                          "spec": {"hiveRef": "h", "input": text}})  # fmt: skip

            base = f"/api/v1/cells/{cell}/sessions"
            start("ok", "hello")
            (final,) = until(lambda: ends(c, cell, "ok"), 20, "the answer")
            assert final["kind"] == "final" and final["message"]["payload"] == "remote: hello"
            items = c.request("GET", f"{base}/ok/transcript").body["items"]
            partial = [e for e in items if e["kind"] == "output"
                       and (e["message"].get("metadata") or {}).get("partial")]  # fmt: skip
            assert [e["message"]["payload"] for e in partial] == ["thinking about hello"]

            start("flaky", "flaky one")
            (final,) = until(lambda: ends(c, cell, "flaky"), 20, "the retried answer")
            assert final["message"]["payload"] == "remote: flaky one"
            items = c.request("GET", f"{base}/flaky/transcript").body["items"]
            (failed,) = [e["message"]["payload"] for e in items if e["kind"] == "event"]
            assert "TASK_STATE_FAILED" in failed["message"] and failed["attempt"] == 0  # retried

            def dead() -> Obj | None:
                status = c.get("Session", "slow", cell).get("status") or {}
                return status if status.get("reason") == "DeadLettered" else None

            start("slow", "slow one")
            status = until(dead, 30, "the timed-out call to be dead-lettered")
            assert status["phase"] == "Failed"
    finally:
        server.stop()
