"""The Comb contract: every backend means the same thing (see apiary.comb.base)."""

from __future__ import annotations

import asyncio

import pytest
from combkit import FakeClock, MakeComb

from apiary.comb import Comb, NotSupported
from apiary.errors import Conflict, Invalid, NotFound, PayloadTooLarge

S = "cell-a/sess-1"


async def test_set_get_overwrite_delete(comb: Comb) -> None:
    value = {"name": "Ada", "tags": ["x", 1, None, 2.5], "nested": {"ok": True}}
    await comb.set(S, "profile", value)
    assert await comb.get(S, "profile") == value
    await comb.set(S, "profile", "plain text ✓")
    assert await comb.get(S, "profile") == "plain text ✓"
    await comb.set(S, "nothing", None)
    assert await comb.get(S, "nothing") is None
    assert await comb.delete(S, "profile") is True
    assert await comb.delete(S, "profile") is False
    with pytest.raises(NotFound, match="'profile'"):
        await comb.get(S, "profile")


async def test_sessions_are_separate(comb: Comb) -> None:
    await comb.set("c/one", "k", 1)
    await comb.set("c/two", "k", 2)
    await comb.set("d/one", "k", 3)
    assert [await comb.get(s, "k") for s in ("c/one", "c/two", "d/one")] == [1, 2, 3]
    assert await comb.clear("c/one") == 1
    with pytest.raises(NotFound):
        await comb.get("c/one", "k")
    assert await comb.get("c/two", "k") == 2


