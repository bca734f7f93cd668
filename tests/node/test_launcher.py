"""launch(): real processes in their own group, pipes for the keeper, clear launch failures."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from apiary.errors import Invalid
from apiary.node import LaunchError, LaunchSpec, launch, read_logs
from apiary.node.logs import drone_log_path
from apiary.node.orphans import list_records

ECHO_LOOP = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


async def test_seed_echo_loop_talks_through_pipes_and_stops(cell: str) -> None:
    proc = await launch(LaunchSpec(drone="echo", cell=cell, command=ECHO_LOOP))
    try:
        assert os.getpgid(proc.pid) == proc.pid  # its own process group
        assert os.getsid(proc.pid) == proc.pid  # and session
        assert proc.stdin is not None and proc.stdout is not None
        for text in ("hello", "wörld with  spaces"):
            proc.stdin.write(text.encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 5)
            assert line.decode() == f"Echo: {text}\n"
    finally:
        rc = await proc.stop(grace_seconds=5)
    assert rc == -signal.SIGTERM
    assert proc.returncode == rc
    with pytest.raises(psutil.NoSuchProcess):  # reaped, not a zombie
        psutil.Process(proc.pid).status()


async def test_environment_is_minimal_plus_spec_plus_identity(cell: str) -> None:
    os.environ["APIARY_TEST_LEAK_CHECK"] = "must-not-reach-the-agent"
    try:
        spec = LaunchSpec(
            drone="envy",
            cell=cell,
            command=["/bin/sh", "-c", "env"],
            env={"ENV_VAR": "example", "APIARY_DRONE": "spoofed", "LANG": "C"},
        )
        proc = await launch(spec)
        out = await asyncio.wait_for(proc.stdout.read(), 5)  # type: ignore[union-attr]
        assert await proc.wait() == 0
    finally:
        del os.environ["APIARY_TEST_LEAK_CHECK"]
    env = dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)
    assert env["ENV_VAR"] == "example"
    assert env["APIARY_DRONE"] == "envy"  # identity cannot be overridden by the spec
    assert env["APIARY_CELL"] == cell
    assert env["LANG"] == "C"  # the spec overrides the base
    assert env["PATH"] and env["HOME"]
    assert "APIARY_TEST_LEAK_CHECK" not in env


async def test_missing_working_dir_is_a_clear_reason(cell: str, tmp_path: Path) -> None:
    missing = tmp_path / "app"
    spec = LaunchSpec(
        drone="llm", cell=cell, command=["python", "agent.py"], working_dir=str(missing)
    )
    with pytest.raises(LaunchError) as err:
        await launch(spec)
    assert err.value.reason == "WorkingDirMissing"
    assert err.value.message == f'workingDir "{missing}" does not exist'


async def test_command_not_found_is_a_clear_reason(cell: str, tmp_path: Path) -> None:
    spec = LaunchSpec(drone="llm", cell=cell, command=["python"], env={"PATH": str(tmp_path)})
    with pytest.raises(LaunchError) as err:
        await launch(spec)
    assert err.value.reason == "ExecFailed"
    assert err.value.message == 'executable "python" not found in PATH'

    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    spec = LaunchSpec(drone="llm", cell=cell, command=["./agent.sh"], working_dir=str(tmp_path))
    with pytest.raises(LaunchError) as err:
        await launch(spec)
    assert err.value.reason == "ExecFailed"
    assert "not an executable file" in err.value.message


async def test_relative_command_runs_in_working_dir(cell: str, tmp_path: Path) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\npwd\n")
    script.chmod(0o755)
    proc = await launch(
        LaunchSpec(drone="rel", cell=cell, command=["./agent.sh"], working_dir=str(tmp_path))
    )
    out = await asyncio.wait_for(proc.stdout.read(), 5)  # type: ignore[union-attr]
    assert await proc.wait() == 0
    assert out.decode().strip() == str(tmp_path)


def test_bad_spec_names_the_fields() -> None:
    with pytest.raises(Invalid) as err:
        LaunchSpec(drone="", cell="c", command=[], stdio="tty", memory_limit_bytes=-1)  # type: ignore[arg-type]
    fields = {d.field for d in err.value.details}
    assert fields == {"drone", "command", "stdio", "memory_limit_bytes"}


async def test_memory_limit_stops_a_memory_hog(cell: str) -> None:
    hog = [sys.executable, "-c", "x = bytearray(1024 * 1024 * 1024); print('allocated')"]
    spec = LaunchSpec(drone="hog", cell=cell, command=hog, memory_limit_bytes=256_000_000)
    proc = await launch(spec)
    out = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
    rc = await proc.wait()
    assert rc == 1
    assert b"allocated" not in out
    assert proc.last_stderr[-1] == "MemoryError"


async def test_sigterm_ignoring_agent_is_killed_after_grace(cell: str) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
    ]
    proc = await launch(LaunchSpec(drone="stubborn", cell=cell, command=stubborn))
    assert await asyncio.wait_for(proc.stdout.readline(), 5) == b"ready\n"  # type: ignore[union-attr]
    started = time.monotonic()
    rc = await proc.stop(grace_seconds=0.3)
    elapsed = time.monotonic() - started
    assert rc == -signal.SIGKILL
    assert 0.3 <= elapsed < 3


def _dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie nobody has reaped yet (orphans go to PID 1, which may reap lazily)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_stop_signals_the_whole_group(cell: str, waiter: Any) -> None:
    cmd = ["/bin/sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]
    proc = await launch(LaunchSpec(drone="fam", cell=cell, command=cmd))
    assert await asyncio.wait_for(proc.stdout.readline(), 5) == b"started\n"  # type: ignore[union-attr]
    kids = psutil.Process(proc.pid).children()
    assert len(kids) == 2
    await proc.stop(grace_seconds=5)
    for kid in kids:
        await waiter(lambda k=kid: _dead(k), what=f"{kid.pid} to die")


async def test_leader_exit_takes_the_rest_of_the_group(cell: str, waiter: Any) -> None:
    cmd = ["/bin/sh", "-c", "sleep 300 & echo $!"]
    proc = await launch(LaunchSpec(drone="leaver", cell=cell, command=cmd))
    child = int(await asyncio.wait_for(proc.stdout.readline(), 5))  # type: ignore[union-attr]
    assert await proc.wait() == 0
    grandchild = psutil.Process(child)
    await waiter(lambda: _dead(grandchild), what="the grandchild to die")


async def test_log_mode_sends_stdout_and_stderr_to_the_drone_log(cell: str, tmp_path: Path) -> None:
    code = "import sys; print('out line'); print('err line', file=sys.stderr); print('\\xff')"
    spec = LaunchSpec(
        drone="web",
        cell=cell,
        command=[sys.executable, "-c", code],
        stdio="log",
        log_dir=str(tmp_path),
    )
    from apiary.node import LogWriter

    writer = LogWriter(drone_log_path(tmp_path, cell, "web"))
    proc = await launch(spec, log=writer)
    # Nothing for a keeper to read in log mode, not even through the asyncio Process.
    assert proc.stdout is None and proc.stdin is None
    assert proc.process.stdout is None and proc.process.stderr is None
    assert await proc.wait() == 0
    writer.close()
    lines = read_logs(drone_log_path(tmp_path, cell, "web"))
    got = {(line.stream, line.text) for line in lines}
    assert ("stdout", "out line") in got
    assert ("stderr", "err line") in got
    assert ("stdout", "\xff") in got
    assert proc.last_stderr == ["err line"]


async def test_process_group_is_recorded_while_alive(cell: str, tmp_path: Path) -> None:
    spec = LaunchSpec(drone="rec", cell=cell, command=ECHO_LOOP, state_dir=str(tmp_path))
    proc = await launch(spec)
    [rec] = list_records(tmp_path)
    assert (rec.cell, rec.drone, rec.pid, rec.pgid) == (cell, "rec", proc.pid, proc.pid)
    await proc.stop(grace_seconds=5)
    assert list_records(tmp_path) == []
