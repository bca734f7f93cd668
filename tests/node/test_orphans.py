"""Nothing outlives a killed node agent: PDEATHSIG for the agent, reap_orphans for the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from apiary.node.orphans import (
    ProcessRecord,
    list_records,
    process_start_time,
    reap_orphans,
    record_path,
    record_process,
)

# A stand-in for the node agent: launches one drone through the real launcher, reports the pids,
# then idles until it is killed -9 (so it never gets to clean up).
PARENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from apiary.node import LaunchSpec, launch

    async def main() -> None:
        cell, state_dir, command = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        proc = await launch(LaunchSpec(drone="d", cell=cell, command=command, state_dir=state_dir))
        report = {"pid": proc.pid}
        if command[0] == "/bin/sh":
            report["grandchild"] = int(await proc.stdout.readline())
        print(json.dumps(report), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def _start_parent(cell: str, state_dir: Path, command: list[str]) -> tuple[Any, dict[str, int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, cell, str(state_dir), json.dumps(command)],
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line, "the parent process died before launching its drone"
    return parent, json.loads(line)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _eventually(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_agent_dies_with_its_killed_parent(cell: str, tmp_path: Path) -> None:
    parent, pids = _start_parent(
        cell, tmp_path, [sys.executable, "-c", "import time; time.sleep(300)"]
    )
    agent = pids["pid"]
    assert not _gone(agent)
    assert [r.pid for r in list_records(tmp_path)] == [agent]
    parent.send_signal(signal.SIGKILL)
    parent.wait(5)
    parent.stdout.close()  # type: ignore[union-attr]
    assert _eventually(lambda: _gone(agent)), "PR_SET_PDEATHSIG did not kill the agent"
    # The record outlived the parent; reaping finds nothing alive and clears it.
    assert reap_orphans(tmp_path, grace_seconds=1) == []
    assert list_records(tmp_path) == []


def test_reap_orphans_kills_a_surviving_grandchild(cell: str, tmp_path: Path) -> None:
    command = ["/bin/sh", "-c", "sleep 300 & echo $!; wait"]
    parent, pids = _start_parent(cell, tmp_path, command)
    shell, grandchild = pids["pid"], pids["grandchild"]
    parent.send_signal(signal.SIGKILL)
    parent.wait(5)
    parent.stdout.close()  # type: ignore[union-attr]
    assert _eventually(lambda: _gone(shell)), "PR_SET_PDEATHSIG did not kill the shell"
    assert not _gone(grandchild)  # PDEATHSIG does not reach it: this is what records are for
    assert psutil.Process(grandchild).environ()["APIARY_CELL"] == cell

    reaped = reap_orphans(tmp_path, grace_seconds=2)
    assert [(r.cell, r.drone, r.pid) for r in reaped] == [(cell, "d", shell)]
    assert _eventually(lambda: _gone(grandchild), timeout=1)
    assert list_records(tmp_path) == []
    assert not record_path(tmp_path, cell, "d").exists()


def _own_session(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_term_ignoring_orphan_gets_sigkill(cell: str, tmp_path: Path) -> None:
    proc = _own_session(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    try:
        record_process(tmp_path, cell, "stubborn", proc.pid, proc.pid)
        started = time.monotonic()
        assert len(reap_orphans(tmp_path, grace_seconds=0.2)) == 1
        assert time.monotonic() - started >= 0.2
        assert proc.wait(2) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def test_reused_pid_is_left_alone(cell: str, tmp_path: Path) -> None:
    stranger = _own_session("import time; print('ready', flush=True); time.sleep(60)")
    try:
        start = process_start_time(stranger.pid)
        assert start is not None
        # A record from an earlier boot or an earlier process that happened to have this pid.
        rec = ProcessRecord(cell, "old", stranger.pid, stranger.pid, start - 100)
        record_path(tmp_path, cell, "old").write_text(json.dumps(rec.__dict__))
        assert list_records(tmp_path) == [rec]
        assert reap_orphans(tmp_path, grace_seconds=0.2) == []
        assert stranger.poll() is None  # still running
        assert list_records(tmp_path) == []
    finally:
        stranger.kill()
        stranger.wait()
        stranger.stdout.close()  # type: ignore[union-attr]


def test_no_state_dir_and_broken_records_are_harmless(tmp_path: Path) -> None:
    assert reap_orphans(tmp_path / "missing") == []
    (tmp_path / "x__y.pid").write_text("{not json")
    assert list_records(tmp_path) == []
    assert reap_orphans(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # an unreadable record cannot protect anything
