"""SQLite WAL checkpoints run beside the writer every ``checkpoint_every`` commits, never inside
a commit; data survives them and a reopen."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from journalkit import entry, step

from apiary.journal import SessionState, open_journal
from apiary.journal.sqlite import SQLiteJournal

S = "cell-c/ckpt"


async def test_checkpoints_run_beside_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite://{path}", checkpoint_every=10)
    assert isinstance(journal, SQLiteJournal)
    async with journal:
        autocheckpoint = await journal._on(  # the writer itself never checkpoints
            journal._writer, lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert autocheckpoint == 0
        for n in range(25):
            assert await step(journal, S, [entry(S, f"in{n}")], n=n) == n + 1
            await journal.checkpoints.idle()  # one at a time: the count below is exact
        assert journal.checkpoints.runs == 2  # after commits 10 and 20
        busy, frames, done = journal.checkpoints.last or (1, 0, -1)
        assert busy == 0 and done == frames > 0  # caught up with the WAL of its time
        # The WAL starts over after each checkpoint instead of growing with every commit.
        for n in range(25, 225):
            assert await step(journal, S, [entry(S, f"in{n}")], n=n, pad="x" * 8000) == n + 1
            await journal.checkpoints.idle()
        assert journal.checkpoints.runs == 22
        wal = path.with_name("journal.db-wal").stat().st_size
        assert wal < 40 * 8000, f"WAL of {wal} bytes after 200 commits of 8 kB"
        outside = sqlite3.connect(path, isolation_level=None)  # another connection sees it all
        try:
            assert outside.execute("SELECT count(*) FROM journal_entries").fetchone()[0] == 225
        finally:
            outside.close()
    async with open_journal(f"sqlite://{path}") as again:
        assert await again.load(S) == SessionState(225, {"n": 224, "pad": "x" * 8000})
        assert len(await again.read(S)) == 225


async def test_the_wal_starts_over_under_steady_commits(tmp_path: Path) -> None:
    """Commits keep coming while each checkpoint runs: the writer's catch-up step is what lets
    SQLite rewind the WAL (without it the file grows with every commit)."""
    path = tmp_path / "journal.db"
    async with open_journal(f"sqlite://{path}", checkpoint_every=20) as journal:

        async def committer(k: int) -> None:
            s = f"{S}-{k}"
            for n in range(60):
                assert await step(journal, s, [entry(s, f"in{n}")], pad="x" * 8000) == n + 1

        await asyncio.gather(*(committer(k) for k in range(8)))
        await journal.checkpoints.idle()
        assert isinstance(journal, SQLiteJournal) and journal.checkpoints.runs >= 5
        wal = path.with_name("journal.db-wal").stat().st_size
        assert wal < 2_000_000, f"WAL of {wal} bytes after 480 commits of 8 kB"


async def test_a_failing_checkpoint_leaves_commits_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = SQLiteJournal(f"sqlite://{tmp_path / 'journal.db'}", checkpoint_every=1)
    async with journal:
        reader, journal._reader = journal._reader, None  # the checkpoint's connection is gone
        try:
            assert await step(journal, S, [entry(S, "in")]) == 1
            await journal.checkpoints.idle()
        finally:
            journal._reader = reader
        assert journal.checkpoints.runs == 0 and "checkpoint failed" in caplog.text
        assert await step(journal, S, [entry(S, "next")]) == 2
        await journal.checkpoints.idle()
        assert journal.checkpoints.runs == 1


def test_checkpoint_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        SQLiteJournal(f"sqlite://{tmp_path / 'journal.db'}", checkpoint_every=0)
