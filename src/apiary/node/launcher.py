"""Starting and stopping real agent processes (one process group per drone).

:func:`launch` turns a :class:`LaunchSpec` into a running :class:`DroneProcess`; keeping it
running (restarts, back-off, status) is :mod:`.supervision`'s. The keeper owns the agent's
stdin/stdout: in ``stdio="pipes"`` mode the launcher never reads stdout, it only hands the process
over; stderr (and stdout in ``"log"`` mode, for http agents) is pumped into the drone's log by the
launcher.

Why the process is set up the way it is:

* Its own session and process group (``start_new_session``), so stopping signals everything the
  agent started (``sh -c`` children included) and a terminal's Ctrl-C does not reach it.
* Nothing of the node but stdio (``close_fds=True, pass_fds=()``), and, when the node is root,
  another uid with no groups, a private HOME and a scrubbed environment (:mod:`.sandbox`).
* ``PR_SET_PDEATHSIG(SIGKILL)`` (Linux) so the agent dies with the node agent even after
  ``kill -9``; what it spawned itself is covered by the group records in :mod:`.orphans`. The
  signal fires when the *thread* that forked exits, i.e. the event loop's thread.
* Limits: with a writable cgroup v2 (:mod:`.cgroups`) the child joins its own cgroup before exec
  and ``memory.max``/``cpu.max`` hold (beyond memory it is OOM-killed). Without one,
  ``RLIMIT_AS`` for ``resources.limits.memory``: this limits *address space*, not resident
  memory; an allocation beyond it fails (Python raises ``MemoryError``, C gets ``NULL``), and
  runtimes that reserve large virtual ranges up front (the JVM, Go, V8) need a generous limit;
  ``limits.cpu`` is then not enforced (``setrlimit`` has no rate limit). :func:`enforcement`
  says which applied; the drone's ``status.isolation`` shows it.
* The child-side setup (:mod:`.childsetup`) runs as ``preexec_fn``, which forces ``fork`` instead
  of ``vfork``. Measured on the project machine: +1.5 ms per spawn with a 50 MB parent, +5 ms
  at 150 MB, +10 ms at 250 MB — small against the ≈ 55 ms a Python agent needs to start, and the
  only way to get PDEATHSIG without an extra exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from apiary.errors import FieldDetail, Invalid
from apiary.node import cgroups, orphans, sandbox
from apiary.node.childsetup import child_setup
from apiary.node.logs import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LogWriter

log = logging.getLogger(__name__)

Stdio = Literal["pipes", "log"]
Phase = Literal["Starting", "Running", "Stopping", "Stopped", "Failed"]

STDERR_TAIL_LINES = 10
_MAX_LINE = 64 * 1024  # a longer line without newline is logged in pieces
_PUMP_DRAIN_SECONDS = 1.0  # after exit, a pipe held open by an escaped grandchild is abandoned


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one drone's process; ``env`` is fully resolved (secrets too).

    ``log_dir`` is used by :class:`~.supervision.Supervisor`, which keeps one :class:`LogWriter`
    across restarts (``<log_dir>/<cell>/<drone>.log``); a bare :func:`launch` writes to the
    writer it is given."""

    drone: str
    cell: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    memory_limit_bytes: int | None = None
    cpu_limit_millicores: int | None = None
    stdio: Stdio = "pipes"
    log_dir: str | None = None
    grace_period_seconds: float = 30.0
    state_dir: str | None = None  # where orphan records go; None → not recorded
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS
    stream_limit_bytes: int = 16 * 1024 * 1024  # longest stdout line the keeper can read
    run_as: sandbox.Identity = field(default_factory=sandbox.Identity)
    home_dir: str | None = None  # the drone's private HOME/TMPDIR (:mod:`.sandbox`)
    cgroup_root: cgroups.CgroupRoot | None = None  # limits by cgroup v2 (:mod:`.cgroups`)
    sidecar: str | None = None
    """A process the node runs *for* the drone rather than the drone itself (a stdio MCP server,
    ``mcp-<name>``): same identity, HOME, environment rules and limits, but its own orphan
    record, cgroup and log stream (``<sidecar>.stderr``), so it neither replaces the drone's nor
    is mistaken for it."""

    @property
    def unit(self) -> str:
        """The name of this process's records (orphan record, cgroup): the drone's, or
        ``<drone>.<sidecar>``."""
        return self.drone if self.sidecar is None else f"{self.drone}.{self.sidecar}"

    def __post_init__(self) -> None:
        errors: list[FieldDetail] = []
        for name in ("drone", "cell"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
                errors.append(FieldDetail(name, f"must be a plain non-empty name, got {value!r}"))
        if (
            not isinstance(self.command, list)
            or not self.command
            or not all(isinstance(a, str) for a in self.command)
            or not self.command[0]
        ):
            errors.append(FieldDetail("command", "must be a non-empty list of strings"))
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str)
            for k, v in self.env.items()
        ):
            errors.append(FieldDetail("env", "must map variable names (no '=') to strings"))
        for name in ("memory_limit_bytes", "cpu_limit_millicores"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                errors.append(FieldDetail(name, f"must be a positive integer, got {value!r}"))
        if self.sidecar is not None and (
            not self.sidecar or "/" in self.sidecar or " " in self.sidecar
        ):
            errors.append(FieldDetail("sidecar", f"must be a plain name, got {self.sidecar!r}"))
        if self.stdio not in ("pipes", "log"):
            errors.append(FieldDetail("stdio", f'must be "pipes" or "log", got {self.stdio!r}'))
        if not self.grace_period_seconds >= 0:
            errors.append(FieldDetail("grace_period_seconds", "must be >= 0"))
        if errors:
            raise Invalid(f"invalid launch spec for drone {self.drone!r}", errors)


class LaunchError(Exception):
    """The process could not be started; ``reason`` is the status reason, ``message`` for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def build_env(spec: LaunchSpec) -> dict[str, str]:
    """A fixed base (safe PATH, the private HOME, LANG; unbuffered Python so line protocols work
    without flushes), then the spec's env, then the drone's identity, which cannot be overridden.
    Nothing of the node's own environment passes through (:func:`.sandbox.scrubbed_env`)."""
    identity = {"APIARY_DRONE": spec.drone, "APIARY_CELL": spec.cell}
    return sandbox.scrubbed_env(spec.env, spec.home_dir, identity)


def resolve_executable(command: str, path: str, working_dir: str | None) -> str:
    """The file that will be executed, checked up front for a clear reason instead of an errno."""
    if "/" in command:
        full = os.path.join(working_dir or os.getcwd(), command)
        if not os.path.exists(full):
            raise LaunchError("ExecFailed", f'executable "{command}" not found')
        if os.path.isdir(full) or not os.access(full, os.X_OK):
            raise LaunchError("ExecFailed", f'"{command}" is not an executable file')
        return full
    found = shutil.which(command, path=path)
    if found is None:
        raise LaunchError("ExecFailed", f'executable "{command}" not found in PATH')
    return found


def preflight(spec: LaunchSpec) -> tuple[dict[str, str], str]:
    """The environment and executable for ``spec``, or the :class:`LaunchError` a user can act on.

    Checked before forking (a few stat calls) because the errno a failed exec returns says
    neither which path was wrong nor whether it was the directory or the program."""
    if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
        raise LaunchError("WorkingDirMissing", f'workingDir "{spec.working_dir}" does not exist')
    if spec.home_dir is not None:
        try:
            sandbox.private_dir(spec.home_dir, spec.run_as)
        except OSError as exc:
            raise LaunchError(
                "SandboxFailed", f"cannot prepare the drone's private directory: {exc}"
            ) from exc
    env = build_env(spec)
    executable = resolve_executable(spec.command[0], env["PATH"], spec.working_dir)
    _check_access(spec, executable)
    return env, executable


def _check_access(spec: LaunchSpec, executable: str) -> None:
    """The drone's user must be able to run the program (and read a script it is given): said
    up front, naming the uid and the closed directory, instead of a bare EACCES."""
    who = spec.run_as
    if not who.changes:
        return
    closed = sandbox.inaccessible(executable, who)
    if closed is None and len(spec.command) > 1:
        script = os.path.join(spec.working_dir or os.getcwd(), spec.command[1])
        if os.path.isfile(script):
            closed = sandbox.inaccessible(script, who, script=True)
    if closed is not None:
        raise LaunchError(
            "ExecFailed",
            f"the drone runs as uid {who.describe()}, which cannot reach {closed!r}: make it "
            "readable (scripts/drone-access does this for the interpreter) or set "
            "securityContext.runAsUser in the AgentSpec",
        )


def describe_exit(returncode: int) -> tuple[str, int, str | None, str]:
    """(reason, exit code, signal name, message) for a process's return code. A signal death is
    reported as exit code 128+N, as shells and Kubernetes do."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return "Killed", 128 - returncode, name, f"killed by {name}"
    if returncode == 0:
        return "Completed", 0, None, "exited with code 0"
    return "Error", returncode, None, f"exited with code {returncode}"


_MEMORY_SYMPTOMS = ("MemoryError", "Cannot allocate memory", "failed to map", "out of memory")


def memory_hint(spec: LaunchSpec, returncode: int, stderr_tail: list[str]) -> str:
    """A pointer at the memory limit when the death looks like it: RLIMIT_AS failures surface as
    allocation errors, or as SIGSEGV/SIGABRT when a runtime cannot even map its libraries."""
    if spec.memory_limit_bytes is None:
        return ""
    crashed = returncode in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS)
    if crashed or any(s in line for line in stderr_tail for s in _MEMORY_SYMPTOMS):
        return (
            f" (the memory limit of {spec.memory_limit_bytes} bytes of address space"
            " may be too low)"
        )
    return ""


class _DroneProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own stream protocol plus two signals it keeps to itself.

    ``Process.wait()`` only returns once every pipe is closed, so a grandchild that inherited
    stderr would keep a dead agent "running" (and its group unkilled) for as long as it lives.
    ``exited`` fires when the process itself has exited; ``closed`` when all pipes are closed."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


class DroneProcess:
    """A started drone: the asyncio ``Process`` (whose stdin/stdout the keeper uses in pipes mode)
    plus the log pumps and the orphan record the launcher keeps for it."""

    def __init__(
        self,
        spec: LaunchSpec,
        transport: asyncio.SubprocessTransport,
        protocol: _DroneProtocol,
        log: LogWriter | None,
        cgroup: str | None = None,
    ) -> None:
        self.spec = spec
        self.cgroup = cgroup
        """The drone's own cgroup v2 directory, when its limits are enforced by one."""
        self.limits = enforcement(spec, cgroup)
        """How each limit is enforced: ``{"memory": ..., "cpu": ...}`` (:func:`enforcement`)."""
        self.process = process = asyncio.subprocess.Process(
            transport, protocol, asyncio.get_running_loop()
        )
        self._transport = transport
        self._protocol = protocol
        self.pid = process.pid
        self.pgid = process.pid  # start_new_session: the leader's pid is the group id
        self.started_at = time.time()
        self._log = log
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        # The streams the launcher pumps are taken off the Process it hands out, so a keeper that
        # is given ``.process`` cannot become a second reader of the same StreamReader.
        self._pumps = [asyncio.ensure_future(self._pump(process.stderr, "stderr"))]
        process.stderr = None
        if spec.stdio == "log":
            self._pumps.append(asyncio.ensure_future(self._pump(process.stdout, "stdout")))
            process.stdout = None
        self._finished: asyncio.Future[int] | None = None

    @property
    def stdin(self) -> asyncio.StreamWriter | None:
        return self.process.stdin

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        """The agent's stdout for the keeper (pipes mode); in log mode the launcher reads it."""
        return self.process.stdout

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def last_stderr(self) -> list[str]:
        return list(self._stderr_tail)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process of the drone's group (gone already is fine)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    async def wait(self) -> int:
        """Wait for the exit; then clean up the rest of the group, the pumps and the record."""
        if self._finished is None:
            self._finished = asyncio.ensure_future(self._finish())
        return await asyncio.shield(self._finished)

    async def stop(self, grace_seconds: float | None = None) -> int:
        """SIGTERM to the group, SIGKILL after the grace period, and always reap."""
        grace = self.spec.grace_period_seconds if grace_seconds is None else grace_seconds
        if self.process.returncode is None:
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.wait()), grace)
            except TimeoutError:
                self.kill()
        return await self.wait()

    async def _finish(self) -> int:
        await self._protocol.exited
        rc = self.process.returncode
        assert rc is not None  # set by the transport before it tells the protocol
        # Like a container: when the main process is gone, whatever it started goes too.
        self.kill()
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), _PUMP_DRAIN_SECONDS)
        except TimeoutError:
            # Someone outside the group (it called setsid) still holds a pipe: stop listening.
            self._transport.close()
        _, pending = await asyncio.wait(self._pumps, timeout=_PUMP_DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        if self.cgroup is not None:
            await _remove_cgroup(self.cgroup)
        if self.spec.state_dir is not None:
            orphans.forget_process(self.spec.state_dir, self.spec.cell, self.spec.unit, self.pid)
        return rc

    async def _pump(self, reader: asyncio.StreamReader | None, stream: str) -> None:
        if reader is None:
            return
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            *lines, buf = (buf + chunk).split(b"\n")
            if len(buf) > _MAX_LINE:
                lines.append(buf)
                buf = b""
            if lines:
                self._sink(stream, lines)
        if buf:
            self._sink(stream, [buf])

    def _sink(self, stream: str, raw: list[bytes]) -> None:
        texts = [line.decode("utf-8", "replace").rstrip("\r") for line in raw]
        if stream == "stderr":
            self._stderr_tail.extend(texts)
        if self._log is not None:
            label = stream if self.spec.sidecar is None else f"{self.spec.sidecar}.{stream}"
            try:
                self._log.write_lines(label, texts)
            except OSError as exc:  # a full disk must not kill the drone's pipe reader
                log.warning(
                    "cannot write the drone's log",
                    extra={"cell": self.spec.cell, "drone": self.spec.drone, "error": str(exc)},
                )


def enforcement(spec: LaunchSpec, cgroup: str | None) -> dict[str, str]:
    """How the spec's limits hold: memory ``cgroup`` | ``rlimit`` (``RLIMIT_AS``) |
    ``unlimited``; cpu ``cgroup`` | ``not enforced (no writable cgroup v2)`` | ``unlimited``."""
    root = spec.cgroup_root if cgroup is not None else None
    memory = cpu = "unlimited"
    if spec.memory_limit_bytes is not None:
        memory = "cgroup" if root is not None and root.enforces("memory") else "rlimit"
    if spec.cpu_limit_millicores is not None:
        if root is not None and root.enforces("cpu"):
            cpu = "cgroup"
        else:
            cpu = "not enforced (no writable cgroup v2)"
    return {"memory": memory, "cpu": cpu}


def _make_cgroup(spec: LaunchSpec) -> str | None:
    """The drone's cgroup with its limits written, when the node has cgroup v2 and the spec has a
    limit; None otherwise (then ``RLIMIT_AS`` applies)."""
    root = spec.cgroup_root
    if root is None or (spec.memory_limit_bytes is None and spec.cpu_limit_millicores is None):
        return None
    try:
        return cgroups.create(
            root,
            f"{spec.cell}__{spec.unit}",
            memory_bytes=spec.memory_limit_bytes,
            cpu_millicores=spec.cpu_limit_millicores,
        )
    except OSError as exc:
        raise LaunchError(
            "SandboxFailed", f"cannot set up the drone's cgroup under {root.path}: {exc}"
        ) from exc


async def _remove_cgroup(path: str) -> None:
    """Remove the drone's cgroup once the processes killed in it are gone (they take a moment)."""
    for _ in range(50):
        if cgroups.remove(path):
            return
        await asyncio.sleep(0.01)


async def launch(spec: LaunchSpec, *, log: LogWriter | None = None) -> DroneProcess:
    """Start the drone's process. Raises :class:`LaunchError` with a status reason
    (``WorkingDirMissing``, ``ExecFailed``, ``SandboxFailed``) for problems on the machine;
    never a bare OSError."""
    env, executable = preflight(spec)
    pipes = spec.stdio == "pipes"
    loop = asyncio.get_running_loop()
    cgroup = _make_cgroup(spec)
    limits = enforcement(spec, cgroup)
    rlimit = spec.memory_limit_bytes if limits["memory"] == "rlimit" else None
    procs: int | None = None
    if cgroup is not None:
        try:
            procs = cgroups.open_procs(cgroup)
        except OSError as exc:
            raise LaunchError("SandboxFailed", f"cannot join cgroup {cgroup}: {exc}") from exc
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _DroneProtocol(spec.stream_limit_bytes, loop),
            *spec.command,
            executable=executable,
            stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=spec.working_dir,
            env=env,
            start_new_session=True,
            close_fds=True,  # stdio and nothing else: no socket or file of the node's
            pass_fds=(),
            preexec_fn=child_setup(os.getpid(), rlimit, spec.run_as, procs),
        )
    except OSError as exc:
        if cgroup is not None:
            cgroups.remove(cgroup)
        detail = exc.strerror or str(exc)
        if spec.memory_limit_bytes is not None and exc.errno == 12:  # ENOMEM at exec
            detail += f" (memory limit {spec.memory_limit_bytes} bytes is too low to start it)"
        raise LaunchError("ExecFailed", f'cannot execute "{spec.command[0]}": {detail}') from exc
    except Exception as exc:  # preexec failure (e.g. a limit above the hard limit)
        if cgroup is not None:
            cgroups.remove(cgroup)
        raise LaunchError("ExecFailed", f'cannot start "{spec.command[0]}": {exc}') from exc
    finally:
        if procs is not None:
            os.close(procs)
    proc = DroneProcess(spec, transport, protocol, log, cgroup)
    if spec.state_dir is not None:
        try:
            orphans.record_process(spec.state_dir, spec.cell, spec.unit, proc.pid, proc.pgid)
        except OSError as exc:
            proc.kill()
            await proc.wait()
            raise LaunchError("ExecFailed", f"cannot record process group: {exc}") from exc
    return proc
