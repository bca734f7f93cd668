"""Who the local node's drones run as: ``--drone-user UID[:GID]`` / ``APIARY_DRONE_USER``,
default nobody:nogroup, handed to the embedded node's runner settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiary.server.main import settings_from
from apiary.server.runtime import node_settings


def test_the_default_is_nobody(tmp_path: Path) -> None:
    s = settings_from(["--data-dir", str(tmp_path)], env={})
    assert (s.runtime.drone_uid, s.runtime.drone_gid) == (65534, 65534)
    runner = node_settings(s, tmp_path / "node").runner
    assert runner is not None and (runner.drone_uid, runner.drone_gid) == (65534, 65534)
    assert runner.state_dir == str(tmp_path / "node")


def test_flag_and_env_name_the_drone_user(tmp_path: Path) -> None:
    s = settings_from(["--data-dir", str(tmp_path), "--drone-user", "1500:1600"], env={})
    assert (s.runtime.drone_uid, s.runtime.drone_gid) == (1500, 1600)
    s = settings_from(["--data-dir", str(tmp_path)], env={"APIARY_DRONE_USER": "0"})
    assert (s.runtime.drone_uid, s.runtime.drone_gid) == (0, 0)  # the explicit opt-out
    runner = node_settings(s, tmp_path / "node").runner
    assert runner is not None and runner.drone_uid == 0


def test_a_bad_drone_user_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        settings_from(["--data-dir", str(tmp_path), "--drone-user", "nobody"], env={})
    assert info.value.code == 2
    assert "--drone-user 'nobody': use numbers" in capsys.readouterr().err
