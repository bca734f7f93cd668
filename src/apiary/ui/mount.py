"""Serve the console's files at ``/ui`` before authentication, with security headers.

Only GET and HEAD of ``/ui``, ``/ui/`` and ``/ui/<file>`` are answered here; everything else
passes on to the API untouched. Every answer carries :data:`CSP`: scripts, styles and
connections from this origin only (no inline script, no eval, no third-party host), no
framing, no plugins — the page holds a bearer token in ``sessionStorage``, so an injected
script must have nowhere to come from and nowhere to send it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/ui"
STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""The Content-Security-Policy of every console file (docs/console.md explains each part)."""

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
]


class ConsoleLayer:
    """Answers GET/HEAD under :data:`PREFIX` from :data:`STATIC`; passes the rest on."""

    def __init__(self, app: ASGIApp, directory: Path = STATIC) -> None:
        self.app = app
        self.files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")) or scope["method"] not in (
            "GET",
            "HEAD",
        ):
            await self.app(scope, receive, send)
            return
        if path == PREFIX:  # relative module URLs need the trailing slash
            await _redirect(send, PREFIX + "/")
            return
        inner = dict(scope, path=path[len(PREFIX) :] or "/", root_path="")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        try:
            await self.files(inner, receive, with_headers)
        except HTTPException as exc:
            await _not_found(with_headers, exc.status_code)


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 308,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _not_found(send: Send, status: int) -> None:
    body = b'{"code": %d, "reason": "NotFound", "message": "no such console file"}' % status
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_console(app: Any) -> None:
    """Put the console in front of ``app`` (a Starlette/FastAPI app); call it after the other
    middleware so that it is the outermost layer and no console file needs a token."""
    app.add_middleware(ConsoleLayer)
