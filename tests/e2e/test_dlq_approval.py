"""Acceptance for dead letters and approvals, with a real apiaryd and real agent processes:

1. a session whose agent keeps failing lands in the DLQ (and says so); the DLQ survives a
   kill -9 of apiaryd; once the AgentSpec is fixed and the new drone is Ready,
   ``apiaryctl dlq replay hive/H --all`` makes the session's final arrive, and the letter is
   ``Resolved`` (gone from ``dlq list``, shown by ``dlq list --all``);
2. an approval gate holds a session across a restart of apiaryd (SIGTERM and SIGKILL): still
   ``WaitingForApproval`` afterwards, the gated stage never ran; ``apiaryctl approve`` lets the
   final arrive, ``apiaryctl reject`` fails the other session's flow with ``Rejected``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apiary.client import ApiClient
from apiary.ctl.main import app as ctl_app

from .cluster import ECHO, Apiaryd, is_ready, new_cell, retire, wait_drones, wait_no_agent_processes

pytestmark = pytest.mark.slow
Obj = dict[str, Any]

BROKEN = [sys.executable, "-c", """
import json, sys
for line in sys.stdin:
    json.loads(line)
    print(json.dumps({"type": "error", "payload": {"message": "upstream model unavailable"}}),
          flush=True)
"""]  # fmt: skip
FIXED = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Done: $line"; done']
REVIEW = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "$line" >> "$RAN"; '
          'echo "Reviewed: $line"; done']  # fmt: skip


@pytest.fixture
def apiaryd(tmp_path: Path) -> Iterator[Apiaryd]:
    server = Apiaryd(tmp_path / "data").start()
    yield server
    retire(server)


def ctl(server: Apiaryd, home: Path, *args: str) -> tuple[int, str, str]:
    """``apiaryctl ARGS`` in-process against ``server`` (a throwaway config, no user settings)."""
    env = {"APIARY_SERVER": server.url, "APIARY_TOKEN": server.token,
           "APIARY_CONFIG": str(home / "config.yaml"), "APIARY_CELL": None}  # fmt: skip
    result = CliRunner().invoke(ctl_app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # the server may be restarting
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def agentspec(cell: str, name: str, command: list[str], fmt: str, env: Obj | None = None) -> Obj:
    runtime: Obj = {"command": command}
    if env:
        runtime["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": name, "namespace": cell},
            "spec": {"runtime": runtime, "interface": {"type": "stdin", "format": fmt},
                     "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}}  # fmt: skip


def pipeline(cell: str, second: str, gated: bool) -> Obj:
    stages: list[Obj] = [{"name": "prep", "agentRef": "prep"}, {"name": second, "agentRef": second}]
    if gated:
        stages[1]["approval"] = "required"
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": "h", "namespace": cell},
            "spec": {"pattern": "pipeline", "stages": stages,
                     "routing": {"retryPolicy": {"maxRetries": 1, "initialDelaySeconds": 0.05,
                                                 "maxDelaySeconds": 0.1}}}}  # fmt: skip


def start_session(c: ApiClient, cell: str, name: str, payload: str) -> None:
    c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
              "metadata": {"name": name, "namespace": cell},
              "spec": {"hiveRef": "h", "input": payload}})  # fmt: skip


def ends(server: Apiaryd, cell: str, name: str, wait: float = 10.0) -> list[Obj]:
    """The session's final/error entries, long-polling up to ``wait`` s for the first one (no
    poll outlasts the ``wait`` left)."""
    with server.client(cell) as c:
        path = f"/api/v1/cells/{cell}/sessions/{name}/messages"
        after, found = 0, []
        deadline = time.monotonic() + wait
        while not found and (left := deadline - time.monotonic()) > 0:
            poll = {"after": str(after), "wait": f"{min(2.0, left):.3f}"}
            body = c.request("GET", path, params=poll).body
            found += [e for e in body["items"] if e["kind"] in ("final", "error")]
            after = body["last"]
        return found


def session_status(server: Apiaryd, cell: str, name: str) -> Obj:
    with server.client(cell) as c:
        return dict(c.get("Session", name, cell).get("status") or {})


def ready_drones(server: Apiaryd, cell: str, check: Callable[[list[Obj]], bool]) -> None:
    with server.client(cell) as c:
        wait_drones(c, cell, check, 30, "drones Ready")
    time.sleep(0.2)  # a Ready drone's worker subscribes right after its status is written


def test_dead_letter_survives_kill9_and_replays_after_the_agent_is_fixed(
    apiaryd: Apiaryd, tmp_path: Path
) -> None:
    cell = new_cell()
    n = ["-n", cell]
    with apiaryd.client(cell) as c:
        c.create(agentspec(cell, "prep", ECHO, "text"))
        c.create(agentspec(cell, "work", BROKEN, "waggle"))
        c.create(pipeline(cell, "work", gated=False))
    ready_drones(apiaryd, cell, lambda ds: len(ds) == 2 and all(map(is_ready, ds)))
    with apiaryd.client(cell) as c:
        start_session(c, cell, "job1", "hello")

    def listed() -> list[str]:
        code, out, _ = ctl(apiaryd, tmp_path, "dlq", "list", "hive/h", *n)
        return out.splitlines()[1:] if code == 0 else []

    (row,) = until(listed, 20, "the dead letter in dlq list")
    ident, session, stage, reason, attempts = row.split()[:5]
    assert (session, stage, reason, attempts) == ("job1", "work", "AgentError", "2")
    status = until(lambda: (s := session_status(apiaryd, cell, "job1")).get("reason") and s,
                   10, "the session's status")  # fmt: skip
    assert status["phase"] == "Failed" and status["reason"] == "DeadLettered"
    assert "upstream model unavailable" in status["message"] and "dlq" in status["message"]
    # The dead letter is durable: apiaryd dies hard and comes back; the letter is still there.
    apiaryd.kill()
    apiaryd.start()
    assert [r.split()[0] for r in until(listed, 10, "dlq list after restart")] == [ident]
    # Fix the agent: a new drone replaces the broken one; replay everything.
    with apiaryd.client(cell) as c:
        fixed = agentspec(cell, "work", FIXED, "text")
        fixed["metadata"]["resourceVersion"] = c.get("AgentSpec", "work", cell)["metadata"][
            "resourceVersion"
        ]
        c.update(fixed)

    def fixed_ready(ds: list[Obj]) -> bool:
        work = [d for d in ds if d["spec"].get("agentSpec") == "work"]
        return (len(ds) == 2 and all(map(is_ready, ds))
                and all(d["spec"]["runtime"]["command"] == FIXED for d in work))  # fmt: skip

    ready_drones(apiaryd, cell, fixed_ready)
    code, out, err = ctl(apiaryd, tmp_path, "dlq", "replay", "hive/h", "--all", *n)
    assert code == 0, err
    assert out == f"deadletter/{ident} replayed\n"
    (final,) = ends(apiaryd, cell, "job1", wait=20)
    assert final["kind"] == "final" and final["message"]["payload"] == "Done: Echo: hello"
    until(lambda: session_status(apiaryd, cell, "job1").get("phase") == "Running", 10,
          "the session Running again")  # fmt: skip

    # The replay succeeded: the letter is Resolved, listed with --all only.
    def resolved() -> bool:
        code, out, _ = ctl(apiaryd, tmp_path, "dlq", "list", "hive/h", "--all", *n)
        rows = out.splitlines()[1:] if code == 0 else []
        return [(r.split()[0], r.split()[-1]) for r in rows] == [(ident, "Resolved")]

    until(resolved, 10, "the dead letter Resolved")
    code, out, err = ctl(apiaryd, tmp_path, "dlq", "list", "hive/h", *n)
    assert code == 0 and out == "" and "No open dead letters" in err
    with apiaryd.client(cell) as c:
        c.delete("Hive", "h", cell)
    wait_no_agent_processes(cell)


@pytest.mark.parametrize("restart", ["sigterm", "sigkill"])
def test_approval_gate_holds_across_a_restart(
    apiaryd: Apiaryd, tmp_path: Path, restart: str
) -> None:
    cell = new_cell()
    n = ["-n", cell]
    ran = tmp_path / "review-ran.txt"
    ran.touch()
    ran.chmod(0o666)  # the drone runs as another user (nobody, when root): it may write this one
    with apiaryd.client(cell) as c:
        c.create(agentspec(cell, "prep", ECHO, "text"))
        c.create(agentspec(cell, "review", REVIEW, "text", {"RAN": str(ran)}))
        c.create(pipeline(cell, "review", gated=True))
    both_ready = lambda ds: len(ds) == 2 and all(map(is_ready, ds))  # noqa: E731
    ready_drones(apiaryd, cell, both_ready)
    with apiaryd.client(cell) as c:
        start_session(c, cell, "yes", "ship it")
        start_session(c, cell, "no", "drop tables")

    def waiting(name: str) -> Obj | None:
        s = session_status(apiaryd, cell, name)
        return s if s.get("phase") == "WaitingForApproval" else None

    for name in ("yes", "no"):
        assert until(lambda name=name: waiting(name), 20, f"{name} waiting")["pendingApproval"] == (
            "review"
        )
    with apiaryd.client(cell) as c:
        old_pids = {(d.get("status") or {}).get("pid") for d in c.list("Drone", cell)["items"]}
    if restart == "sigkill":
        apiaryd.kill()
    else:
        apiaryd.stop()
    apiaryd.start()
    ready_drones(  # new agent processes: the statuses read before they start are stale
        apiaryd,
        cell,
        lambda ds: (
            both_ready(ds) and not {(d.get("status") or {}).get("pid") for d in ds} & old_pids
        ),
    )
    for name in ("yes", "no"):
        assert waiting(name) is not None, f"session {name} no longer waits after the restart"
        assert ends(apiaryd, cell, name, wait=0.5) == []
    assert ran.read_text() == ""  # the gated stage never ran
    code, out, err = ctl(apiaryd, tmp_path, "approve", "session/yes", *n)
    assert code == 0, err
    assert out == "session/yes approved (1 released)\n"
    (final,) = ends(apiaryd, cell, "yes", wait=20)
    assert final["kind"] == "final" and final["message"]["payload"] == "Reviewed: Echo: ship it"
    assert ran.read_text() == "Echo: ship it\n"
    code, out, err = ctl(apiaryd, tmp_path, "reject", "session/no", "--reason", "too risky", *n)
    assert code == 0, err
    (failed,) = ends(apiaryd, cell, "no", wait=20)
    assert failed["kind"] == "error"
    assert failed["message"]["payload"] == {"reason": "Rejected", "message": "too risky"}
    status = until(lambda: (s := session_status(apiaryd, cell, "no")).get("reason") and s, 10,
                   "the rejected session's status")  # fmt: skip
    assert status["reason"] == "Rejected" and "pendingApproval" not in status
    assert ran.read_text() == "Echo: ship it\n"  # the rejected input never reached review
    with apiaryd.client(cell) as c:
        c.delete("Hive", "h", cell)
    wait_no_agent_processes(cell)
