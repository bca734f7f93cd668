"""read with after_seq/limit/kinds, get, and the long-poll wait."""

from __future__ import annotations

import asyncio
import time

from journalkit import MakeJournal, entry, step

from apiary.journal import Journal

S = "cell-a/chat"


async def _transcript(journal: Journal) -> None:
    await step(journal, S, [entry(S, "in"), entry(S, "d1", "dispatch", parent="in", stage="a")])
    await step(
        journal,
        S,
        [
            entry(S, "o1", "output", parent="d1", stage="a", drone="a-0"),
            entry(S, "d2", "dispatch", parent="o1", stage="b"),
        ],
    )
    await step(journal, S, [entry(S, "o2", "output", parent="d2"), entry(S, "f", "final")])


async def test_read_pages_and_filters(journal: Journal) -> None:
    await _transcript(journal)
    ids = ["in", "d1", "o1", "d2", "o2", "f"]
    assert [e.id for e in await journal.read(S)] == ids
    assert [e.seq for e in await journal.read(S)] == [1, 2, 3, 4, 5, 6]
    assert [e.id for e in await journal.read(S, after_seq=2)] == ids[2:]
    assert [e.id for e in await journal.read(S, after_seq=2, limit=2)] == ["o1", "d2"]
    assert await journal.read(S, after_seq=6) == []
    assert [e.id for e in await journal.read(S, kinds=["dispatch"])] == ["d1", "d2"]
    assert [e.id for e in await journal.read(S, kinds={"output", "final"}, after_seq=3)] == [
        "o2",
        "f",
    ]
    assert [e.id for e in await journal.read(S, kinds=["output"], limit=1)] == ["o1"]
    assert await journal.read("cell-a/other") == []
    o1 = await journal.get(S, "o1")
    assert o1 is not None
    assert (o1.kind, o1.parent, o1.stage, o1.drone, o1.seq) == ("output", "d1", "a", "a-0", 3)
    assert o1.message == {"id": "o1", "type": "text", "payload": "payload of o1"}
    assert await journal.get(S, "missing") is None


async def test_wait_returns_at_once_when_entries_exist(journal: Journal) -> None:
    await _transcript(journal)
    started = time.monotonic()
    got = await journal.wait(S, after_seq=4, timeout=5)
    assert [e.id for e in got] == ["o2", "f"]
    assert time.monotonic() - started < 1


async def test_wait_times_out_empty(make_journal: MakeJournal) -> None:
    journal = await make_journal(poll_interval=0.05)
    started = time.monotonic()
    assert await journal.wait(S, after_seq=0, timeout=0.2) == []
    assert 0.15 <= time.monotonic() - started < 2
    assert await journal.wait(S, after_seq=0, timeout=0) == []


async def test_wait_wakes_on_commit(make_journal: MakeJournal) -> None:
    # A long poll interval: only the commit's own wakeup can end the wait in time.
    journal = await make_journal(poll_interval=30)
    await step(journal, S, [entry(S, "in")])
    waiters = [asyncio.create_task(journal.wait(S, after_seq=1, timeout=20)) for _ in range(3)]
    other = asyncio.create_task(journal.wait("cell-a/other", after_seq=0, timeout=0.5))
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    started = time.monotonic()
    await step(journal, S, [entry(S, "d", "dispatch"), entry(S, "e", "event")])
    results = await asyncio.gather(*waiters)
    assert time.monotonic() - started < 2
    assert all([e.id for e in got] == ["d", "e"] for got in results)
    assert await other == []  # a commit to another session does not answer it


async def test_close_releases_waiters(make_journal: MakeJournal) -> None:
    journal = await make_journal(poll_interval=30)
    waiter = asyncio.create_task(journal.wait(S, after_seq=0, timeout=20))
    await asyncio.sleep(0.05)
    await journal.close()
    assert await asyncio.wait_for(waiter, 5) == []
