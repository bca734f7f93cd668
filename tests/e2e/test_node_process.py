"""``apiaryd --node-process``: the embedded node in a child process, with real apiaryd, node and
agent processes checked against the process table (src/apiary/server/nodeproc.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from apiary.client import ApiClient

from .cluster import (
    Apiaryd,
    agent_processes,
    agentspec,
    hive,
    n_ready,
    new_cell,
    run_session,
    wait_drones,
    wait_for,
    wait_no_agent_processes,
)
from .conftest import scaled_apiaryd

pytestmark = pytest.mark.slow


def node_children(server: Apiaryd) -> list[psutil.Process]:
    assert server.proc is not None
    return [p for p in psutil.Process(server.proc.pid).children()
            if "apiary.node.child" in " ".join(p.cmdline())]  # fmt: skip


def one_node(server: Apiaryd) -> psutil.Process:
    return wait_for(lambda: (n := node_children(server)) and len(n) == 1 and n[0], 20, "a node")


@pytest.fixture(scope="module")
def apart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apiaryd]:
    server = Apiaryd(tmp_path_factory.mktemp("apart") / "data", ["--node-process"]).start()
    yield server
    server.stop()


def echo_hive(server: Apiaryd, replicas: int) -> tuple[ApiClient, str]:
    cell = new_cell()
    c = server.client(cell)
    c.create(agentspec(cell, "echo"))
    c.create(hive(cell, "h", "echo", replicas))
    wait_drones(c, cell, n_ready(replicas), 20, f"{replicas} drones Ready")
    return c, cell


def test_drones_run_under_the_node_process_and_answer(apart: Apiaryd) -> None:
    c, cell = echo_hive(apart, 2)
    node = one_node(apart)
    assert apart.proc is not None and node.pid != apart.proc.pid
    agents = agent_processes(cell)
    assert len(agents) == 2
    assert all(a.ppid() == node.pid for a in agents)  # not apiaryd's children
    assert [run_session(c, cell, "h", f"m{i}") for i in range(3)] == [
        f"Echo: m{i}" for i in range(3)
    ]
    c.delete("Hive", "h", cell)
    wait_no_agent_processes(cell)


SLOW_ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do sleep 0.3; echo "Echo: $line"; done']


def test_a_killed_node_process_comes_back_and_loses_no_message(apart: Apiaryd) -> None:
    """Messages the node held (in its agent, in its relay, in flight on the bus socket) when it
    was killed, and messages sent while no node ran, are all answered by the next one."""
    cell = new_cell()
    c = apart.client(cell)
    c.create(agentspec(cell, "slow", SLOW_ECHO))
    c.create(hive(cell, "h", "slow", 1))
    wait_drones(c, cell, n_ready(1), 20, "1 drone Ready")
    node = one_node(apart)
    old_agents = {a.pid for a in agent_processes(cell)}
    answers: dict[int, object] = {}

    def send(i: int) -> None:
        answers[i] = run_session(apart.client(cell), cell, "h", f"m{i}", timeout=60)

    senders = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in senders[:3]:
        t.start()
    time.sleep(0.5)  # the first is in the agent, the others queued for it
    node.kill()  # its drones are orphans now; the next child's start reaps them
    for t in senders[3:]:  # accepted while no node runs: held until one takes them
        t.start()
    for t in senders:
        t.join(90)
    assert answers == {i: f"Echo: m{i}" for i in range(6)}
    new = one_node(apart)
    assert new.pid != node.pid
    assert not old_agents & {a.pid for a in agent_processes(cell)}
    assert not [p for p in old_agents if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
    c.delete("Hive", "h", cell)
    wait_no_agent_processes(cell)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_the_node_process_and_its_drones_end_with_apiaryd(tmp_path: Path, how: str) -> None:
    server = Apiaryd(tmp_path / "data", ["--node-process"]).start()
    try:
        _, cell = echo_hive(server, 1)
        node = one_node(server)
        t0 = time.monotonic()
        if how == "kill9":
            server.kill()
        else:
            server.stop()
            assert server.proc is not None and server.proc.returncode == 0
        wait_for(lambda: not node.is_running() or node.status() == psutil.STATUS_ZOMBIE,
                 15, "the node process to exit")  # fmt: skip
        wait_no_agent_processes(cell)
        assert time.monotonic() - t0 < 15
    finally:
        server.kill()


async def test_on_nats_the_node_process_connects_itself_and_ends_with_apiaryd(
    tmp_path: Path,
) -> None:
    """With NATS there is no served bus to lose: the lifeline pipe tells the child apiaryd died."""
    async with scaled_apiaryd(tmp_path / "data", args=("--node-process",)) as server:
        c, cell = echo_hive(server, 1)
        assert run_session(c, cell, "h", "over nats") == "Echo: over nats"
        node = one_node(server)
        server.kill()
        wait_for(lambda: not node.is_running() or node.status() == psutil.STATUS_ZOMBIE,
                 15, "the node process to exit")  # fmt: skip
        wait_no_agent_processes(cell)
