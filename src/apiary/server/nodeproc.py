"""The embedded node in a child process (``apiaryd --node-process``): the message path on two cores.

Run in apiaryd's process, the local node shares one GIL with the router, the journal and the API;
every message pays the node's relay (the keeper, the stdio pipe, the node's bus work) on that
same core. As a child process, that share moves to the other core — the split issue 12 asked to
measure (docs/benchmarks.md, "Which split of the message path pays").

The child (:mod:`apiary.node.child`) is supervised like a drone: started once apiaryd serves its
API, started again with a back-off when it exits unasked, and stopped with SIGTERM — its drones
stopping gracefully — when apiaryd stops. With the in-process bus, apiaryd serves that bus to
the child on one end of a socket pair (:mod:`apiary.bus.serve`); with NATS the child connects
itself. When apiaryd dies, however it dies, the child's end of a pipe only apiaryd holds open reads
end of file, and the child stops too; what either leaves running is reaped at the next start, as
for the in-process node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import subprocess
import sys

from apiary.bus import Bus
from apiary.bus.memory import MemoryBus
from apiary.bus.serve import serve_bus
from apiary.logging import get_logger
from apiary.node.agent import NodeSettings
from apiary.node.backoff import Backoff, BackoffPolicy
from apiary.node.child import ChildSpec
from apiary.server.runtime import local_api_url, node_settings, reap_local_orphans
from apiary.server.settings import Settings
from apiary.server.supervisor import TaskFactory

log = get_logger("apiary.nodeproc")

STOP_TIMEOUT = 60.0
"""Seconds the child may take to stop its drones after SIGTERM before it is killed."""

RESTART = BackoffPolicy(initial_seconds=0.5, factor=2.0, cap_seconds=10.0)
"""Back-off between restarts of a child that keeps exiting (a drone's CrashLoopBackOff, with a
shorter cap); back to 0.5 s after a minute of running."""


def node_process_task(
    address: tuple[str, int], token: str, settings: Settings, stop: asyncio.Event, bus: Bus
) -> TaskFactory:
    """The supervised child, talking to our API at ``address`` with the embedded node's
    ``token``; its drones' state under ``<data-dir>/node``, as the in-process node's."""
    url = local_api_url(address)
    node = node_settings(settings, settings.data_dir / "node")

    async def run() -> None:
        backoff = Backoff(RESTART)
        while not stop.is_set():
            await asyncio.to_thread(reap_local_orphans, settings.data_dir)
            backoff.started()
            child = NodeChild(url, token, node, bus, log_json=settings.logging.json,
                              log_level=settings.logging.level)  # fmt: skip
            try:
                await child.start()
            except OSError as exc:  # no process (out of descriptors, memory): try again later
                log.error("could not start the node process", error=str(exc))
                code = None
            else:
                code = await child.run(stop)
            if stop.is_set():
                return
            delay = backoff.next_delay()
            log.warning("the node process exited; starting it again", code=code, delay=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    return run


class NodeChild:
    """One run of the node process: :meth:`start` it, then :meth:`run` it until it exits."""

    def __init__(
        self, url: str, token: str, node: NodeSettings, bus: Bus, *,
        log_json: bool = True, log_level: str = "info",
    ) -> None:  # fmt: skip
        self.url, self.token, self.node, self.bus = url, token, node, bus
        self.log_json, self.log_level = log_json, log_level
        self.proc: asyncio.subprocess.Process | None = None
        self._mine: socket.socket | None = None
        self._lifeline = -1

    async def start(self) -> None:
        """Spawn the child with its spec, its lifeline and (in-process bus) its bus socket."""
        theirs: socket.socket | None = None
        # Descriptors made here are not inheritable: only what pass_fds names reaches the child.
        life_read, self._lifeline = os.pipe()
        spec_read, spec_write = os.pipe()
        pass_fds = [life_read, spec_read]
        bus_url = self.bus.url
        if isinstance(self.bus, MemoryBus):
            self._mine, theirs = socket.socketpair()
            bus_url = f"fd://{theirs.fileno()}"
            pass_fds.append(theirs.fileno())
        spec = ChildSpec(self.url, self.token, self.node, bus_url, life_read,
                         self.log_json, self.log_level)  # fmt: skip
        try:
            try:  # a few KB, well inside a pipe's buffer: written whole before the child runs
                os.write(spec_write, pickle.dumps(spec))
            finally:
                os.close(spec_write)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "apiary.node.child", str(spec_read),
                stdin=subprocess.DEVNULL, pass_fds=pass_fds,
            )  # fmt: skip
        except BaseException:
            self._close()
            raise
        finally:
            for fd in (life_read, spec_read):
                os.close(fd)
            if theirs is not None:
                theirs.close()
        log.info("node process started", pid=self.proc.pid)

    async def run(self, stop: asyncio.Event) -> int | None:
        """Serve the child its bus until it exits, or stop it once ``stop`` is set (SIGTERM,
        SIGKILL after :data:`STOP_TIMEOUT`); its exit code."""
        proc = self.proc
        assert proc is not None, "start() first"
        serving = None
        if self._mine is not None:
            serving = asyncio.create_task(serve_bus(self.bus, self._mine), name="node-bus")
            self._mine = None  # serve_bus owns it now
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                proc.terminate()
                try:
                    await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("the node process did not stop in time; killing it", pid=proc.pid)
                    proc.kill()
            await exited
        finally:
            stopping.cancel()
            if not exited.done():  # cancelled: apiaryd is going down without a clean stop
                proc.kill()
                await asyncio.shield(exited)
            self._close()
            if serving is not None:
                await serving  # ends at the child's end of stream; unsettled work goes back
        return proc.returncode

    def _close(self) -> None:
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1
        if self._mine is not None:
            self._mine.close()
            self._mine = None


__all__ = ["STOP_TIMEOUT", "NodeChild", "node_process_task"]
