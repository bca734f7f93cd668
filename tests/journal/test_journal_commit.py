"""commit/load: versions, conflicts, idempotent ids, gap-free seqs, usage, delete, bad input."""

from __future__ import annotations

import asyncio

import pytest
from journalkit import MakeJournal, entry, step

from apiary.errors import Invalid
from apiary.journal import Entry, Journal, SessionState

S = "cell-a/session-1"


async def test_new_session_loads_empty(journal: Journal) -> None:
    assert await journal.load(S) == SessionState(0, {})
    assert await journal.read(S) == []
    assert await journal.usage(S) == (0, 0, 0)


async def test_commit_then_load(journal: Journal) -> None:
    first = entry(S, "in-1")
    assert await journal.commit(S, expect_version=0, state={"turn": 1}, entries=[first]) == 1
    assert first.seq == 1 and first.created > 0
    assert await journal.load(S) == SessionState(1, {"turn": 1})
    assert await journal.commit(S, expect_version=1, state={"turn": 2}, entries=[]) == 2
    assert await journal.load(S) == SessionState(2, {"turn": 2})
    [stored] = await journal.read(S)
    assert stored == first  # every field round-trips, seq and created included


async def test_stale_version_writes_nothing(journal: Journal) -> None:
    assert await journal.commit(S, expect_version=0, state={"a": 1}, entries=[entry(S, "x")]) == 1
    late = entry(S, "y")
    assert await journal.commit(S, expect_version=0, state={"a": 2}, entries=[late]) is None
    assert await journal.commit(S, expect_version=5, state={"a": 3}, entries=[late]) is None
    assert late.seq == 0
    assert await journal.load(S) == SessionState(1, {"a": 1})
    assert [e.id for e in await journal.read(S)] == ["x"]
    # A session that does not exist yet only accepts version 0.
    assert await journal.commit("c/other", expect_version=1, state={}, entries=[]) is None
    assert await journal.load("c/other") == SessionState(0, {})


@pytest.mark.parametrize("version", [0, 1])
async def test_concurrent_commits_exactly_one_wins(journal: Journal, version: int) -> None:
    if version:
        await journal.commit(S, expect_version=0, state={}, entries=[])
    results = await asyncio.gather(
        *(
            journal.commit(S, expect_version=version, state={"by": n}, entries=[entry(S, f"e-{n}")])
            for n in range(20)
        )
    )
    winners = [n for n, r in enumerate(results) if r is not None]
    assert len(winners) == 1 and results[winners[0]] == version + 1
    assert await journal.load(S) == SessionState(version + 1, {"by": winners[0]})
    assert [e.id for e in await journal.read(S)] == [f"e-{winners[0]}"]


async def test_two_replicas_race_on_one_version(make_journal: MakeJournal, backend: str) -> None:
    if backend == "memory":
        pytest.skip("memory journals are per process: there is no second replica to race")
    a, b = await make_journal(), await make_journal()
    for version in range(10):
        results = await asyncio.gather(
            a.commit(
                S, expect_version=version, state={"by": "a"}, entries=[entry(S, f"a{version}")]
            ),
            b.commit(
                S, expect_version=version, state={"by": "b"}, entries=[entry(S, f"b{version}")]
            ),
        )
        assert sorted(r is None for r in results) == [False, True]
    entries = await a.read(S)
    assert len(entries) == 10 and [e.seq for e in entries] == list(range(1, 11))
    assert (await b.load(S)).version == 10


async def test_entry_ids_are_idempotent(journal: Journal) -> None:
    assert await step(journal, S, [entry(S, "in"), entry(S, "d1", "dispatch", parent="in")])
    again = [entry(S, "in"), entry(S, "d1", "dispatch"), entry(S, "out", "output", parent="d1")]
    assert await step(journal, S, again) == 2
    assert [e.seq for e in again] == [0, 0, 3]  # only the new one got a seq
    entries = await journal.read(S)
    assert [(e.id, e.seq) for e in entries] == [("in", 1), ("d1", 2), ("out", 3)]
    assert entries[1].parent == "in"  # the first write wins; the copy changed nothing
    # The same id twice in one call is written once.
    twice = [entry(S, "ev", "event"), entry(S, "ev", "event", message={"other": True})]
    await step(journal, S, twice)
    assert [e.id for e in await journal.read(S, after_seq=3)] == ["ev"]
    assert (await journal.get(S, "ev")) == twice[0]
    assert await journal.usage(S) == (4, 0, 0)


