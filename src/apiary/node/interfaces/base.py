"""What every agent interface offers the keeper: attach a process, become ready, exchange turns."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from apiary.waggle import Message

log = logging.getLogger("apiary.node.keeper")

#: Called with every output that answers no open message (or arrives after its message timed out).
UnsolicitedHook = Callable[[Message], None]


class Channel(ABC):
    """One agent process seen through one interface type; the keeper owns concurrency and stats."""

    def __init__(self, on_unsolicited: UnsolicitedHook) -> None:
        self._on_unsolicited = on_unsolicited
        self.ready = False
        self.proc: asyncio.subprocess.Process | None = None

    @abstractmethod
    async def attach(self, proc: asyncio.subprocess.Process) -> None:
        """Adopt ``proc``; turns in flight on a previous process fail with AgentCrashed."""

    @abstractmethod
    async def start(self, timeout: float) -> None:
        """Return once the agent can take messages (http: its health check answers 2xx)."""

    @abstractmethod
    async def exchange(self, msg: Message, timeout: float | None) -> list[Message]:
        """Send ``msg`` and return every output of its turn (the last one ends it)."""

    @abstractmethod
    async def probe(self) -> bool:
        """A cheap health check: the process is alive (stdin: with its stdout open; http: and
        ``GET healthPath`` answers 2xx, on a connection messages in flight cannot hold up)."""

    def cancel(self, msg_id: str) -> bool:
        """Stop waiting for the answer to ``msg_id``: its exchange raises DeliveryCancelled.
        False when no such exchange is open."""
        return False

    @abstractmethod
    async def stop(self) -> None:
        """Fail what is in flight, close our ends of the pipes; the launcher reaps the process."""

    def unsolicited(self, msg: Message) -> None:
        try:
            self._on_unsolicited(msg)
        except Exception:  # a broken callback must not take the reader down with it
            log.exception("on_unsolicited callback failed")
