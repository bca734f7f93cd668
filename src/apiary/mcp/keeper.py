"""MCP through the keeper: one local MCP endpoint per drone, proxying to the servers it may use.

A drone's Cell and AgentSpec list its MCP servers (``spec.mcpServers: [{name, url,
allowTools, timeoutSeconds?, headers?}]``, the AgentSpec's entry replacing the Cell's of the same
name; the Drone carries the merged copy). The keeper serves them to the agent at
``$APIARY_KEEPER_URL/mcp`` (Streamable HTTP, :mod:`apiary.mcp.protocol`), authenticated with the
drone's keeper token like every keeper route. Tools are named ``<server>.<tool>``; only those in
the server's ``allowTools`` are listed or called (``["*"]`` allows all; none listed, none
allowed) — any other call is refused with a JSON-RPC error naming the list.

Every call — answered, failed, timed out or refused — is recorded in the session's journal
(through the API, :mod:`apiary.mcp.toolcalls`: tool, arguments, result, latency) and, with
tracing on, is a span ``mcp.tools/call`` (child of the agent's ``traceparent`` header when it
sends one). The session is the one the drone holds a message of (header ``Apiary-Session``
picks one when it holds several); a drone that holds none may list tools but not call them.
A call is bounded by ``timeoutSeconds`` (default 30) and cancelled when the agent hangs up.

The upstream side is the ``mcp`` SDK's client (the ``interop`` extra: ``pip install
'apiary[interop]'``); without it the endpoint answers every call with an error saying so. A
``url`` server gets one Streamable HTTP session per request; a ``command`` (stdio) server is a
process the node runs for the drone, in the drone's sandbox and as its user, started on first
use and kept with one open MCP session for all the drone's calls (:mod:`apiary.node.mcpstdio`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from apiary.errors import ApiaryError, BadRequest, Forbidden
from apiary.mcp.protocol import INVALID_PARAMS, McpError, serve, text_result
from apiary.node.keeperhttp import PREFIX, KeeperHttpServer, check_path
from apiary.node.mcpstdio import ServerUnavailable
from apiary.telemetry import tracing

Obj = dict[str, Any]
log = logging.getLogger("apiary.node")

SESSION_HEADER = "apiary-session"
DEFAULT_TIMEOUT = 30.0
NO_SDK = ("the keeper's MCP proxy needs the mcp SDK on the node: install apiary with the "
          "interop extra (pip install 'apiary[interop]')")  # fmt: skip


@dataclass(frozen=True)
class Upstream:
    """One ``spec.mcpServers`` entry."""

    name: str
    url: str
    """The Streamable HTTP endpoint; empty for a stdio server."""
    allow: frozenset[str] = field(default_factory=frozenset)
    timeout: float = DEFAULT_TIMEOUT
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_headers: tuple[tuple[str, str, str, str], ...] = ()
    """(header, prefix, Secret name, key) of ``headersFrom``."""
    command: tuple[str, ...] = ()
    """argv of a stdio server (the node starts it: :mod:`apiary.node.mcpstdio`)."""

    @property
    def stdio(self) -> bool:
        return bool(self.command)

    def allows(self, tool: str) -> bool:
        return "*" in self.allow or tool in self.allow


def upstreams(spec: Mapping[str, Any]) -> dict[str, Upstream]:
    """The drone's MCP servers by name (entries the admission check would refuse are skipped)."""
    out: dict[str, Upstream] = {}
    for entry in spec.get("mcpServers") or []:
        if not isinstance(entry, dict):
            continue
        command = entry.get("command")
        argv = tuple(str(a) for a in command) if isinstance(command, list) and command else ()
        if not isinstance(entry.get("url"), str) and not argv:
            continue
        name = str(entry.get("name") or "")
        allow = frozenset(str(t) for t in entry.get("allowTools") or [])
        timeout = entry.get("timeoutSeconds")
        headers = entry.get("headers") if isinstance(entry.get("headers"), dict) else {}
        seconds = float(timeout) if isinstance(timeout, int | float) else DEFAULT_TIMEOUT
        pairs = {str(k): str(v) for k, v in (headers or {}).items()}
        secret = tuple(
            _header_from(h) for h in entry.get("headersFrom") or [] if isinstance(h, dict)
        )
        url = "" if argv else str(entry["url"])
        out[name] = Upstream(name, url, allow, seconds, pairs, secret, argv)
    return out