async def test_seq_is_gap_free_per_session(journal: Journal) -> None:
    sessions = [f"cell/s{n}" for n in range(5)]

    async def writer(session: str) -> None:
        for k in range(8):
            batch = [entry(session, f"{k}-a"), entry(session, f"{k}-b"), entry(session, "dup")]
            while await step(journal, session, batch) is None:
                pass

    await asyncio.gather(*(writer(s) for s in sessions), *(writer(s) for s in sessions[:2]))
    for session in sessions:
        seqs = [e.seq for e in await journal.read(session)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) == 17  # 8 steps x 2 new ids + "dup" once


async def test_usage_sums_tokens(journal: Journal) -> None:
    await step(journal, S, [entry(S, "in")])
    await step(
        journal,
        S,
        [
            entry(S, "o1", "output", prompt_tokens=10, completion_tokens=3, latency_ms=12.5),
            entry(S, "o2", "output", prompt_tokens=7, completion_tokens=1, drone="d-0"),
        ],
    )
    await step(journal, S, [entry(S, "o1", "output", prompt_tokens=99)])  # duplicate: not counted
    assert await journal.usage(S) == (3, 17, 4)
    got = await journal.get(S, "o1")
    assert got is not None and got.latency_ms == 12.5 and got.prompt_tokens == 10


async def test_totals_of_many_sessions_at_once(journal: Journal) -> None:
    other, unknown = "cell/other", "cell/never"
    await step(journal, S, [entry(S, "in"), entry(S, "o", "output", prompt_tokens=5)])
    await step(journal, other, [entry(other, "in", completion_tokens=2)])
    got = await journal.totals_many([S, unknown, other])
    assert got == {S: await journal.totals(S), unknown: (0, 0, 0, 0.0), other: (1, 0, 2, 0.0)}
    assert got[S][:3] == (2, 5, 0)
    assert await journal.totals_many([]) == {}
    with pytest.raises(Invalid, match="session"):
        await journal.totals_many([S, ""])


async def test_delete_forgets_the_session(journal: Journal) -> None:
    other = "cell/keep"
    await step(journal, S, [entry(S, "in"), entry(S, "d", "dispatch")], turn=1)
    await step(journal, other, [entry(other, "in")])
    await journal.delete(S)
    await journal.delete("cell/never-existed")
    assert await journal.load(S) == SessionState(0, {})
    assert await journal.read(S) == [] and await journal.get(S, "in") is None
    assert await journal.usage(S) == (0, 0, 0)
    assert await journal.open_dispatches(older_than=1e12) == []
    assert len(await journal.read(other)) == 1
    # The name can be used again from scratch.
    assert await journal.commit(S, expect_version=0, state={}, entries=[entry(S, "in")]) == 1
    assert [e.seq for e in await journal.read(S)] == [1]


