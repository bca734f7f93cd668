"""The node's local HTTP server for agents: Comb memory, long-term memory, the LLM gateway.

One server per node agent on ``127.0.0.1:<ephemeral>``. Each drone gets, in its environment,
``APIARY_KEEPER_URL=http://127.0.0.1:PORT/drones/<cell>/<drone>`` and ``APIARY_KEEPER_TOKEN``,
an HMAC of ``<cell>/<drone>`` under a key that lives only in this process: the server recomputes
it to check a caller, so no table of tokens is kept, a token is good for its own drone's paths
only, and a restarted node agent invalidates every old token. A drone that no longer runs here
is refused too (``allowed``).

Requests are forwarded to the control plane's API with the node's own client — the node talks to
the control plane over HTTP only — under the drone's cell:

    /drones/{cell}/{drone}/comb/{s}[/{key}[/incr]]  →  /api/v1/cells/{cell}/sessions/{s}/comb…
    /drones/{cell}/{drone}/lists/{s}/{name}         →  /api/v1/cells/{cell}/sessions/{s}/lists/…
    /drones/{cell}/{drone}/memory[/search|/{id}]    →  /api/v1/cells/{cell}/memory…

A later feature adds routes with :meth:`KeeperHttpServer.add_routes` (e.g.
``/drones/{cell}/{drone}/v1/chat/completions``) and checks callers with
:meth:`KeeperHttpServer.authenticate`, on the same server.

Authority: one drone, one message (DESIGN §9, docs/comb.md "What a drone may reach"). A token is
good for its own drone's paths, and within them:

* ``comb`` and ``lists`` of a session only while the drone holds a message of that session
  (:attr:`apiary.node.keeper.Keeper.held`: from delivery until its final answer is taken, or the
  delivery timed out or was abandoned) — else 403 ``drone c/d holds no message of session s``;
* ``memory`` (the drone's own cell's long-term memory) only as far as the AgentSpec's
  ``spec.memory`` allows: ``read`` searches, ``readwrite`` also remembers and forgets;
* anything else is a 403 naming what a drone may reach. A path part that is ``.``/``..``, holds
  an encoded ``/`` or backslash, or a control character is a 400 and never reaches the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import quote

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from apiary.client import AsyncApiClient
from apiary.errors import ApiaryError, BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from apiary.node.keeper import HeldSessions

log = logging.getLogger("apiary.node")

Allowed = Callable[[str, str], bool]
PREFIX = "/drones/{cell}/{drone}"

Scope = Literal["session", "memory:read", "memory:write"]
"""What a route reaches: a held session's Comb/lists, or the cell's long-term memory."""

MEMORY_MODES = ("none", "read", "readwrite")
"""``AgentSpec.spec.memory``: what a drone may do with its cell's long-term memory."""

REACH = (
    "a drone's token reaches only comb/{session} and lists/{session} of the sessions it holds "
    "a message of, memory as its AgentSpec's spec.memory allows, and the LLM gateway (/v1)"
)


class _Holder(Protocol):
    @property
    def held(self) -> HeldSessions: ...


class KeeperDrone(Protocol):
    """What the server needs of a drone running here (a DroneRunner): its spec (for
    ``memory``) and its keeper (for the sessions it holds)."""

    @property
    def spec(self) -> Mapping[str, Any]: ...

    @property
    def keeper(self) -> _Holder: ...


Lookup = Callable[[str, str], KeeperDrone | None]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                 413: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip


def _error(exc: ApiaryError) -> Response:
    """The API's error body, and the same error OpenAI-shaped under ``error`` (``message``,
    ``type``, ``param``, a string ``code``), so an OpenAI client pointed at the keeper reads it
    like the gateway's own refusals (docs/gateway.md, "Errors")."""
    kind = _OPENAI_TYPES.get(exc.status, "api_error")
    body = {**exc.as_dict(), "error": {"message": exc.message, "type": kind, "param": None,
                                        "code": exc.code}}  # fmt: skip
    return _json(body, exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths are a 403 naming what a drone may reach, wrong methods a 405, both JSON
    like the API, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(Forbidden(f"no keeper route {request.url.path!r}: {REACH}"))
    reason = {405: "MethodNotAllowed"}.get(exc.status_code, "Error")
    message = {405: "method not allowed on this route"}.get(exc.status_code, str(exc.detail))
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": reason}
    body = {"code": exc.status_code, "reason": reason, "message": message, "error": error}
    return _json(body, exc.status_code)


def _q(part: str) -> str:
    return quote(part, safe="")


_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"%00")


