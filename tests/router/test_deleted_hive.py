"""A hive deleted while one of its sessions has work open (here: held at an approval gate) must
not stop apiaryd on every start.

Before: the router's recovery sweep asked for the hive, got NotFound and nothing caught it, so
apiaryd exited at start, again and again. Now the session ends Failed (HiveNotFound) with the
reason, and the server stays up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from server.daemon_proc import Apiaryd, start


def _post(d: Apiaryd, path: str, body: dict[str, Any]) -> None:
    httpx.post(f"{d.url}{path}", json=body, headers=d.headers, timeout=10).raise_for_status()


def _obj(kind: str, name: str, **rest: Any) -> dict[str, Any]:
    return {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": {"name": name}, **rest}


def test_a_session_of_a_deleted_hive_ends_and_apiaryd_keeps_running(tmp_path: Path) -> None:
    base = "/api/v1/cells/default"
    d = start(tmp_path / "data")
    try:
        spec = {"runtime": {"command": ["cat"]}, "interface": {"format": "text"}}
        _post(d, f"{base}/agentspecs", _obj("AgentSpec", "cat", spec=spec))
        # The session's work waits at an approval gate: open in the journal, held.
        stage = {"name": "s", "agentRef": "cat", "approval": "required"}
        hive = {"pattern": "pipeline", "stages": [stage]}
        _post(d, f"{base}/hives", _obj("Hive", "h", spec=hive))
        _post(d, f"{base}/sessions", _obj("Session", "stuck", spec={"hiveRef": "h", "input": 1}))
        time.sleep(0.3)
        r = httpx.delete(f"{d.url}{base}/hives/h", headers=d.headers)
        assert r.status_code == 200, r.text
        d.terminate()
        d = start(tmp_path / "data")  # the sweep on start finds the open dispatch
        deadline = time.monotonic() + 15
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert d.proc.poll() is None, "apiaryd exited:\n" + "".join(d.lines[-20:])
            got = httpx.get(f"{d.url}{base}/sessions/stuck", headers=d.headers, timeout=5)
            status = got.json().get("status") or {}
            if status.get("phase") == "Failed":
                break
            time.sleep(0.1)
        assert status.get("phase") == "Failed" and status.get("reason") == "HiveNotFound", status
        assert "'h'" in status.get("message", "")
        assert httpx.get(f"{d.url}/healthz").status_code == 200
        assert d.proc.poll() is None
    finally:
        d.terminate()
