"""The runtime's promises with real processes: apiaryd, node agents and agents, checked against
the machine's process table (issue "Agent runtime", acceptance)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from services import fresh_postgres_url, require_postgres

from .cluster import (
    Apiaryd,
    agent_processes,
    agentspec,
    drones,
    hive,
    n_ready,
    new_cell,
    retire,
    start_node,
    wait_drones,
    wait_no_agent_processes,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def apiaryd(tmp_path: Path) -> Iterator[Apiaryd]:
    server = Apiaryd(tmp_path / "data").start()
    yield server
    retire(server)


def _set_replicas(client: object, cell: str, name: str, replicas: int) -> None:
    from apiary.client import ApiClient

    assert isinstance(client, ApiClient)
    for _ in range(10):
        obj = client.get("Hive", name, cell)
        obj["spec"]["stages"][0]["replicas"] = replicas
        try:
            client.update(obj)
            return
        except Exception:  # 409: the controllers wrote status meanwhile
            continue
    raise AssertionError("could not scale")


def test_three_replicas_ready_within_two_seconds_and_listed(apiaryd: Apiaryd) -> None:
    cell = new_cell()
    c = apiaryd.client(cell)
    c.create(agentspec(cell, "echo-agent"))
    t0 = time.monotonic()
    c.create(hive(cell, "echoes", "echo-agent", 3))
    ready = wait_drones(c, cell, n_ready(3), 10, "3 drones Ready")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"3 drones took {elapsed:.2f}s"
    for d in ready:
        st = d["status"]
        assert st["nodeName"] and st["restartCount"] == 0 and psutil.pid_exists(st["pid"])
    assert len(agent_processes(cell)) == 3
    c.delete("Hive", "echoes", cell)
    wait_no_agent_processes(cell)


def test_scale_3_to_10_to_0_and_delete_leaves_no_process(apiaryd: Apiaryd) -> None:
    cell = new_cell()
    c = apiaryd.client(cell)
    c.create(agentspec(cell, "echo-agent"))
    c.create(hive(cell, "h", "echo-agent", 3))
    wait_drones(c, cell, n_ready(3), 15, "3 Ready")
    assert len(agent_processes(cell)) == 3
    _set_replicas(c, cell, "h", 10)
    wait_drones(c, cell, n_ready(10), 20, "10 Ready")
    assert len(agent_processes(cell)) == 10
    _set_replicas(c, cell, "h", 0)
    wait_drones(c, cell, lambda ds: not ds, 20, "no drones")
    wait_no_agent_processes(cell)
    _set_replicas(c, cell, "h", 2)
    wait_drones(c, cell, n_ready(2), 15, "2 Ready")
    c.delete("Hive", "h", cell)
    wait_drones(c, cell, lambda ds: not ds, 15, "drones deleted with the hive")
    wait_no_agent_processes(cell)


def test_kill9_of_apiaryd_orphans_nothing_and_drones_converge(apiaryd: Apiaryd) -> None:
    cell = new_cell()
    c = apiaryd.client(cell)
    c.create(agentspec(cell, "echo-agent"))
    c.create(hive(cell, "h", "echo-agent", 3))
    before = wait_drones(c, cell, n_ready(3), 15, "3 Ready")
    old_pids = {d["status"]["pid"] for d in before}
    apiaryd.kill()
    wait_no_agent_processes(cell, timeout=5)  # PDEATHSIG: nothing outlives the node agent
    apiaryd.start()
    c = apiaryd.client(cell)
    after = wait_drones(
        c, cell,
        lambda ds: n_ready(3)(ds) and not {d["status"]["pid"] for d in ds} & old_pids,
        20, "3 Ready again with new processes",
    )  # fmt: skip
    assert {p.pid for p in agent_processes(cell)} == {d["status"]["pid"] for d in after}
    c.delete("Hive", "h", cell)
    wait_no_agent_processes(cell)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    require_postgres()
    async with fresh_postgres_url() as url:
        yield url


def test_postgres_two_node_agents_spread_and_fail_over(tmp_path: Path, pg_url: str) -> None:
    server = Apiaryd(tmp_path / "cp", ["--store", pg_url, "--no-local-node"]).start()
    nodes = []
    try:
        nodes = [start_node(server, n, tmp_path / n) for n in ("node-a", "node-b")]
        cell = new_cell()
        c = server.client(cell)
        c.create(agentspec(cell, "echo-agent"))
        c.create(hive(cell, "h", "echo-agent", 4))
        placed = wait_drones(c, cell, n_ready(4), 20, "4 Ready")
        assert {d["status"]["nodeName"] for d in placed} == {"node-a", "node-b"}
        victim = nodes[0]
        victim.kill()
        t0 = time.monotonic()
        moved = wait_drones(
            c, cell,
            lambda ds: n_ready(4)(ds) and all(d["status"]["nodeName"] == "node-b" for d in ds),
            30, "every drone Ready on node-b",
        )  # fmt: skip
        took = time.monotonic() - t0
        assert took <= 15.0, f"failover took {took:.1f}s"
        assert len(moved) == 4
        assert len(agent_processes(cell)) == 4  # node-a's agents died with it
        c.delete("Hive", "h", cell)
        wait_no_agent_processes(cell)
        assert drones(c, cell) == []
    finally:
        for n in nodes:
            n.stop()
        server.stop()