async def test_incr_is_atomic_and_keeps_types(comb: Comb) -> None:
    assert await comb.incr(S, "n") == 1
    assert await comb.incr(S, "n", 41) == 42
    assert await comb.incr(S, "n", -2) == 40
    assert await comb.incr(S, "f", 0.5) == 0.5
    assert await comb.incr(S, "f", 2) == 2.5
    big = 2**62
    await comb.set(S, "big", big)
    assert await comb.incr(S, "big") == big + 1  # exact, not rounded through a double
    results = await asyncio.gather(*(comb.incr(S, "race") for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await comb.get(S, "race") == 50


async def test_incr_of_a_non_number_is_a_conflict_naming_the_key(comb: Comb) -> None:
    await comb.set(S, "word", "hello")
    with pytest.raises(Conflict, match=r"'word'.*not a number"):
        await comb.incr(S, "word")
    assert await comb.get(S, "word") == "hello"
    with pytest.raises(Invalid, match="by"):
        await comb.incr(S, "n", "1")  # type: ignore[arg-type]


async def test_keys_with_glob_patterns(comb: Comb) -> None:
    for key in ("user:1", "user:2", "user:10", "task:1", "note"):
        await comb.set(S, key, key)
    assert await comb.keys(S) == ["note", "task:1", "user:1", "user:10", "user:2"]
    assert await comb.keys(S, "user:*") == ["user:1", "user:10", "user:2"]
    assert await comb.keys(S, "user:?") == ["user:1", "user:2"]
    assert await comb.keys(S, "[nt]*") == ["note", "task:1"]
    assert await comb.keys("other/session") == []


async def test_ttl_expires_with_the_clock(comb: Comb, clock: FakeClock) -> None:
    await comb.set(S, "short", "soon gone", ttl=60)
    await comb.set(S, "long", "stays")
    clock.advance(59.9)
    assert await comb.get(S, "short") == "soon gone"
    clock.advance(0.2)
    with pytest.raises(NotFound):
        await comb.get(S, "short")
    assert await comb.keys(S) == ["long"]
    assert await comb.usage(S) == len("long") + len('"stays"')
    assert await comb.delete(S, "short") is False


async def test_set_without_ttl_clears_it_and_incr_keeps_it(comb: Comb, clock: FakeClock) -> None:
    await comb.set(S, "a", 1, ttl=10)
    await comb.set(S, "a", 2)
    await comb.set(S, "b", 1, ttl=10)
    assert await comb.incr(S, "b") == 2
    clock.advance(11)
    assert await comb.get(S, "a") == 2
    with pytest.raises(NotFound):
        await comb.get(S, "b")
    assert await comb.incr(S, "b") == 1  # an expired counter starts again


async def test_purge_expired_removes_dead_keys_everywhere(comb: Comb, clock: FakeClock) -> None:
    await comb.set("c/one", "x", 1, ttl=5)
    await comb.set("c/two", "y", 1, ttl=5)
    await comb.set("c/two", "z", 1)
    clock.advance(6)
    assert await comb.purge_expired() == 2
    assert await comb.purge_expired() == 0
    assert await comb.keys("c/two") == ["z"]


async def test_memory_limit_refuses_and_changes_nothing(make_comb: MakeComb) -> None:
    comb = await make_comb(max_session_bytes=100)
    await comb.set(S, "a", "x" * 40)  # 1 + 42 bytes
    assert await comb.usage(S) == 43
    with pytest.raises(PayloadTooLarge, match="limit of 100 bytes") as exc:
        await comb.set(S, "b", "y" * 60)
    assert exc.value.status == 413
    assert await comb.keys(S) == ["a"]
    assert await comb.usage(S) == 43
    await comb.set(S, "a", "x" * 90)  # replacing counts the new size only: 1 + 92 = 93
    assert await comb.usage(S) == 93
    await comb.delete(S, "a")
    assert await comb.usage(S) == 0
    await comb.set("c/other", "k", "z" * 90)  # each session has its own budget
    with pytest.raises(PayloadTooLarge):
        await comb.append(S, "conversation", "q" * 120)


async def test_expired_keys_free_their_room(make_comb: MakeComb, clock: FakeClock) -> None:
    comb = await make_comb(max_session_bytes=100)
    await comb.set(S, "a", "x" * 80, ttl=1)
    with pytest.raises(PayloadTooLarge):
        await comb.set(S, "b", "y" * 80)
    clock.advance(2)
    await comb.set(S, "b", "y" * 80)
    assert await comb.keys(S) == ["b"]


async def test_incr_respects_the_limit(make_comb: MakeComb) -> None:
    comb = await make_comb(max_session_bytes=10)
    await comb.set(S, "n", 9)  # 2 bytes
    await comb.set(S, "pad", 12345)  # 8 bytes: full
    with pytest.raises(PayloadTooLarge):
        await comb.incr(S, "n")  # 9 → 10 needs one more byte
    assert await comb.get(S, "n") == 9


async def test_lists_append_and_range(comb: Comb) -> None:
    for i, text in enumerate(["hi", "hello", "how are you?"]):
        assert await comb.append(S, "conversation", {"turn": i, "text": text}) == i + 1
    await comb.append(S, "artifacts", "report.pdf")
    items = await comb.list_range(S, "conversation")
    assert [m["text"] for m in items] == ["hi", "hello", "how are you?"]
    assert await comb.list_range(S, "conversation", -1, -1) == [{"turn": 2, "text": "how are you?"}]
    assert await comb.list_range(S, "conversation", 1, 1) == [{"turn": 1, "text": "hello"}]
    assert await comb.list_range(S, "conversation", 5, 9) == []
    assert await comb.list_range(S, "missing") == []
    assert await comb.list_range(S, "artifacts") == ["report.pdf"]
    expected = len("artifacts") + len('"report.pdf"') + len("conversation")
    expected += sum(
        len(f'{{"turn":{i},"text":"{t}"}}') for i, t in enumerate(["hi", "hello", "how are you?"])
    )
    assert await comb.usage(S) == expected
    assert await comb.keys(S) == []  # lists are not keys
    assert await comb.clear(S) == 2
    assert await comb.list_range(S, "conversation") == []
    assert await comb.usage(S) == 0


async def test_forget_cell_drops_its_sessions_only(comb: Comb) -> None:
    await comb.set("gone/s1", "k", 1)
    await comb.append("gone/s2", "conversation", "x")
    await comb.set("gone0/s", "k", 1)  # a cell whose name starts like the other's
    await comb.set("kept/s1", "k", 1)
    await comb.forget_cell("gone")
    assert await comb.keys("gone/s1") == []
    assert await comb.list_range("gone/s2", "conversation") == []
    assert await comb.get("gone0/s", "k") == 1
    assert await comb.get("kept/s1", "k") == 1


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.get("no-slash", "k"), "session"),
        (lambda c: c.get("a/b/c", "k"), "session"),
        (lambda c: c.get("/s", "k"), "session.cell"),
        (lambda c: c.get(S, ""), "key"),
        (lambda c: c.get(S, "a/b"), "key"),
        (lambda c: c.get(S, "x" * 300), "key"),
        (lambda c: c.get(S, "tab\there"), "key"),
        (lambda c: c.set(S, "k", {1, 2}), "value"),
        (lambda c: c.set(S, "k", 1, ttl=0), "ttlSeconds"),
        (lambda c: c.set(S, "k", 1, ttl=float("nan")), "ttlSeconds"),
        (lambda c: c.keys(S, ""), "pattern"),
        (lambda c: c.append(S, "", 1), "list"),
        (lambda c: c.list_range(S, "l", "0"), "start"),
        (lambda c: c.remember("c", "   "), "text"),
        (lambda c: c.remember("c", "t", ["not", "a", "map"]), "metadata"),
        (lambda c: c.search("c", "!!!"), "q"),
        (lambda c: c.search("c", "cats", 0), "limit"),
    ],
)
async def test_bad_input_is_invalid_naming_the_field(comb: Comb, call: object, field: str) -> None:
    assert callable(call)
    with pytest.raises(Invalid) as exc:
        await call(comb)
    assert exc.value.status == 422
    assert [d.field for d in exc.value.details] == [field]


