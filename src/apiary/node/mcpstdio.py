"""A drone's stdio MCP servers (``spec.mcpServers[].command``): run by the node, for the drone.

A stdio server is a process the keeper talks JSON-RPC to over its stdin/stdout. Whoever starts
it decides what it may do, so the node starts it exactly as it starts the drone: through
:func:`apiary.node.launcher.launch` with the drone's :class:`~.launcher.LaunchSpec` rules — the
drone's uid/gid and no supplementary groups, a scrubbed environment holding only the entry's
``env``, the drone's private HOME/TMPDIR, its memory/cpu limits, no inherited descriptor, a death
signal tied to the node and an orphan record (as ``<drone>.mcp-<name>``) so a crashed node's
successor kills it. Its stderr goes to the drone's log as the stream ``mcp-<name>.stderr``.

The ``mcp`` SDK's own ``mcp.client.stdio.stdio_client`` is not used to start it: it spawns with
``anyio.open_process`` as the node's user with the node's HOME/PATH/USER — a second spawner
outside the sandbox. The keeper speaks the SDK's client session (``mcp.Client``) over a transport
on the launched process's pipes instead, with the same framing as ``stdio_client`` (one
JSON-RPC message per line, parsed by ``mcp_types.jsonrpc_message_adapter``).

Lifecycle, per drone and server: started on the first tools/list or tools/call that needs it
(a drone that never uses a server never pays for it, and a server that cannot start fails the
calls that need it, not the drone); one process and one MCP session, kept open and shared by
all the drone's calls; started again on the next use after it died; stopped (stdin closed,
then SIGTERM to its group, SIGKILL after the grace period) when the drone stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from apiary.node.launcher import DroneProcess

log = logging.getLogger("apiary.node")

Launch = Callable[[str], Awaitable[DroneProcess]]
"""Starts the named server's process in the drone's sandbox (:meth:`DroneRunner.launch_mcp`)."""

NO_SDK = ("a stdio MCP server needs the mcp SDK on the node: install apiary with the interop "
          "extra (pip install 'apiary[interop]')")  # fmt: skip
_EOF_EXIT_SECONDS = 0.5
"""How long a server has to exit by itself once its stdin is closed, before SIGTERM."""
_SESSION_CLOSE_SECONDS = 2.0


class ServerUnavailable(Exception):
    """The server cannot be started (or the drone is stopping); the message says why."""


@contextlib.asynccontextmanager
async def pipes_transport(
    proc: DroneProcess, ended: asyncio.Event | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """An ``mcp`` client transport over a started process's stdin/stdout: the read and write
    streams of :class:`mcp.shared.message.SessionMessage` that ``mcp.Client`` takes. ``ended``
    is set when the server's stdout ends (it closed it, or died)."""
    import anyio
    import mcp_types
    from mcp.shared.message import SessionMessage

    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:
        raise ServerUnavailable("the server process has no stdin/stdout pipes")
    to_session, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](0)

    async def read() -> None:
        try:
            await read_lines()
        finally:
            if ended is not None:
                ended.set()

    async def read_lines() -> None:
        async with to_session:
            while True:
                try:
                    line = await stdout.readline()
                except (ValueError, ConnectionError):  # a line over the limit, a broken pipe
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                item: SessionMessage | Exception
                try:
                    message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    item = SessionMessage(message)
                except ValueError as exc:  # the session reports it; the stream goes on
                    item = exc
                try:
                    await to_session.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return

    async def write() -> None:
        try:
            async with from_session:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    stdin.write(data.encode() + b"\n")
                    await stdin.drain()
        except (ConnectionError, OSError):  # the server is gone: end the session's reads too
            await to_session.aclose()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        tasks.start_soon(write)
        try:
            yield read_stream, write_stream
        finally:
            stdin.close()  # EOF: a stdio server's cue to exit
            tasks.cancel_scope.cancel()


