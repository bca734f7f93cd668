"""The ``http`` interface: POST each message to the agent, probe its health path (DESIGN §5).

One keep-alive ``httpx.AsyncClient`` per drone, with as many connections as the interface's
concurrency. The response body is one Waggle message, a JSON list of them, any other JSON (the
payload of a ``result``), any other text (a string payload) or empty/204 (no output). A 4xx/5xx
answer is an AgentProtocolError; the process dying mid-request is AgentCrashed. The message's
``traceparent`` is also the request's ``traceparent`` header, so an agent's OpenTelemetry HTTP
instrumentation continues the trace without reading the body.

Health checks (:meth:`HttpChannel.probe`, and the node's periodic probes, :mod:`apiary.node.probes`)
use a connection of their own (:func:`probe_client`): with every message connection busy on a
long turn, a check queued behind them would time out and call a healthy agent dead.

The agent's stdout is not part of the protocol here, but it is a pipe the launcher handed us: we
drain it (keeping the last lines for diagnosis) so a chatty agent never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import httpx
import orjson

from apiary.node.interfaces.base import Channel, UnsolicitedHook, log
from apiary.node.interfaces.config import InterfaceConfig
from apiary.node.interfaces.errors import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    DeliveryCancelled,
    ResponseTimeout,
)
from apiary.waggle import (
    InvalidMessage,
    Message,
    encode,
    looks_like_waggle,
    output_from_json,
    output_from_text,
)

_JSON_HEADERS = {"content-type": "application/json"}


def parse_http_body(status: int, body: bytes, answering: Message) -> list[Message]:
    """An HTTP answer → the outputs of the turn (see the module docstring)."""
    if status >= 400:
        snippet = body[:200].decode("utf-8", "replace")
        raise AgentProtocolError(f"the agent answered HTTP {status}: {snippet}")
    if status == 204 or not body.strip():
        return []
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [output_from_text(body.decode("utf-8", "replace"), answering)]
    try:
        if isinstance(value, list) and value and all(looks_like_waggle(v) for v in value):
            return [output_from_json(v, answering) for v in value]
        return [output_from_json(value, answering)]
    except InvalidMessage as exc:
        raise AgentProtocolError(f"the agent answered an invalid Waggle message: {exc}") from None


def probe_client(base_url: str) -> httpx.AsyncClient:
    """A client for health checks only: one connection, no proxy from the environment."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(None, connect=5.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        trust_env=False,
    )


async def get_health(client: httpx.AsyncClient, path: str) -> str | None:
    """``GET path``: None when it answers 2xx, else what went wrong (for a status message).
    No timeout of its own: the caller bounds it (a probe's ``timeoutSeconds``)."""
    try:
        resp = await client.get(path)
    except httpx.HTTPError as exc:
        return f"HTTP GET {path} failed: {type(exc).__name__}"
    if 200 <= resp.status_code < 300:
        return None
    return f"HTTP GET {path} answered {resp.status_code}"


