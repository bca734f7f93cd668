"""Per-model usage and estimated cost on entries, the session's running cost, and the migration
that adds their columns to a journal made before them — on every backend."""

from __future__ import annotations

import sqlite3

import pytest
from journalkit import MakeJournal, entry, step

from apiary.errors import Invalid
from apiary.journal import Entry, Journal, Totals
from apiary.journal.schema import ADDED_COLUMNS

S = "cell-a/session-1"
MODELS = (("gpt-4o-mini", 120, 30), ("claude-3-5-haiku", 7, 2))


async def test_models_and_cost_round_trip(journal: Journal) -> None:
    out = entry(S, "out-1", "output", parent="d-1", prompt_tokens=127, completion_tokens=32,
                models=MODELS, cost_usd=0.0000543)  # fmt: skip
    plain = entry(S, "in-1")
    waiting = journal.wait(S, 0, timeout=5)
    assert await step(journal, S, [plain, out]) == 1
    handed = await waiting
    [read_plain, read_out] = await journal.read(S)
    assert read_out.models == MODELS and read_out.cost_usd == pytest.approx(0.0000543)
    assert read_plain.models == () and read_plain.cost_usd == 0.0
    assert await journal.get(S, "out-1") == read_out
    assert [e.models for e in handed] == [(), MODELS]  # what a commit hands a long-poll
    assert [e.cost_usd for e in handed] == [0.0, pytest.approx(0.0000543)]


async def test_totals_sum_cost_beside_tokens(journal: Journal) -> None:
    assert await journal.totals(S) == Totals(0, 0, 0, 0.0)
    await step(journal, S, [entry(S, "a", "output", prompt_tokens=10, completion_tokens=1,
                                  models=(("m", 10, 1),), cost_usd=0.25)])  # fmt: skip
    await step(journal, S, [entry(S, "b", "output", prompt_tokens=5, cost_usd=0.5), entry(S, "c")])
    await step(journal, S, [entry(S, "a", "output", cost_usd=9.0)])  # a repeated id: not counted
    totals = await journal.totals(S)
    assert totals[:3] == (3, 15, 1) and totals.cost_usd == pytest.approx(0.75)
    assert await journal.usage(S) == (3, 15, 1)  # unchanged: no cost in it
    await journal.delete(S)
    assert await journal.totals(S) == Totals(0, 0, 0, 0.0)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"models": (("m", -1, 0),)}, "entries[0].models"),
        ({"models": (("", 1, 0),)}, "entries[0].models"),
        ({"models": [("m", 1, 0)]}, "entries[0].models"),
        ({"models": (("m", 1),)}, "entries[0].models"),
        ({"models": tuple((f"m{i}", 1, 1) for i in range(65))}, "entries[0].models"),
        ({"cost_usd": -0.01}, "entries[0].cost_usd"),
        ({"cost_usd": float("nan")}, "entries[0].cost_usd"),
        ({"cost_usd": "0.1"}, "entries[0].cost_usd"),
    ],
)
async def test_bad_models_or_cost_name_the_field(
    journal: Journal, kw: dict[str, object], field: str
) -> None:
    bad = Entry(S, "x", "output", {}, **kw)  # type: ignore[arg-type]
    with pytest.raises(Invalid) as caught:
        await journal.commit(S, expect_version=0, state={}, entries=[bad])
    assert [d.field for d in caught.value.details] == [field]
    assert await journal.totals(S) == Totals(0, 0, 0, 0.0)


async def _drop_added_columns(backend: str, url: str) -> None:
    """Make the database look like one written before ``ADDED_COLUMNS`` existed."""
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            for table, column, _, _ in ADDED_COLUMNS:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            conn.commit()
        finally:
            conn.close()
        return
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        for table, column, _, _ in ADDED_COLUMNS:
            await pg.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    finally:
        await pg.close()


async def test_an_older_journal_gains_the_columns(
    make_journal: MakeJournal, backend: str, journal_url: str
) -> None:
    if backend == "memory":
        pytest.skip("the memory journal has no stored layout to migrate")
    old = await make_journal()
    await step(old, S, [entry(S, "old", "output", prompt_tokens=4, completion_tokens=2,
                              models=(("m", 4, 2),), cost_usd=1.0)])  # fmt: skip
    await old.close()
    await _drop_added_columns(backend, journal_url)

    journal = await make_journal()  # opening adds the columns back, empty
    [before] = await journal.read(S)
    assert (before.prompt_tokens, before.models, before.cost_usd) == (4, (), 0.0)
    assert await journal.totals(S) == Totals(1, 4, 2, 0.0)
    await step(journal, S, [entry(S, "new", "output", prompt_tokens=1, models=(("m", 1, 0),),
                                  cost_usd=0.5)])  # fmt: skip
    assert (await journal.get(S, "new")) == (await journal.read(S, after_seq=1))[0]
    assert (await journal.get(S, "new")).models == (("m", 1, 0),)  # type: ignore[union-attr]
    assert await journal.totals(S) == Totals(2, 5, 2, 0.5)
    await journal.close()
    again = await make_journal()  # and opening a migrated journal changes nothing
    assert await again.totals(S) == Totals(2, 5, 2, 0.5)
