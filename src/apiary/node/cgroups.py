"""cgroup v2 limits for drones: ``resources.limits.memory`` as ``memory.max``, ``limits.cpu`` as
``cpu.max``.

Used when the node finds a writable cgroup v2 hierarchy with the ``memory`` and ``cpu``
controllers (a pure v2 mount at ``/sys/fs/cgroup``, as systemd sets up, with the node's own
cgroup delegated to it, e.g. ``Delegate=yes`` or a container that owns its cgroup). Layout, under
the node's own cgroup ``<own>`` (from ``/proc/self/cgroup``)::

    <own>/apiary-node/                  the node process itself, when it had to leave <own>
    <own>/apiary-drones/                subtree_control: +memory +cpu
    <own>/apiary-drones/<cell>__<drone>/  memory.max, memory.swap.max=0, cpu.max; the drone

cgroup v2 lets a cgroup hand controllers to its children only when it holds no process itself,
so a node that is the only process of ``<own>`` moves itself into ``apiary-node``; when other
processes share ``<own>`` it leaves them alone and falls back to ``RLIMIT_AS`` (no CPU limit).
The drone joins its cgroup in the forked child before ``exec`` (it writes ``0`` to
``cgroup.procs`` through a descriptor the parent opened), so not one instruction of the agent
runs outside it. When the drone's main process exits, ``cgroup.kill`` ends whatever it left in
the cgroup (even a child that left the process group) and the cgroup is removed.

Unlike ``RLIMIT_AS`` the memory limit counts resident memory: a drone beyond it is OOM-killed
(``memory.events`` says so) rather than seeing allocations fail.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

CGROUP_FS = "/sys/fs/cgroup"
CPU_PERIOD_US = 100_000
"""``cpu.max`` period; a limit of ``m`` millicores is a quota of ``m * 100`` µs per period."""

DRONES_DIR = "apiary-drones"
NODE_DIR = "apiary-node"
WANTED = ("memory", "cpu")


@dataclass(frozen=True)
class CgroupRoot:
    """Where drones' cgroups are created and which of ``memory``/``cpu`` they may use."""

    path: str
    controllers: frozenset[str]

    def enforces(self, controller: str) -> bool:
        return controller in self.controllers


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _write(path: str, value: str) -> None:
    # O_CREAT changes nothing in a real cgroupfs (its files exist; it creates none) and lets the
    # tests use a plain directory as a fake hierarchy.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def own_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str | None:
    """This process's cgroup v2 path (the ``0::`` line), or None without one."""
    try:
        lines = _read(proc_cgroup).splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def find_root(
    fs: str = CGROUP_FS, proc_cgroup: str = "/proc/self/cgroup", *, pid: int | None = None
) -> CgroupRoot | None:
    """Set up ``<own>/apiary-drones`` and return it, or None when cgroup v2 cannot limit drones
    here (not a v2 mount, no memory/cpu controller, not writable, shared with other processes).
    Never raises: no cgroup means the rlimit fallback, not a node that cannot start."""
    try:
        return _find_root(fs, proc_cgroup, os.getpid() if pid is None else pid)
    except OSError as exc:
        log.info(
            "cgroup v2 limits unavailable: drones get RLIMIT_AS, no CPU limit",
            extra={"error": str(exc)},
        )
        return None


def _find_root(fs: str, proc_cgroup: str, pid: int) -> CgroupRoot | None:
    if not os.path.isfile(os.path.join(fs, "cgroup.controllers")):
        return None  # not cgroup v2 (v1 or a hybrid layout) at this mount point
    own = own_cgroup(proc_cgroup)
    if own is None:
        return None
    base = os.path.join(fs, own.lstrip("/"))
    offered = set(_read(os.path.join(base, "cgroup.controllers")).split())
    controllers = frozenset(c for c in WANTED if c in offered)
    if not controllers or not os.access(base, os.W_OK):
        return None
    wanted = " ".join(f"+{c}" for c in sorted(controllers))
    enabled = set(_read(os.path.join(base, "cgroup.subtree_control")).split())
    if not controllers <= enabled:
        try:
            _write(os.path.join(base, "cgroup.subtree_control"), wanted)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # Processes in <own> itself: only when they are all ours may we move them out.
            members = _read(os.path.join(base, "cgroup.procs")).split()
            if members != [str(pid)]:
                log.info(
                    "the node's cgroup has other processes: drones get RLIMIT_AS, no CPU limit",
                    extra={"cgroup": own},
                )
                return None
            leaf = os.path.join(base, NODE_DIR)
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), str(pid))
            _write(os.path.join(base, "cgroup.subtree_control"), wanted)
    drones = os.path.join(base, DRONES_DIR)
    os.makedirs(drones, exist_ok=True)
    _write(os.path.join(drones, "cgroup.subtree_control"), wanted)
    return CgroupRoot(drones, controllers)


_cached: dict[str, CgroupRoot | None] = {}


def node_root(fs: str = CGROUP_FS) -> CgroupRoot | None:
    """:func:`find_root` once per process (the node's cgroup does not change under it)."""
    if fs not in _cached:
        _cached[fs] = find_root(fs)
    return _cached[fs]


def cpu_max(millicores: int) -> str:
    """``cpu.max`` for a limit in millicores: 500m → ``50000 100000`` (half a CPU)."""
    quota = max(1000, millicores * CPU_PERIOD_US // 1000)  # the kernel's minimum is 1 ms
    return f"{quota} {CPU_PERIOD_US}"


def create(
    root: CgroupRoot, name: str, *, memory_bytes: int | None, cpu_millicores: int | None
) -> str:
    """Create (or reuse, after a crash) the drone's cgroup and write its limits; its path."""
    path = os.path.join(root.path, name)
    os.makedirs(path, exist_ok=True)
    if root.enforces("memory"):
        _write(os.path.join(path, "memory.max"), str(memory_bytes) if memory_bytes else "max")
        swap = os.path.join(path, "memory.swap.max")
        if memory_bytes and os.path.exists(swap):
            _write(swap, "0")  # the limit is the limit, not "that much RAM plus swap"
    if root.enforces("cpu"):
        _write(os.path.join(path, "cpu.max"), cpu_max(cpu_millicores) if cpu_millicores else "max")
    return path


def open_procs(path: str) -> int:
    """A descriptor on the cgroup's ``cgroup.procs`` for the child to join through (close-on-exec:
    the agent never holds it)."""
    return os.open(
        os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644
    )


def join(procs_fd: int) -> None:
    """In the forked child: move this process into the cgroup (``0`` means "the writer")."""
    os.write(procs_fd, b"0")


def oom_killed(path: str) -> bool:
    """Whether the kernel OOM-killed something in the cgroup (``memory.events`` oom_kill)."""
    try:
        for line in _read(os.path.join(path, "memory.events")).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
    except OSError:
        pass
    return False


def remove(path: str) -> bool:
    """Kill what is left in the drone's cgroup and remove it; whether it is gone (one still busy
    is reused by the next start of the same drone)."""
    kill = os.path.join(path, "cgroup.kill")
    with contextlib.suppress(OSError):
        if os.path.exists(kill):
            _write(kill, "1")
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.debug("cgroup not removed yet", extra={"cgroup": path, "error": str(exc)})
        return False
    return True
