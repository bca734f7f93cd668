"""``apiaryctl run`` says why a hive cannot answer, against a real apiaryd and its node.

Each hive here is broken one way — an agent that crashes (CrashLoopBackOff), a command that
does not exist (ExecFailed), drones held by the Cell's CPU quota (Pending/QuotaExceeded), an
``agentRef`` to nothing (ResolvedRefs=False), a stage behind an approval gate
(WaitingForApproval), a stage scaled to 0 — and ``run`` must name that in its timeout error and,
on a terminal, in its spinner, instead of a bare ``timed out``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ctlkit import Ctl, Server

CELL = "reasons"
Obj = dict[str, Any]
LOOP = ["/bin/sh", "-c", 'while IFS= read -r l; do echo "got $l"; done']


def agentspec(name: str, command: list[str], cpu: int | None = None) -> Obj:
    spec: Obj = {"runtime": {"command": command}, "interface": {"type": "stdin", "format": "text"}}
    if cpu is not None:
        spec["resources"] = {"requests": {"cpu": cpu}}
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": CELL},
        "spec": spec,
    }


def hive(name: str, agent: str, replicas: int = 1, **stage: Any) -> Obj:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name, "namespace": CELL},
        "spec": {
            "pattern": "pipeline",
            "stages": [{"name": "only", "agentRef": agent, "replicas": replicas, **stage}],
        },
    }


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def broken(shared_server: Server) -> Iterator[Server]:
    """Every broken hive deployed, each in the state its test is about."""
    objects = [
        {
            "apiVersion": "apiary.io/v1",
            "kind": "Cell",
            "metadata": {"name": CELL},
            "spec": {"resourceQuota": {"maxCPU": 300}},
        },
        agentspec("crash", ["/bin/sh", "-c", "echo boom >&2; exit 3"]),
        agentspec("noexec", ["/nonexistent/agent"]),
        agentspec("hog", LOOP, cpu=200),
        agentspec("loop", LOOP),
        hive("crash", "crash"),
        hive("noexec", "noexec"),
        hive("hog", "hog"),
        hive("noref", "missing"),
        hive("gated", "loop", approval="required"),
        hive("idle", "loop", replicas=0),
    ]
    with shared_server.client(cell=CELL) as c:
        for obj in objects:
            c.apply(obj)

        def drones(hive_name: str) -> list[Obj]:
            items = c.list("drones", CELL, selector=f"apiary.io/hive={hive_name}")["items"]
            return [d.get("status") or {} for d in items]

        until(lambda: any(s.get("reason") == "CrashLoopBackOff" for s in drones("crash")), "crash")
        until(lambda: any(s.get("reason") == "ExecFailed" for s in drones("noexec")), "noexec")
        until(lambda: any(s.get("ready") for s in drones("hog")), "hog ready")
        until(lambda: any(s.get("ready") for s in drones("gated")), "gated ready")
        # with hog running, a 2-replica stage of 200m each cannot be placed under maxCPU=300
        c.apply(hive("held", "hog", replicas=2))
        until(lambda: [s.get("reason") for s in drones("held")] == ["QuotaExceeded"] * 2, "held")
    yield shared_server


@pytest.fixture
def ctl(broken: Server, tmp_path: Any) -> Ctl:
    return Ctl(broken, tmp_path)


TIMEOUT = "1s"
"""run's --timeout here: the reason it names is read once more at the timeout, and every hive
is in its state before the first test (``broken``), so a longer wait would change nothing."""


def timed_out(ctl: Ctl, hive_name: str, **env: str) -> str:
    r = ctl("run", f"hive/{hive_name}", "-n", CELL, "--input", "hi", "--timeout", TIMEOUT, **env)
    assert r.exit_code == 1 and r.stdout == "", r
    m = re.search(rf"^error: timed out after {TIMEOUT} waiting for hive/(\S+) \(session (\S+)\): "
                  r"(.+)$", r.stderr, re.M)  # fmt: skip
    assert m is not None and m.group(1) == hive_name, r
    return m.group(3)


def test_crash_loop(ctl: Ctl) -> None:
    why = timed_out(ctl, "crash")
    assert why.startswith("stage only: 0/1 drones ready — Failed: CrashLoopBackOff exited with")
    assert "last stderr: boom" in why


def test_exec_failed(ctl: Ctl) -> None:
    why = timed_out(ctl, "noexec")
    assert why.startswith(
        'stage only: 0/1 drones ready — Failed: ExecFailed executable "/nonexistent/agent" '
        "not found"
    ), why


def test_drones_held_by_the_quota(ctl: Ctl) -> None:
    why = timed_out(ctl, "held")
    assert why.startswith(
        f"stage only: 0/2 drones ready — 2 Pending: QuotaExceeded cell '{CELL}' quota "
        "maxCPU=300 millicores exceeded"
    ), why


def test_unresolved_agent_ref(ctl: Ctl) -> None:
    why = timed_out(ctl, "noref")
    assert why == "MissingReferences: AgentSpec 'missing' not found (spec.stages[0].agentRef)"


def test_waiting_for_approval(ctl: Ctl) -> None:
    r = ctl("run", "hive/gated", "-n", CELL, "--input", "hi", "--timeout", TIMEOUT)
    assert r.exit_code == 1, r
    session = re.search(r"\(session (\S+)\)", r.stderr)
    assert session is not None, r
    name = session.group(1)
    assert r.stderr.rstrip().endswith(
        f"stage only waits for approval: apiaryctl approve session/{name} -n {CELL} "
        f"(or reject session/{name})"
    ), r
    assert ctl("approve", f"session/{name}", "-n", CELL).exit_code == 0  # the hint works


def test_scaled_to_zero(ctl: Ctl) -> None:
    why = timed_out(ctl, "idle")
    assert why == (
        f"stage only: scaled to 0 replicas (apiaryctl scale hive/idle -n {CELL} --stage only "
        "--replicas 1)"
    )


def test_a_healthy_slow_stage_is_still_working(ctl: Ctl) -> None:
    """Nothing wrong, only slow: the timeout error says the stage was at work."""
    with ctl.server.client(cell=CELL) as c:
        # Busy past run's 1 s timeout, then it answers: apiaryd's graceful stop at the end of
        # the module gives work in flight 10 s, and an agent that never answered held it that long.
        sleepy = 'while read l; do sleep 3; echo "got $l"; done'
        c.apply(agentspec("sleepy", ["/bin/sh", "-c", sleepy]))
        c.apply(hive("sleepy", "sleepy"))
        until(
            lambda: any(
                (d.get("status") or {}).get("ready")
                for d in c.list("drones", CELL, selector="apiary.io/hive=sleepy")["items"]
            ),
            "sleepy ready",
        )
    time.sleep(0.3)  # a worker subscribes right after Ready
    assert timed_out(ctl, "sleepy") == "stage only was still working"


def test_the_spinner_names_the_session_and_the_reason(ctl: Ctl) -> None:
    """On a terminal (TTY_COMPATIBLE=1 makes rich treat the captured stderr as one), run
    prints session/NAME first and the spinner shows the reason while it waits."""
    r = ctl(
        "run", "hive/crash", "-n", CELL, "--input", "hi", "--timeout", "2500ms",
        TTY_COMPATIBLE="1", COLUMNS="300",
    )  # fmt: skip
    assert r.exit_code == 1 and r.stdout == "", r
    first = r.stderr.splitlines()[0]
    assert re.fullmatch(r"session/job-\S+", first), r
    assert "hive/crash: stage only: 0/1 drones ready — Failed: CrashLoopBackOff" in r.stderr, r