async def test_data_survives_reopen(backend: str, make_comb: MakeComb) -> None:
    if backend == "memory":
        pytest.skip("memory:// keeps nothing by design")
    first = await make_comb()
    await first.set(S, "k", {"v": 1})
    await first.append(S, "conversation", "hello")
    await first.close()
    second = await make_comb()
    assert await second.get(S, "k") == {"v": 1}
    assert await second.list_range(S, "conversation") == ["hello"]


DOCS = [
    ("The quarterly revenue report shows growth in Europe", {"kind": "finance"}),
    ("Cats are small carnivorous mammals. Cats purr; a cat sleeps a lot.", {"kind": "pets"}),
    ("Our office has a cat named Felix", {"kind": "office"}),
    ("Dogs are loyal companions", {"kind": "pets"}),
]


async def test_long_term_memory_ranks_the_more_relevant_first(backend: str, comb: Comb) -> None:
    if backend == "redis":
        with pytest.raises(NotSupported, match="redis"):
            await comb.remember("mem", "anything")
        with pytest.raises(NotSupported):
            await comb.search("mem", "anything")
        return
    ids = [await comb.remember("mem", text, meta) for text, meta in DOCS]
    assert len(set(ids)) == 4
    await comb.remember("other-cell", "cats cats cats cats", {})
    hits = await comb.search("mem", "cats", limit=10)
    assert [h.id for h in hits] == [ids[1], ids[2]]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].text == DOCS[1][0]
    assert hits[0].metadata == {"kind": "pets"}
    # any word matches; the document with more of the query's words wins
    hits = await comb.search("mem", "revenue growth of dogs", limit=10)
    assert [h.id for h in hits][:1] == [ids[0]]
    assert set(h.id for h in hits) == {ids[0], ids[3]}
    assert len(await comb.search("mem", "cat", limit=1)) == 1
    assert await comb.search("mem", "unicorns") == []
    assert await comb.forget("mem", ids[1]) is True
    assert await comb.forget("mem", ids[1]) is False
    assert [h.id for h in await comb.search("mem", "cats")] == [ids[2]]
    await comb.forget_cell("mem")
    assert await comb.search("mem", "cat office") == []
    assert len(await comb.search("other-cell", "cats")) == 1