def check_path(request: Request) -> None:
    """Refuse (400) a path whose parts could reach another API path once forwarded: an encoded
    ``/`` or backslash (Starlette routes on the decoded path, so ``..%2Fother`` would split into
    two parts), a ``.`` or ``..`` part, a backslash or a control character in a part."""
    raw = bytes(request.scope.get("raw_path") or b"").lower()
    if any(sep in raw for sep in _ENCODED_SEPARATORS):
        raise BadRequest("an encoded '/', '\\' or NUL in a keeper path is not allowed")
    for name, part in request.path_params.items():
        if part in (".", "..") or "/" in part or "\\" in part or any(ord(c) < 32 for c in part):
            raise BadRequest(f"{name} {part!r} is not a valid path part")


class KeeperHttpServer:
    """Serves the drones of one node; :meth:`start` before the drones, :meth:`stop` after."""

    def __init__(
        self,
        client: AsyncApiClient,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed: Allowed | None = None,
        drones: Lookup | None = None,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.drones = drones
        """The drone running here by (cell, name): what it holds and what its spec allows.
        Without it no drone holds anything, so no session and no memory is reachable."""
        if allowed is None and drones is not None:
            lookup = drones

            def allowed(cell: str, drone: str) -> bool:
                return lookup(cell, drone) is not None

        self.allowed = allowed
        self.max_body_bytes = max_body_bytes
        self._key = secrets.token_bytes(32)
        self._routes: list[BaseRoute] = [
            Route("/healthz", self._healthz, methods=["GET"]),
            *self._comb_routes(),
        ]
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    # ------------------------------------------------------------------------ identity

    def token_for(self, cell: str, drone: str) -> str:
        return hmac.new(self._key, f"{cell}/{drone}".encode(), hashlib.sha256).hexdigest()

    @property
    def url(self) -> str:
        if self._sock is None:
            raise RuntimeError("the keeper HTTP server is not started")
        return f"http://{self.host}:{self.port}"

    def drone_env(self, cell: str, drone: str) -> dict[str, str]:
        """What a drone needs in its environment to reach this server ({} before it runs)."""
        if self._sock is None:
            return {}
        return {
            "APIARY_KEEPER_URL": f"{self.url}/drones/{_q(cell)}/{_q(drone)}",
            "APIARY_KEEPER_TOKEN": self.token_for(cell, drone),
        }

    def authenticate(self, request: Request) -> tuple[str, str]:
        """(cell, drone) of the path, if the bearer token is that drone's and it runs here."""
        cell, drone = request.path_params["cell"], request.path_params["drone"]
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer $APIARY_KEEPER_TOKEN'")
        if not hmac.compare_digest(token.strip().encode(), self.token_for(cell, drone).encode()):
            raise Unauthorized(f"the token is not drone {cell}/{drone}'s")
        if self.allowed is not None and not self.allowed(cell, drone):
            raise Forbidden(f"drone {cell}/{drone} does not run on this node")
        return cell, drone

    def authorize(self, cell: str, drone: str, scope: Scope, session: str | None = None) -> None:
        """Raise :class:`Forbidden` (with the reason) unless the drone may reach ``scope``."""
        running = self.drones(cell, drone) if self.drones is not None else None
        if scope == "session":
            assert session is not None
            if running is None or not running.keeper.held.holds(cell, session):
                raise Forbidden(f"drone {cell}/{drone} holds no message of session {session}")
            return
        mode = (running.spec if running is not None else {}).get("memory") or "none"
        if mode not in MEMORY_MODES:
            mode = "none"
        if scope == "memory:read" and mode in ("read", "readwrite"):
            return
        if scope == "memory:write" and mode == "readwrite":
            return
        want = "read" if scope == "memory:read" else "readwrite"
        raise Forbidden(
            f"drone {cell}/{drone} may not {'search' if want == 'read' else 'write'} the "
            f"long-term memory of cell {cell}: its AgentSpec's spec.memory is {mode!r}, "
            f"this needs {want!r}"
        )

    # ------------------------------------------------------------------------ serving

    def add_routes(self, routes: Sequence[BaseRoute]) -> None:
        """More routes on the same server (before :meth:`start`)."""
        if self._server is not None:
            raise RuntimeError("add routes before the keeper HTTP server starts")
        self._routes.extend(routes)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        app = Starlette(routes=self._routes, exception_handlers={HTTPException: _http_error})
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_config=None,
            http="httptools",
            timeout_graceful_shutdown=1,
            server_header=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.create_task(server._serve(sockets=[sock]), name="keeper-http")
        while not server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the keeper HTTP server stopped during startup")
            await asyncio.sleep(0.002)
        log.info("keeper HTTP server for agents listening", extra={"url": self.url})

    async def stop(self) -> None:
        server, task, sock = self._server, self._task, self._sock
        self._server = self._task = None
        if server is not None:
            server.should_exit = True
        if task is not None:
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception:  # shutting down: a server error is only worth a log line
                log.exception("keeper HTTP server failed while stopping")
        if sock is not None:
            sock.close()
            self._sock = None

    async def __aenter__(self) -> KeeperHttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------ handlers

    async def _healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def _body(self, request: Request) -> Any:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body is over the limit of {self.max_body_bytes} bytes"
                )
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON body: {exc}") from None

    def _forwarder(
        self, api_path: Callable[[str, dict[str, str]], str], scope: Scope | None = None
    ) -> Any:
        """A handler that authenticates, checks the path and the drone's authority over
        ``scope`` (default: the route's ``{session}``), then replays the request on
        ``api_path`` of the API."""

        async def handle(request: Request) -> Response:
            try:
                cell, drone = self.authenticate(request)
                check_path(request)
                params = dict(request.path_params)
                self.authorize(cell, drone, scope or "session", params.get("session"))
                body = await self._body(request) if request.method in ("PUT", "POST") else None
                answer = await self.client.request(
                    request.method,
                    api_path(cell, params),
                    params=dict(request.query_params) or None,
                    json_body=body,
                )
            except ApiaryError as exc:
                return _error(exc)
            return _json(answer.body, answer.status)

        return handle

    def _comb_routes(self) -> list[BaseRoute]:
        def session(cell: str, p: dict[str, str]) -> str:
            return f"/api/v1/cells/{_q(cell)}/sessions/{_q(p['session'])}"

        def memory(cell: str, _: dict[str, str]) -> str:
            return f"/api/v1/cells/{_q(cell)}/memory"

        forward = self._forwarder
        return [
            Route(
                PREFIX + "/comb/{session}",
                forward(lambda c, p: session(c, p) + "/comb"),
                methods=["GET", "DELETE"],
            ),
            Route(
                PREFIX + "/comb/{session}/{key}",
                forward(lambda c, p: session(c, p) + "/comb/" + _q(p["key"])),
                methods=["GET", "PUT", "DELETE"],
            ),
            Route(
                PREFIX + "/comb/{session}/{key}/incr",
                forward(lambda c, p: session(c, p) + "/comb/" + _q(p["key"]) + "/incr"),
                methods=["POST"],
            ),
            Route(
                PREFIX + "/lists/{session}/{name}",
                forward(lambda c, p: session(c, p) + "/lists/" + _q(p["name"])),
                methods=["GET", "POST"],
            ),
            Route(PREFIX + "/memory", forward(memory, "memory:write"), methods=["POST"]),
            Route(
                PREFIX + "/memory/search",
                forward(lambda c, p: memory(c, p) + "/search", "memory:read"),
                methods=["GET"],
            ),
            Route(
                PREFIX + "/memory/{id}",
                forward(lambda c, p: memory(c, p) + "/" + _q(p["id"]), "memory:write"),
                methods=["DELETE"],
            ),
        ]


__all__ = ["MEMORY_MODES", "KeeperDrone", "KeeperHttpServer", "check_path"]
