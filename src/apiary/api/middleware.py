"""The outermost layer of every request: authentication, metrics, and the last-resort 500.

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

from apiary.api.auth import Authenticator
from apiary.api.fastpath import Dispatcher
from apiary.api.metrics import ApiMetrics
from apiary.errors import ApiaryError
from apiary.logging import get_logger

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
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            if scope["path"] not in PUBLIC_PATHS:
                try:
                    scope[PRINCIPAL_KEY] = self.authenticator.authenticate(
                        _header(scope, b"authorization")
                    )
                except ApiaryError as exc:
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
