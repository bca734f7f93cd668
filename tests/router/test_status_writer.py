"""The Session status writer spaces its writes in time (all of them, and one session's routine
changes) and never drops the last state, not even while the store is unavailable.

A real memory store and journal; the writer's clock is injected, the spacing is real time kept
short (``INTERVAL`` seconds between the starts of two writes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apiary.errors import Unavailable
from apiary.journal import Journal, open_journal
from apiary.router.sessions import SessionInfo
from apiary.router.status import SHUTDOWN_TRIES, SessionStatusWriter
from apiary.store import Store, open_store

INTERVAL = 0.2
RETRY = (0.02, 0.05)


@pytest.fixture
async def parts() -> AsyncIterator[tuple[Store, Journal, list[SessionInfo]]]:
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store("memory://"))
        journal = await stack.enter_async_context(open_journal("memory://"))
        infos = []
        for name in ("a", "b"):
            obj = await store.create(
                {"apiVersion": "apiary.io/v1", "kind": "Session",
                 "metadata": {"name": name, "namespace": "default"}, "spec": {"hiveRef": "h"}}
            )  # fmt: skip
            infos.append(
                SessionInfo("default", name, "h", "Running", False, obj["metadata"]["uid"])
            )
        yield store, journal, infos


async def status(store: Store, name: str) -> dict[str, Any]:
    return dict((await store.get("Session", "default", name)).get("status") or {})


async def test_first_change_is_written_at_once_then_changes_wait_and_merge(
    parts: tuple[Store, Journal, list[SessionInfo]],
) -> None:
    store, journal, (a, b) = parts
    writer = SessionStatusWriter(store, journal, interval=INTERVAL, session_interval=0)
    writer.update(a, {"output": "one"})
    await asyncio.sleep(0.02)
    assert (await status(store, "a"))["output"] == "one"
    assert writer.writes == 1

    for n in range(50):  # a busy session: fifty outputs within the interval
        writer.update(a, {"output": f"two-{n}"})
    writer.update(b, {"output": "b", "phase": "Succeeded"})
    await asyncio.sleep(0.02)
    assert (await status(store, "a"))["output"] == "one"  # held back by the spacing
    assert "output" not in await status(store, "b")

    await asyncio.sleep(INTERVAL)
    assert (await status(store, "a"))["output"] == "two-49"  # the newest, never skipped
    got = await status(store, "b")
    assert (got["output"], got["phase"]) == ("b", "Succeeded")
    assert "completionTime" in got
    assert writer.writes == 2  # both sessions and all 51 changes: one store write


async def test_flush_writes_what_is_pending_now(
    parts: tuple[Store, Journal, list[SessionInfo]],
) -> None:
    store, journal, (a, _) = parts
    writer = SessionStatusWriter(store, journal, interval=60.0)
    writer.update(a, {"output": "one"})
    await asyncio.sleep(0.02)
    writer.update(a, {"output": "last", "phase": "Failed", "reason": "X"})
    await asyncio.wait_for(writer.flush(), 1.0)  # not after the 60 s spacing
    got = await status(store, "a")
    assert (got["output"], got["phase"], got["reason"]) == ("last", "Failed", "X")
    await writer.flush()  # nothing pending: returns at once
    assert writer.writes == 2


async def test_a_quiet_writer_writes_at_once_again(
    parts: tuple[Store, Journal, list[SessionInfo]],
) -> None:
    store, journal, (a, _) = parts
    now = [100.0]
    writer = SessionStatusWriter(
        store, journal, interval=INTERVAL, session_interval=0, clock=lambda: now[0]
    )
    writer.update(a, {"output": "one"})
    await asyncio.sleep(0.02)
    now[0] += INTERVAL  # a quiet spell as long as the interval
    writer.update(a, {"output": "two"})
    await asyncio.sleep(0.02)
    assert (await status(store, "a"))["output"] == "two"


async def test_one_sessions_routine_changes_wait_for_it_but_a_phase_does_not(
    parts: tuple[Store, Journal, list[SessionInfo]],
) -> None:
    """Many sessions each answering now and then: the writer's spacing alone would write every
    one of them on every answer. A session's outputs wait for ``session_interval`` since its own
    last write; another session, and a change of phase, are not held back by it."""
    store, journal, (a, b) = parts
    writer = SessionStatusWriter(store, journal, interval=0.0, session_interval=INTERVAL * 2)
    writer.update(a, {"output": "one"})
    await asyncio.sleep(0.02)
    assert (await status(store, "a"))["output"] == "one"

    writer.update(a, {"output": "two"})
    writer.update(b, {"output": "b"})  # another session: its first write goes at once
    await asyncio.sleep(0.05)
    assert (await status(store, "a"))["output"] == "one"  # held back for a
    assert (await status(store, "b"))["output"] == "b"
    assert writer.writes == 2

    writer.update(a, {"output": "three"})
    await asyncio.sleep(INTERVAL * 2)
    assert (await status(store, "a"))["output"] == "three"  # the newest, once it is due
    assert writer.writes == 3

    writer.update(a, {"output": "four"})
    await asyncio.sleep(0.02)
    writer.update(a, {"output": "five", "phase": "Succeeded"})  # a phase wakes the writer
    await asyncio.sleep(0.05)
    got = await status(store, "a")
    assert (got["output"], got["phase"]) == ("five", "Succeeded")
    assert writer.writes == 4


async def test_flush_does_not_wait_for_a_sessions_interval(
    parts: tuple[Store, Journal, list[SessionInfo]],
) -> None:
    store, journal, (a, _) = parts
    writer = SessionStatusWriter(store, journal, interval=0.0, session_interval=60.0)
    writer.update(a, {"output": "one"})
    await asyncio.sleep(0.02)
    writer.update(a, {"output": "last"})
    await asyncio.wait_for(writer.flush(), 1.0)
    assert (await status(store, "a"))["output"] == "last"


class Outage:
    """The real store, unavailable for its next ``fail`` status writes (a PostgreSQL restart)."""

    def __init__(self, store: Store, fail: int) -> None:
        self.store, self.fail, self.calls = store, fail, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def update_status_many(self, kind: str, changes: list[Any]) -> Any:
        self.calls.append(len(changes))
        if self.fail > 0:
            self.fail -= 1
            raise Unavailable("PostgreSQL store unavailable: connection lost")
        return await self.store.update_status_many(kind, changes)


async def test_an_unavailable_store_loses_no_final_and_newer_changes_win(
    parts: tuple[Store, Journal, list[SessionInfo]], caplog: pytest.LogCaptureFixture
) -> None:
    store, journal, (a, b) = parts
    down = Outage(store, fail=3)
    writer = SessionStatusWriter(down, journal, interval=0.0, retry=RETRY)  # type: ignore[arg-type]
    writer.update(a, {"output": "a-final", "phase": "Succeeded"})
    writer.update(b, {"output": "b-1"})
    await asyncio.sleep(0.01)
    writer.update(b, {"output": "b-2", "phase": "Failed"})  # while the store is away
    for _ in range(500):
        if "phase" in await status(store, "b"):
            break
        await asyncio.sleep(0.01)
    got_a, got_b = await status(store, "a"), await status(store, "b")
    assert (got_a["output"], got_a["phase"]) == ("a-final", "Succeeded")
    assert (got_b["output"], got_b["phase"]) == ("b-2", "Failed")
    assert down.calls == [2, 2, 2, 2]  # the batch again after each refusal, not one by one
    warned = [r for r in caplog.records if "store is unavailable" in r.getMessage()]
    assert len(warned) == 1  # once per outage, not per try or per session


async def test_at_shutdown_a_store_that_stays_away_is_given_up_on(
    parts: tuple[Store, Journal, list[SessionInfo]], caplog: pytest.LogCaptureFixture
) -> None:
    store, journal, (a, _) = parts
    down = Outage(store, fail=1_000)
    writer = SessionStatusWriter(down, journal, interval=0.0, retry=RETRY)  # type: ignore[arg-type]
    writer.update(a, {"output": "lost"})
    await asyncio.wait_for(writer.flush(), 5)  # returns: it does not hang apiaryd's shutdown
    assert len(down.calls) == SHUTDOWN_TRIES
    assert "output" not in await status(store, "a")
    assert any("through shutdown" in r.getMessage() for r in caplog.records)
