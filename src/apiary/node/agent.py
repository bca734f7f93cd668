"""The node agent: registers this machine as a Node, keeps its lease, runs the drones placed on it.

It talks to the control plane through the API only (an :class:`~apiary.client.AsyncApiClient`),
in embedded mode too, so both modes exercise the same path. Level-triggered: a full list of the
drones every ``resync_seconds`` plus a watch in between; for each pass the set of drones assigned
here (``spec.nodeName``, not being deleted) is compared with the runners it has, by uid — what is
wanted and missing is started, what runs and is no longer wanted (deleted, moved to another node
after this node lost its lease, recreated under the same name) is stopped.

On start it first kills whatever a previous incarnation left running (:func:`reap_orphans`), so
``kill -9`` of the node agent never leaves an agent process behind for long.

A drone of a warm pool (``spec.warm``) runs like any other but gets no stage worker, so it takes
no traffic; when the Queen claims it (``warm`` gone from its spec) the running process is put
on its stage's queue — nothing is started (docs/controllers.md, "Warm pools").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import platform
import re
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from apiary.bus import Bus
from apiary.client import AsyncApiClient
from apiary.errors import ApiaryError, Conflict, NotFound
from apiary.gateway.service import LlmGateway
from apiary.gateway.shared import ApiBudgets
from apiary.mcp.keeper import mcp_keeper_routes
from apiary.node import sandbox
from apiary.node.guardrails import GuardrailError, circuit_status
from apiary.node.keeperhttp import KeeperHttpServer
from apiary.node.logship import LogShipper, ShipperSettings
from apiary.node.orphans import reap_orphans
from apiary.node.runner import DroneRunner, RunnerSettings
from apiary.node.statuswriter import StatusWriter, rfc3339
from apiary.node.usage import GroupSampler, collect
from apiary.node.worker import StageWorker

log = logging.getLogger("apiary.node")

Obj = dict[str, Any]


def node_name_from_host(host: str) -> str:
    """A DNS-1123 label from a host name (``Web_01.example.com`` → ``web-01-example-com``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", host.lower()).strip("-")[:63].rstrip("-")
    return name or "node"


def _default_cpu() -> int:
    return (os.cpu_count() or 1) * 1000


def _default_memory() -> int:
    return int(psutil.virtual_memory().total)


def _usage_seconds(env: Mapping[str, str]) -> float:
    """``APIARY_NODE_USAGE_SECONDS`` (default 5): a bad value is logged and ignored, since it
    must not keep a node from starting."""
    raw = env.get("APIARY_NODE_USAGE_SECONDS", "")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if 0.05 <= value <= 3600:
            return value
        log.warning(
            "APIARY_NODE_USAGE_SECONDS is not seconds in [0.05, 3600]; using 5",
            extra={"value": raw},
        )
    return 5.0


@dataclass
class NodeSettings:
    """Who this node is and how it keeps in touch."""

    name: str = field(default_factory=lambda: node_name_from_host(socket.gethostname()))
    """The Node object's name (DNS-1123; the host name by default)."""

    state_dir: str = "."
    """Drone logs and process records live here (``<data-dir>/node`` in embedded mode)."""

    cpu_millicores: int = field(default_factory=_default_cpu)
    """Capacity offered to drones: this machine's cores x 1000 unless given."""

    memory_bytes: int = field(default_factory=_default_memory)
    """Capacity offered to drones: this machine's memory unless given."""

    heartbeat_seconds: float = 2.0
    """How often the lease is renewed."""

    lease_seconds: float = 10.0
    """How long the lease lasts without renewal; the control plane moves drones after it."""

    resync_seconds: float = 30.0
    """Full relist of the drones even when the watch is quiet."""

    runner: RunnerSettings | None = None
    """How drones run (grace period, back-off); defaults under ``state_dir``."""

    usage_seconds: float = field(default_factory=lambda: _usage_seconds(os.environ))
    """How often each running drone's ``status.usage`` is sampled (written only when changed)."""


class NodeAgent:
    """Runs drones for one Node until the stop event is set."""

    def __init__(
        self, client: AsyncApiClient, settings: NodeSettings, bus: Bus | None = None
    ) -> None:
        self.client = client
        self.settings = settings
        self.runner_settings = settings.runner or RunnerSettings(state_dir=settings.state_dir)
        self.runners: dict[str, DroneRunner] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.bus = bus
        self.workers: dict[str, StageWorker] = {}
        self.status_writer = StatusWriter(
            self._get_drone, client.update_status, node_name=settings.name
        )
        self.registered = asyncio.Event()
        self.usage_sampler = GroupSampler()
        self.keeper_http = KeeperHttpServer(client, drones=self.find)
        """Agents' local HTTP endpoint (Comb memory): one per node, in every drone's env. A
        drone's token reaches what :meth:`find` says it holds (its keeper's held sessions) and
        its spec allows (``memory``)."""

        async def read(kind: str, cell: str, name: str) -> Obj:
            return await client.get(kind, name, cell, reveal=kind == "Secret")

        self.gateway = LlmGateway(self.keeper_http, self.find, read, budgets=ApiBudgets(client))
        """The LLM gateway (``$APIARY_KEEPER_URL/v1``) on the same server: docs/gateway.md."""
        self.keeper_http.add_routes(self.gateway.routes())
        self.keeper_http.add_routes(mcp_keeper_routes(self.keeper_http))  # docs/interop.md
        state = self.runner_settings.state_dir
        self.log_shipper = LogShipper(
            self._post_logs,
            ShipperSettings(
                log_dir=os.path.join(state, "logs"),
                cursor_dir=os.path.join(state, "logship"),
                node=settings.name,
            ),
        )

    # --------------------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Reap orphans, register, then heartbeat + drone sync + status writes until ``stop``."""
        stop = stop or asyncio.Event()
        sandbox.warn_if_unprivileged()
        killed = await asyncio.to_thread(
            reap_orphans, os.path.join(self.runner_settings.state_dir, "pids")
        )
        for rec in killed:
            log.warning(
                "killed an orphaned agent process group",
                extra={"pgid": rec.pgid, "cell": rec.cell, "drone": rec.drone},
            )
        await self.keeper_http.start()
        tasks = [
            asyncio.create_task(self._heartbeat_forever(), name="node:heartbeat"),
            asyncio.create_task(self._sync_forever(), name="node:drones"),
            asyncio.create_task(self.status_writer.run(), name="node:status"),
            asyncio.create_task(self.log_shipper.run(), name="node:logs"),
            asyncio.create_task(self._usage_forever(), name="node:usage"),
        ]
        stopper = asyncio.create_task(stop.wait(), name="node:stop")
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            await self.stop_all()
            await self.keeper_http.stop()
            await self.gateway.aclose()

    async def stop_all(self) -> None:
        """Stop every drone process (graceful) — on shutdown."""
        runners, self.runners = list(self.runners.values()), {}
        await asyncio.gather(
            *(self._stop_runner(r) for r in runners), *self._stopping, return_exceptions=True
        )

    # -------------------------------------------------------------------------- the Node

    async def register(self) -> None:
        """Create or update this Node with its capacity."""
        s = self.settings
        capacity = {"cpu": s.cpu_millicores, "memory": s.memory_bytes}
        body: Obj = {
            "apiVersion": "apiary.io/v1", "kind": "Node",
            "metadata": {"name": s.name, "labels": {"apiary.io/hostname": socket.gethostname()}},
            "spec": {"capacity": capacity},
        }  # fmt: skip
        try:
            current = await self.client.get("Node", s.name)
        except NotFound:
            with contextlib.suppress(Conflict):
                await self.client.create(body)
        else:
            if (current.get("spec") or {}).get("capacity") != capacity:
                current.setdefault("spec", {})["capacity"] = capacity
                await self.client.update(current)
        await self.heartbeat()
        self.registered.set()

    async def heartbeat(self) -> None:
        """Renew the lease and report allocatable room (keeps controller-owned conditions)."""
        s = self.settings
        for _ in range(5):
            node = await self.client.get("Node", s.name)
            status = dict(node.get("status") or {})
            status["lease"] = {
                "renewTime": rfc3339(time.time()),
                "holderIdentity": f"{socket.gethostname()}:{os.getpid()}",
                "leaseDurationSeconds": s.lease_seconds,
            }
            status["capacity"] = {"cpu": s.cpu_millicores, "memory": s.memory_bytes}
            status["allocatable"] = status["capacity"]
            status["nodeInfo"] = {
                "hostname": socket.gethostname(), "platform": platform.platform(),
                "python": platform.python_version(), "drones": str(len(self.runners)),
            }  # fmt: skip
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
            if not any(c.get("type") == "Ready" for c in status.get("conditions") or []):
                conditions.append(
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "NodeAgentUp",
                        "lastTransitionTime": rfc3339(time.time()),
                    }
                )
            else:
                conditions = status["conditions"]
            status["conditions"] = conditions
            node["status"] = status
            try:
                await self.client.update_status(node)
                return
            except Conflict:
                continue

    async def _heartbeat_forever(self) -> None:
        await self._retrying(self.register)
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            await self._retrying(self.heartbeat)

    @staticmethod
    async def _retrying(call: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while True:
            try:
                await call()
                return
            except NotFound:
                raise
            except (ApiaryError, OSError) as exc:
                log.warning(
                    "node: API call failed; retrying", extra={"error": str(exc), "delay": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -------------------------------------------------------------------------- usage

    async def _usage_forever(self) -> None:
        await self.registered.wait()
        while True:
            await asyncio.sleep(self.settings.usage_seconds)
            try:
                await self.report_usage()
            except (OSError, RuntimeError) as exc:  # /proc unreadable: skip this round
                log.warning(
                    "node: usage not sampled", extra={"node": self.settings.name, "error": str(exc)}
                )

    async def report_usage(self) -> int:
        """Sample every running drone once (one process-table scan, in a thread) and report
        the usage of those whose usage changed; returns how many changed."""
        runners = list(self.runners.values())
        pgids = [g for g in (r.pgid for r in runners) if g is not None]
        samples = await asyncio.to_thread(self.usage_sampler.sample, pgids)
        return collect((r for r in runners if self.runners.get(r.uid) is r), samples)

    # ------------------------------------------------------------------------- the drones

    async def _sync_forever(self) -> None:
        await self.registered.wait()
        delay = 0.2
        while True:
            try:
                listing = await self.client.list("Drone", all_cells=True)
                self.sync(listing.get("items") or [])
                rv = (listing.get("metadata") or {}).get("resourceVersion")
                delay = 0.2
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.resync_seconds):
                        async for kind, obj in self.client.watch(
                            "Drone", all_cells=True, resource_version=rv
                        ):
                            self.observe(kind, obj)
            except (ApiaryError, OSError) as exc:
                log.warning(
                    "node: drone watch interrupted; relisting",
                    extra={"node": self.settings.name, "error": str(exc), "delay": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _mine(self, drone: Obj) -> bool:
        meta = drone.get("metadata") or {}
        return (drone.get("spec") or {}).get("nodeName") == self.settings.name and not meta.get(
            "deletionTimestamp"
        )

    def sync(self, drones: list[Obj]) -> None:
        """Full reconcile against a complete list of drones."""
        wanted = {d["metadata"]["uid"]: d for d in drones if self._mine(d)}
        for uid in [u for u in self.runners if u not in wanted]:
            self._stop(uid)
        for uid, drone in wanted.items():
            self.status_writer.seen(drone)
            if uid not in self.runners:
                self._start(drone)
            else:
                self._claimed(self.runners[uid], drone)

    def observe(self, kind: str, drone: Obj) -> None:
        """One watch event."""
        uid = (drone.get("metadata") or {}).get("uid")
        if not uid:
            return
        if kind != "DELETED" and self._mine(drone):
            self.status_writer.seen(drone)  # the base of its next status write: no GET
            if uid not in self.runners:
                self._start(drone)
            else:
                self._claimed(self.runners[uid], drone)
        elif uid in self.runners:
            if kind == "DELETED":
                self.status_writer.deleted(uid)  # its Stopping/Stopped need no write
            self._stop(uid)

    def _start(self, drone: Obj) -> None:
        cell = drone["metadata"].get("namespace") or "default"
        name = drone["metadata"]["name"]
        for other in [r for r in self.runners.values() if (r.cell, r.name) == (cell, name)]:
            self._stop(other.uid)  # same name, new uid: the old one goes first

        async def read_secret(secret: str) -> Obj:
            return await self.client.get("Secret", secret, cell, reveal=True)

        runner = DroneRunner(
            drone,
            settings=self.runner_settings,
            read_secret=read_secret,
            on_status=self._drone_status,
            extra_env={
                "APIARY_NODE": self.settings.name,  # not the API's address: the keeper is its door
                **self.keeper_http.drone_env(cell, name),
            },
        )
        self.runners[runner.uid] = runner
        runner.start()
        self.log_shipper.track(runner.uid, cell, name, drone["metadata"].get("creationTimestamp"))
        log.info("drone started", extra={"cell": cell, "drone": name, "node": self.settings.name})

    def _claimed(self, runner: DroneRunner, drone: Obj) -> None:
        """A warm pool drone the Queen claimed: the running process joins its stage's queue."""
        spec = drone.get("spec") or {}
        if runner.spec.get("warm") is True and spec.get("warm") is not True:
            runner.spec = spec
            self._drone_status(runner, runner.status())

    def _drone_status(self, runner: DroneRunner, status: Obj) -> None:
        """Report, and put a drone on its stage's queue once it is first ready; from then on its
        worker takes messages only while it is ready (a failing readiness probe, a restart). A
        drone whose circuit breaker is not closed is reported not ready (reason ``CircuitOpen``)
        — its worker pauses on its own."""
        current = self.workers.get(runner.uid)
        if current is not None:
            current.gate(bool(status.get("ready")))
        guard = current.guard if current is not None else None
        shown = circuit_status(status, guard) if guard is not None else status
        self.status_writer.submit(runner, shown)
        if runner.spec.get("warm") is True:
            return  # in the warm pool: no traffic until claimed (:meth:`_claimed`)
        if status.get("ready") and self.bus is not None and runner.uid not in self.workers:
            hive, stage = runner.spec.get("hive"), runner.spec.get("stage")
            if hive and stage and runner.uid in self.runners:
                try:
                    worker = StageWorker(
                        self.bus, runner.keeper, cell=runner.cell, hive=str(hive),
                        stage=str(stage), drone=runner.name,
                        guardrails=runner.spec.get("guardrails"), answered=self._answered,
                        meter=runner.meter,
                        on_circuit=functools.partial(self._circuit_changed, runner),
                        stop_grace=self.runner_settings.grace_period_seconds,
                    )  # fmt: skip
                except GuardrailError as exc:  # takes no traffic it could not police
                    bad = {**status, "ready": False, "reason": "InvalidGuardrails"}
                    self.status_writer.submit(runner, {**bad, "message": str(exc)})
                    return
                self.workers[runner.uid] = worker
                self._spawn(worker.start(), f"worker:{runner.cell}/{runner.name}")

    def _circuit_changed(self, runner: DroneRunner, _state: str) -> None:
        if self.runners.get(runner.uid) is runner:
            self._drone_status(runner, runner.status())

    async def _answered(self, session: str, dispatch: str) -> bool:
        cell, _, name = session.partition("/")
        path = f"/api/v1/cells/{cell}/sessions/{name}/dispatches/{dispatch}"
        try:
            answer = await self.client.request("GET", path)
        except ApiaryError:
            return False  # unknown: let the agent answer; the router drops a duplicate outcome
        return bool((answer.body or {}).get("answered"))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_runner(self, runner: DroneRunner) -> None:
        worker = self.workers.pop(runner.uid, None)
        if worker is not None:
            await worker.stop()  # no new dispatches; in-flight ones finish first
        await runner.stop()

    def _stop(self, uid: str) -> None:
        runner = self.runners.pop(uid)
        self.status_writer.forget(runner.cell, runner.name)
        self.log_shipper.untrack(uid)
        task = asyncio.create_task(
            self._stop_runner(runner), name=f"stop:{runner.cell}/{runner.name}"
        )
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        log.info(
            "drone stopping",
            extra={"cell": runner.cell, "drone": runner.name, "node": self.settings.name},
        )

    async def _post_logs(self, cell: str, drone: str, body: Obj) -> None:
        await self.client.post_logs(cell, drone, body)

    async def _get_drone(self, cell: str, name: str) -> Obj:
        return await self.client.get("Drone", name, cell)

    def find(self, cell: str, name: str) -> DroneRunner | None:
        """The runner of a drone by name, for the router and the logs endpoint."""
        return next((r for r in self.runners.values() if (r.cell, r.name) == (cell, name)), None)
