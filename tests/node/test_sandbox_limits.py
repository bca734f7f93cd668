"""The memory limit holds for a drone that runs as another user, and the drone cannot lift it.

Real processes, as root (CI), where the launcher changes uid: the limit is set before the uid
change, hard and soft alike, so the unprivileged agent cannot raise it again."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from apiary.node import LaunchSpec, launch
from apiary.node.sandbox import NOBODY, Identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")

HOG = """
import json, os, resource
found = {"uid": os.getuid()}
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    found["lifted"] = True
except (ValueError, OSError):
    found["lifted"] = False
try:
    x = bytearray(1024 * 1024 * 1024)
    found["allocated"] = True
except MemoryError:
    found["allocated"] = False
print(json.dumps(found))
"""


async def test_a_drone_as_nobody_cannot_allocate_beyond_its_limit(cell: str) -> None:
    spec = LaunchSpec(drone="hog", cell=cell, command=[sys.executable, "-c", HOG],
                      memory_limit_bytes=256_000_000, run_as=Identity(NOBODY, NOBODY))  # fmt: skip
    proc = await launch(spec)
    assert proc.limits["memory"] in ("rlimit", "cgroup")
    out = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
    rc = await proc.wait()
    if proc.limits["memory"] == "cgroup":  # resident memory: the kernel OOM-kills the drone
        assert rc != 0 and b'"allocated": true' not in out
        return
    assert rc == 0, proc.last_stderr
    assert json.loads(out) == {"uid": NOBODY, "lifted": False, "allocated": False}
