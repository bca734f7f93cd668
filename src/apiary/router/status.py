"""Session status from what the router settles: the output, token usage, and — for jobs — the end.

Writing a Session object on every message would put a store write on the hot path; instead the
router reports each step that produced a final output or a failure, and one task writes the newest
state of each such session (coalesced), with counts and usage read from the journal.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from apiary.journal import Journal
from apiary.patterns import Step
from apiary.router.sessions import OPEN_PHASES, SessionInfo
from apiary.store import Store

log = logging.getLogger("apiary.router")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SessionStatusWriter:
    def __init__(self, store: Store, journal: Journal) -> None:
        self.store = store
        self.journal = journal
        self._pending: dict[str, tuple[SessionInfo, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None

    def settled(self, info: SessionInfo, step: Step) -> None:
        """Router callback (sync): remember what to write, wake the writer."""
        change: dict[str, Any] = dict(self._pending.get(info.key, (info, {}))[1])
        if step.finals:
            change["output"] = step.finals[-1].message.payload
            if info.job:
                change["phase"] = "Succeeded"
        if step.failure is not None:
            change["reason"], change["message"] = step.failure
            if info.job:
                change["phase"] = "Failed"
        self._pending[info.key] = (info, change)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="session-status")

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            for info, change in batch.values():
                try:
                    await self._write(info, change)
                except Exception as exc:  # the session may be gone; status is best effort
                    log.warning("session %s: status not written: %s", info.key, exc)

    async def _write(self, info: SessionInfo, change: dict[str, Any]) -> None:
        messages, prompt, completion = await self.journal.usage(info.key)

        def update(obj: dict[str, Any]) -> dict[str, Any] | None:
            if obj["metadata"].get("uid") != info.uid:
                return None
            status = dict(obj.get("status") or {})
            if status.get("phase") not in OPEN_PHASES:
                change.pop("phase", None)  # closed or expired meanwhile: keep that
            status.update(change)
            if status.get("phase") in ("Succeeded", "Failed"):
                status.setdefault("completionTime", _now())
            status["messageCount"] = messages
            status["usage"] = {
                "promptTokens": prompt, "completionTokens": completion,
                "totalTokens": prompt + completion,
            }  # fmt: skip
            status["lastActivityTime"] = _now()
            obj["status"] = status
            return obj

        await self.store.update_with_retry(
            "Session", info.cell, info.name, update, subresource="status"
        )
