"""Records of live drone process groups, so a restarted node agent can kill what its crash left.

``PR_SET_PDEATHSIG`` kills a drone's direct process when the node agent dies, but not what that
process started (``sh -c 'agent & …'``), and it does not exist off Linux. So the launcher writes one
small JSON file per live group, ``<state_dir>/<cell>__<drone>.pid``, holding the leader's pid, the
process group id and the leader's start time (kernel clock ticks since boot, from
``/proc/<pid>/stat``), and removes it once the group is reaped. On start the node agent calls
:func:`reap_orphans`: every recorded group still alive is sent SIGTERM, then SIGKILL after a grace
period. The start time is what makes this safe: a recorded pid that now belongs to an unrelated
process (pids are reused, ``pid_max`` is only 32768 on many machines) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    """One drone's process group as recorded on disk."""

    cell: str
    drone: str
    pid: int
    pgid: int
    start_time: float


@dataclass(frozen=True)
class _ProcInfo:
    state: str
    pgid: int
    start_time: float

    @property
    def alive(self) -> bool:
        # A zombie has exited; it only waits for a parent (maybe none, in a container) to reap it.
        return self.state not in ("Z", "X", "x")


def record_path(state_dir: str | os.PathLike[str], cell: str, drone: str) -> Path:
    return Path(state_dir) / f"{cell}__{drone}.pid"


def _proc_info(pid: int) -> _ProcInfo | None:
    """State, process group and start time of ``pid``, or None if there is no such process."""
    if _PROC.is_dir():
        try:
            raw = (_PROC / str(pid) / "stat").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rindex(b")") + 2 :].split()
        return _ProcInfo(fields[0].decode(), int(fields[2]), float(fields[19]))
    import psutil  # only where there is no /proc (macOS, BSD)

    try:
        p = psutil.Process(pid)
        status = p.status()
        return _ProcInfo(
            "Z" if status == psutil.STATUS_ZOMBIE else "R", os.getpgid(pid), p.create_time()
        )
    except (psutil.Error, ProcessLookupError):
        return None


def process_start_time(pid: int) -> float | None:
    """The start time that identifies ``pid`` across pid reuse (None if it does not exist)."""
    info = _proc_info(pid)
    return info.start_time if info else None


def _all_pids() -> list[int]:
    if _PROC.is_dir():
        return [int(name) for name in os.listdir(_PROC) if name.isdigit()]
    import psutil

    return psutil.pids()


def record_process(
    state_dir: str | os.PathLike[str], cell: str, drone: str, pid: int, pgid: int
) -> ProcessRecord | None:
    """Write the record for a freshly started group (atomically: a crash leaves old or new).

    Returns None if the process is already gone (nothing to protect against)."""
    start = process_start_time(pid)
    if start is None:
        return None
    rec = ProcessRecord(cell, drone, pid, pgid, start)
    path = record_path(state_dir, cell, drone)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    tmp.replace(path)
    return rec


def forget_process(state_dir: str | os.PathLike[str], cell: str, drone: str, pid: int) -> None:
    """Remove the record once the group is reaped — only if it still names ``pid``, so a record
    written meanwhile by a newer start of the same drone survives."""
    path = record_path(state_dir, cell, drone)
    rec = _load(path)
    if rec is None or rec.pid == pid:
        path.unlink(missing_ok=True)


def _load(path: Path) -> ProcessRecord | None:
    try:
        data = json.loads(path.read_text())
        return ProcessRecord(
            cell=str(data["cell"]),
            drone=str(data["drone"]),
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            start_time=float(data["start_time"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_records(state_dir: str | os.PathLike[str]) -> list[ProcessRecord]:
    d = Path(state_dir)
    if not d.is_dir():
        return []
    records = (_load(p) for p in sorted(d.glob("*__*.pid")))
    return [r for r in records if r is not None]


def _live(records: list[ProcessRecord]) -> list[ProcessRecord]:
    """The records whose group still has a live process — one scan of the process table for all.

    The leader may be gone while grandchildren keep the group id, so members are matched by group
    id and by having started no earlier than the leader; a leader pid now owned by a process with
    another start time means the id was reused and the group is not ours."""
    if not records:
        return []
    wanted: dict[int, ProcessRecord] = {}
    for rec in records:
        leader = _proc_info(rec.pid)
        if leader is None or leader.start_time == rec.start_time:
            wanted[rec.pgid] = rec
    found: set[int] = set()
    for pid in _all_pids():
        info = _proc_info(pid)
        if info is None or not info.alive:
            continue
        rec_for_group = wanted.get(info.pgid)
        if rec_for_group is not None and info.start_time >= rec_for_group.start_time:
            found.add(info.pgid)
    return [r for r in records if r.pgid in found and wanted.get(r.pgid) is r]


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap_orphans(
    state_dir: str | os.PathLike[str], *, grace_seconds: float = 5.0, poll_seconds: float = 0.02
) -> list[ProcessRecord]:
    """Kill every recorded group that is still alive (SIGTERM, then SIGKILL after
    ``grace_seconds``) and delete all records. Returns the records of the groups it killed.

    Blocking; an async caller runs it in a thread (``asyncio.to_thread``)."""
    records = list_records(state_dir)
    alive = _live(records)
    for rec in alive:
        _killpg(rec.pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    pending = list(alive)
    while pending and time.monotonic() < deadline:
        time.sleep(poll_seconds)
        pending = _live(pending)
    for rec in pending:
        _killpg(rec.pgid, signal.SIGKILL)
    # SIGKILL cannot be ignored, but the kernel takes a moment to tear processes down.
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        time.sleep(poll_seconds)
        pending = _live(pending)
    for rec in records:
        forget_process(state_dir, rec.cell, rec.drone, rec.pid)
    if Path(state_dir).is_dir():  # leftovers of a crash mid-write, and unreadable records
        for stale in Path(state_dir).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        for path in Path(state_dir).glob("*__*.pid"):
            if _load(path) is None:
                path.unlink(missing_ok=True)
    return alive
