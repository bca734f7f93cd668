"""One drone on this node: its environment, its supervised process, its keeper, its status.

A :class:`DroneRunner` is created by the node agent for every Drone placed here and stopped when
the Drone goes away or moves. It resolves the environment through the API (secrets included),
hands a :class:`~apiary.node.supervision.Supervisor` the launch spec, attaches each started process
to the :class:`~apiary.node.keeper.Keeper`, and turns every state change into a Drone status,
which the :class:`StatusWriter` sends to the API.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apiary.errors import Conflict, NotFound
from apiary.node import cgroups, sandbox
from apiary.node.backoff import Backoff, BackoffPolicy
from apiary.node.env import EnvError, SecretReader, resolve_env
from apiary.node.gateway_budget import DroneMeter
from apiary.node.keeper import Keeper, KeeperStats
from apiary.node.launcher import DroneProcess, LaunchSpec, enforcement
from apiary.node.supervision import DroneRuntimeStatus, Supervisor

log = logging.getLogger("apiary.node")

Obj = dict[str, Any]
StatusSink = Callable[["DroneRunner", Obj], None]

NODE_STATUS_KEYS = (
    "phase", "pid", "restartCount", "exitCode", "signal", "reason", "message", "lastStderr",
    "nextRestartAt", "startedAt", "ready", "startTime", "hostIP", "usage",
)  # fmt: skip
"""The Drone status fields the node agent owns; the rest (nodeName, Scheduled, ...) is kept."""


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


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.meter = DroneMeter.from_guardrails(self.spec.get("guardrails"))
        """Tokens the drone's LLM calls use, per message in flight (the gateway's budgets)."""
        self.supervisor: Supervisor | None = None
        self.isolation: dict[str, str] = {}
        """How the drone is confined (user, private dir, how its limits are enforced)."""
        self._runtime = DroneRuntimeStatus(phase="Starting")
        self._ready = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.usage: Obj | None = None
        """The last ``status.usage`` (node/usage.py), sent with every status from then on."""

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"runner:{self.cell}/{self.name}")

    async def stop(self) -> None:
        """Stop the process (SIGTERM, grace, SIGKILL) and the keeper; idempotent."""
        self._stopping.set()
        if self._probe is not None:
            self._probe.cancel()
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
                log.warning("drone %s/%s: cannot resolve env: %s", self.cell, self.name, exc)
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
        limits = (self.spec.get("resources") or {}).get("limits") or {}
        memory = limits.get("memory")
        cpu = limits.get("cpu")
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
        identity = sandbox.drone_identity(
            self.spec.get("securityContext"), self.settings.drone_uid, self.settings.drone_gid
        )
        home = sandbox.private_dir_path(self.settings.drones_root(), self.cell, self.name)
        spec = LaunchSpec(
            drone=self.name,
            cell=self.cell,
            command=command,
            env=env,
            working_dir=runtime.get("workingDir") or self.settings.default_working_dir,
            memory_limit_bytes=int(memory) if isinstance(memory, int) and memory > 0 else None,
            cpu_limit_millicores=int(cpu) if isinstance(cpu, int) and cpu > 0 else None,
            stdio="log" if self.http else "pipes",
            log_dir=os.path.join(self.settings.state_dir, "logs"),
            state_dir=os.path.join(self.settings.state_dir, "pids"),
            grace_period_seconds=self.settings.grace_period_seconds,
            run_as=identity,
            home_dir=home,
            cgroup_root=cgroups.node_root() if self.settings.cgroups else None,
        )
        self.isolation = {
            "user": identity.describe(),
            "home": home,
            "workingDir": spec.working_dir or os.getcwd(),
            # What launch() will do; each start confirms it (:meth:`_started`).
            **enforcement(spec, spec.cgroup_root.path if spec.cgroup_root else None),
        }
        return spec

    # ------------------------------------------------------------------------ callbacks

    async def _started(self, proc: DroneProcess) -> None:
        self.isolation = {**self.isolation, **proc.limits}
        await self.keeper.attach(proc.process)
        if not self.http:
            self._ready = self.keeper.ready
            self._report()
            return
        if self._probe is not None:
            self._probe.cancel()
        self._probe = asyncio.create_task(self._wait_http_ready(proc))

    async def _wait_http_ready(self, proc: DroneProcess) -> None:
        try:
            await self.keeper.start(timeout=self.settings.http_ready_timeout)
        except Exception as exc:
            log.warning("drone %s/%s: health check never answered: %s", self.cell, self.name, exc)
            if proc.returncode is None:
                proc.kill()  # the supervisor restarts it with back-off
            return
        if proc.returncode is None:
            self._ready = True
            self._report()

    def _runtime_changed(self, status: DroneRuntimeStatus) -> None:
        self._runtime = status
        if status.phase != "Running":
            self._ready = False
        self._report()

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
        st["ready"] = self._ready and self._runtime.phase == "Running"
        if self.usage is not None:
            st["usage"] = self.usage
        if self.isolation:
            st["isolation"] = self.isolation
        return st


class StatusWriter:
    """Coalesces drone status reports and writes the newest of each to the API.

    Reports are cheap and synchronous (the supervisor emits many); writes are read-modify-write
    on ``/status`` so the fields the controllers own (``nodeName``, ``Scheduled``) are kept. A
    drone that was deleted or recreated (other uid) is skipped.

    Why it is built for latency (apply → Ready is a benchmark target):

    * drones are written concurrently — one write in flight per drone, at most ``max_in_flight``
      at once — so ten drones starting together do not queue behind each other's round trips;
    * the base of the read-modify-write is the newest copy the node already holds (fed by the
      node agent's watch through :meth:`seen`, and by the answers to our own writes), sent with
      its ``resourceVersion`` as precondition; only a missing copy or a conflict costs a GET.
      One round trip per status instead of two;
    * a ``Starting`` report waits ``settle_seconds`` before it is written: a drone that starts
      at once goes Pending → Running in one write (the write of a phase that lasted a few
      milliseconds would sit on the path to Ready), while a slow start still shows Starting;
    * drones the node saw deleted (:meth:`deleted`) are not written at all.
    """

    def __init__(
        self,
        get: Callable[[str, str], Awaitable[Obj]],
        put_status: Callable[[Obj], Awaitable[Obj]],
        *,
        node_name: str,
        max_in_flight: int = 16,
        settle_seconds: float = 0.05,
    ) -> None:
        self._get = get
        self._put = put_status
        self.node_name = node_name
        self.settle_seconds = settle_seconds
        self._pending: dict[tuple[str, str], tuple[str, Obj]] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._deleted: dict[str, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._known: dict[tuple[str, str], Obj] = {}
        self._busy: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._wake = asyncio.Event()

    def submit(self, runner: DroneRunner, status: Obj) -> None:
        key = (runner.cell, runner.name)
        self._pending[key] = (runner.uid, status)
        settle = self.settle_seconds if status.get("phase") == "Starting" else 0.0
        self._due[key] = time.monotonic() + settle
        self._wake.set()

    def deleted(self, uid: str) -> None:
        """The drone with this uid is gone from the API: drop its reports from now on."""
        self._deleted[uid] = None
        if len(self._deleted) > 10_000:
            self._deleted.pop(next(iter(self._deleted)))

    def seen(self, drone: Obj) -> None:
        """The newest copy of a drone of this node (from the watch); older copies are ignored."""
        meta = drone.get("metadata") or {}
        key = (meta.get("namespace") or "default", str(meta.get("name")))
        if _newer(drone, self._known.get(key)):
            self._known[key] = drone

    def forget(self, cell: str, name: str) -> None:
        """The drone left this node: drop its copy (a later write GETs it again)."""
        self._known.pop((cell, name), None)

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._start_due_writes()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_due_writes(self) -> None:
        now = time.monotonic()
        later: float | None = None
        for key in [k for k in self._pending if k not in self._busy]:
            due = self._due.get(key, now)
            if due > now:
                later = due if later is None else min(later, due)
                continue
            uid, status = self._pending.pop(key)
            self._due.pop(key, None)
            if uid in self._deleted:
                continue
            self._busy.add(key)
            task = asyncio.create_task(self._write_one(key, uid, status))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if later is not None:
            self._timer = asyncio.get_running_loop().call_later(later - now, self._wake.set)

    async def _write_one(self, key: tuple[str, str], uid: str, status: Obj) -> None:
        cell, name = key
        try:
            async with self._slots:
                await self._write(cell, name, uid, status)
        except Exception as exc:  # the API is away: keep the newest and try again
            log.warning("drone %s/%s: status not written: %s", cell, name, exc)
            self._pending.setdefault(key, (uid, status))
            await asyncio.sleep(1.0)
        finally:
            self._busy.discard(key)
            if key in self._pending:
                self._wake.set()

    async def _write(self, cell: str, name: str, uid: str, status: Obj) -> None:
        key = (cell, name)
        for attempt in range(10):
            drone = self._known.get(key) if attempt == 0 else None
            if drone is None or drone["metadata"].get("uid") != uid:
                try:
                    drone = await self._get(cell, name)
                except NotFound:
                    self.forget(cell, name)
                    return
                if drone["metadata"].get("uid") != uid:
                    return
                self.seen(drone)
            current = dict(drone.get("status") or {})
            merged = {k: v for k, v in current.items() if k not in NODE_STATUS_KEYS}
            merged.update(status)
            merged["nodeName"] = self.node_name
            merged["conditions"] = _with_ready(current.get("conditions") or [], status)
            if merged == current:
                return
            body = {**drone, "status": merged}
            try:
                written = await self._put(body)
            except Conflict:
                continue
            except NotFound:
                self.forget(cell, name)
                return
            self.seen(written)
            return


def _newer(drone: Obj, than: Obj | None) -> bool:
    """Whether ``drone`` is a later version than ``than`` (resourceVersions of this store are
    increasing integers; anything else counts as newer, the safe side: a stale base only costs
    a conflict and a GET)."""
    if than is None:
        return True
    new = str((drone.get("metadata") or {}).get("resourceVersion") or "")
    old = str((than.get("metadata") or {}).get("resourceVersion") or "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True


def _with_ready(conditions: list[Obj], status: Obj) -> list[Obj]:
    ready = bool(status.get("ready"))
    want = "True" if ready else "False"
    out = [c for c in conditions if c.get("type") != "Ready"]
    old = next((c for c in conditions if c.get("type") == "Ready"), None)
    reason = "AgentReady" if ready else str(status.get("reason") or status.get("phase") or "")
    if old is not None and old.get("status") == want and old.get("reason") == reason:
        out.append(old)
    else:
        out.append({
            "type": "Ready", "status": want, "reason": reason,
            "message": str(status.get("message") or ""),
            "lastTransitionTime": rfc3339(time.time()),
        })  # fmt: skip
    return out
