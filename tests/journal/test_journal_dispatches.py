"""is_answered / open_dispatches: the recovery sweep's view, with an injected clock."""

from __future__ import annotations

from journalkit import FakeClock, MakeJournal, entry, step

A, B = "cell/a", "cell/b"


async def test_outputs_and_errors_close_dispatches(make_journal: MakeJournal) -> None:
    clock = FakeClock(1000.0)
    journal = await make_journal(clock=clock)
    await step(journal, A, [entry(A, "in"), entry(A, "a1", "dispatch", parent="in", stage="x")])
    clock.advance(10)  # 1010
    await step(journal, B, [entry(B, "in"), entry(B, "b1", "dispatch"), entry(B, "b2", "dispatch")])
    clock.advance(10)  # 1020
    await step(journal, A, [entry(A, "a2", "dispatch", parent="in")])
    assert [e.created for e in await journal.read(A)] == [1000.0, 1000.0, 1020.0]

    assert [(e.session, e.id) for e in await journal.open_dispatches(older_than=1e9)] == [
        (A, "a1"),
        (B, "b1"),
        (B, "b2"),
        (A, "a2"),
    ]
    assert [e.id for e in await journal.open_dispatches(older_than=1010.0)] == ["a1"]
    assert [e.id for e in await journal.open_dispatches(older_than=1015.0, limit=2)] == [
        "a1",
        "b1",
    ]
    assert not await journal.is_answered(A, "a1")

    # An output answers a1, an error answers b2; a final or event with a parent answers nothing.
    await step(
        journal, A, [entry(A, "o1", "output", parent="a1"), entry(A, "n", "event", parent="a2")]
    )
    await step(
        journal, B, [entry(B, "x", "error", parent="b2"), entry(B, "f", "final", parent="b1")]
    )
    assert await journal.is_answered(A, "a1")
    assert await journal.is_answered(B, "b2")
    assert not await journal.is_answered(A, "a2")
    assert not await journal.is_answered(B, "b1")
    assert not await journal.is_answered(A, "o1")  # not a dispatch
    assert not await journal.is_answered(A, "unknown")
    assert not await journal.is_answered("cell/none", "a1")
    opened = await journal.open_dispatches(older_than=1e9)
    assert [(e.session, e.id) for e in opened] == [(B, "b1"), (A, "a2")]
    assert opened[0].kind == "dispatch" and opened[0].message["id"] == "b1"

    # A second answer (a redelivered outcome under a new id) changes nothing.
    await step(journal, A, [entry(A, "o1-again", "output", parent="a1")])
    assert await journal.is_answered(A, "a1")


async def test_dispatch_answered_in_the_same_commit(make_journal: MakeJournal) -> None:
    journal = await make_journal(clock=FakeClock())
    await step(journal, A, [entry(A, "d", "dispatch"), entry(A, "o", "output", parent="d")])
    assert await journal.is_answered(A, "d")
    assert await journal.open_dispatches(older_than=2e9) == []


async def test_answers_in_one_batch_of_concurrent_commits(make_journal: MakeJournal) -> None:
    """Dispatches and their answers committed concurrently (one group-commit batch)."""
    import asyncio

    journal = await make_journal(clock=FakeClock())
    sessions = [f"cell/s{n}" for n in range(50)]
    await asyncio.gather(*(step(journal, s, [entry(s, "d", "dispatch")]) for s in sessions))
    await asyncio.gather(
        *(step(journal, s, [entry(s, "o", "output", parent="d")]) for s in sessions[::2])
    )
    left = await journal.open_dispatches(older_than=2e9)
    assert sorted(e.session for e in left) == sorted(sessions[1::2])
    assert all([await journal.is_answered(s, "d") for s in sessions[::2]])


async def test_open_dispatches_pages_with_a_cursor_without_repeats_or_gaps(
    make_journal: MakeJournal,
) -> None:
    """The sweep pages past 1,000 open dispatches: (created, session, seq) keyset paging."""
    clock = FakeClock(1000.0)
    journal = await make_journal(clock=clock)
    for i in range(25):
        s = f"cell/s{i % 7}"
        await step(journal, s, [entry(s, f"d{i}", "dispatch")])
        if i % 3 == 0:
            clock.advance(1)  # several dispatches share a created time: the cursor must break ties
    seen, after = [], None
    while True:
        page = await journal.open_dispatches(older_than=1e9, limit=4, after=after)
        if not page:
            break
        seen += [e.id for e in page]
        after = page[-1]
    assert sorted(seen) == sorted(f"d{i}" for i in range(25))
    assert len(seen) == 25
