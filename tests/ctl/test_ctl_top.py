"""``apiaryctl top drones|hives``: the tables and data against a real apiaryd whose embedded node
runs real agents that handled real messages (``apiaryctl run``), plus the row arithmetic."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctlkit import Ctl, Server, start_server

from apiary.ctl.commands.top import by_cpu, drone_row, fmt_latency, fmt_memory, hive_rows

CELL = "top"
ECHO = ["/bin/sh", "-c", 'while IFS= read -r l; do echo "Echo: $l"; done']
UPPER = ["/bin/sh", "-c", 'while IFS= read -r l; do echo "$l" | tr a-z A-Z; done']
Obj = dict[str, Any]


def agentspec(name: str, command: list[str]) -> Obj:
    return {
        "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": CELL},
        "spec": {"runtime": {"command": command}, "interface": {"type": "stdin", "format": "text"}},
    }  # fmt: skip


def hive(name: str, stages: list[tuple[str, str, int]], **labels: str) -> Obj:
    return {
        "apiVersion": "apiary.io/v1", "kind": "Hive",
        "metadata": {"name": name, "namespace": CELL, "labels": labels},
        "spec": {"pattern": "pipeline",
                 "stages": [{"name": s, "agentRef": a, "replicas": r} for s, a, r in stages]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An apiaryd whose node samples usage every 0.2 s (the default 5 s would slow the test)."""
    old = os.environ.get("APIARY_NODE_USAGE_SECONDS")
    os.environ["APIARY_NODE_USAGE_SECONDS"] = "0.2"
    try:
        srv = start_server(tmp_path_factory.mktemp("apiaryd-top") / "data")
    finally:
        if old is None:
            del os.environ["APIARY_NODE_USAGE_SECONDS"]
        else:
            os.environ["APIARY_NODE_USAGE_SECONDS"] = old
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def busy(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """Hive ``pipe`` (upper → echo x2) ran 4 inputs; hive ``idle`` ran none; usage reported."""
    with server.client(cell=CELL) as client:
        for obj in (
            agentspec("echo", ECHO),
            agentspec("upper", UPPER),
            hive("pipe", [("up", "upper", 1), ("echo", "echo", 2)], team="a"),
            hive("idle", [("only", "echo", 1)], team="b"),
        ):
            client.apply(obj)
        _until(client, lambda ds: len(ds) == 4 and all(_st(d).get("ready") for d in ds), "ready")
        time.sleep(0.3)  # a worker subscribes to its stage right after reporting Ready
        ctl = Ctl(server, tmp_path_factory.mktemp("ctl"), {"APIARY_CELL": CELL})
        for i in range(4):
            r = ctl("run", "hive/pipe", "--input", f"hi {i}")
            assert r.exit_code == 0 and r.stdout == f"Echo: HI {i}\n", r

        def reported(ds: list[Obj]) -> bool:
            pipe = [d for d in ds if d["spec"].get("hive") == "pipe"]
            msgs = [_st(d).get("usage", {}).get("messages", 0) for d in pipe]
            return sum(msgs) == 8 and all("usage" in _st(d) for d in ds)

        _until(client, reported, "usage of 8 messages")
    return server


def _st(d: Obj) -> Obj:
    return dict(d.get("status") or {})


def _until(client: Any, pred: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        drones = client.list("drones", CELL)["items"]
        if pred(drones):
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {drones}"
        time.sleep(0.05)


@pytest.fixture
def top(busy: Server, tmp_path: Path) -> Ctl:
    return Ctl(busy, tmp_path, {"APIARY_CELL": CELL})


def _table(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = stdout.splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


def test_top_drones_table(top: Ctl) -> None:
    r = top("top", "drones")
    assert r.exit_code == 0, r
    header, rows = _table(r.stdout)
    assert header == ["NAME", "HIVE", "STAGE", "CPU(m)", "MEMORY", "MSGS", "FAILED",
                      "INFLIGHT", "P50", "P99"]  # fmt: skip
    assert len(rows) == 4
    cpu = [int(row[3]) for row in rows]
    assert cpu == sorted(cpu, reverse=True)  # busiest first
    pipe = [row for row in rows if row[1] == "pipe"]
    assert sorted(row[2] for row in pipe) == ["echo", "echo", "up"]
    up = next(row for row in pipe if row[2] == "up")
    assert up[5] == "4" and up[6] == "0" and up[7] == "0"
    assert up[8].endswith("ms") or up[8].endswith("s")
    assert sum(int(row[5]) for row in pipe if row[2] == "echo") == 4
    (idle,) = [row for row in rows if row[1] == "idle"]
    assert idle[5] == "0" and idle[8] == "-" and idle[9] == "-"  # no message, no latency
    assert all(row[4].endswith(("Ki", "Mi")) for row in rows)  # a shell's RSS


def test_top_drones_selector_wide_all_cells_and_json(top: Ctl) -> None:
    r = top("top", "drones", "-l", "apiary.io/hive=idle", "-o", "wide")
    assert r.exit_code == 0, r
    header, rows = _table(r.stdout)
    assert header[-2:] == ["NODE", "UPDATED"] and len(rows) == 1
    r = top("top", "drones", "-A")
    header, rows = _table(r.stdout)
    assert header[0] == "CELL" and len(rows) >= 4 and {row[0] for row in rows} >= {CELL}
    r = top("top", "drones", "-o", "json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["kind"] == "DroneUsageList"
    up = next(i for i in doc["items"] if i["stage"] == "up")
    assert up["messages"] == 4 and up["latencyP50Ms"] > 0 and up["memoryBytes"] > 0
    assert up["hive"] == "pipe" and up["cell"] == CELL and up["updatedTime"].endswith("Z")


def test_top_hives_sums_drones(top: Ctl) -> None:
    r = top("top", "hives")
    assert r.exit_code == 0, r
    header, rows = _table(r.stdout)
    assert header == ["NAME", "DRONES", "CPU(m)", "MEMORY", "MSGS", "FAILED", "INFLIGHT",
                      "P50", "P99"]  # fmt: skip
    by_name = {row[0]: row for row in rows}
    assert by_name["pipe"][1] == "3" and by_name["pipe"][4] == "8"
    assert by_name["idle"][1] == "1" and by_name["idle"][4] == "0" and by_name["idle"][7] == "-"
    doc = json.loads(top("top", "hives", "-o", "json").stdout)
    drones = json.loads(top("top", "drones", "-o", "json").stdout)["items"]
    pipe = next(i for i in doc["items"] if i["name"] == "pipe")
    mine = [d for d in drones if d["hive"] == "pipe"]
    assert pipe["memoryBytes"] == sum(d["memoryBytes"] for d in mine)
    assert pipe["latencyP99Ms"] == max(d["latencyP99Ms"] for d in mine)
    r = top("top", "hives", "-l", "team=b", "-o", "name")
    assert r.stdout == "hive/idle\n"


def test_empty_cell_and_bad_usage(top: Ctl) -> None:
    r = top("top", "drones", "-n", "nothing-here")
    assert r.exit_code == 0 and r.stdout == "", r
    assert "No drones found in cell 'nothing-here'." in r.stderr
    r = top("top", "hives", "-n", "nothing-here", "-o", "json")
    assert json.loads(r.stdout) == {"kind": "HiveUsageList", "items": []}
    r = top("top", "pods")
    assert r.exit_code == 2 and "pods" in r.stderr, r
    r = top("top", "drones", "-l", "a in (")
    assert r.exit_code == 1 and r.stderr.startswith("error:"), r


def _drone(name: str, hive_name: str | None, usage: Obj | None) -> Obj:
    status: Obj = {"phase": "Running"}
    if usage is not None:
        status["usage"] = usage
    return {"metadata": {"name": name, "namespace": "c"},
            "spec": {"hive": hive_name, "stage": "s"}, "status": status}  # fmt: skip


def test_row_arithmetic_without_a_server() -> None:
    drones = [
        _drone("a", "h", {"cpuMillicores": 5, "memoryBytes": 1024, "messages": 2, "failed": 1,
                          "inFlight": 0, "latencyP50Ms": 2.5, "latencyP99Ms": 10.0}),
        _drone("b", "h", {"cpuMillicores": 50, "memoryBytes": 2048, "messages": 3, "failed": 0,
                          "inFlight": 1, "latencyP50Ms": 1.0, "latencyP99Ms": 25.0}),
        _drone("c", "h", None),  # not reported yet
        _drone("d", None, {"cpuMillicores": 900}),  # standalone: in no hive row
    ]  # fmt: skip
    rows = by_cpu([drone_row(d) for d in drones])
    assert [r["name"] for r in rows] == ["d", "b", "a", "c"]
    hives = [{"metadata": {"name": "h", "namespace": "c"}},
             {"metadata": {"name": "empty", "namespace": "c"}}]  # fmt: skip
    h, empty = hive_rows(hives, drones)
    assert h["drones"] == 3 and h["reporting"] == 2
    assert (h["cpuMillicores"], h["memoryBytes"], h["messages"], h["failed"], h["inFlight"]) == (
        55, 3072, 5, 1, 1)  # fmt: skip
    assert (h["latencyP50Ms"], h["latencyP99Ms"]) == (2.5, 25.0)
    assert empty["drones"] == 0 and empty["cpuMillicores"] is None
    assert [fmt_memory(v) for v in (512, 40 * 1024, 12 << 20, 3 << 30, None)] == [
        "512", "40Ki", "12Mi", "3Gi", "-"]  # fmt: skip
    assert [fmt_latency(v) for v in (0.5, 25.0, 2500.0, None)] == ["0.5ms", "25ms", "2.5s", "-"]
