"""Issue 13 point 1 end to end: on a real apiaryd and its node, a template change under a Cell
quota with no room for a surge drone rolls every drone over, in place, and the Hive says so."""

from __future__ import annotations

import time

import pytest

from .cluster import Apiaryd, agentspec, hive, is_ready, new_cell, wait_drones

pytestmark = pytest.mark.slow


def test_a_rollout_with_no_quota_room_replaces_in_place(embedded: Apiaryd) -> None:
    cell = new_cell()
    c = embedded.client(cell)
    c.apply({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell},
             "spec": {"resourceQuota": {"maxCPU": 100}}})  # fmt: skip
    c.apply(agentspec(cell, "echo", cpu=50))
    c.apply(hive(cell, "h", "echo", 2))
    first = wait_drones(c, cell, lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 30, "2 up")
    old = {d["spec"]["templateHash"] for d in first}

    spec = c.get("AgentSpec", "echo", cell)
    spec["spec"]["runtime"]["env"] = [{"name": "VERSION", "value": "2"}]
    c.update(spec)

    def rolled(ds: list[dict]) -> bool:
        live = [d for d in ds if not d["metadata"].get("deletionTimestamp")]
        return (
            len(live) == 2
            and all(map(is_ready, live))
            and not {d["spec"]["templateHash"] for d in live} & old
        )

    wait_drones(c, cell, rolled, 45, "both drones on the new template")
    events = c.list("Event", cell)["items"]
    assert any(e["reason"] == "RollingInPlace" for e in events), [e["reason"] for e in events]
    deadline = time.monotonic() + 15
    while True:
        status = c.get("Hive", "h", cell)["status"]
        progressing = next(x for x in status["conditions"] if x["type"] == "Progressing")
        if progressing["reason"] == "Complete" and status["readyReplicas"] == 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    deadline = time.monotonic() + 15  # status.used: written within a second or so
    while True:
        used = (c.get("Cell", cell, "").get("status") or {}).get("used") or {}
        if used.get("maxCPU") == 100 and used.get("maxTotalDrones") == 2:
            break
        assert time.monotonic() < deadline, used
        time.sleep(0.2)
