"""A hostile agent in a real hive on a real apiaryd tries every way out of its drone (DESIGN §9).

The probe (tests/fakes/probe_agent.py) answers its message with what each attack found; every
attack is asserted on its own so a regression names the hole. Run as root (the CI user), so the
drone really runs as another uid; the data dir lies in a world-traversable directory, so only
apiaryd's own permissions keep the probe out of it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.daemon_proc import Apiaryd, start

PROBE = Path(__file__).resolve().parents[1] / "fakes" / "probe_agent.py"
MARKER = "APIARYD_ONLY_MARKER"
CELL, OTHER = "default", "elsewhere"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uid separation needs root")


def _python() -> str:
    """An interpreter the drone's user can run (the probe needs only the stdlib)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@pytest.fixture(scope="module", params=[[], ["--node-process"]], ids=["node-in", "node-apart"])
def daemon(request: pytest.FixtureRequest) -> Iterator[Apiaryd]:
    """apiaryd with its node in-process, and apart (the child holds the node token, the bus
    socket and a lifeline pipe: none of them may reach the drone)."""
    root = Path(tempfile.mkdtemp(prefix="apiary-isolation-"))
    root.chmod(0o755)  # anyone may look in: the data dir's own mode must keep them out
    d = start(root / "data", *request.param, env={MARKER: "the control plane's environment"})
    try:
        yield d
    finally:
        d.terminate()
        shutil.rmtree(root, ignore_errors=True)


def _call(d: Apiaryd, method: str, path: str, body: Any = None) -> dict[str, Any]:
    r = httpx.request(method, f"{d.url}{path}", json=body, headers=d.headers, timeout=10)
    assert r.status_code < 300, (method, path, r.status_code, r.text)
    return dict(r.json()) if r.content else {}


def _obj(kind: str, name: str, cell: str | None = CELL, **rest: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if cell is not None:
        meta["namespace"] = cell
    return {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": meta, **rest}


@pytest.fixture(scope="module")
def findings(daemon: Apiaryd) -> dict[str, Any]:
    d = daemon
    base = f"/api/v1/cells/{CELL}"
    _call(d, "POST", "/api/v1/cells", _obj("Cell", OTHER, None, spec={}))
    _call(d, "POST", f"/api/v1/cells/{OTHER}/memory", {"text": "the other cell's secret plan"})
    _call(d, "POST", f"{base}/memory", {"text": "this cell's secret plan"})
    _call(d, "POST", f"{base}/secrets", _obj("Secret", "keys", stringData={"k": "s3cr3t"}))
    # The victim: another live session of the same cell, with something in its Comb.
    _call(d, "POST", f"{base}/sessions", _obj("Session", "victim", spec={"hiveRef": "probe"}))
    _call(d, "PUT", f"{base}/sessions/victim/comb/secret", {"value": "victim's data"})
    spec = {
        "runtime": {"command": [_python(), str(PROBE)]},
        "interface": {"type": "stdin", "format": "waggle"},
    }
    _call(d, "POST", f"{base}/agentspecs", _obj("AgentSpec", "probe", spec=spec))
    hive = {"pattern": "pipeline", "stages": [{"name": "probe", "agentRef": "probe"}]}
    _call(d, "POST", f"{base}/hives", _obj("Hive", "probe", spec=hive))
    aim = {"victim": "victim", "otherCell": OTHER, "api": d.url}
    session = _obj("Session", "attack", spec={"hiveRef": "probe", "input": aim})
    _call(d, "POST", f"{base}/sessions", session)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = _call(d, "GET", f"{base}/sessions/attack").get("status") or {}
        if "output" in status:
            out = status["output"]
            found = json.loads(out) if isinstance(out, str) else out
            assert "error" not in found, found
            print(json.dumps(found, indent=1))  # shown when an assertion below fails
            return dict(found)
        time.sleep(0.1)
    drones = [x.get("status") for x in _call(d, "GET", f"{base}/drones")["items"]]
    pytest.fail(f"the probe never answered: {status}; drones: {drones}")


def test_the_drone_does_not_run_as_the_control_plane(findings: dict[str, Any]) -> None:
    assert findings["uid"] != 0 and findings["uid"] != os.getuid()
    assert findings["gid"] != 0


def test_no_descriptor_is_inherited(findings: dict[str, Any]) -> None:
    assert findings["descriptors"]["accepted"] == []
    assert findings["descriptors"]["extra"] == []


def test_the_data_dir_is_unreadable(findings: dict[str, Any], daemon: Apiaryd) -> None:
    data = findings["dataDir"]
    assert str(daemon.data_dir) in data["dirs"]  # found it, on apiaryd's command line
    assert data["listed"] == [] and data["read"] == {}


def test_the_control_planes_environment_is_unreadable(findings: dict[str, Any]) -> None:
    assert findings["environ"] == {}
    assert MARKER not in findings["env"]
    leaked = [k for k in findings["env"] if k.startswith("APIARY_") and "KEEPER" not in k]
    identity = {"DRONE", "DRONE_UID", "CELL", "HIVE", "STAGE", "PATTERN", "NODE"}
    assert set(leaked) <= {f"APIARY_{name}" for name in identity}, leaked


def test_nothing_it_finds_opens_the_api(findings: dict[str, Any]) -> None:
    assert findings["api"], "the probe tried no call"
    assert {code for code in findings["api"].values()} <= {401, 403}, findings["api"]


def test_the_keeper_reaches_only_the_session_it_holds(findings: dict[str, Any]) -> None:
    keeper = findings["keeper"]
    assert keeper["own:write"] == 200 and keeper["own:read"] == 200  # the probe's own session
    for attack in ("victim:read", "victim:write", "victim:keys", "victim:list"):
        assert keeper[attack] == 403, (attack, keeper[attack])
    assert keeper["victim:dotdot"] in (400, 403, 404), keeper["victim:dotdot"]


def test_long_term_memory_needs_the_agentspec_to_ask(findings: dict[str, Any]) -> None:
    keeper = findings["keeper"]
    assert keeper["memory:search"] == 403  # its own cell, but spec.memory is not set
    assert keeper["otherCell:search"] in (401, 403)  # another cell: never


def test_the_victims_comb_is_untouched(findings: dict[str, Any], daemon: Apiaryd) -> None:
    got = _call(daemon, "GET", f"/api/v1/cells/{CELL}/sessions/victim/comb/secret")
    assert got["value"] == "victim's data"
