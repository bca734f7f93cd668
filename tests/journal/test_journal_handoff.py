"""The fast paths: a commit hands its entries to the session's waiters (no read back), reads
longer than what SQLite decodes on the loop thread, and SQLite's fallback when a read on the
loop thread meets a locked database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from journalkit import MakeJournal, entry, step

from apiary.journal import Entry, Journal, SessionState
from apiary.journal.model import Row, written_entries

S = "cell-h/chat"


async def test_commit_hands_waiters_private_copies(make_journal: MakeJournal) -> None:
    journal = await make_journal(poll_interval=30)  # only the commit can end the waits in time
    await step(journal, S, [entry(S, "in")])
    waiters = [asyncio.create_task(journal.wait(S, after_seq=1, timeout=20)) for _ in range(2)]
    await asyncio.sleep(0.05)
    sent = [entry(S, "in"), entry(S, "d", "dispatch", parent="in", stage="a", latency_ms=2)]
    sent.append(entry(S, "o", "output", parent="d", prompt_tokens=3, completion_tokens=4))
    await step(journal, S, sent)
    sent[1].message["payload"] = "changed by the caller after the commit"
    first, second = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert first == second == await journal.read(S, after_seq=1)
    assert [(e.id, e.seq) for e in first] == [("d", 2), ("o", 3)]  # "in" existed: not handed
    assert first[0].message == {"id": "d", "type": "text", "payload": "payload of d"}
    assert first[0] is not second[0] and first[0].message is not second[0].message
    assert first[0].latency_ms == 2.0 and first[1].prompt_tokens == 3 and first[0].created > 0


async def test_a_waiter_behind_the_commit_reads_what_it_missed(
    make_journal: MakeJournal, backend: str
) -> None:
    """Entries another journal instance wrote come before this commit's: the waiter reads."""
    if backend == "memory":
        pytest.skip("memory journals do not share data between instances")
    mine = await make_journal(poll_interval=30)
    other = await make_journal(poll_interval=30)
    waiter = asyncio.create_task(mine.wait(S, after_seq=0, timeout=20))
    await asyncio.sleep(0.05)
    # Within one test the PostgreSQL NOTIFY of this commit may wake the waiter too; either way
    # it must end up with both entries in order.
    await other.commit(S, expect_version=0, state={}, entries=[entry(S, "elsewhere")])
    if not waiter.done():
        assert await mine.commit(S, expect_version=1, state={}, entries=[entry(S, "here")]) == 2
    got = await asyncio.wait_for(waiter, 5)
    if backend == "sqlite":  # no cross-instance wakeup within the poll interval: the gap path
        assert [e.id for e in got] == ["elsewhere", "here"]
    assert [e.id for e in got][:1] == ["elsewhere"]
    assert [e.id for e in await mine.read(S)][: len(got)] == [e.id for e in got]


def test_written_entries_only_continue_the_waiter() -> None:
    rows = [Row(Entry(S, f"e{n}", "event", {}), n, f'{{"n": {n}}}', False) for n in (3, 4, 5)]
    assert written_entries(rows, 1, 100) is None  # seq 2 is missing: read instead
    assert written_entries(rows, 5, 100) is None  # nothing new for this waiter
    got = written_entries(rows, 2, 100)
    assert got is not None and [(e.id, e.seq, e.message) for e in got] == [
        ("e3", 3, {"n": 3}),
        ("e4", 4, {"n": 4}),
        ("e5", 5, {"n": 5}),
    ]
    later = written_entries(rows, 3, 1)
    assert later is not None and [e.id for e in later] == ["e4"]


async def test_reads_longer_than_the_inline_rows(journal: Journal) -> None:
    many = [entry(S, f"e{n:03d}", "dispatch" if n % 3 == 0 else "event") for n in range(150)]
    await journal.commit(S, expect_version=0, state={"n": 150}, entries=many)
    assert [e.seq for e in await journal.read(S)] == list(range(1, 151))
    assert [e.seq for e in await journal.read(S, limit=100)] == list(range(1, 101))
    assert [e.seq for e in await journal.read(S, after_seq=10, limit=70)] == list(range(11, 81))
    dispatches = await journal.read(S, kinds=["dispatch"], after_seq=3)
    assert [e.id for e in dispatches] == [f"e{n:03d}" for n in range(3, 150, 3)]
    assert [e.id for e in await journal.wait(S, after_seq=75, timeout=1)] == [
        f"e{n:03d}" for n in range(75, 150)
    ]


async def test_sqlite_read_on_a_locked_database_waits_on_the_reader_thread(
    make_journal: MakeJournal, backend: str, tmp_path: Path
) -> None:
    """A WAL reader is not normally refused, so the loop-thread connection is pointed at a
    database that another connection holds exclusively: "busy" sends the read to the reader
    thread (which waits up to busy_timeout) instead of blocking or failing."""
    if backend != "sqlite":
        pytest.skip("the loop-thread reader is the SQLite backend's")
    journal = await make_journal()
    await step(journal, S, [entry(S, "in")], turn=1)
    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    inline = journal._inline  # type: ignore[attr-defined]
    journal._inline = sqlite3.connect(locked, timeout=0, isolation_level=None)  # type: ignore[attr-defined]
    try:
        assert await journal.load(S) == SessionState(1, {"turn": 1})
        assert [e.id for e in await journal.read(S)] == ["in"]
        assert (await journal.usage(S))[0] == 1
    finally:
        journal._inline.close()  # type: ignore[attr-defined]
        journal._inline = inline  # type: ignore[attr-defined]
        holder.execute("ROLLBACK")
        holder.close()
