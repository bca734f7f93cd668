"""What a drone's process does between fork and exec, as ``preexec_fn``: the few syscalls that
make it a drone — descriptors beyond stdio closed on exec, its cgroup joined, its memory limit,
its uid, and a death signal tied to the node.

It runs in the forked child of a multi-threaded parent, so it must not load libraries or take
locks: the libc functions it needs are resolved once, here, at import.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any

from apiary.node import cgroups, sandbox

_PR_SET_PDEATHSIG = 1
_SYS_CLOSE_RANGE = 436  # the same number on every Linux architecture (the unified table)
_CLOSE_RANGE_CLOEXEC = 4


def _libc(symbol: str) -> Any:
    """A libc function (None off Linux or where it is missing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), symbol)
    except (OSError, AttributeError):
        return None


_prctl = _libc("prctl")
_syscall = _libc("syscall")
_MAX_FD = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024


def _cloexec_beyond_stdio() -> None:
    """In the forked child: mark every descriptor above 2 close-on-exec, so the agent starts with
    stdio and nothing else whatever the event loop does. asyncio's own loop closes them itself
    (``close_fds``), but uvloop, which apiaryd runs on, spawns through libuv, which has no
    close_fds: the drone kept the child ends of its stdio socketpairs and anything inheritable.
    Marking (not closing) leaves the sources the loop is about to ``dup2`` onto 0-2 in place."""
    if _syscall is not None:
        rc = _syscall(
            ctypes.c_long(_SYS_CLOSE_RANGE),
            ctypes.c_uint(3),
            ctypes.c_uint(0xFFFFFFFF),
            ctypes.c_uint(_CLOSE_RANGE_CLOEXEC),
        )
        if rc == 0:
            return
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, min(_MAX_FD, 65536)))
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def child_setup(
    parent_pid: int,
    memory_limit: int | None,
    identity: sandbox.Identity,
    cgroup_procs: int | None = None,
) -> Callable[[], None]:
    """The preexec hook: a few syscalls in the forked child before exec. The cgroup is joined
    first (while still privileged); the death signal is set after the uid change, which would
    clear it."""

    def setup() -> None:
        _cloexec_beyond_stdio()
        if cgroup_procs is not None:
            cgroups.join(cgroup_procs)
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        sandbox.become(identity)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(137)

    return setup
