"""ChangeFeed on its own: what it keeps and serves, with a fake change log."""

from __future__ import annotations

import asyncio

from apiary.store.feed import KEEP, LIMIT, ChangeFeed
from apiary.store.model import Change


def log(first: int, last: int) -> list[Change]:
    return [Change(rv, "ADDED", {"rv": rv}) for rv in range(first, last + 1)]


class Log:
    def __init__(self, newest: int) -> None:
        self.newest = newest
        self.asked: list[int] = []

    async def read(self, after: int, limit: int) -> list[Change]:
        self.asked.append(after)
        return log(after + 1, min(self.newest, after + limit))


async def test_serves_what_it_read_to_those_behind_and_reads_only_at_the_head() -> None:
    changes = Log(50)
    feed = ChangeFeed(changes.read)
    woken = asyncio.Event()
    assert [c.rv for c in await feed.since(10, woken)] == list(range(11, 51))
    assert [c.rv for c in await feed.since(20, asyncio.Event())] == list(range(21, 51))
    assert changes.asked == [10]  # the second answer came from what was kept
    assert await feed.since(50, woken) == []  # at the head, same event: the shared read says so
    assert changes.asked == [10]
    assert await feed.since(50, asyncio.Event()) == []  # a newer event: read
    assert await feed.since(50, woken, fresh=True) == []  # a poll timeout: read
    assert changes.asked == [10, 50, 50]


async def test_a_newer_read_not_adjoining_starts_over_and_an_older_one_keeps_what_is_kept() -> None:
    changes = Log(2_000)
    feed = ChangeFeed(changes.read)
    await feed.since(1_500, asyncio.Event())  # keeps 1501..2000
    await feed.since(0, asyncio.Event())  # far behind: 1..1000 is read, not kept
    assert [c.rv for c in await feed.since(1_600, asyncio.Event())][:1] == [1_601]
    assert changes.asked == [1_500, 0]
    changes.newest = 9_000
    await feed.since(5_000, asyncio.Event())  # a gap after 2000: start over at 5001
    assert await feed.since(1_600, asyncio.Event()) != []
    assert changes.asked[-1] == 1_600  # 1601.. was no longer kept


async def test_keeps_at_most_keep_changes_and_answers_at_most_limit() -> None:
    changes = Log(10_000)
    feed = ChangeFeed(changes.read)
    last = 0
    while last < 10_000:
        got = await feed.since(last, asyncio.Event())
        assert 0 < len(got) <= LIMIT and got[0].rv == last + 1
        last = got[-1].rv
    assert len(feed._recent) == KEEP
    assert feed._recent[-1].rv == 10_000
