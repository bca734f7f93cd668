"""Helpers shared by the journal tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from apiary.journal import Entry, Journal

MakeJournal = Callable[..., Awaitable[Journal]]


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def entry(session: str, id: str, kind: str = "input", **kw: Any) -> Entry:
    """An entry whose message names itself, so a test can tell entries apart by payload."""
    message = kw.pop("message", {"id": id, "type": "text", "payload": f"payload of {id}"})
    return Entry(session=session, id=id, kind=kind, message=message, **kw)


async def step(journal: Journal, session: str, entries: list[Entry], **state: Any) -> int | None:
    """Load, then commit at the loaded version: one router step."""
    current = await journal.load(session)
    return await journal.commit(
        session,
        expect_version=current.version,
        state={**current.state, **state},
        entries=entries,
    )
