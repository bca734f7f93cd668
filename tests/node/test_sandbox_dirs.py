"""The drones' private directories: a root someone else planted is refused, a failure to prepare
one is a SandboxFailed status reason (with back-off), never an exception out of the node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apiary.node import LaunchError, LaunchSpec, launch, sandbox
from apiary.node.sandbox import NOBODY, Identity

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="owning files as another uid needs root")


@root_only
def test_a_planted_work_root_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "apiary-drones-x"
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)  # another user got there first
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    (planted / "c__d").symlink_to(victim)
    with pytest.raises(PermissionError, match="not a directory owned by uid 0"):
        sandbox.private_dir(str(planted / "c__d"), Identity(NOBODY, NOBODY))
    assert victim.stat().st_uid == 0  # not chowned through the link


@root_only
def test_a_link_in_place_of_the_drones_dir_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir(mode=0o711)
    (root / "c__d").symlink_to(tmp_path)
    with pytest.raises(PermissionError):
        sandbox.private_dir(str(root / "c__d"), Identity(NOBODY, NOBODY))
    assert tmp_path.stat().st_uid == 0


def test_a_reused_dir_is_closed_again(tmp_path: Path) -> None:
    path = sandbox.private_dir_path(str(tmp_path / "work"), "c", "d")
    sandbox.private_dir(path, Identity())
    os.chmod(path, 0o755)
    sandbox.private_dir(path, Identity())
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "work").st_mode & 0o777 == 0o711


async def test_an_unpreparable_private_dir_is_a_launch_error(cell: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spec = LaunchSpec(drone="d", cell=cell, command=["/bin/true"],
                      home_dir=str(blocker / "work" / "c__d"))  # fmt: skip
    with pytest.raises(LaunchError) as info:
        await launch(spec)
    assert info.value.reason == "SandboxFailed"
    assert "private directory" in info.value.message


def test_a_node_that_is_not_root_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox, "node_is_root", lambda: False)
    monkeypatch.setattr(sandbox, "_warned", False)
    with caplog.at_level("WARNING", logger="apiary.node.sandbox"):
        sandbox.warn_if_unprivileged()
        sandbox.warn_if_unprivileged()
    lines = [r.getMessage() for r in caplog.records if r.name == "apiary.node.sandbox"]
    assert len(lines) == 1
    assert "drones run as this user" in lines[0] and "RLIMIT_AS" in lines[0]
    assert sandbox.drone_identity({"runAsUser": 1234}, NOBODY, NOBODY) == Identity()