async def test_stored_values_are_private_copies(journal: Journal) -> None:
    state = {"nested": {"n": 1}}
    first = entry(S, "in", message={"payload": {"k": [1]}})
    await journal.commit(S, expect_version=0, state=state, entries=[first])
    state["nested"]["n"] = 2
    first.message["payload"]["k"].append(2)
    loaded = await journal.load(S)
    assert loaded.state == {"nested": {"n": 1}}
    loaded.state["x"] = 1
    got = await journal.get(S, "in")
    assert got is not None and got.message == {"payload": {"k": [1]}}
    got.message.clear()
    assert (await journal.load(S)).state == {"nested": {"n": 1}}
    assert (await journal.read(S))[0].message == {"payload": {"k": [1]}}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"session": ""}, "session"),
        ({"session": 5}, "session"),
        ({"expect_version": -1}, "expect_version"),
        ({"expect_version": True}, "expect_version"),
        ({"state": []}, "state"),
        ({"state": {"f": object()}}, "state"),
        ({"entries": [Entry(S, "", "input", {})]}, "entries[0].id"),
        ({"entries": [Entry(S, "x", "shout", {})]}, "entries[0].kind"),
        ({"entries": [Entry("cell/other", "x", "input", {})]}, "entries[0].session"),
        ({"entries": [Entry(S, "x", "input", "hi")]}, "entries[0].message"),  # type: ignore[arg-type]
        ({"entries": [Entry(S, "x", "input", {"b": b"\xff"})]}, "entries[0].message"),
        ({"entries": [Entry(S, "x", "input", {}, prompt_tokens=-1)]}, "entries[0].prompt_tokens"),
        (
            {"entries": [Entry(S, "x", "input", {}, latency_ms=float("nan"))]},
            "entries[0].latency_ms",
        ),
        ({"entries": [Entry(S, "x", "input", {}, parent="")]}, "entries[0].parent"),
        ({"entries": [entry(S, "ok"), {"id": "x"}]}, "entries[1]"),
    ],
)
async def test_bad_commit_names_the_field(
    journal: Journal, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"session": S, "expect_version": 0, "state": {}, "entries": []}
    args.update(kwargs)
    session = args.pop("session")
    with pytest.raises(Invalid) as caught:
        await journal.commit(session, **args)  # type: ignore[arg-type]
    assert [d.field for d in caught.value.details] == [field]
    assert await journal.load(S) == SessionState(0, {})  # nothing written


async def test_bad_reads_name_the_field(journal: Journal) -> None:
    for call, field in [
        (journal.read(S, after_seq=-1), "after_seq"),
        (journal.read(S, limit=0), "limit"),
        (journal.read(S, limit=10**6), "limit"),
        (journal.read(S, kinds=["nope"]), "kinds"),
        (journal.wait(S, 0, timeout=-1), "timeout"),
        (journal.get(S, ""), "id"),
        (journal.is_answered(S, 3), "dispatch_id"),  # type: ignore[arg-type]
        (journal.open_dispatches(older_than=float("inf")), "older_than"),
        (journal.usage(""), "session"),
        (journal.load("a\nb"), "session"),
    ]:
        with pytest.raises(Invalid) as caught:
            await call
        assert caught.value.details[0].field == field


async def test_closed_journal_refuses(make_journal: MakeJournal) -> None:
    journal = await make_journal()
    await journal.close()
    with pytest.raises(RuntimeError, match="not open"):
        await journal.load(S)


async def test_chained_commits_in_one_batch(journal: Journal) -> None:
    """Commits of one session queued together apply in order, each seeing the one before."""
    a, b, b2, c = entry(S, "a"), entry(S, "b"), entry(S, "b"), entry(S, "c")
    results = await asyncio.gather(
        journal.commit(S, expect_version=0, state={"n": 1}, entries=[a, b]),
        journal.commit(S, expect_version=1, state={"n": 2}, entries=[b2, c]),
        journal.commit(S, expect_version=1, state={"n": 9}, entries=[entry(S, "lost")]),
        journal.commit(S, expect_version=2, state={"n": 3}, entries=[entry(S, "d", "dispatch")]),
        journal.commit(
            S, expect_version=3, state={"n": 4}, entries=[entry(S, "o", "output", parent="d")]
        ),
    )
    assert results == [1, 2, None, 3, 4]
    group = getattr(journal, "group", None)
    assert group is None or (group.batches, group.items) == (1, 5)  # really one transaction
    assert [(e.id, e.seq) for e in await journal.read(S)] == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
        ("o", 5),
    ]
    assert (a.seq, b.seq, b2.seq, c.seq) == (1, 2, 0, 3)
    assert await journal.load(S) == SessionState(4, {"n": 4})
    assert await journal.usage(S) == (5, 0, 0)
    assert await journal.is_answered(S, "d")
