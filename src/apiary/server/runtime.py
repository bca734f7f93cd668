"""The runtime apiaryd supervises beside the API: the Queen (under leader election) and,
in embedded mode, a node agent that reaches the API over loopback HTTP like any remote node."""

from __future__ import annotations

import asyncio
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from apiary.bus import Bus
from apiary.client import AsyncApiClient
from apiary.controllers import QueenSettings, run_controllers
from apiary.controllers.autoscaler import Autoscaler, Backlog
from apiary.controllers.cache import Informer
from apiary.controllers.leader import LeaderElector, LeaderSettings
from apiary.controllers.sessions import SessionReaper
from apiary.journal import Journal
from apiary.logging import get_logger
from apiary.node.agent import NodeAgent, NodeSettings
from apiary.node.orphans import reap_orphans
from apiary.node.runner import RunnerSettings
from apiary.security import NODE, Principal
from apiary.server.drone_notices import DroneNotices
from apiary.server.notify import Notifier
from apiary.server.settings import Settings
from apiary.server.supervisor import TaskFactory
from apiary.store import Store

log = get_logger("apiary.runtime")


def queen_task(
    store: Store,
    settings: Settings,
    stop: asyncio.Event,
    journal: Journal | None = None,
    on_session_deleted: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    *,
    notifier: Notifier | None = None,
    backlog: Backlog | None = None,
    on_session_ended: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
) -> TaskFactory:
    """Controllers that run on the one replica holding the lease: the Queen, the session reaper,
    the autoscaler (reading this replica's router ``backlog``) and, given the ``notifier``, the
    drone notices (one sender, or every replica would send the same crash_loop/circuit_open/scaled
    webhooks)."""
    queen = QueenSettings()
    queen.loop.resync_period = settings.controllers.resync_interval
    queen.nodes.lease_duration = settings.runtime.lease_seconds
    queen.tiers = settings.tiers

    async def lead(stop_leading: asyncio.Event) -> None:
        # one watch-fed cache for the reaper and the autoscaler: listed once per term, not per pass
        cache = Informer(store, SessionReaper.KINDS | Autoscaler.KINDS)
        work = [
            run_controllers(store, queen, stop_leading, backlog),
            SessionReaper(
                store, journal, on_deleted=on_session_deleted, on_ended=on_session_ended,
                cache=cache,
            ).run(stop_leading),
            Autoscaler(store, backlog, cache=cache).run(stop_leading),
        ]  # fmt: skip
        if notifier is not None:
            notices = DroneNotices(
                store, notifier, resync_interval=settings.controllers.resync_interval
            )
            work.append(notices.run(stop_leading))
        await asyncio.gather(*work)

    async def run() -> None:
        identity = leader_identity(settings.data_dir)
        await LeaderElector(store, LeaderSettings(identity=identity)).run(lead, stop)

    return run


def leader_identity(data_dir: Path) -> str:
    """This replica's identity in leader elections, stable across restarts of the same data dir:
    an apiaryd killed with -9 and started again takes its own lease back at once instead of
    waiting for it to expire (another replica has another data dir, so another identity)."""
    path = data_dir / "leader.id"
    try:
        return path.read_text().strip() or _new_identity(path)
    except FileNotFoundError:
        return _new_identity(path)


def _new_identity(path: Path) -> str:
    identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
    path.write_text(identity + "\n")
    return identity


def node_settings(settings: Settings, state_dir: Path) -> NodeSettings:
    rt = settings.runtime
    ns = NodeSettings(state_dir=str(state_dir), lease_seconds=rt.lease_seconds)
    ns.runner = RunnerSettings(
        state_dir=str(state_dir), drone_uid=rt.drone_uid, drone_gid=rt.drone_gid
    )
    if rt.node_name:
        ns.name = rt.node_name
    if rt.node_cpu:
        ns.cpu_millicores = rt.node_cpu
    if rt.node_memory:
        ns.memory_bytes = rt.node_memory
    return ns


def local_node_identity(settings: Settings) -> tuple[str, Principal]:
    """A token (in memory only, new at every start) and the node identity it stands for: the
    embedded node may do what a node does — its own Node, its drones — and no more, like a
    node on another machine with its node token."""
    name = node_settings(settings, settings.data_dir / "node").name
    return secrets.token_urlsafe(32), Principal(f"system:node:{name}", (), NODE, None, name)


def reap_local_orphans(data_dir: Path) -> None:
    """Kill what the embedded node's drones left running after a crash (blocking)."""
    for rec in reap_orphans(data_dir / "node" / "pids"):
        log.warning(
            "killed orphaned agent process group", pgid=rec.pgid, drone=f"{rec.cell}/{rec.drone}"
        )


def local_api_url(address: tuple[str, int]) -> str:
    """Our own API's URL, for the embedded node (loopback when we listen on every address)."""
    host, port = address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def local_node_task(
    address: tuple[str, int],
    token: str,
    settings: Settings,
    stop: asyncio.Event,
    bus: Bus | None = None,
) -> TaskFactory:
    """The embedded node: state under ``<data-dir>/node``, talking to our own API."""

    async def run() -> None:
        async with AsyncApiClient(local_api_url(address), token) as client:
            agent = NodeAgent(client, node_settings(settings, settings.data_dir / "node"), bus)
            await agent.run(stop)

    return run