class _Server:
    """One server of one drone: its process and the MCP session over its pipes."""

    def __init__(self, name: str, launch: Launch, grace_seconds: float) -> None:
        self.name = name
        self._launch = launch
        self._grace = grace_seconds
        self._lock = asyncio.Lock()
        self.proc: DroneProcess | None = None
        self.client: Any = None
        self.starts = 0
        self._owner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def alive(self) -> bool:
        """The process runs and its session is open (the owner leaves when either ends)."""
        return (self.client is not None and self.proc is not None
                and self.proc.returncode is None
                and self._owner is not None and not self._owner.done())  # fmt: skip

    async def get(self) -> Any:
        async with self._lock:
            if self.alive():
                return self.client
            if self.proc is not None:
                log.warning("stdio MCP server died: starting it again",
                            extra={"server": self.name, "rc": self.proc.returncode})  # fmt: skip
                await self.shutdown()
            try:
                proc = await self._launch(self.name)
            except Exception as exc:  # LaunchError, EnvError: the reason, for the agent
                raise ServerUnavailable(f"could not start: {getattr(exc, 'message', exc)}") from exc
            self.proc, self.starts = proc, self.starts + 1
            self._stop = asyncio.Event()
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._owner = asyncio.create_task(self._own(proc, ready), name=f"mcp:{self.name}")
            try:
                self.client = await asyncio.shield(ready)
            except BaseException:
                await asyncio.shield(self.shutdown())
                raise
            return self.client

    async def _own(self, proc: DroneProcess, ready: asyncio.Future[Any]) -> None:
        """Holds the session open (anyio's scopes must be left by the task that entered them)
        until the drone stops or the process dies."""
        from mcp import Client

        ended = asyncio.Event()
        try:
            async with Client(pipes_transport(proc, ended)) as client:
                ready.set_result(client)
                waits = {asyncio.ensure_future(proc.wait()),
                         asyncio.ensure_future(self._stop.wait()),
                         asyncio.ensure_future(ended.wait())}  # fmt: skip
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
        except Exception as exc:
            if not ready.done():
                detail = f"exited with code {proc.returncode}" if proc.returncode is not None \
                    else str(exc) or type(exc).__name__  # fmt: skip
                tail = "; ".join(proc.last_stderr[-3:])
                ready.set_exception(ServerUnavailable(
                    f"did not answer the MCP handshake: {detail}" + (f" ({tail})" if tail else "")
                ))  # fmt: skip
            else:
                log.debug("stdio MCP session ended", extra={"server": self.name, "error": str(exc)})
        finally:
            if not ready.done():
                ready.set_exception(ServerUnavailable("stopped before it answered"))

    async def shutdown(self) -> None:
        """Close the session (stdin gets EOF), then stop the process group and reap it."""
        proc, owner = self.proc, self._owner
        self.proc, self.client, self._owner = None, None, None
        self._stop.set()
        if owner is not None:
            try:
                await asyncio.wait_for(owner, _SESSION_CLOSE_SECONDS)
            except (TimeoutError, asyncio.CancelledError, Exception):
                owner.cancel()
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), _EOF_EXIT_SECONDS)
            await proc.stop(self._grace)


class StdioServers:
    """The stdio MCP servers of one drone, started on first use (:meth:`client`), stopped with
    the drone (:meth:`close`)."""

    def __init__(self, launch: Launch, *, grace_seconds: float = 10.0) -> None:
        self._launch = launch
        self._grace = grace_seconds
        self._servers: dict[str, _Server] = {}
        self._closed = False

    async def client(self, name: str) -> Any:
        """The connected ``mcp.Client`` of server ``name`` (started or restarted as needed);
        :class:`ServerUnavailable` when it cannot be."""
        if self._closed:
            raise ServerUnavailable("the drone is stopping")
        try:
            import mcp  # noqa: F401 — checked before a process is started for nothing
        except ImportError:
            raise ServerUnavailable(NO_SDK) from None
        server = self._servers.get(name)
        if server is None:
            server = self._servers[name] = _Server(name, self._launch, self._grace)
        client = await server.get()
        if self._closed:  # the drone stopped while this one started
            await server.shutdown()
            raise ServerUnavailable("the drone is stopping")
        return client

    def process(self, name: str) -> DroneProcess | None:
        """The running server's process (None when none runs)."""
        server = self._servers.get(name)
        proc = server.proc if server is not None else None
        return proc if proc is not None and proc.returncode is None else None

    async def close(self) -> None:
        """Stop every server; idempotent. Nothing starts after this."""
        self._closed = True
        servers = list(self._servers.values())
        await asyncio.gather(*(s.shutdown() for s in servers), return_exceptions=True)
