"""A real node reports how each drone is confined in ``status.isolation``: who it runs as (the
node default, or the AgentSpec's securityContext), its working dir and private HOME, and what
enforces its memory and cpu limits on this machine."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apiary.node import cgroups
from stack import Stack, agentspec, hive, is_ready, running_stack

ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']
ROOT = os.geteuid() == 0


@pytest.fixture
async def stack(tmp_path: Path, cell: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, cell) as s:
        yield s


def _iso(drones: list[dict[str, Any]], stage: str) -> dict[str, Any]:
    (d,) = [d for d in drones if d["spec"].get("stage") == stage]
    return dict(d["status"]["isolation"])


async def test_the_drone_status_says_how_it_is_confined(stack: Stack) -> None:
    limits = {"requests": {"cpu": 50, "memory": 16_000_000},
              "limits": {"cpu": 500, "memory": 512_000_000}}  # fmt: skip
    await stack.apply(agentspec(stack.cell, "limited", ECHO, resources=limits))
    await stack.apply(agentspec(stack.cell, "as-root", ECHO, securityContext={"runAsUser": 0}))
    await stack.apply(hive(stack.cell, "h", [("limited", "limited", 1), ("root", "as-root", 1)]))
    drones = await stack.wait(lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 10, "2 ready")
    limited, root = _iso(drones, "limited"), _iso(drones, "root")
    v2 = cgroups.node_root() is not None
    assert limited["memory"] == ("cgroup" if v2 else "rlimit")
    assert limited["cpu"] == ("cgroup" if v2 else "not enforced (no writable cgroup v2)")
    assert root["memory"] == root["cpu"] == "unlimited"
    assert limited["workingDir"] == os.getcwd()
    (named,) = [d["metadata"]["name"] for d in drones if d["spec"].get("stage") == "limited"]
    assert limited["home"].endswith(f"/{stack.cell}__{named}")
    if ROOT:
        assert limited["user"] == "65534:65534"  # the node default: nobody
        assert root["user"] == "0:0"  # the explicit opt-out
    else:
        assert limited["user"].endswith("(the node's own user)")