async def secret_headers(keeper: KeeperHttpServer, cell: str, up: Upstream) -> dict[str, str]:
    """``headersFrom``, read from the cell's Secrets with the node's token (an error result
    naming the Secret when one is missing or unreadable)."""
    out: dict[str, str] = {}
    for header, prefix, name, key in up.secret_headers:
        where = f"MCP server {up.name!r}: headersFrom {header!r}: Secret {name!r} key {key!r}"
        try:
            secret = await keeper.client.get("Secret", name, cell, reveal=True)
            raw = (secret.get("data") or {})[key]
            out[header] = prefix + base64.b64decode(str(raw), validate=True).decode().strip()
        except (ApiaryError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
            detail = exc.message if isinstance(exc, ApiaryError) else "missing or not base64 text"
            raise McpError(INVALID_PARAMS, f"{where}: {detail}") from None
    return out


def _header_from(h: Obj) -> tuple[str, str, str, str]:
    raw = h.get("secretKeyRef")
    ref: Obj = raw if isinstance(raw, dict) else {}
    return str(h.get("name")), str(h.get("prefix") or ""), str(ref.get("name")), str(ref.get("key"))


_SDK_MODULE = "mcp.client.streamable_http"


def _sdk() -> tuple[Any, Any, Any]:
    try:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
    except ImportError:
        raise McpError(INVALID_PARAMS, NO_SDK) from None
    return httpx2, Client, streamable_http_client


async def load_sdk() -> tuple[Any, Any, Any]:
    """The mcp SDK's client pieces. The first import takes about a second of CPU, so it runs on
    a thread, and before a call's ``timeoutSeconds`` starts: it must neither stall the event
    loop (the node's, in embedded mode apiaryd's) nor make a drone's first tool listing time
    out on a server that answers in milliseconds."""
    if sys.modules.get(_SDK_MODULE) is not None:
        return _sdk()
    return await asyncio.to_thread(_sdk)


@contextlib.asynccontextmanager
async def connect(up: Upstream, extra: Mapping[str, str] | None = None) -> AsyncIterator[Any]:
    httpx2, Client, streamable_http_client = await load_sdk()
    http = httpx2.AsyncClient(headers={**up.headers, **(extra or {})}, timeout=up.timeout)
    async with http, Client(streamable_http_client(up.url, http_client=http)) as client:
        yield client


class StdioPool(Protocol):
    """The drone's stdio servers (:class:`apiary.node.mcpstdio.StdioServers`)."""

    async def client(self, name: str) -> Any: ...


class KeeperTools:
    """The tool set one drone sees: its servers' allowed tools, each call recorded."""

    def __init__(self, keeper: KeeperHttpServer, cell: str, drone: str, spec: Mapping[str, Any],
                 session: str | None, traceparent: str | None,
                 stdio: StdioPool | None = None) -> None:  # fmt: skip
        self.keeper, self.cell, self.drone = keeper, cell, drone
        self.stdio = stdio
        self.servers = upstreams(spec)
        self.stage = str(spec.get("stage") or "") or None
        self.session, self.traceparent = session, traceparent
        self.name = f"apiary-keeper-{drone}"

    @contextlib.asynccontextmanager
    async def _client(self, up: Upstream) -> AsyncIterator[Any]:
        """A connected client of ``up``: a new Streamable HTTP session, or the drone's open
        session with its stdio server (started now if it does not run)."""
        if not up.stdio:
            extra = await secret_headers(self.keeper, self.cell, up)
            async with connect(up, extra) as client:
                yield client
            return
        if self.stdio is None:
            raise ServerUnavailable("this keeper cannot run stdio MCP servers")
        yield await self.stdio.client(up.name)

    async def list_tools(self) -> list[Obj]:
        tools: list[Obj] = []
        if self.servers:
            await load_sdk()  # not on any server's clock
        for up in self.servers.values():
            try:
                async with asyncio.timeout(up.timeout), self._client(up) as client:
                    listed = (await client.list_tools()).tools
            except McpError:
                raise
            except Exception as exc:  # one unreachable server must not hide the others
                log.warning("MCP server unreachable", extra={"server": up.name, "error": str(exc)})
                continue
            for t in listed:
                if up.allows(t.name):
                    tools.append({"name": f"{up.name}.{t.name}", "description": t.description or "",
                                  "inputSchema": t.input_schema})  # fmt: skip
        return tools

    async def call_tool(self, name: str, arguments: Obj) -> Obj:
        server, _, tool = name.partition(".")
        up = self.servers.get(server)
        if up is None or not tool:
            known = ", ".join(sorted(self.servers)) or "none"
            raise McpError(INVALID_PARAMS, f"params.name: {name!r} is not <server>.<tool> of "
                                           f"this drone's MCP servers ({known})")  # fmt: skip
        if self.session is None:
            raise McpError(INVALID_PARAMS, f"drone {self.cell}/{self.drone} holds no message: a "
                                           "tool call is made for a message it holds")  # fmt: skip
        if not up.allows(tool):
            allowed = ", ".join(sorted(up.allow)) or "nothing"
            why = (f"tool {tool!r} of MCP server {server!r} is not in its allowTools "
                   f"(it allows {allowed})")  # fmt: skip
            await self._record(up, tool, arguments, None, 0.0, why)
            raise McpError(INVALID_PARAMS, why)
        await load_sdk()  # not on the server's clock
        started = time.monotonic()
        with _span(up, tool, self.traceparent) as span:
            try:
                async with asyncio.timeout(up.timeout), self._client(up) as client:
                    result = await client.call_tool(
                        tool, arguments, read_timeout_seconds=up.timeout
                    )
                answer: Obj = result.model_dump(mode="json", by_alias=True, exclude_none=True)
                error = None
            except McpError:
                raise
            except asyncio.CancelledError:  # the agent hung up: the call is dropped, and said so
                latency = (time.monotonic() - started) * 1000
                why = f"cancelled: the agent hung up before MCP server {server!r} answered"
                await asyncio.shield(self._record(up, tool, arguments, None, latency, why))
                raise
            except TimeoutError:
                error = f"MCP server {server!r} did not answer within {up.timeout:g}s"
                answer = text_result(error, error=True)
            except Exception as exc:  # the agent hears why, the transcript too
                error = f"MCP server {server!r} failed the call: {exc or type(exc).__name__}"
                answer = text_result(error, error=True)
            if span is not None:
                span.set_attribute("mcp.is_error", bool(answer.get("isError")))
        latency = (time.monotonic() - started) * 1000
        await self._record(up, tool, arguments, answer, latency, error)
        return answer

    async def _record(self, up: Upstream, tool: str, arguments: Obj, result: Obj | None,
                      latency: float, error: str | None) -> None:  # fmt: skip
        body: Obj = {"server": up.name, "tool": tool, "arguments": arguments, "result": result,
                     "isError": error is not None or bool((result or {}).get("isError")),
                     "latencyMs": round(latency, 3), "drone": self.drone}  # fmt: skip
        if self.stage:
            body["stage"] = self.stage
        if error:
            body["error"] = error
        path = f"/api/v1/cells/{self.cell}/sessions/{self.session}/tool-calls"
        try:
            await self.keeper.client.request("POST", path, json_body=body)
        except ApiaryError as exc:
            log.warning("could not record an MCP tool call", extra={"error": exc.message})


@contextlib.contextmanager
def _span(up: Upstream, tool: str, traceparent: str | None) -> Any:
    if tracing.TRACER is None:
        yield None
        return
    attributes = {"mcp.server": up.name, "mcp.tool": tool,
                  "mcp.transport": "stdio" if up.stdio else "streamable-http"}  # fmt: skip
    if up.stdio:
        attributes["mcp.command"] = up.command[0]
    else:
        attributes["mcp.url"] = up.url
    with tracing.TRACER.start_as_current_span(
        "mcp.tools/call", context=tracing.context_from(traceparent), attributes=attributes
    ) as span:
        yield span


def _session(request: Request, keeper: KeeperHttpServer, cell: str, drone: str) -> str | None:
    """The session a call is for: the header's (which the drone must hold), else the only one
    the drone holds, else None (several held: the header must say which)."""
    asked = (request.headers.get(SESSION_HEADER) or "").strip() or None
    if asked is not None:
        keeper.authorize(cell, drone, "session", asked)
        return asked
    running = keeper.drones(cell, drone) if keeper.drones is not None else None
    held = running.keeper.held.sessions() if running is not None else []
    if len(held) > 1:
        raise BadRequest(f"drone {cell}/{drone} holds messages of {len(held)} sessions: say "
                         f"which with the header Apiary-Session")  # fmt: skip
    return held[0].rpartition("/")[2] if held else None


async def _unless_hung_up(request: Request, work: Awaitable[Response]) -> Response:
    """``work``, cancelled when the agent hangs up (its connection closes) before the answer:
    the call is then dropped upstream too — a stdio server's session cancels the request."""
    task = asyncio.ensure_future(work)

    async def hung_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return Response(status_code=499)  # nobody reads it: the agent is gone


def mcp_keeper_routes(keeper: KeeperHttpServer) -> list[BaseRoute]:
    """``POST /drones/{cell}/{drone}/mcp`` on the keeper's server (GET and DELETE: 405)."""

    async def post(request: Request) -> Response:
        try:
            check_path(request)
            cell, drone = keeper.authenticate(request)
            running = keeper.drones(cell, drone) if keeper.drones is not None else None
            if running is None:
                raise Forbidden(f"drone {cell}/{drone} does not run on this node")
            session = _session(request, keeper, cell, drone)
            raw = await request.body()
            if len(raw) > keeper.max_body_bytes:
                raise BadRequest(f"the request is over {keeper.max_body_bytes} bytes")
        except ApiaryError as exc:
            return Response(exc.message, status_code=exc.status, media_type="text/plain")
        tools = KeeperTools(keeper, cell, drone, running.spec, session,
                            request.headers.get("traceparent"),
                            getattr(running, "mcp_stdio", None))  # fmt: skip
        return await _unless_hung_up(request, serve(raw, tools))

    async def not_allowed(request: Request) -> Response:
        return Response(status_code=405, headers={"Allow": "POST"})

    return [Route(PREFIX + "/mcp", post, methods=["POST"]),
            Route(PREFIX + "/mcp", not_allowed, methods=["GET", "DELETE"])]  # fmt: skip
