"""What the session routes do, without HTTP: send, read, close, and the status writes they need.

The router owns the flow of a message (journal, engine, bus); this module owns what a client's
call means for the Session *object*: it must exist (404), take messages (409 once closed or
finished), have a hive (404 naming ``spec.hiveRef``), and turn ``Running`` on its first message.
The router's :class:`~apiary.router.SessionDirectory` caches Session objects for a second, so a
message to a running session costs no store round trip here — only the router's journal commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from apiary.api.state import ApiState
from apiary.errors import Conflict, FieldDetail, NotFound, Unavailable
from apiary.journal import Entry, Journal
from apiary.patterns import Engine
from apiary.router import Router, SessionInfo
from apiary.store.base import now_rfc3339
from apiary.waggle import Message

Obj = dict[str, Any]

FINISHED_KINDS = ("final", "error")
"""Entry kinds that end an input's flow: its answer, or why it failed."""


def session_key(cell: str, name: str) -> str:
    return f"{cell}/{name}"


class SessionOps:
    """Bound to one request's :class:`ApiState`; cheap to build."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.store = state.store

    # ---------------------------------------------------------------------------- plumbing

    @property
    def router(self) -> Router:
        if self.state.router is None:
            raise Unavailable("sessions are not running on this server (no router configured)")
        return self.state.router

    @property
    def journal(self) -> Journal:
        journal = self.state.journal or (self.state.router.journal if self.state.router else None)
        if journal is None:
            raise Unavailable("sessions are not running on this server (no journal configured)")
        return journal

    async def info(self, cell: str, name: str) -> SessionInfo:
        """The session, from the router's short-lived cache (404 when it does not exist)."""
        try:
            return await self.router.sessions.get(cell, name)
        except NotFound:
            raise NotFound(f"session {name!r} not found in cell {cell!r}") from None

    async def engine(
        self, info: SessionInfo, field: str = "spec.hiveRef", what: str | None = None
    ) -> Engine:
        """The hive's pattern engine; a missing hive is a 404 naming ``field``."""
        try:
            return await self.router.sessions.engine(info)
        except NotFound:
            what = what or f"session {info.name!r} cannot take messages"
            why = f"hive {info.hive!r} not found in cell {info.cell!r}"
            raise NotFound(f"{what}: {field}: {why}", [FieldDetail(field, why)]) from None

    async def check_hive(self, cell: str, hive: str, field: str, what: str) -> None:
        """Before creating a session that sends at once: its hive must exist (and be routable)."""
        await self.engine(SessionInfo(cell, "", hive, "", False, ""), field, what)

    # ------------------------------------------------------------------------------ send

    async def send(self, cell: str, name: str, message: Message, *, fresh: bool = False) -> Message:
        """Journal and dispatch one input (idempotent on ``message.id``; ``fresh``: this server
        made the id just now, see :meth:`Router.submit`)."""
        info = await self.info(cell, name)
        info.check_open()
        if info.job:
            await self._check_job_input(info, message.id)
        await self.engine(info)
        await self.mark_running(info)
        return await self.router.submit(cell, name, message, fresh=fresh)

    async def _check_job_input(self, info: SessionInfo, input_id: str) -> None:
        """A job has exactly one input: a different second one is refused (a re-send is not)."""
        first = await self.journal.read(info.key, 0, limit=1, kinds=("input",))
        if first and first[0].id != input_id:
            raise Conflict(f"session {info.name!r} is a job: it takes one input, it has it")

    async def mark_running(self, info: SessionInfo) -> None:
        """Pending → Running (with ``startTime``) on the first message; no write afterwards."""
        if info.phase not in ("", "Pending"):
            return
        now = now_rfc3339(self.store.clock)

        def change(obj: Obj) -> Obj | None:
            status = dict(obj.get("status") or {})
            if obj["metadata"].get("uid") != info.uid or status.get("phase") not in (
                None,
                "",
                "Pending",
            ):
                return None
            status.update(phase="Running", startTime=now, lastActivityTime=now)
            return {**obj, "status": status}

        # One status write that reads and writes in the store (no GET, then PUT, then a retry
        # on a 409): this is on the path of every session created with spec.input.
        where = [(info.cell, info.name, change)]
        (updated,) = await self.store.update_status_many("Session", where)
        if updated is None:  # gone, or no longer Pending (another request was first)
            try:
                updated = await self.store.get("Session", info.cell, info.name)
            except NotFound:
                raise NotFound(f"session {info.name!r} not found in cell {info.cell!r}") from None
        self.router.sessions.remember(updated)

    # ------------------------------------------------------------------------------ read

    async def read(self, key: str, after: int, limit: int, wait: float) -> list[Entry]:
        """Entries after ``after``; with ``wait`` > 0 a long-poll that shutdown cuts short."""
        if wait <= 0:
            return await self.journal.read(key, after, limit)
        polling = asyncio.ensure_future(self.journal.wait(key, after, wait, limit=limit))
        stopping = asyncio.ensure_future(self.state.stopping.wait())
        try:
            await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not polling.done():
                polling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await polling
        return [] if polling.cancelled() else polling.result()

    async def transcript(self, key: str) -> list[Entry]:
        out: list[Entry] = []
        while True:
            page = await self.journal.read(key, out[-1].seq if out else 0, limit=10_000)
            out.extend(page)
            if len(page) < 10_000:
                return out

    # ----------------------------------------------------------------------------- close

    async def close(self, cell: str, name: str) -> Obj:
        """Phase Closed: no more messages. A session already ended keeps its phase."""
        now = now_rfc3339(self.store.clock)

        def change(obj: Obj) -> Obj | None:
            status = dict(obj.get("status") or {})
            if status.get("phase") not in (None, "", "Pending", "Running", "WaitingForApproval"):
                return None
            status.update(phase="Closed", completionTime=now, lastActivityTime=now)
            status.setdefault("reason", "Closed")
            status.setdefault("message", "closed by the client")
            return {**obj, "status": status}

        updated = await self.store.update_with_retry(
            "Session", cell, name, change, subresource="status"
        )
        if updated is None:
            raise NotFound(f"session {name!r} not found in cell {cell!r}")
        router = self.state.router
        if router is not None:
            info = router.sessions.remember(updated)
            if (updated.get("status") or {}).get("completionTime") == now:  # closed by us now
                with contextlib.suppress(NotFound):  # its hive is gone: nothing runs anyway
                    await router.cancel(info, "Cancelled", "the session was closed")
        return updated

    async def forget(self, cell: str, name: str) -> None:
        """After a delete: drop the transcript, so a new session of that name starts empty."""
        if self.state.router is not None:
            self.state.router.sessions.forget(cell, name)
        if self.state.journal is not None:
            await self.state.journal.delete(session_key(cell, name))
