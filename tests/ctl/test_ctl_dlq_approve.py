"""apiaryctl dlq … and approve/reject against a real apiaryd with real agent processes.

The agent answers ``error`` while a flag file exists, so a test breaks and fixes it without a
redeploy (the redeploy after a real AgentSpec fix, and restarts, are in tests/e2e).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctlkit import Ctl, Server

Obj = dict[str, Any]
AGENT = """
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if os.path.exists(os.environ["BROKEN_FLAG"]):
        out = {"type": "error", "payload": {"message": "model offline"}}
    else:
        out = {"type": "result", "payload": "ok: " + str(msg["payload"])}
    print(json.dumps(out), flush=True)
"""


def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def deploy(server: Server, cell: str, flag: Path, approval: bool = False) -> None:
    """AgentSpec ``flaky`` + a 2-stage pipeline ``h`` (stage b optionally gated), one retry."""
    stages: list[Obj] = [{"name": "a", "agentRef": "flaky"}, {"name": "b", "agentRef": "flaky"}]
    if approval:
        stages[1]["approval"] = "required"
    with server.client() as c:
        c.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "AgentSpec",
                "metadata": {"name": "flaky", "namespace": cell},
                "spec": {
                    "runtime": {
                        "command": [sys.executable, "-c", AGENT],
                        "env": [{"name": "BROKEN_FLAG", "value": str(flag)}],
                    },
                    "interface": {"type": "stdin", "format": "waggle"},
                    "resources": {"requests": {"cpu": 10, "memory": 8_000_000}},
                },
            }
        )
        c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                  "metadata": {"name": "h", "namespace": cell},
                  "spec": {"pattern": "pipeline", "stages": stages,
                           "routing": {"retryPolicy": {"maxRetries": 1,
                                                       "initialDelaySeconds": 0.05,
                                                       "maxDelaySeconds": 0.1}}}})  # fmt: skip

        def ready() -> bool:
            ds = c.list("Drone", cell)["items"]
            return len(ds) == 2 and all((d.get("status") or {}).get("ready") for d in ds)

        until(ready, 30, "2 ready drones")


def send(server: Server, cell: str, name: str, payload: str) -> None:
    with server.client() as c:
        c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                  "metadata": {"name": name, "namespace": cell},
                  "spec": {"hiveRef": "h", "input": payload}})  # fmt: skip


def ends(server: Server, cell: str, name: str) -> list[Obj]:
    with server.client() as c:
        path = f"/api/v1/cells/{cell}/sessions/{name}/messages"
        items = c.request("GET", path, params={"wait": "0"}).body["items"]
    return [e for e in items if e["kind"] in ("final", "error")]


def status(server: Server, cell: str, name: str) -> Obj:
    with server.client() as c:
        return dict(c.get("Session", name, cell).get("status") or {})


def test_dlq_list_show_replay_and_purge(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    deploy(ctl.server, cell, flag)
    n = ["-n", cell]
    empty = ctl("dlq", "list", "hive/h", *n)
    assert empty.exit_code == 0 and empty.stdout == "" and "No open dead letters" in empty.stderr
    send(ctl.server, cell, "s1", "one")
    send(ctl.server, cell, "s2", "two")
    until(lambda: ctl("dlq", "list", "hive/h", "-o", "name", *n).stdout.count("\n") == 2,
          what="two dead letters")  # fmt: skip
    table = ctl("dlq", "list", "hive/h", *n).stdout.splitlines()
    assert table[0].split() == ["ID", "SESSION", "STAGE", "REASON", "ATTEMPTS", "AGE", "PHASE"]
    assert [r.split()[1:5] for r in table[1:]] == [
        ["s2", "a", "AgentError", "2"],
        ["s1", "a", "AgentError", "2"],
    ]  # newest first
    assert all(r.split()[-1] == "Pending" for r in table[1:])
    assert "model offline" in ctl("dlq", "list", "hive/h", "-o", "wide", *n).stdout
    ids = {r.split()[1]: r.split()[0] for r in table[1:]}
    shown = ctl("dlq", "show", "hive/h", ids["s1"], *n).stdout
    assert f"ID:       {ids['s1']}" in shown and "Reason:   AgentError" in shown
    assert "Original:" in shown and "payload: one" in shown and "Resolved:" not in shown
    as_json = json.loads(ctl("dlq", "show", "hive/h", ids["s1"], "-o", "json", *n).stdout)
    assert as_json["spec"]["session"] == "s1"
    assert status(ctl.server, cell, "s1")["reason"] == "DeadLettered"
    # A replay before the fix dies again: s2's letter is Pending again, one attempt more.
    assert ctl("dlq", "replay", "hive/h", ids["s2"], *n).exit_code == 0

    def phases() -> dict[str, tuple[str, str]]:
        rows = ctl("dlq", "list", "hive/h", *n).stdout.splitlines()[1:]
        return {r.split()[1]: (r.split()[4], r.split()[-1]) for r in rows}

    until(lambda: phases().get("s2") == ("3", "Pending"), what="s2 dead again")
    # Fix the agent; replay s1's letter, purge s2's.
    flag.unlink()
    replayed = ctl("dlq", "replay", "hive/h", ids["s1"], *n)
    assert replayed.exit_code == 0 and replayed.stdout == f"deadletter/{ids['s1']} replayed\n"
    final = until(lambda: ends(ctl.server, cell, "s1"), what="s1's final")
    assert [(e["kind"], e["message"]["payload"]) for e in final] == [("final", "ok: ok: one")]
    # The replay succeeded: s1's letter is Resolved, so the default list no longer shows it.
    until(lambda: "s1" not in phases(), what="s1's letter Resolved")
    assert phases() == {"s2": ("3", "Pending")}
    everything = ctl("dlq", "list", "hive/h", "--all", *n).stdout.splitlines()[1:]
    assert [(r.split()[0], r.split()[-1]) for r in everything] == [
        (ids["s2"], "Pending"),
        (ids["s1"], "Resolved"),
    ]
    shown = ctl("dlq", "show", "hive/h", ids["s1"], *n).stdout
    assert "Phase:    Resolved" in shown and "Resolved: 20" in shown
    again = ctl("dlq", "replay", "hive/h", ids["s1"], *n)
    assert again.exit_code == 1 and "is Resolved: its replay succeeded" in again.stderr
    purged = ctl("dlq", "purge", "hive/h", ids["s2"], *n)
    assert purged.stdout == f"deadletter/{ids['s2']} purged (its flow failed)\n"
    (err,) = until(lambda: ends(ctl.server, cell, "s2"), what="s2's error")
    assert err["kind"] == "error" and err["message"]["payload"]["reason"] == "DeadLetterPurged"
    nothing = ctl("dlq", "list", "hive/h", *n)
    assert nothing.stdout == "" and "--all shows resolved ones" in nothing.stderr
    as_json = json.loads(ctl("dlq", "list", "hive/h", "--all", "-o", "json", *n).stdout)
    assert [o["status"]["phase"] for o in as_json["items"]] == ["Resolved"]
    # --all
    assert ctl("dlq", "replay", "hive/h", "--all", *n).stderr.startswith("Nothing to replay")
    everything_purged = ctl("dlq", "purge", "hive/h", "--all", *n)
    assert everything_purged.stdout == f"deadletter/{ids['s1']} purged\n"
    assert ctl("dlq", "list", "hive/h", "--all", "-o", "json", *n).stdout.count('"items": []') == 1


def test_dlq_usage_and_not_found_errors(ctl: Ctl, cell: str) -> None:
    n = ["-n", cell]
    both = ctl("dlq", "replay", "hive/h", "abc", "--all", *n)
    assert both.exit_code == 2 and "not both" in both.stderr
    neither = ctl("dlq", "purge", "hive/h", *n)
    assert neither.exit_code == 2 and "needs an ID or --all" in neither.stderr
    wrong = ctl("dlq", "list", "session/h", *n)
    assert wrong.exit_code == 2 and "expected hive/NAME" in wrong.stderr
    ghost = ctl("dlq", "list", "hive/ghost", *n)
    assert ghost.exit_code == 1 and "hive 'ghost' not found" in ghost.stderr
    missing = ctl("approve", "session/ghost", *n)
    assert missing.exit_code == 1 and "session 'ghost' not found" in missing.stderr
    bad = ctl("reject", "hive/x", *n)
    assert bad.exit_code == 2 and "expected session/ID" in bad.stderr


def test_approve_and_reject(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    deploy(ctl.server, cell, tmp_path / "not-broken", approval=True)
    n = ["-n", cell]
    send(ctl.server, cell, "yes", "one")
    send(ctl.server, cell, "no", "two")
    for name in ("yes", "no"):
        st = until(lambda name=name: (s := status(ctl.server, cell, name)).get("phase")
                   == "WaitingForApproval" and s, what=f"{name} waiting")  # fmt: skip
        assert st["pendingApproval"] == "b"
    bad_stage = ctl("approve", "session/yes", "--stage", "zz", *n)
    assert bad_stage.exit_code == 1 and "stage: hive 'h' has no stage 'zz'" in bad_stage.stderr
    ok = ctl("approve", "session/yes", "--stage", "b", *n)
    assert ok.exit_code == 0 and ok.stdout == "session/yes approved at stage b (1 released)\n"
    final = until(lambda: ends(ctl.server, cell, "yes"), what="the approved final")
    assert final[0]["message"]["payload"] == "ok: ok: one"
    nothing = ctl("approve", "yes", *n)
    assert nothing.exit_code == 1 and "nothing waiting for approval" in nothing.stderr
    no = ctl("reject", "session/no", "--reason", "not today", "-o", "json", *n)
    assert json.loads(no.stdout) == {
        "session": "no", "stage": None, "rejected": 1, "reason": "not today",
    }  # fmt: skip
    (err,) = until(lambda: ends(ctl.server, cell, "no"), what="the rejection")
    assert err["message"]["payload"] == {"reason": "Rejected", "message": "not today"}
