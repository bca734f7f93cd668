"""The sandbox of one drone: its uid, its private directory, its environment, what it can reach.

Real processes; the uid tests run only as root (CI), where the launcher really changes uid.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from apiary.node import LaunchError, LaunchSpec, launch, sandbox
from apiary.node.sandbox import NOBODY, Identity

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")


async def _run(spec: LaunchSpec) -> str:
    proc = await launch(spec)
    out = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
    assert await proc.wait() == 0, proc.last_stderr
    return out.decode()


def test_identity_follows_the_security_context() -> None:
    if os.geteuid() != 0:
        assert sandbox.drone_identity({"runAsUser": 1234}, NOBODY, NOBODY) == Identity()
        return
    assert sandbox.drone_identity(None, NOBODY, NOBODY) == Identity(NOBODY, NOBODY)
    assert sandbox.drone_identity({"runAsUser": 1234}, NOBODY, NOBODY) == Identity(1234, NOBODY)
    assert sandbox.drone_identity({"runAsUser": 0}, NOBODY, NOBODY) == Identity(0, 0)
    got = sandbox.drone_identity({"runAsUser": 7, "runAsGroup": 8}, NOBODY, NOBODY)
    assert got == Identity(7, 8)


def test_the_environment_is_only_what_the_spec_names() -> None:
    os.environ["APIARY_SANDBOX_LEAK"] = "node-only"
    try:
        env = sandbox.scrubbed_env({"A": "1", "APIARY_DRONE": "spoof"}, "/h", {"APIARY_DRONE": "d"})
    finally:
        del os.environ["APIARY_SANDBOX_LEAK"]
    assert env == {
        "PATH": sandbox.SAFE_PATH, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
        "HOME": "/h", "TMPDIR": "/h", "A": "1", "APIARY_DRONE": "d",
    }  # fmt: skip


def test_inaccessible_names_the_closed_directory(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    prog = closed / "agent.sh"
    prog.write_text("#!/bin/sh\necho hi\n")
    prog.chmod(0o755)
    nobody = Identity(NOBODY, NOBODY)
    assert sandbox.inaccessible(str(prog), nobody) == str(closed)
    assert sandbox.inaccessible(str(prog), Identity()) is None  # as the node: no check
    os.chmod(closed, 0o711)
    assert sandbox.inaccessible(str(prog), nobody) is None
    prog.chmod(0o700)
    assert sandbox.inaccessible(str(prog), nobody) == str(prog)  # not executable by others
    assert sandbox.inaccessible("/bin/sh", nobody) is None


@root_only
async def test_a_drone_runs_as_nobody_in_its_private_home(cell: str, tmp_path: Path) -> None:
    nobody = Identity(NOBODY, NOBODY)
    home = sandbox.private_dir(
        sandbox.private_dir_path(str(tmp_path / "work"), cell, "who"), nobody
    )
    assert os.stat(home).st_uid == NOBODY and os.stat(home).st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "work").st_mode & 0o777 == 0o711  # enter, not list
    script = 'id -u; id -g; id -G; echo "$HOME"; touch "$HOME/mine" && echo wrote'
    spec = LaunchSpec(drone="who", cell=cell, command=["/bin/sh", "-c", script],
                      run_as=nobody, home_dir=home)  # fmt: skip
    lines = (await _run(spec)).splitlines()
    assert lines == [str(NOBODY), str(NOBODY), str(NOBODY), home, "wrote"]


@root_only
async def test_a_drone_cannot_read_what_is_the_nodes(cell: str, tmp_path: Path) -> None:
    secret = tmp_path / "data" / "admin.token"
    secret.parent.mkdir()
    os.chmod(secret.parent, 0o700)
    secret.write_text("token")
    check = (
        f"cat {secret} 2>/dev/null && echo READ || echo denied; "
        f"cat /proc/{os.getpid()}/environ >/dev/null 2>&1 && echo READ || echo denied; "
        f"kill -0 {os.getpid()} 2>/dev/null && echo SIGNALLED || echo denied"
    )
    spec = LaunchSpec(drone="nosy", cell=cell, command=["/bin/sh", "-c", check],
                      run_as=Identity(NOBODY, NOBODY))  # fmt: skip
    assert (await _run(spec)).split() == ["denied", "denied", "denied"]


@root_only
async def test_a_program_the_drone_user_cannot_reach_is_a_clear_reason(
    cell: str, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir()
    os.chmod(closed, 0o700)
    script = closed / "agent.py"
    script.write_text("print('hi')\n")
    spec = LaunchSpec(drone="far", cell=cell, command=[sys.executable, str(script)],
                      run_as=Identity(NOBODY, NOBODY))  # fmt: skip
    with pytest.raises(LaunchError) as err:
        await launch(spec)
    assert err.value.reason == "ExecFailed"
    assert "65534" in err.value.message and str(closed) in err.value.message
    assert "securityContext.runAsUser" in err.value.message


async def test_only_stdio_is_inherited(cell: str) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.set_inheritable(True)  # even a descriptor marked inheritable stays here
    try:
        spec = LaunchSpec(drone="fds", cell=cell, command=["/bin/ls", "/proc/self/fd"])
        fds = sorted(int(n) for n in (await _run(spec)).split())
    finally:
        listener.close()
    assert fds[:3] == [0, 1, 2] and len(fds) <= 4  # ls's own directory descriptor at most
