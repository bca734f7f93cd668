"""What the router needs to know about a session and its hive, cached briefly.

Every message of a session needs its hive's pattern engine; reading the Session and the Hive from
the store for each would cost two store reads per hop. Entries live ``ttl`` seconds (and are
dropped at once when this process closes or changes a session), so a Hive edit reaches the
router within a second.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apiary.errors import Conflict, NotFound
from apiary.patterns import Engine
from apiary.router.policy import HivePolicy
from apiary.store import Store

OPEN_PHASES = frozenset({"", "Pending", "Running", "WaitingForApproval", "WaitingForBudget"})
JOB_LABEL = "apiary.io/job"


@dataclass
class SessionInfo:
    cell: str
    name: str
    hive: str
    phase: str
    job: bool
    uid: str
    fetched: float = field(default=0.0, compare=False)

    @property
    def key(self) -> str:
        return f"{self.cell}/{self.name}"

    @property
    def log_fields(self) -> dict[str, str]:
        """The session's fields for a log line's ``extra=`` (docs/observability.md, "Logs")."""
        return {"cell": self.cell, "hive": self.hive, "session": self.name}

    @property
    def open(self) -> bool:
        return self.phase in OPEN_PHASES

    def check_open(self) -> None:
        if not self.open:
            raise Conflict(f"session {self.name!r} is {self.phase}: it takes no more messages")


def session_info(obj: dict[str, Any], now: float) -> SessionInfo:
    meta = obj["metadata"]
    labels = meta.get("labels") or {}
    return SessionInfo(
        cell=meta.get("namespace") or "default",
        name=meta["name"],
        hive=str((obj.get("spec") or {}).get("hiveRef") or ""),
        phase=str((obj.get("status") or {}).get("phase") or ""),
        job=str(labels.get(JOB_LABEL, "")).lower() == "true",
        uid=meta.get("uid", ""),
        fetched=now,
    )


class SessionDirectory:
    def __init__(
        self, store: Store, *, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._sessions: dict[tuple[str, str], SessionInfo] = {}
        self._engines: dict[tuple[str, str], tuple[float, str, Engine, HivePolicy]] = {}

    async def get(self, cell: str, name: str) -> SessionInfo:
        """The session (NotFound when it does not exist)."""
        now = self.clock()
        cached = self._sessions.get((cell, name))
        if cached is not None and now - cached.fetched < self.ttl:
            return cached
        obj = await self.store.get("Session", cell, name)
        info = session_info(obj, now)
        self._sessions[(cell, name)] = info
        return info

    async def get_by_key(self, key: str) -> SessionInfo | None:
        cell, _, name = key.partition("/")
        try:
            return await self.get(cell, name)
        except NotFound:
            self._sessions.pop((cell, name), None)
            return None

    def remember(self, obj: dict[str, Any]) -> SessionInfo:
        """Cache a Session this process just created or changed."""
        info = session_info(obj, self.clock())
        self._sessions[(info.cell, info.name)] = info
        return info

    def forget(self, cell: str, name: str) -> None:
        self._sessions.pop((cell, name), None)

    async def engine(self, info: SessionInfo) -> Engine:
        """The pattern engine of the session's hive (NotFound naming the hive if it is gone)."""
        return (await self.hive(info))[0]

    async def hive(self, info: SessionInfo) -> tuple[Engine, HivePolicy]:
        """The session's hive: its pattern engine and its routing policy."""
        now = self.clock()
        cached = self._engines.get((info.cell, info.hive))
        if cached is not None and now - cached[0] < self.ttl:
            return cached[2], cached[3]
        try:
            hive = await self.store.get("Hive", info.cell, info.hive)
        except NotFound:
            raise NotFound(
                f"session {info.name!r}: hive {info.hive!r} not found in cell {info.cell!r}"
            ) from None
        rv = hive["metadata"]["resourceVersion"]
        engine = cached[2] if cached is not None and cached[1] == rv else Engine(hive)
        agentspecs = {}
        for ref in HivePolicy().agent_refs(hive):
            with contextlib.suppress(NotFound):
                agentspecs[ref] = await self.store.get("AgentSpec", info.cell, ref)
        cell = None
        with contextlib.suppress(NotFound):
            cell = await self.store.get("Cell", "", info.cell)
        policy = HivePolicy.build(hive, agentspecs, cell)
        self._engines[(info.cell, info.hive)] = (now, rv, engine, policy)
        return engine, policy
