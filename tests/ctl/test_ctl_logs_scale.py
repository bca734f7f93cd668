"""`apiaryctl logs` and `apiaryctl scale` against a real apiaryd running real drones: the lines an
agent writes to stderr come back through the node's shipper, the API and the CLI (tail, since,
timestamps, follow, hive merge); scaling converges up and down, composed stages included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctlkit import Ctl, Server

TALKER = """apiVersion: apiary.io/v1
kind: AgentSpec
metadata: {{name: talker, namespace: {cell}}}
spec:
  runtime:
    command:
      - /bin/sh
      - -c
      - 'i=0; while :; do i=$((i+1)); echo "tick $i" >&2; sleep 0.1; done'
  interface: {{type: stdin}}
"""
HIVE = """apiVersion: apiary.io/v1
kind: Hive
metadata: {{name: {name}, namespace: {cell}}}
spec:
  pattern: pipeline
  stages:
    - {{name: talk, agentRef: talker, replicas: {replicas}}}
"""
COMPOSED = """apiVersion: apiary.io/v1
kind: Hive
metadata: {{name: combo, namespace: {cell}}}
spec:
  patternSegments:
    - name: pipe
      pattern: pipeline
      config:
        stages:
          - {{name: first, agentRef: talker, replicas: 1}}
      outputTopic: pipe/out
    - name: crowd
      pattern: swarm
      inputTopic: pipe/out
      config:
        agents:
          - {{agentRef: talker, replicas: 1}}
