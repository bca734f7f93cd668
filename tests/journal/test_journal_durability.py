"""Reopen and find everything; other processes' commits; group commit under load; 1,000 sessions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from journalkit import FakeClock, MakeJournal, entry, step

from apiary.errors import BadRequest
from apiary.journal import SessionState, open_journal

S = "cell/durable"
COMMIT_PROC = Path(__file__).with_name("commit_proc.py")


def _durable(backend: str) -> None:
    if backend == "memory":
        pytest.skip("the memory journal is not durable by design")


async def test_reopen_finds_everything(make_journal: MakeJournal, backend: str) -> None:
    _durable(backend)
    clock = FakeClock(5000.0)
    journal = await make_journal(clock=clock)
    await step(journal, S, [entry(S, "in"), entry(S, "d1", "dispatch"), entry(S, "d2", "dispatch")])
    await step(
        journal,
        S,
        [entry(S, "o1", "output", parent="d1", prompt_tokens=5, completion_tokens=2)],
        turn=2,
    )
    before = await journal.read(S)
    await journal.close()

    again = await make_journal()
    assert await again.load(S) == SessionState(2, {"turn": 2})
    assert await again.read(S) == before
    assert await again.usage(S) == (4, 5, 2)
    assert await again.is_answered(S, "d1") and not await again.is_answered(S, "d2")
    assert [e.id for e in await again.open_dispatches(older_than=6000.0)] == ["d2"]
    # Seqs continue where they were, ids stay idempotent across the restart.
    await step(again, S, [entry(S, "in"), entry(S, "f", "final")])
    assert [e.seq for e in await again.read(S, after_seq=4)] == [5]


async def test_waiter_wakes_on_another_process_commit(
    make_journal: MakeJournal, backend: str, journal_url: str
) -> None:
    """PostgreSQL: NOTIFY wakes at once (poll interval 30 s). SQLite: the 0.5 s poll finds it."""
    _durable(backend)
    poll = 30.0 if backend == "postgresql" else 0.5
    journal = await make_journal(poll_interval=poll)
    waiter = asyncio.create_task(journal.wait(S, after_seq=0, timeout=20))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(COMMIT_PROC), journal_url, S, "from-proc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = await asyncio.wait_for(waiter, 10)
    assert [e.id for e in got] == ["from-proc"] and got[0].message == {"from": "another process"}
    assert time.monotonic() - started < 1.5 + poll * (backend == "sqlite")
    assert await journal.load(S) == SessionState(1, {"last": "from-proc"})


async def test_two_postgres_replicas_wake_each_other(
    make_journal: MakeJournal, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is the PostgreSQL backend's cross-replica wakeup")
    a = await make_journal(poll_interval=30)
    b = await make_journal(poll_interval=30)
    sessions = [f"cell/r{n}" for n in range(20)]
    waits = [asyncio.create_task(a.wait(s, after_seq=0, timeout=20)) for s in sessions]
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await asyncio.gather(*(step(b, s, [entry(s, "in")]) for s in sessions))
    results = await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert time.monotonic() - started < 2
    assert all([e.id for e in got] == ["in"] for got in results)


async def test_group_commit_batches_and_checks_each_call(
    make_journal: MakeJournal, backend: str
) -> None:
    if backend == "memory":
        pytest.skip("the memory journal commits inline, without batches")
    journal = await make_journal()
    sessions = [f"cell/g{n}" for n in range(100)]
    await asyncio.gather(*(step(journal, s, [entry(s, "in")]) for s in sessions))
    # One batch: every even session at the right version, every odd one at a stale version.
    results = await asyncio.gather(
        *(
            journal.commit(
                s,
                expect_version=1 if n % 2 == 0 else 0,
                state={"n": n},
                entries=[entry(s, "next")],
            )
            for n, s in enumerate(sessions)
        )
    )
    assert results == [2 if n % 2 == 0 else None for n in range(len(sessions))]
    group = journal.group  # type: ignore[attr-defined]
    assert group.items == 200 and group.batches < 20  # many commits per transaction
    for n, s in enumerate(sessions):
        expected = 2 if n % 2 == 0 else 1
        assert (await journal.load(s)).version == expected
        assert len(await journal.read(s)) == expected


async def test_many_sessions_concurrently(make_journal: MakeJournal) -> None:
    """1,000 sessions x 3 router steps each, all at once: all present, versions right."""
    journal = await make_journal()
    sessions = [f"cell-{n % 7}/session-{n}" for n in range(1000)]

    async def session_life(s: str) -> None:
        for k in range(3):
            current = await journal.load(s)
            entries = [entry(s, f"in-{k}"), entry(s, f"d-{k}", "dispatch", parent=f"in-{k}")]
            version = await journal.commit(
                s, expect_version=current.version, state={"k": k}, entries=entries
            )
            assert version == k + 1

    started = time.monotonic()
    await asyncio.gather(*(session_life(s) for s in sessions))
    assert time.monotonic() - started < 30
    for s in sessions[::37]:
        assert await journal.load(s) == SessionState(3, {"k": 2})
        assert [e.seq for e in await journal.read(s)] == [1, 2, 3, 4, 5, 6]
    assert len(await journal.open_dispatches(older_than=time.time() + 60, limit=10_000)) == 3000


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x",
        "nothing",
        "sqlite://relative/path.db",
        "sqlite:///",
        "sqlite:///tmp/j.db?synchronous=sometimes",
        "sqlite:///tmp/j.db?busy_timeout=soon",
        "sqlite:///tmp/j.db?cache=big",
        "postgresql://h/db?pool_max_size=0",
        "postgresql://h/db?pool_min_size=5&pool_max_size=2",
    ],
)
def test_bad_urls_are_clear(url: str) -> None:
    with pytest.raises(BadRequest, match="journal URL"):
        open_journal(url)


async def test_unreachable_postgres_is_unavailable() -> None:
    from apiary.errors import Unavailable

    journal = open_journal("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(Unavailable, match="PostgreSQL"):
        await journal.open()


async def test_sqlite_locked_by_another_process_is_unavailable(tmp_path: Path) -> None:
    """Another process holding the write lock past busy_timeout: a clear 503, not a traceback."""
    import sqlite3

    from apiary.errors import Unavailable

    url = f"sqlite://{tmp_path / 'journal.db'}?busy_timeout=50"
    async with open_journal(url) as journal:
        holder = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(Unavailable, match="locked"):
                await journal.commit(S, expect_version=0, state={}, entries=[entry(S, "in")])
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert await journal.commit(S, expect_version=0, state={}, entries=[entry(S, "in")]) == 1
