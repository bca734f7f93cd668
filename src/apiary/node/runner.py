"""One drone on this node: its environment, its supervised process, its keeper, its status.

A :class:`DroneRunner` is created by the node agent for every Drone placed here and stopped when
the Drone goes away or moves. It resolves the environment through the API (secrets included),
hands a :class:`~apiary.node.supervision.Supervisor` the launch spec, attaches each started process
to the :class:`~apiary.node.keeper.Keeper`, probes the started drone (:mod:`.probes`: not ready
while its readiness probe fails, restarted when its liveness probe does), and turns every state
change into a Drone status, which the :class:`~apiary.node.statuswriter.StatusWriter` sends to
the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from apiary.gateway.budget import DroneMeter
from apiary.node import cgroups, sandbox
from apiary.node.backoff import Backoff, BackoffPolicy
from apiary.node.env import EnvError, SecretReader, resolve_env
from apiary.node.keeper import Keeper, KeeperStats
from apiary.node.launcher import DroneProcess, LaunchSpec, enforcement, launch
from apiary.node.mcpstdio import StdioServers
from apiary.node.probes import LIVENESS_FAILED, READINESS_FAILED, DroneProbes, probe_settings
from apiary.node.statuswriter import rfc3339
from apiary.node.supervision import DroneRuntimeStatus, Supervisor

log = logging.getLogger("apiary.node")

Obj = dict[str, Any]
StatusSink = Callable[["DroneRunner", Obj], None]


@dataclass
class RunnerSettings:
    """How the node runs each drone."""

    state_dir: str
    """Where drone logs (``logs/``) and orphan records (``pids/``) live."""

    grace_period_seconds: float = 10.0
    """SIGTERM → SIGKILL grace when a drone stops."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    """Restart back-off of crashing drones (CrashLoopBackOff)."""

    default_working_dir: str | None = None
    """Where a drone runs when its AgentSpec gives no ``workingDir`` (None: the node's cwd)."""

    http_ready_timeout: float = 60.0
    """How long an http agent may take to answer its health path before it is restarted."""

    drone_uid: int = sandbox.NOBODY
    """The uid drones run as when the node is root and the AgentSpec names no
    ``securityContext.runAsUser`` (docs/security.md)."""

    drone_gid: int = sandbox.NOBODY
    """The gid that goes with :attr:`drone_uid`."""

    work_root: str | None = None
    """Where drones' private directories (HOME, TMPDIR) live; outside the data dir, which no
    drone may enter. None: ``<tmp>/apiary-drones-<hash of state_dir>``."""

    cgroups: bool = True
    """Enforce ``limits.memory``/``limits.cpu`` with cgroup v2 when the node has a writable
    hierarchy (:mod:`.cgroups`); otherwise, or when False, ``RLIMIT_AS`` and no CPU limit."""

    def drones_root(self) -> str:
        if self.work_root is not None:
            return self.work_root
        digest = hashlib.sha1(os.path.abspath(self.state_dir).encode()).hexdigest()[:12]
        return os.path.join(tempfile.gettempdir(), f"apiary-drones-{digest}")


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_path(env: dict[str, str]) -> str:
    """PATH for agents: the directory of the Python running Apiary first, so that a ``python``
    agent finds the interpreter that has ``apiary.agent`` installed, then the agent's or ours."""
    here = os.path.dirname(sys.executable)
    return here + os.pathsep + (env.get("PATH") or sandbox.SAFE_PATH)


class DroneRunner:
    """Runs one Drone (identified by uid) until :meth:`stop`."""

    def __init__(
        self,
        drone: Obj,
        *,
        settings: RunnerSettings,
        read_secret: SecretReader,
        on_status: StatusSink,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        meta = drone["metadata"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.cell: str = meta.get("namespace") or "default"
        self.spec: Obj = drone.get("spec") or {}
        self.settings = settings
        self._read_secret = read_secret
        self._on_status = on_status
        self._extra_env = dict(extra_env or {})
        interface = dict(self.spec.get("interface") or {})
        self.http = interface.get("type") == "http"
        self.port: int | None = None
        if self.http:
            self.port = int(interface.get("port") or 0) or free_port()
        self.keeper = Keeper(interface, name=f"{self.cell}/{self.name}", port=self.port)
        self.readiness, self.liveness = probe_settings(interface)
        """The drone's probes (:mod:`.probes`); None where nothing is probed."""
        self.meter = DroneMeter.from_guardrails(self.spec.get("guardrails"))
        """Tokens the drone's LLM calls use, per message in flight (the gateway's budgets)."""
        self.supervisor: Supervisor | None = None
        self.isolation: dict[str, str] = {}
        """How the drone is confined (user, private dir, how its limits are enforced)."""
        self._runtime = DroneRuntimeStatus(phase="Starting")
        self._ready = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._startup: asyncio.Task[None] | None = None
        self._probes: DroneProbes | None = None
        self._unready: str | None = None
        """Why the readiness probe fails, while it does."""
        self.usage: Obj | None = None
        """The last ``status.usage`` (node/usage.py), sent with every status from then on."""
        self.mcp_stdio = StdioServers(self.launch_mcp, grace_seconds=settings.grace_period_seconds)
        """The drone's stdio MCP servers (``spec.mcpServers[].command``), which its keeper
        starts on first use and which stop with it (:mod:`.mcpstdio`)."""

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"runner:{self.cell}/{self.name}")

    async def stop(self) -> None:
        """Stop the process (SIGTERM, grace, SIGKILL) and the keeper; idempotent."""
        self._stopping.set()
        if self._startup is not None:
            self._startup.cancel()
        self._stop_probes()
        await self.mcp_stdio.close()  # before the supervisor closes the log they write to
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.keeper.stop()

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def pgid(self) -> int | None:
        """The running agent's process group (its leader's pid), None while none runs."""
        proc = self.keeper.process
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def usage_stats(self) -> KeeperStats:
        return self.keeper.stats

    def set_usage(self, usage: Obj) -> None:
        """A new usage sample: reported like any status change (coalesced by the writer)."""
        self.usage = usage
        self._report()

    async def _run(self) -> None:
        backoff = Backoff(self.settings.backoff)
        while not self._stopping.is_set():
            try:
                env = await resolve_env(
                    (self.spec.get("runtime") or {}).get("env"), self._read_secret
                )
            except EnvError as exc:
                delay = backoff.next_delay()
                self._runtime = DroneRuntimeStatus(
                    phase="Failed", reason=exc.reason,
                    message=f"{exc.message}; retrying in {delay:g}s",
                    next_restart_at=time.time() + delay,
                )  # fmt: skip
                self._report()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            except Exception as exc:  # the API is away: try again soon
                log.warning(
                    "cannot resolve the drone's env",
                    extra={"cell": self.cell, "drone": self.name, "error": str(exc)},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2.0)
                continue
            break
        if self._stopping.is_set():
            return
        self.supervisor = Supervisor(
            self._launch_spec(env),
            on_status=self._runtime_changed,
            on_started=self._started,
            backoff=self.settings.backoff,
        )
        await self.supervisor.start()

    def _launch_spec(self, env: dict[str, str]) -> LaunchSpec:
        runtime = self.spec.get("runtime") or {}
        env = {**env, **self._extra_env, "APIARY_DRONE_UID": self.uid}
        for var, key in (("APIARY_HIVE", "hive"), ("APIARY_STAGE", "stage"),
                         ("APIARY_PATTERN", "pattern")):  # fmt: skip
            if self.spec.get(key):
                env.setdefault(var, str(self.spec[key]))
        env["PATH"] = agent_path(env)
        if self.port is not None:
            env.setdefault("PORT", str(self.port))
            env.setdefault("APIARY_AGENT_PORT", str(self.port))
        command = list(runtime.get("command") or []) + list(runtime.get("args") or [])
        spec = self._sandboxed(command, env, runtime.get("workingDir"))
        self.isolation = {
            "user": spec.run_as.describe(),
            "home": spec.home_dir or "",
            "workingDir": spec.working_dir or os.getcwd(),
            # What launch() will do; each start confirms it (:meth:`_started`).
            **enforcement(spec, spec.cgroup_root.path if spec.cgroup_root else None),
        }
        return spec

    def _sandboxed(self, command: list[str], env: dict[str, str], working_dir: str | None,
                   sidecar: str | None = None) -> LaunchSpec:  # fmt: skip
        """The launch spec of a process of this drone — the agent, or a ``sidecar`` (a stdio
        MCP server) — with the drone's identity, private directory and limits."""
        limits = (self.spec.get("resources") or {}).get("limits") or {}
        memory = limits.get("memory")
        cpu = limits.get("cpu")
        identity = sandbox.drone_identity(
            self.spec.get("securityContext"), self.settings.drone_uid, self.settings.drone_gid
        )
        home = sandbox.private_dir_path(self.settings.drones_root(), self.cell, self.name)
        return LaunchSpec(
            drone=self.name,
            cell=self.cell,
            command=command,
            env=env,
            working_dir=working_dir or self.settings.default_working_dir,
            memory_limit_bytes=int(memory) if isinstance(memory, int) and memory > 0 else None,
            cpu_limit_millicores=int(cpu) if isinstance(cpu, int) and cpu > 0 else None,
            stdio="log" if self.http and sidecar is None else "pipes",
            log_dir=os.path.join(self.settings.state_dir, "logs"),
            state_dir=os.path.join(self.settings.state_dir, "pids"),
            grace_period_seconds=self.settings.grace_period_seconds,
            run_as=identity,
            home_dir=home,
            cgroup_root=cgroups.node_root() if self.settings.cgroups else None,
            sidecar=sidecar,
        )

    async def launch_mcp(self, name: str) -> DroneProcess:
        """Start the drone's stdio MCP server ``name`` in the drone's sandbox: its own ``env``
        only (Secrets resolved like ``runtime.env``), its ``workingDir`` else the drone's, stdin
        and stdout for the keeper, stderr into the drone's log (:mod:`.mcpstdio`)."""
        servers = [s for s in self.spec.get("mcpServers") or [] if isinstance(s, dict)]
        index = next((i for i, s in enumerate(servers) if s.get("name") == name), None)
        if index is None or not servers[index].get("command"):
            raise EnvError("NoSuchServer", f"no stdio MCP server {name!r} in the drone's spec")
        entry = servers[index]
        env = await resolve_env(entry.get("env"), self._read_secret, f"mcpServers[{index}].env")
        env["PATH"] = agent_path(env)
        runtime = self.spec.get("runtime") or {}
        working_dir = entry.get("workingDir") or runtime.get("workingDir")
        command = [str(a) for a in entry["command"]]
        spec = self._sandboxed(command, env, working_dir, sidecar=f"mcp-{name}")
        writer = self.supervisor.log if self.supervisor is not None else None
        return await launch(spec, log=writer)

    # ------------------------------------------------------------------------ callbacks

    async def _started(self, proc: DroneProcess) -> None:
        self.isolation = {**self.isolation, **proc.limits}
        await self.keeper.attach(proc.process)
        if not self.http:
            self._ready = self.keeper.ready
            self._start_probes(proc)
            self._report()
            return
        if self._startup is not None:
            self._startup.cancel()
        self._startup = asyncio.create_task(self._wait_http_ready(proc))

    async def _wait_http_ready(self, proc: DroneProcess) -> None:
        try:
            await self.keeper.start(timeout=self.settings.http_ready_timeout)
        except Exception as exc:
            log.warning(
                "the drone's health check never answered",
                extra={"cell": self.cell, "drone": self.name, "error": str(exc)},
            )
            if proc.returncode is None:
                proc.kill()  # the supervisor restarts it with back-off
            return
        if proc.returncode is None:
            self._ready = True
            self._start_probes(proc)
            self._report()

    def _runtime_changed(self, status: DroneRuntimeStatus) -> None:
        self._runtime = status
        if status.phase != "Running":
            self._ready = False
            self._stop_probes()
        self._report()

    # --------------------------------------------------------------------------- probes

    def _start_probes(self, proc: DroneProcess) -> None:
        """Probe ``proc`` from now on (it has started: stdin at attach, http at its first 2xx)."""
        self._stop_probes()
        if self.readiness is None and self.liveness is None:
            return
        self._probes = DroneProbes(
            self.readiness, self.liveness, port=self.port, alive=self.keeper.probe,
            on_ready=partial(self._probed_ready, proc), on_dead=partial(self._probed_dead, proc),
        )  # fmt: skip
        self._probes.start()

    def _stop_probes(self) -> None:
        if self._probes is not None:
            self._probes.stop()
            self._probes = None
        self._unready = None

    def _current(self, proc: DroneProcess) -> bool:
        return self.supervisor is not None and self.supervisor.process is proc

    def _probed_ready(self, proc: DroneProcess, ready: bool, message: str) -> None:
        if self._current(proc):
            self._unready = None if ready else message
            self._report()

    def _probed_dead(self, proc: DroneProcess, message: str) -> None:
        if self._current(proc) and self.supervisor is not None:
            self.supervisor.restart(LIVENESS_FAILED, message)

    # --------------------------------------------------------------------------- status

    def _report(self) -> None:
        self._on_status(self, self.status())

    def status(self) -> Obj:
        """The node-owned part of this drone's status, right now."""
        st = self._runtime.as_status()
        for epoch_key in ("nextRestartAt", "startedAt"):
            if epoch_key in st:
                st[epoch_key] = rfc3339(float(st[epoch_key]))
        if self._runtime.started_at is not None:
            st["startTime"] = rfc3339(self._runtime.started_at)
        ended = (st.get("lastState") or {}).get("terminated") or {}
        if "finishedAt" in ended:
            ended["finishedAt"] = rfc3339(float(ended["finishedAt"]))
        st["ready"] = self._ready and self._runtime.phase == "Running"
        if st["ready"] and self._unready is not None:  # started, but its readiness probe fails
            st.update(ready=False, reason=READINESS_FAILED, message=self._unready)
        if self.usage is not None:
            st["usage"] = self.usage
        if self.isolation:
            st["isolation"] = self.isolation
        return st
