"""The PostgreSQL journal's round trips: a batch written unlocked or locked, many totals read.

A batch of sessions that exist is first written without a transaction: one read of the
versions, then one statement that writes only if every session still has the version read.
These tests count the queries that takes, and make another replica commit between the read and
the write (from a thread and event loop of its own) so the lost race and the locked redo are
certain to run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from journalkit import entry

from apiary.journal import Journal, SessionState, open_journal, pgwrite
from apiary.journal.postgres import PostgresJournal
from replica import run_elsewhere
from services import fresh_postgres_url

A, B = "cell/a", "cell/b"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with fresh_postgres_url() as url:
        yield url


def meanwhile(url: str, write: Callable[[Journal], Any]) -> None:
    """Commit through another journal (its own pool, loop and thread) and wait for it."""

    async def other() -> None:
        async with open_journal(url) as journal:
            await write(journal)

    run_elsewhere(other)


async def test_a_step_of_a_session_that_exists_is_two_queries(url: str) -> None:
    async with open_journal(f"{url}?pool_max_size=1") as journal:
        assert isinstance(journal, PostgresJournal)
        await journal.commit(A, expect_version=0, state={"n": 0}, entries=[entry(A, "in0")])
        await journal.commit(A, expect_version=1, state={"n": 1}, entries=[entry(A, "in1")])
        async with journal._conn() as conn:
            raw = conn._con
        sent = raw._protocol.queries_count
        version = await journal.commit(
            A,
            expect_version=2,
            state={"n": 2},
            entries=[entry(A, "in2"), entry(A, "d2", "dispatch")],
        )
        assert version == 3
        assert raw._protocol.queries_count - sent == 2  # no BEGIN, lock, COMMIT
        assert [e.id for e in await journal.read(A)] == ["in0", "in1", "in2", "d2"]
        assert (await journal.load(A)).state == {"n": 2}


async def test_a_batch_that_lost_a_race_writes_nothing_and_is_redone_under_the_lock(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_journal(url) as journal:
        for s in (A, B):
            await journal.commit(s, expect_version=0, state={}, entries=[entry(s, "in")])
        columns = pgwrite._columns
        calls = []

        def between_read_and_write(*args: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return columns(*args)  # the other replica's own write
            calls.append(1)
            if len(calls) == 1:  # another replica takes B's next version
                meanwhile(url, lambda other: other.commit(
                    B, expect_version=1, state={"by": "other"}, entries=[entry(B, "theirs")]
                ))  # fmt: skip
            return columns(*args)

        monkeypatch.setattr(pgwrite, "_columns", between_read_and_write)
        results = await asyncio.gather(  # one batch: both queued before it is written
            journal.commit(A, expect_version=1, state={"by": "us"}, entries=[entry(A, "ours")]),
            journal.commit(B, expect_version=1, state={"by": "us"}, entries=[entry(B, "ours")]),
        )
        assert results == [2, None]  # A won under the lock; B's version was taken
        assert len(calls) == 2  # the unlocked try, then the locked redo
        assert [e.id for e in await journal.read(A)] == ["in", "ours"]
        assert [e.id for e in await journal.read(B)] == ["in", "theirs"]
        assert (await journal.load(B)).state == {"by": "other"}


async def test_an_id_already_journaled_fails_the_unlocked_write_whole(url: str) -> None:
    async with open_journal(url) as journal:
        await journal.commit(A, expect_version=0, state={}, entries=[entry(A, "in")])
        await journal.commit(B, expect_version=0, state={}, entries=[entry(B, "in")])
        results = await asyncio.gather(
            journal.commit(
                A, expect_version=1, state={"a": 1}, entries=[entry(A, "in"), entry(A, "new")]
            ),
            journal.commit(B, expect_version=1, state={"b": 1}, entries=[entry(B, "next")]),
        )
        assert results == [2, 2]
        assert [(e.id, e.seq) for e in await journal.read(A)] == [("in", 1), ("new", 2)]
        assert [(e.id, e.seq) for e in await journal.read(B)] == [("in", 1), ("next", 2)]
        assert await journal.usage(A) == (2, 0, 0)  # counted once: nothing half-written


async def test_the_totals_of_many_sessions_are_one_query(url: str) -> None:
    async with open_journal(f"{url}?pool_max_size=1") as journal:
        assert isinstance(journal, PostgresJournal)
        names = [f"cell/t{i}" for i in range(20)]
        await asyncio.gather(*(
            journal.commit(n, expect_version=0, state={}, entries=[entry(n, "in")]) for n in names
        ))  # fmt: skip
        async with journal._conn() as conn:
            raw = conn._con
        await journal.totals_many(names)  # prepares the statement
        sent = raw._protocol.queries_count
        got = await journal.totals_many(names)
        assert raw._protocol.queries_count - sent == 1
        assert all(got[n].entries == 1 for n in names)


async def test_a_new_sessions_first_step_is_three_queries(url: str) -> None:
    async with open_journal(f"{url}?pool_max_size=1") as journal:
        assert isinstance(journal, PostgresJournal)
        await journal.commit(B, expect_version=0, state={}, entries=[entry(B, "warm")])
        async with journal._conn() as conn:
            raw = conn._con
        sent = raw._protocol.queries_count
        assert await journal.commit(A, expect_version=0, state={"n": 0}, entries=[entry(A, "in")])
        assert raw._protocol.queries_count - sent == 3  # versions, the row, the write
        assert [e.id for e in await journal.read(A)] == ["in"]


async def test_a_new_session_that_lost_its_race_reads_as_the_winner_wrote_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loser's row at version 0 was committed before its write lost: what anyone reads is
    the winner's step, and the loser's commit answers None (load again, redo the step)."""
    async with open_journal(url) as journal:
        columns = pgwrite._columns
        calls = []

        def between_create_and_write(*args: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return columns(*args)
            calls.append(1)
            if len(calls) == 1:
                meanwhile(url, lambda other: other.commit(
                    A, expect_version=0, state={"by": "other"}, entries=[entry(A, "theirs")]
                ))  # fmt: skip
            return columns(*args)

        monkeypatch.setattr(pgwrite, "_columns", between_create_and_write)
        lost = await journal.commit(
            A, expect_version=0, state={"by": "us"}, entries=[entry(A, "ours")]
        )
        assert lost is None
        assert [e.id for e in await journal.read(A)] == ["theirs"]
        assert await journal.load(A) == SessionState(1, {"by": "other"})  # on our row at 0
        assert len(calls) == 1  # the locked redo found version 1 and planned nothing