"""


def apply(ctl: Ctl, tmp_path: Path, text: str) -> None:
    path = tmp_path / f"m{time.monotonic_ns()}.yaml"
    path.write_text(text)
    r = ctl("apply", "-f", str(path))
    assert r.exit_code == 0, r


def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def drones(server: Server, cell: str, selector: str) -> list[dict[str, Any]]:
    with server.client() as c:
        return list(c.list("drones", cell, selector=selector).get("items") or [])


def ready_names(server: Server, cell: str, selector: str) -> list[str]:
    return sorted(
        d["metadata"]["name"]
        for d in drones(server, cell, selector)
        if (d.get("status") or {}).get("ready")
    )


def converge(server: Server, cell: str, selector: str, n: int) -> list[str]:
    """Wait until exactly ``n`` drones match and all are Ready (0: all gone)."""

    def settled() -> list[str] | bool:
        found = drones(server, cell, selector)
        names = ready_names(server, cell, selector)
        return (names or True) if len(found) == n and len(names) == n else False

    result = until(settled, what=f"{n} ready drones for {selector}")
    return result if isinstance(result, list) else []


def test_logs_of_real_drones_through_cli(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    server = ctl.server
    apply(
        ctl,
        tmp_path,
        TALKER.format(cell=cell) + "---\n" + HIVE.format(cell=cell, name="h", replicas=2),
    )
    names = converge(server, cell, "apiary.io/hive=h", 2)
    d = names[0]
    r = until(
        lambda: (
            (x := ctl("-n", cell, "logs", f"drone/{d}", "--tail", "3")).stdout.count("\n") == 3
            and x
        ),
        what="three shipped lines",
    )
    lines = r.stdout.splitlines()
    assert all(ln.startswith("tick ") for ln in lines), r
    numbers = [int(ln.split()[1]) for ln in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 3))  # consecutive, none lost
    r = ctl("-n", cell, "logs", d, "--tail", "1", "--timestamps")  # bare name = drone
    stamp, _, text = r.stdout.strip().partition(" ")
    assert stamp.endswith("Z") and stamp[4] == "-" and text.startswith("tick "), r
    assert ctl("-n", cell, "logs", f"drone/{d}", "--since", "1h").stdout.count("tick") >= 3
    assert ctl("-n", cell, "logs", f"drone/{d}", "--since", "2099-01-01T00:00:00Z").stdout == ""
    # hive logs: both drones, merged, prefixed
    r = until(
        lambda: (
            (x := ctl("-n", cell, "logs", "hive/h", "--tail", "40"))
            and all(f"[{n}] tick" in x.stdout for n in names)
            and x
        ),
        what="hive merge",
    )
    assert all(ln.split("] ", 1)[0][1:] in names for ln in r.stdout.splitlines())
    # bad input: clear errors and exit codes
    r = ctl("-n", cell, "logs", "agentspec/talker")
    assert r.exit_code == 2 and "drones and hives" in r.stderr
    r = ctl("-n", cell, "logs", f"drone/{d}", "--since", "soon")
    assert r.exit_code == 2 and "--since" in r.stderr
    r = ctl("-n", cell, "logs", "drone/nope")
    assert r.exit_code == 1 and "nope" in r.stderr
    r = ctl("-n", cell, "logs", "hive/nope")
    assert r.exit_code == 1 and "nope" in r.stderr


def test_follow_streams_until_ctrl_c_or_deletion(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    server = ctl.server
    apply(
        ctl,
        tmp_path,
        TALKER.format(cell=cell) + "---\n" + HIVE.format(cell=cell, name="f", replicas=1),
    )
    (d,) = converge(server, cell, "apiary.io/hive=f", 1)
    env = {
        **os.environ,
        "APIARY_SERVER": server.url,
        "APIARY_TOKEN": server.token,
        "APIARY_CONFIG": str(tmp_path / "none.yaml"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "apiary.ctl.main", "-n", cell, "logs", "-f", f"drone/{d}",
         "--tail", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(5)]  # live lines keep coming
        numbers = [int(s.split()[1]) for s in seen]
        assert numbers == list(range(numbers[0], numbers[0] + 5)), seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # in-process follow of the hive ends by itself when the hive is deleted
    result: dict[str, Any] = {}
    follow = threading.Thread(
        target=lambda: result.update(run=ctl("-n", cell, "logs", "-f", "hive/f", "--tail", "2"))
    )
    follow.start()
    time.sleep(1.0)
    assert ctl("-n", cell, "delete", "hive", "f").exit_code == 0
    follow.join(20)
    assert not follow.is_alive(), "follow did not end when the hive was deleted"
    run = result["run"]
    assert run.exit_code == 0 and run.stdout.count(f"[{d}] tick") >= 2, run


def test_scale_converges_through_cli_and_api(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    server = ctl.server
    apply(
        ctl,
        tmp_path,
        TALKER.format(cell=cell) + "---\n" + HIVE.format(cell=cell, name="s", replicas=1),
    )
    sel = "apiary.io/hive=s"
    converge(server, cell, sel, 1)
    r = ctl("-n", cell, "scale", "hive/s", "--replicas", "3")
    assert r.exit_code == 0 and r.stdout.strip() == "hive/s scaled (stage talk) to 3", r
    converge(server, cell, sel, 3)
    with server.client() as c:
        scale = c.get_scale("hive", "s", cell)
        assert scale["status"]["readyReplicas"] == 3 and scale["spec"]["replicas"] == 3
    r = ctl("-n", cell, "scale", "hive", "s", "--replicas", "0")
    assert r.exit_code == 0, r
    converge(server, cell, sel, 0)
    # an agentspec's standalone drones, through the client library
    standalone = "apiary.io/agentspec=talker,!apiary.io/hive"
    with server.client() as c:
        assert c.scale("agentspec", "talker", 2, cell)["spec"]["replicas"] == 2
        converge(server, cell, standalone, 2)
        c.scale("agentspec", "talker", 0, cell)
        converge(server, cell, standalone, 0)
    # bad input
    r = ctl("-n", cell, "scale", "drone/x", "--replicas", "1")
    assert r.exit_code == 2 and "hives and agentspecs" in r.stderr
    r = ctl("-n", cell, "scale", "hive/s", "--replicas", "-1")
    assert r.exit_code == 2
    r = ctl("-n", cell, "scale", "hive/s")
    assert r.exit_code == 2 and "--replicas" in r.stderr
    r = ctl("-n", cell, "scale", "agentspec/talker", "--replicas", "1", "--stage", "x")
    assert r.exit_code == 2
    r = ctl("-n", cell, "scale", "hive/missing", "--replicas", "1")
    assert r.exit_code == 1 and "missing" in r.stderr


def test_composed_hive_stage_scaling(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    server = ctl.server
    apply(ctl, tmp_path, TALKER.format(cell=cell) + "---\n" + COMPOSED.format(cell=cell))
    converge(server, cell, "apiary.io/hive=combo", 2)
    r = ctl("-n", cell, "scale", "hive/combo", "--replicas", "2")
    assert r.exit_code == 1
    assert "stage" in r.stderr and "pipe-first" in r.stderr and "crowd-agent1" in r.stderr, r
    r = ctl("-n", cell, "scale", "hive/combo", "--stage", "nope", "--replicas", "2")
    assert r.exit_code == 1 and "no stage 'nope'" in r.stderr
    r = ctl("-n", cell, "scale", "hive/combo", "--stage", "pipe-first", "--replicas", "2")
    assert r.exit_code == 0, r
    converge(server, cell, "apiary.io/hive=combo,apiary.io/stage=pipe-first", 2)
    r = ctl("-n", cell, "-o", "json", "scale", "hive/combo", "--stage", "crowd-agent1",
            "--replicas", "0")  # fmt: skip
    assert r.exit_code == 0 and '"kind": "Scale"' in r.stdout, r
    converge(server, cell, "apiary.io/hive=combo,apiary.io/stage=crowd-agent1", 0)
    converge(server, cell, "apiary.io/hive=combo", 2)
