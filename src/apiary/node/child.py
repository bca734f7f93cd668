"""``python -m apiary.node.child FD``: apiaryd's own node, in a process of its own.

``apiaryd --node-process`` starts this instead of running the node agent on its own event loop,
so the drones' relays (keeper, stdio, the node's share of every message) run on another core
than the router, the journal and the API (docs/benchmarks.md, "Which split of the message path
pays"). It is the embedded node in every other respect: the same settings, the same state dir,
the same node identity, whose token is in memory only.

Nothing secret is on the command line or in the environment. Descriptor ``FD`` is a pipe that
holds a pickled :class:`ChildSpec` (parent to child, written before the child starts); the bus,
when apiaryd's is the in-process one, is a socket pair end (``fd://N``,
:mod:`apiary.bus.remote`). The node stops — its drones gracefully — on SIGTERM, and when apiaryd
is gone however it went: a pipe whose other end only apiaryd holds reads end of file then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import select
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from apiary.bus import open_bus
from apiary.bus.remote import RemoteBus
from apiary.client import AsyncApiClient
from apiary.logging import configure_logging, get_logger
from apiary.loop import run as run_loop
from apiary.node.agent import NodeAgent, NodeSettings
from apiary.telemetry.tracing import init_tracing

log = get_logger("apiary.node")


@dataclass(frozen=True)
class ChildSpec:
    """What apiaryd tells its node process, through the pipe."""

    server: str
    """apiaryd's API URL (loopback)."""

    token: str
    """The embedded node's token: a node identity, valid for this apiaryd's lifetime only."""

    settings: NodeSettings
    """The embedded node's settings (state dir ``<data-dir>/node``, capacity, drone identity)."""

    bus_url: str
    """``fd://N`` for apiaryd's in-process bus, else the bus URL apiaryd uses (NATS)."""

    lifeline: int
    """The read end of a pipe apiaryd holds the other end of: readable (end of file) once apiaryd
    is gone, however it went — with NATS there is no bus connection to tell us."""

    log_json: bool = True
    log_level: str = "info"


def read_spec(fd: int) -> ChildSpec:
    with os.fdopen(fd, "rb") as pipe:
        spec = pickle.load(pipe)
    if not isinstance(spec, ChildSpec):
        raise SystemExit(f"apiary.node.child: descriptor {fd} holds no ChildSpec")
    return spec


async def run_child(spec: ChildSpec) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Ctrl-C reaches the whole foreground group; apiaryd decides, and sends SIGTERM.
        loop.add_signal_handler(signal.SIGINT, lambda: None)

    def apiaryd_gone() -> None:  # end of file stays readable: hear it once, not every turn
        loop.remove_reader(spec.lifeline)
        stop.set()

    loop.add_reader(spec.lifeline, apiaryd_gone)
    async with AsyncApiClient(spec.server, spec.token) as client, open_bus(spec.bus_url) as bus:
        if isinstance(bus, RemoteBus):
            lost = asyncio.create_task(bus.lost.wait(), name="bus-lost")
            lost.add_done_callback(lambda _: stop.set())
        log.info("node process started", node=spec.settings.name, pid=os.getpid())
        try:
            await NodeAgent(client, spec.settings, bus).run(stop)
        finally:
            loop.remove_reader(spec.lifeline)
            if isinstance(bus, RemoteBus):
                lost.cancel()
            if _gone(spec.lifeline):
                log.warning("apiaryd went away; the node process stopped its drones")


def _gone(lifeline: int) -> bool:
    """True once apiaryd closed its end (it never writes: readable means end of file)."""
    ready, _, _ = select.select([lifeline], [], [], 0)
    return bool(ready)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        raise SystemExit("usage: python -m apiary.node.child FD (apiaryd --node-process runs it)")
    spec = read_spec(int(args[0]))
    configure_logging(json=spec.log_json, level=spec.log_level)
    init_tracing("apiary-node", node=spec.settings.name)
    run_loop(run_child(spec))


if __name__ == "__main__":  # the pickled spec names apiary.node.child's class, not __main__'s
    from apiary.node.child import main as entry

    entry()
