"""Supervisor: a drone kept running through crashes, with CrashLoopBackOff and clear reasons."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from apiary.node import BackoffPolicy, DroneProcess, DroneRuntimeStatus, LaunchSpec, Supervisor
from apiary.node.logs import drone_log_path, read_logs

ECHO_LOOP = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[DroneRuntimeStatus] = []
        self.started: list[DroneProcess] = []

    def on_status(self, status: DroneRuntimeStatus) -> None:
        self.statuses.append(status)

    async def on_started(self, proc: DroneProcess) -> None:
        self.started.append(proc)

    def phases(self) -> list[str]:
        return [s.phase for s in self.statuses]


def supervisor(spec: LaunchSpec, rec: Recorder, clock: Any = None, **kw: Any) -> Supervisor:
    if clock is not None:
        kw.update(clock=clock, sleep=clock.sleep)
    return Supervisor(spec, on_status=rec.on_status, on_started=rec.on_started, **kw)


async def test_echo_agent_runs_and_keeper_gets_the_pipes(cell: str, waiter: Any) -> None:
    rec = Recorder()
    sup = supervisor(LaunchSpec(drone="echo", cell=cell, command=ECHO_LOOP), rec)
    sup.start()
    await waiter(lambda: rec.started, what="the start")
    proc = rec.started[0]
    assert sup.status.phase == "Running" and sup.status.pid == proc.pid
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"ping\n")
    assert await asyncio.wait_for(proc.stdout.readline(), 5) == b"Echo: ping\n"
    final = await sup.stop()
    assert rec.phases() == ["Starting", "Running", "Stopping", "Stopped"]
    assert final.phase == "Stopped" and final.restart_count == 0
    assert final.message == "killed by SIGTERM"
    assert proc.returncode == -signal.SIGTERM


async def test_killed_agent_is_restarted_and_counted(cell: str, clock: Any, waiter: Any) -> None:
    rec = Recorder()
    sup = supervisor(LaunchSpec(drone="echo", cell=cell, command=ECHO_LOOP), rec, clock)
    sup.start()
    try:
        await waiter(lambda: len(rec.started) == 1, what="the first start")
        first = rec.started[0]
        os.kill(first.pid, signal.SIGKILL)
        await waiter(lambda: len(rec.started) == 2, what="the restart")
        killed = next(s for s in rec.statuses if s.phase == "Failed")
        assert killed.reason == "Killed" and killed.signal == "SIGKILL"
        assert killed.exit_code == 137
        assert killed.message == "killed by SIGKILL; restarting in 1s"
        assert killed.next_restart_at == 1_000_000.0 + 1
        second = rec.started[1]
        assert second.pid != first.pid
        assert sup.status.phase == "Running"
        assert sup.status.restart_count == 1 and sup.status.pid == second.pid
        assert sup.status.reason is None
        # The restarted agent works through its new pipes.
        second.stdin.write(b"again\n")  # type: ignore[union-attr]
        assert await asyncio.wait_for(second.stdout.readline(), 5) == b"Echo: again\n"  # type: ignore[union-attr]

        # A crash right after the restart is a loop; one after 60 s of uptime is not.
        os.kill(second.pid, signal.SIGKILL)
        await waiter(lambda: len(rec.started) == 3, what="the second restart")
        assert rec.statuses[-3].reason == "CrashLoopBackOff"
        clock.now += 61
        os.kill(rec.started[2].pid, signal.SIGKILL)
        await waiter(lambda: len(rec.started) == 4, what="the third restart")
        assert clock.sleeps == [1, 2, 1]
        assert rec.statuses[-3].reason == "Killed"
        assert sup.status.restart_count == 3
    finally:
        await sup.stop()


async def test_crash_loop_backs_off_with_reason_and_stderr(
    cell: str, clock: Any, waiter: Any, tmp_path: Path
) -> None:
    rec = Recorder()
    crasher = ["/bin/sh", "-c", "echo starting >&2; echo 'fatal: no model configured' >&2; exit 3"]
    spec = LaunchSpec(drone="crash", cell=cell, command=crasher, log_dir=str(tmp_path))
    sup = supervisor(spec, rec, clock)
    sup.start()
    try:
        await waiter(lambda: len(clock.sleeps) >= 6, what="six back-offs")
    finally:
        final = await sup.stop()
    assert clock.sleeps[:6] == [1, 2, 4, 8, 16, 32]
    failed = [s for s in rec.statuses if s.phase == "Failed"]
    assert failed[0].reason == "Error"
    assert all(s.reason == "CrashLoopBackOff" for s in failed[1:])
    loop = failed[3]
    assert loop.exit_code == 3 and loop.signal is None and loop.pid is None
    assert (
        loop.message
        == "exited with code 3; last stderr: fatal: no model configured; restarting in 8s"
    )
    assert loop.last_stderr == ("starting", "fatal: no model configured")
    assert loop.next_restart_at is not None and loop.restart_count == 3
    assert final.phase == "Stopped"
    # Every run's stderr is in the one drone log, across restarts.
    lines = read_logs(drone_log_path(tmp_path, cell, "crash"))
    assert len([ln for ln in lines if ln.text == "fatal: no model configured"]) >= 6


async def test_missing_working_dir_backs_off_until_fixed(
    cell: str, clock: Any, waiter: Any, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    rec = Recorder()
    spec = LaunchSpec(drone="llm", cell=cell, command=ECHO_LOOP, working_dir=str(app))
    sup = supervisor(spec, rec, clock)
    sup.start()
    try:
        await waiter(lambda: len(clock.sleeps) >= 3, what="three retries")
        status = sup.status
        assert status.phase in ("Failed", "Starting")
        failed = [s for s in rec.statuses if s.phase == "Failed"]
        assert {s.reason for s in failed} == {"WorkingDirMissing"}
        assert failed[1].message == f'workingDir "{app}" does not exist; retrying in 2s'
        assert clock.sleeps[:3] == [1, 2, 4]
        assert rec.started == []
        app.mkdir()  # the operator fixes the machine
        await waiter(lambda: rec.started, what="the start after the fix")
        assert sup.status.phase == "Running" and sup.status.restart_count == 0
    finally:
        await sup.stop()


async def test_stop_cuts_a_long_back_off_short(cell: str, waiter: Any) -> None:
    rec = Recorder()
    spec = LaunchSpec(drone="gone", cell=cell, command=["no-such-agent-binary"])
    sup = supervisor(spec, rec, backoff=BackoffPolicy(initial_seconds=300))
    sup.start()
    await waiter(lambda: sup.status.phase == "Failed", what="the failure")
    assert sup.status.reason == "ExecFailed"
    assert sup.status.message == (
        'executable "no-such-agent-binary" not found in PATH; retrying in 300s'
    )
    final = await asyncio.wait_for(sup.stop(), 2)
    assert final.phase == "Stopped"


async def test_grace_period_then_sigkill_on_stop(cell: str, waiter: Any) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: print('term', "
        "file=sys.stderr, flush=True)); print('ready', flush=True); time.sleep(60)",
    ]
    rec = Recorder()
    spec = LaunchSpec(drone="stubborn", cell=cell, command=stubborn, grace_period_seconds=0.2)
    sup = supervisor(spec, rec)
    sup.start()
    await waiter(lambda: rec.started, what="the start")
    assert await asyncio.wait_for(rec.started[0].stdout.readline(), 5) == b"ready\n"  # type: ignore[union-attr]
    final = await asyncio.wait_for(sup.stop(), 5)
    assert final.phase == "Stopped" and final.signal == "SIGKILL" and final.exit_code == 137
    assert rec.started[0].last_stderr == ["term"]  # it did get the SIGTERM first


async def test_cancelled_supervisor_leaves_no_process(cell: str, waiter: Any) -> None:
    rec = Recorder()
    sup = supervisor(LaunchSpec(drone="echo", cell=cell, command=ECHO_LOOP), rec)
    task = sup.start()
    await waiter(lambda: rec.started, what="the start")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.started[0].returncode == -signal.SIGKILL
    await sup.stop()  # stopping after a cancel is fine, and does not raise CancelledError


async def test_failing_callback_does_not_stop_supervision(cell: str, waiter: Any) -> None:
    seen: list[str] = []

    def broken(status: DroneRuntimeStatus) -> None:
        seen.append(status.phase)
        raise RuntimeError("reporter is down")

    sup = Supervisor(LaunchSpec(drone="echo", cell=cell, command=ECHO_LOOP), on_status=broken)
    sup.start()
    await waiter(lambda: "Running" in seen, what="Running")
    await sup.stop()
    assert seen[-1] == "Stopped"


def test_status_as_drone_status_fields() -> None:
    st = DroneRuntimeStatus(
        phase="Failed", restart_count=2, exit_code=3, reason="CrashLoopBackOff",
        message="m", last_stderr=("a",), next_restart_at=5.0,
    )  # fmt: skip
    assert st.as_status() == {
        "phase": "Failed",
        "restartCount": 2,
        "exitCode": 3,
        "reason": "CrashLoopBackOff",
        "message": "m",
        "lastStderr": ["a"],
        "nextRestartAt": 5.0,
    }


async def test_memory_limit_death_points_at_the_limit(cell: str, clock: Any, waiter: Any) -> None:
    hog = [sys.executable, "-c", "x = bytearray(1024 * 1024 * 1024)"]
    spec = LaunchSpec(drone="hog", cell=cell, command=hog, memory_limit_bytes=256_000_000)
    rec = Recorder()
    sup = supervisor(spec, rec, clock)
    sup.start()
    try:
        await waiter(lambda: clock.sleeps, what="the first crash")
    finally:
        await sup.stop()
    failed = next(s for s in rec.statuses if s.phase == "Failed")
    assert failed.reason == "Error" and failed.exit_code == 1
    assert failed.message == (
        "exited with code 1; last stderr: MemoryError (the memory limit of 256000000 bytes of"
        " address space may be too low); restarting in 1s"
    )


async def test_unwritable_log_dir_does_not_stop_the_agent(
    cell: str, waiter: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    rec = Recorder()
    spec = LaunchSpec(drone="echo", cell=cell, command=ECHO_LOOP, log_dir=str(blocker))
    sup = supervisor(spec, rec)
    assert sup.log is None
    sup.start()
    await waiter(lambda: rec.started, what="the start")
    assert sup.status.phase == "Running"
    await sup.stop()