class HttpChannel(Channel):
    def __init__(
        self,
        config: InterfaceConfig,
        on_unsolicited: UnsolicitedHook,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(on_unsolicited)
        self._config = config
        self._port = port or config.port
        self._host = host
        self._client: httpx.AsyncClient | None = None
        self._probe_client: httpx.AsyncClient | None = None
        self._death: asyncio.Future[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: dict[str, asyncio.Future[Any]] = {}
        self.stdout_tail: deque[str] = deque(maxlen=100)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def _client_for_use(self) -> httpx.AsyncClient:
        if self._client is None:
            n = self._config.concurrency
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(None, connect=5.0),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                trust_env=False,  # a proxy from the environment must never sit between us
            )
        return self._client

    # -- lifecycle -------------------------------------------------------------------------------

    async def attach(self, proc: asyncio.subprocess.Process) -> None:
        if not self._port:
            raise AgentNotReady(
                "an http agent needs spec.interface.port (or a port from the launcher)"
            )
        await self._detach("the agent process was replaced")
        self.proc = proc
        loop = asyncio.get_running_loop()
        self._death = loop.create_future()
        self._tasks = [asyncio.create_task(self._watch(proc, self._death))]
        if proc.stdout is not None:
            self._tasks.append(asyncio.create_task(self._drain(proc.stdout)))
        # Connections to the old process are useless; start fresh pools.
        for client in (self._client, self._probe_client):
            if client is not None:
                await client.aclose()
        self._client = self._probe_client = None

    async def _watch(self, proc: asyncio.subprocess.Process, death: asyncio.Future[str]) -> None:
        code = await proc.wait()
        self.ready = False
        if not death.done():
            death.set_result(f"the agent exited with code {code}")

    async def _drain(self, out: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while line := await out.readline():
                self.stdout_tail.append(line.decode("utf-8", "replace").rstrip("\n"))

    async def start(self, timeout: float) -> None:
        death = self._death
        if death is None:
            raise AgentNotReady("no agent process attached")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        while True:
            if death.done():
                raise AgentCrashed(death.result(), self._exit_code())
            if await self._healthy():
                self.ready = True
                return
            if loop.time() >= deadline:
                raise AgentNotReady(
                    f"the agent did not answer GET {self._config.health_path} on port "
                    f"{self._port} with 2xx within {timeout:g}s"
                )
            await asyncio.wait((death,), timeout=delay)
            delay = min(delay * 2, 0.1)

    async def _healthy(self) -> bool:
        try:
            resp = await self._client_for_use().get(self._config.health_path, timeout=2.0)
        except httpx.HTTPError:
            return False
        return 200 <= resp.status_code < 300

    async def probe(self) -> bool:
        if self._death is None or self._death.done():
            return False
        if self._probe_client is None:
            self._probe_client = probe_client(self.base_url)
        try:
            async with asyncio.timeout(2.0):
                return await get_health(self._probe_client, self._config.health_path) is None
        except TimeoutError:
            return False

    async def stop(self) -> None:
        await self._detach("the keeper was stopped")
        for client in (self._client, self._probe_client):
            if client is not None:
                await client.aclose()
        self._client = self._probe_client = None

    async def _detach(self, reason: str) -> None:
        self.ready = False
        if self._death is not None and not self._death.done():
            self._death.set_result(reason)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _exit_code(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    # -- exchanging ------------------------------------------------------------------------------

    def cancel(self, msg_id: str) -> bool:
        request = self._requests.get(msg_id)
        if request is None or request.done():
            return False
        request.cancel()
        return True

    async def exchange(self, msg: Message, timeout: float | None) -> list[Message]:
        death = self._death
        if death is None:
            raise AgentNotReady("no agent process attached")
        if death.done():
            raise AgentCrashed(death.result(), self._exit_code())
        client = self._client_for_use()
        headers = _JSON_HEADERS
        if msg.traceparent is not None:  # W3C trace context: the agent's HTTP server joins in
            headers = {**_JSON_HEADERS, "traceparent": msg.traceparent}
        request = asyncio.ensure_future(
            client.post(self._config.message_path, content=encode(msg), headers=headers)
        )
        self._requests[msg.id] = request
        try:
            done, _ = await asyncio.wait(
                (request, death), timeout=timeout, return_when="FIRST_COMPLETED"
            )
        except asyncio.CancelledError:
            request.cancel()
            raise
        finally:
            if self._requests.get(msg.id) is request:
                del self._requests[msg.id]
        if request.cancelled():
            raise DeliveryCancelled(f"message {msg.id} was cancelled")
        if request not in done:
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await request
            if death.done():
                raise AgentCrashed(death.result(), self._exit_code())
            raise ResponseTimeout(f"the agent did not answer message {msg.id} in {timeout:g}s")
        try:
            resp = request.result()
        except httpx.HTTPError as exc:
            # Most often the process is dying: give its exit a moment to be noticed.
            await asyncio.wait((death,), timeout=0.2)
            if death.done():
                raise AgentCrashed(death.result(), self._exit_code()) from None
            log.warning("http agent transport error", extra={"error": repr(exc)})
            raise AgentProtocolError(f"HTTP exchange with the agent failed: {exc!r}") from None
        return parse_http_body(resp.status_code, resp.content, msg)
