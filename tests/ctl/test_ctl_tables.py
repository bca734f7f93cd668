"""What ``get`` and ``describe`` tables show: a drone's reason rather than ``Failed``, an
AgentSpec's replicas after ``scale agentspec``, the drone's agent in ``-o wide``, Events that
differ only in numbers as one row, and a Cell's quota use."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ctlkit import Ctl

from apiary.ctl import tables
from apiary.ctl.commands.describe import summary

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def row(kind: str, obj: Obj, wide: bool = False) -> dict[str, str]:
    cols = tables.columns_for(kind, wide, False)
    return dict(zip([c[0] for c in cols], tables.table_rows([obj], cols, NOW)[0], strict=True))


def event(message: str, count: int, last: str, name: str = "d-0", reason: str = "X") -> Obj:
    return {
        "kind": "Event",
        "metadata": {"name": f"e{count}{last}", "namespace": "c"},
        "involvedObject": {"kind": "Drone", "name": name},
        "type": "Warning",
        "reason": reason,
        "message": message,
        "count": count,
        "firstTimestamp": last,
        "lastTimestamp": last,
    }


def test_drone_status_is_the_reason_when_it_is_not_running() -> None:
    def drone(**status: Any) -> Obj:
        return {"kind": "Drone", "metadata": {"name": "d"}, "spec": {"agentSpec": "a"},
                "status": status}  # fmt: skip

    assert row("Drone", drone(phase="Failed", reason="CrashLoopBackOff"))["STATUS"] == (
        "CrashLoopBackOff"
    )
    assert row("Drone", drone(phase="Failed", reason="ExecFailed"))["STATUS"] == "ExecFailed"
    assert row("Drone", drone(phase="Pending", reason="QuotaExceeded"))["STATUS"] == (
        "QuotaExceeded"
    )
    assert row("Drone", drone(phase="Failed"))["STATUS"] == "Failed"
    running = drone(phase="Running", reason="ReadinessProbeFailed", ready=False)
    assert row("Drone", running)["STATUS"] == "Running"  # READY false says the rest
    assert row("Drone", drone(phase="Running"), wide=True)["AGENT"] == "a"


def test_agentspec_replicas_are_ready_over_wanted() -> None:
    spec: Obj = {"kind": "AgentSpec", "metadata": {"name": "a"}, "spec": {}}
    assert row("AgentSpec", spec)["REPLICAS"] == "-"
    spec["spec"] = {"replicas": 3, "scaling": {"minReplicas": 1, "maxReplicas": 4}}
    assert row("AgentSpec", spec)["REPLICAS"] == "0/3"
    spec["status"] = {"replicas": 3, "readyReplicas": 2}
    assert (row("AgentSpec", spec)["REPLICAS"], row("AgentSpec", spec)["SCALING"]) == ("2/3", "1-4")


def test_events_that_differ_only_in_numbers_are_one_row() -> None:
    items = [
        event("exited with code 3; restarting in 16s, restarts 4", 1, "2026-01-01T11:02:00Z"),
        event("exited with code 3; restarting in 8s, restarts 3", 2, "2026-01-01T11:01:00Z"),
        event("exited with code 3; restarting in 32s, restarts 5", 1, "2026-01-01T11:03:00Z"),
        event("exited with code 3; restarting in 8s, restarts 3", 1, "2026-01-01T11:00:00Z", "x"),
        event("created drone h-0", 1, "2026-01-01T10:00:00Z", reason="ScalingUp"),
        event("created drone h-1", 1, "2026-01-01T10:00:01Z", reason="ScalingUp"),
    ]
    merged = tables.merge_events(items)
    assert [(e["involvedObject"]["name"], e["reason"], e["count"]) for e in merged] == [
        ("d-0", "ScalingUp", 1),  # h-0 and h-1 are names, not numbers
        ("d-0", "ScalingUp", 1),
        ("x", "X", 1),  # another object
        ("d-0", "X", 4),
    ]
    last = merged[-1]
    assert last["message"] == "exited with code 3; restarting in 32s, restarts 5"  # the newest
    assert (last["firstTimestamp"], last["lastTimestamp"]) == (
        "2026-01-01T11:01:00Z",
        "2026-01-01T11:03:00Z",
    )
    assert items[1]["count"] == 2  # the objects themselves are left alone


def test_describe_cell_shows_its_quota_and_use() -> None:
    cell = {"kind": "Cell", "metadata": {"name": "q"},
            "spec": {"resourceQuota": {"maxCPU": 300, "maxHives": 2}},
            "status": {"used": {"cpu": 200}}}  # fmt: skip
    lines = summary(cell, NOW)
    at = lines.index("Quota:")
    assert [" ".join(line.split()) for line in lines[at + 1 : at + 4]] == [
        "RESOURCE USED LIMIT",
        "maxCPU 200 300",
        "maxHives - 2",
    ]


def test_tables_against_a_real_apiaryd(ctl: Ctl, cell: str) -> None:
    with ctl.server.client(cell=cell) as c:
        c.apply({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                 "metadata": {"name": "crash", "namespace": cell},
                 "spec": {"runtime": {"command": ["/bin/sh", "-c", "exit 3"]}}})  # fmt: skip
        c.apply({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                 "metadata": {"name": "cat", "namespace": cell},
                 "spec": {"runtime": {"command": ["cat"]}}})  # fmt: skip
        c.apply({"apiVersion": "apiary.io/v1", "kind": "Hive",
                 "metadata": {"name": "h", "namespace": cell},
                 "spec": {"pattern": "pipeline",
                          "stages": [{"name": "s", "agentRef": "crash"}]}})  # fmt: skip

    def crash_looping() -> bool:
        r = ctl("get", "drones", "-n", cell, "-l", "apiary.io/hive=h")
        return "CrashLoopBackOff" in r.stdout

    until(crash_looping, "CrashLoopBackOff in get drones")
    wide = ctl("get", "drones", "-n", cell, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:2] == ["NAME", "STATUS"] and wide[0].split()[-1] == "AGENT"
    assert wide[1].split()[-1] == "crash", wide
    before = ctl("get", "agentspec", "cat", "-n", cell).stdout.splitlines()
    assert before[1].split()[3] == "-", before
    assert ctl("scale", "agentspec/cat", "--replicas", "2", "-n", cell).exit_code == 0

    def replicas() -> str:
        lines = ctl("get", "agentspec", "cat", "-n", cell).stdout.splitlines()
        return lines[1].split()[3] if lines[1].split()[3] == "2/2" else ""

    assert until(replicas, "REPLICAS 2/2") == "2/2"

    def backoffs() -> bool:
        with ctl.server.client(cell=cell) as c:
            items = c.list("events", cell)["items"]
        return len([e for e in items if e.get("reason") == "DroneFailed"
                    and "CrashLoopBackOff" in e.get("message", "")]) >= 2  # fmt: skip

    until(backoffs, "two back-off events")
    events = ctl("get", "events", "-n", cell).stdout.splitlines()
    failed = [line for line in events if "DroneFailed" in line and "CrashLoopBackOff" in line]
    assert len(failed) == 1, events  # one row, however many back-offs
