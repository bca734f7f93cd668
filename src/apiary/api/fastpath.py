"""Direct dispatch of plain routes, bypassing FastAPI's router on the hot path.

A py-spy profile of ``GET /api/v1/cells/c/agentspecs/x`` put ~55 % of the server's CPU under the
framework — matching the path against every route object in turn, solving (empty) dependencies,
the exception middleware — and 11 % in the handler and the store. Most of Apiary's routes need
none of that: their endpoint takes the ``Request`` and string path parameters, reads and checks
everything else itself, and returns a ``Response``. For those, :class:`Dispatcher` does what the
router would do, cheaply: one precompiled regex per method holds every route's path pattern in
FastAPI's matching order, so the first alternative that matches is the route FastAPI would pick;
if that route is *plain* its endpoint is called directly, otherwise the request goes to FastAPI
unchanged (as does anything with a ``root_path``). Errors are answered by the app's own exception
handlers, so both paths produce the same bodies.

FastAPI still owns every route — they are declared there, so ``/openapi.json`` and ``/docs``
describe them — and a route added by anyone is picked up (the table is built from the app's routes
at the first request); a route that needs FastAPI's parameter parsing or dependencies is simply
never called directly.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from apiary.api.params import path_names

Endpoint = Callable[..., Awaitable[Response]]
Serve = Callable[[Scope, Receive, Send], Awaitable[None]]

_GROUP = re.compile(r"\(\?P<[^>]+>")


@dataclass(frozen=True)
class Target:
    route: Any  # the APIRoute FastAPI would put in scope["route"] (metrics read its template)
    endpoint: Endpoint | None  # None: not plain, FastAPI must handle it
    regex: re.Pattern[str]
    wants_request: bool = True


class Dispatcher:
    """Serves an app's plain routes without its router (see the module docstring)."""

    def __init__(self) -> None:
        self._table: dict[str, tuple[re.Pattern[str], list[Target]]] | None = None

    def build(self, routes: list[Any]) -> dict[str, tuple[re.Pattern[str], list[Target]]]:
        """Per method: one regex whose n-th alternative is the n-th route that allows it."""
        per_method: dict[str, list[Target]] = {}
        flat = flatten(routes)
        methods = {m for route, _ in flat for m in getattr(route, "methods", None) or ()}
        for route, original in flat:
            regex = getattr(route, "path_regex", None)
            if regex is None:
                regex = re.compile(".*")  # a route we cannot read may match anything
            allowed = getattr(route, "methods", None) or methods  # none: every method
            endpoint = plain_endpoint(route, original)
            wants = endpoint is not None and "request" in inspect.signature(endpoint).parameters
            target = Target(original, endpoint, regex, wants)
            for method in allowed:
                per_method.setdefault(method, []).append(target)
        return {
            method: (_alternatives([t.regex.pattern for t in targets]), targets)
            for method, targets in per_method.items()
        }

    def lookup(
        self, method: str, path: str, routes: list[Any]
    ) -> tuple[Target, dict[str, str]] | None:
        """The route FastAPI would pick and its path parameters, when it is plain; else None."""
        if self._table is None:
            self._table = self.build(routes)
        entry = self._table.get(method)
        if entry is None:
            return None
        combined, targets = entry
        m = combined.match(path)
        if m is None or m.lastgroup is None:
            return None
        target = targets[int(m.lastgroup[1:])]
        if target.endpoint is None:
            return None
        own = target.regex.match(path)
        assert own is not None
        return target, own.groupdict()

    def resolve(self, scope: Scope) -> Serve | None:
        """The direct handler for this request, or None: let FastAPI route it."""
        if scope.get("root_path") or "app" not in scope:
            return None
        app = scope["app"]
        found = self.lookup(scope["method"], scope["path"], app.router.routes)
        if found is None:
            return None
        target, params = found
        endpoint = target.endpoint
        assert endpoint is not None

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            scope["route"], scope["endpoint"], scope["path_params"] = (
                target.route,
                endpoint,
                params,
            )
            request = Request(scope, receive)
            try:
                path_names(params)
                if target.wants_request:
                    response = await endpoint(request=request, **params)
                else:
                    response = await endpoint(**params)
            except Exception as exc:
                handler = _handler_for(app, exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
            await response(scope, receive, send)

        return serve


def plain_endpoint(route: Any, original: Any) -> Endpoint | None:
    """The endpoint, if it needs nothing from FastAPI at request time: its parameters are the
    ``Request`` and the route's string path parameters, it returns a ``Response``, and no
    dependency is attached."""
    from fastapi.routing import APIRoute

    endpoint = getattr(route, "endpoint", None)
    if not isinstance(original, APIRoute) or endpoint is None:
        return None
    if original.dependencies or not inspect.iscoroutinefunction(endpoint):
        return None
    convertors = getattr(route, "param_convertors", None) or {}
    if any(not isinstance(c, StringConvertor) for c in convertors.values()):
        return None
    try:
        hints = typing.get_type_hints(endpoint)
    except Exception:  # an annotation we cannot resolve: let FastAPI deal with it
        return None
    returns = hints.get("return")
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    for name, param in inspect.signature(endpoint).parameters.items():
        if param.default is not inspect.Parameter.empty or param.kind not in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            return None
        if hints.get(name) is Request:
            if name != "request":
                return None
        elif name not in convertors or hints.get(name) is not str:
            return None
    typed: Endpoint = endpoint
    return typed


def flatten(routes: list[Any]) -> list[tuple[Any, Any]]:
    """(route as matched, the route object FastAPI puts in ``scope["route"]``) in matching order.

    Recent FastAPI keeps included routers as nested entries and walks them, in the order it
    matches them, with ``iter_route_contexts``; older versions had a flat list."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # a flat route list
        return [(r, r) for r in routes]
    return [(rc, rc.original_route) for rc in iter_route_contexts(routes)]


def _alternatives(patterns: list[str]) -> re.Pattern[str]:
    """``(?P<_0>a)|(?P<_1>b)|…``: each route's regex is anchored, so the first alternative that
    matches is the first route that matches. Inner named groups become anonymous (they repeat)."""
    return re.compile("|".join(f"(?P<_{i}>{_GROUP.sub('(?:', p)})" for i, p in enumerate(patterns)))


def _handler_for(app: Any, exc: Exception) -> Callable[..., Awaitable[Response]] | None:
    """The app's exception handler for ``exc``, looked up by class as Starlette does."""
    handlers: dict[Any, Any] = getattr(app, "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls in handlers:
            handler: Callable[..., Awaitable[Response]] = handlers[cls]
            return handler
    return None
