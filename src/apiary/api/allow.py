"""The ``Allow`` header of a 405: every method the path has, not just the first route's.

Each route is declared for one method, so when a path matches but the method does not, Starlette
answers 405 with the methods of the *first* route whose path matched — ``Allow: GET`` for an
object that also takes PUT, PATCH and DELETE. RFC 9110 says ``Allow`` lists what the resource
supports; clients (and schemathesis) read it. :class:`AllowHeaders` rewrites the header of every
405 from the methods of all the app's routes whose path matches, less what the kind rules out (a
cell-scoped kind's collection across all cells is only listed).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiary.api.fastpath import flatten
from apiary.resources import kind_by_plural

_ALL_CELLS = re.compile(r"^/api/v1/(?P<plural>[^/]+)$")


def allowed_methods(routes: list[Any], path: str) -> list[str]:
    """Sorted methods of every route whose path pattern matches ``path``."""
    methods: set[str] = set()
    for route, _ in flatten(routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(getattr(route, "methods", None) or ())
    m = _ALL_CELLS.match(path)
    info = kind_by_plural(m["plural"]) if m else None
    if info is not None and info.namespaced:
        methods.discard("POST")  # created in a cell: /api/v1/cells/{cell}/{plural}
    return sorted(methods)


class AllowHeaders:
    """ASGI middleware: a 405's ``Allow`` lists every method of the path (see module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                app = scope.get("app")
                routes = getattr(getattr(app, "router", None), "routes", None)
                if routes is not None:
                    methods = allowed_methods(routes, scope["path"])
                    if methods:
                        MutableHeaders(scope=message)["allow"] = ", ".join(methods)
            await send(message)

        await self.app(scope, receive, send_allow)
