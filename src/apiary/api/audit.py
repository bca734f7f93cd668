"""The audit log: one JSON line per mutating API request, in ``<data-dir>/audit.log``.

Who changed what, when, and how it ended: time, principal, method, path, the kind/cell/name the
path addresses, the status code and whether it was a dry run. Never a request body (Secrets and
session inputs travel in bodies) and never the query string (only ``dryRun`` is kept). Reads are
not logged — they are many and change nothing — unless they were refused: every 401 and 403,
read or write, is recorded with the ``reason`` the caller was given.

Each line is one ``write(2)`` on a file opened with ``O_APPEND``, so a line is never interleaved
with another, and a crash loses at most the line being written. Written in the request's own task
without a thread hop: a ~200-byte append costs microseconds, far less than a handoff. The file
rotates by size (``audit.log`` → ``audit.log.1`` → … up to ``backups``), so it cannot fill the
disk. ``GET /api/v1/audit?limit=N`` (admins) reads the newest ``N`` lines across the rotated files.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiary.api import params
from apiary.api.auth import DENIED_KEY
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.errors import Unavailable
from apiary.logging import get_logger
from apiary.resources import API_VERSION
from apiary.resources.registry import kind_by_plural

log = get_logger("apiary.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIALS = frozenset({401, 403})
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
_TRUE = frozenset({"true", "1", "yes", "all"})
Obj = dict[str, Any]


class AuditLog:
    """Appends records as JSON lines to ``path`` and rotates it past ``max_bytes``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 10 << 20,
        backups: int = 5,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError("audit log: max_bytes must be positive and backups non-negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.now = now
        self._fd: int | None = None
        self._size = 0
        self._last_error = float("-inf")

    def write(self, record: Obj) -> None:
        """Append one record (``time`` is added first); a failed write is logged, not raised:
        the request it describes has already happened."""
        stamp = self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = orjson.dumps({"time": stamp, **record}, default=str) + b"\n"
        try:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            os.write(self._fd, line)
            self._size += len(line)
            if self._size >= self.max_bytes:
                self._rotate()
        except OSError as exc:
            if time.monotonic() - self._last_error > 60:
                self._last_error = time.monotonic()
                log.error("cannot write the audit log", path=str(self.path), error=str(exc))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self._numbered(i)
                if older.exists():
                    older.replace(self._numbered(i + 1))
            self.path.replace(self._numbered(1))
        self._open()

    def _numbered(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def tail(self, limit: int) -> list[Obj]:
        """The newest ``limit`` records, oldest first (a damaged line is skipped)."""
        lines: list[bytes] = []
        for path in [self.path, *(self._numbered(i) for i in range(1, self.backups + 1))]:
            if len(lines) >= limit:
                break
            try:
                lines = _last_lines(path, limit - len(lines)) + lines
            except FileNotFoundError:
                continue
        records = []
        for raw in lines:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                records.append(doc)
        return records


def _last_lines(path: Path, n: int, block: int = 64 << 10) -> list[bytes]:
    """The last ``n`` complete lines of a file, read backwards block by block."""
    if n <= 0:
        return []
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = [line for line in data.split(b"\n") if line.strip()]
    return lines[-n:]


def describe(path: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(kind, cell, name, subresource) that an API path addresses; None where it says nothing.

    ``/api/v1/cells/c/hives/h/scale`` → (Hive, c, h, scale); ``/api/v1/cells/c`` → (Cell, None,
    c, None); ``/api/v1/nodes/n/status`` → (Node, None, n, status). Unknown plurals keep their
    path segment as the kind (``memory``), so a record never loses what was touched."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] != ["api", "v1"] or len(parts) < 3:
        return None, None, None, None
    rest = parts[2:]
    cell: str | None = None
    if rest[0] == "cells" and len(rest) >= 3 and rest[2] != "status":
        cell, rest = rest[1], rest[2:]
    info = kind_by_plural(rest[0])
    kind = info.kind if info is not None else rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return kind, cell, name, sub


class AuditMiddleware:
    """Plain ASGI (it must not buffer streams): records every mutating request once its response
    has been sent, including refusals (401, 403, 422...); everything else passes straight by."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._serve(scope, receive, send, every=scope["method"] in MUTATING)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, *, every: bool) -> None:
        """Run the request, then record it: ``every`` time (a mutation), or only when it was
        refused (401/403: a read)."""
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if every or status in DENIALS:
                self.audit.write(_record(scope, status, time.perf_counter() - started))

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake: recorded only when it is refused."""
        await self.app(scope, receive, send)
        if DENIED_KEY in scope:
            self.audit.write(_record({**scope, "method": "WEBSOCKET"}, 401, 0.0))


def _record(scope: Scope, status: int, seconds: float) -> Obj:
    path: str = scope["path"]
    kind, cell, name, sub = describe(path)
    principal = scope.get(PRINCIPAL_KEY)
    query = parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1"))
    dry = any(v.strip().lower() in _TRUE for v in query.get("dryRun", []))
    client = scope.get("client")
    record: Obj = {
        "principal": getattr(principal, "user", None),
        "method": scope["method"],
        "path": path,
        "kind": kind,
        "cell": cell,
        "name": name,
        "status": status,
        "dryRun": dry,
    }
    if sub is not None:
        record["subresource"] = sub
    reason = scope.get(DENIED_KEY)
    if reason is not None:
        record["reason"] = reason
    if client:
        record["remote"] = client[0]
    record["durationMs"] = round(seconds * 1000, 3)
    return record


def audit_routes() -> APIRouter:
    router = APIRouter(tags=["system"])

    @router.get("/api/v1/audit", summary="The newest audit records, oldest first (admins)")
    async def read_audit(request: Request) -> Response:
        state = request.app.state.apiary
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "get", "AuditLog", None)
        audit: AuditLog | None = getattr(request.app.state, "apiary_audit", None)
        if audit is None:
            raise Unavailable("the audit log is not enabled on this server")
        limit = params.non_negative_int(request.query_params, "limit")
        limit = DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)
        items = await asyncio.to_thread(audit.tail, limit)
        return json_response({"apiVersion": API_VERSION, "kind": "AuditLog", "items": items})

    return router
