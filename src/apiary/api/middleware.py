"""The outermost layer of every request: authentication, metrics, the request's trace span (when
tracing is on: :mod:`apiary.telemetry.hops`), and the last-resort 500.

WebSocket connections are authenticated the same way (a refusal is an HTTP 401 when the server
offers the denial-response extension, else a close with code 1008 before the handshake, which
servers answer with 403); lifespan events pass straight through.

Written as plain ASGI (not ``BaseHTTPMiddleware``) because it runs on every request and must not
buffer streaming responses such as watches. Once the caller is known, plain routes are served
directly by a :class:`~apiary.api.fastpath.Dispatcher` when one is given (the framework's routing
was most of a GET's CPU); everything else goes on to FastAPI.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiary.api.auth import DENIED_KEY, Authenticator
from apiary.api.fastpath import Dispatcher
from apiary.api.metrics import ApiMetrics
from apiary.errors import ApiaryError
from apiary.logging import get_logger
from apiary.telemetry import hops, tracing

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
PRINCIPAL_KEY = "apiary.principal"

log = get_logger("apiary.api")


class ApiMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        metrics: ApiMetrics,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.metrics = metrics
        self.dispatcher = dispatcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and not await self._websocket_allowed(scope, send):
                return
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        span: Any = None
        if tracing.TRACER is not None and scope["path"] not in PUBLIC_PATHS:
            span, token = hops.api_begin(
                scope["method"], scope["path"], _header(scope, b"traceparent")
            )

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            if scope["path"] not in PUBLIC_PATHS:
                try:
                    scope[PRINCIPAL_KEY] = await self.authenticator.authenticate(
                        _header(scope, b"authorization")
                    )
                except ApiaryError as exc:
                    scope[DENIED_KEY] = exc.message
                    await _send_error(
                        send_wrapper,
                        exc.status,
                        exc.as_dict(),
                        [(b"www-authenticate", b'Bearer realm="apiary"')],
                    )
                    return
            direct = self.dispatcher.resolve(scope) if self.dispatcher is not None else None
            if direct is not None:
                await direct(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if not response_started:
                body = {
                    "code": 500,
                    "reason": "InternalError",
                    "message": f"internal error ({type(exc).__name__}); see the server log",
                }
                await _send_error(send_wrapper, 500, body)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - started)
            if span is not None:
                hops.api_end(span, token, scope["method"], status, getattr(route, "path", None))

    async def _websocket_allowed(self, scope: Scope, send: Send) -> bool:
        """Authenticate a WebSocket handshake; refuse it (and say so) when the token is bad."""
        try:
            scope[PRINCIPAL_KEY] = await self.authenticator.authenticate(
                _header(scope, b"authorization")
            )
            return True
        except ApiaryError as exc:
            scope[DENIED_KEY] = exc.message
            log.info("websocket refused", path=scope.get("path"), reason=exc.message)
            if "websocket.http.response" in (scope.get("extensions") or {}):
                payload = orjson.dumps(exc.as_dict())
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": exc.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"www-authenticate", b'Bearer realm="apiary"'),
                        ],
                    }
                )
                await send({"type": "websocket.http.response.body", "body": payload})
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
            return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_error(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
