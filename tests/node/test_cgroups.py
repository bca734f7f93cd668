"""cgroup v2 limits: the layout the node sets up, the files a drone's limits become, the child
joining its cgroup before exec, and the fallback (RLIMIT_AS, CPU not enforced) without one.

A fake hierarchy (plain files in tmp_path) checks what is written where; the test with the kernel
runs only on a machine whose cgroup v2 the node may write (pure v2 mount, delegated cgroup)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from apiary.node import LaunchSpec, cgroups, launch
from apiary.node.launcher import enforcement


def _fake_fs(
    tmp_path: Path, own: str, procs: str, *, controllers: str = "cpu io memory pids"
) -> tuple[Path, Path]:
    fs = tmp_path / "cgroup"
    base = fs / own.lstrip("/")
    base.mkdir(parents=True)
    (fs / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text(procs)
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text(f"0::{own}\n")
    return fs, proc_cgroup


def test_no_v2_mount_means_no_cgroup(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()  # a v1 layout: no cgroup.controllers at the top
    assert cgroups.find_root(str(tmp_path), str(tmp_path / "nothing")) is None


def test_the_drones_cgroup_gets_memory_and_cpu(tmp_path: Path) -> None:
    fs, proc = _fake_fs(tmp_path, "/system.slice/apiary.service", "")
    root = cgroups.find_root(str(fs), str(proc), pid=4242)
    assert root is not None
    assert root.path == str(fs / "system.slice/apiary.service/apiary-drones")
    assert root.controllers == {"memory", "cpu"}
    assert (fs / "system.slice/apiary.service/cgroup.subtree_control").read_text() == "+cpu +memory"
    path = cgroups.create(root, "c__d", memory_bytes=64 << 20, cpu_millicores=500)
    assert Path(path, "memory.max").read_text() == str(64 << 20)
    assert Path(path, "cpu.max").read_text() == "50000 100000"


def test_missing_controllers_fall_back(tmp_path: Path) -> None:
    fs, proc = _fake_fs(tmp_path, "/x", "", controllers="io pids")
    assert cgroups.find_root(str(fs), str(proc)) is None


def test_cpu_max_has_a_floor() -> None:
    assert cgroups.cpu_max(2000) == "200000 100000"
    assert cgroups.cpu_max(1) == "1000 100000"


def test_enforcement_says_what_holds_each_limit(tmp_path: Path) -> None:
    spec = LaunchSpec(drone="d", cell="c", command=["true"], memory_limit_bytes=1 << 30,
                      cpu_limit_millicores=250)  # fmt: skip
    assert enforcement(spec, None) == {
        "memory": "rlimit", "cpu": "not enforced (no writable cgroup v2)",
    }  # fmt: skip
    root = cgroups.CgroupRoot(str(tmp_path), frozenset({"memory", "cpu"}))
    with_root = LaunchSpec(drone="d", cell="c", command=["true"], memory_limit_bytes=1 << 30,
                           cpu_limit_millicores=250, cgroup_root=root)  # fmt: skip
    assert enforcement(with_root, str(tmp_path / "c__d")) == {"memory": "cgroup", "cpu": "cgroup"}
    bare = LaunchSpec(drone="d", cell="c", command=["true"])
    assert enforcement(bare, None) == {"memory": "unlimited", "cpu": "unlimited"}


async def test_the_child_joins_its_cgroup_before_exec_and_skips_rlimit(tmp_path: Path) -> None:
    root = cgroups.CgroupRoot(str(tmp_path), frozenset({"memory", "cpu"}))
    script = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"
    spec = LaunchSpec(drone="d", cell="c", command=[sys.executable, "-c", script],
                      memory_limit_bytes=256 << 20, cpu_limit_millicores=100,
                      cgroup_root=root)  # fmt: skip
    proc = await launch(spec)
    assert proc.limits == {"memory": "cgroup", "cpu": "cgroup"}
    out = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
    assert await proc.wait() == 0, proc.last_stderr
    assert int(out) == -1  # RLIMIT_INFINITY: the cgroup holds memory, not the address space
    cg = tmp_path / "c__d"
    assert (cg / "cgroup.procs").read_text() == "0"  # written by the child itself
    assert (cg / "memory.max").read_text() == str(256 << 20)
    assert (cg / "cpu.max").read_text() == "10000 100000"


@pytest.mark.skipif(cgroups.node_root() is None, reason="no writable cgroup v2 with memory+cpu")
async def test_a_real_cgroup_holds_the_drone_and_is_removed_after() -> None:
    root = cgroups.node_root()
    assert root is not None
    spec = LaunchSpec(drone="real", cell="cg", command=["/bin/cat", "/proc/self/cgroup"],
                      memory_limit_bytes=64 << 20, cgroup_root=root)  # fmt: skip
    proc = await launch(spec)
    out = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
    await proc.wait()
    assert out.decode().strip().endswith("/apiary-drones/cg__real")
    assert not Path(root.path, "cg__real").exists()  # noqa: ASYNC240
