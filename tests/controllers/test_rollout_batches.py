"""Issue 10 point 2, the rollout half: a pass of a drone group never materialises unbounded work.
Creations go in slow-start batches (1, 2, 4, …) up to ``max_creates_per_pass``, a failed create
ends the pass, deletions are capped too, and a large group converges over several passes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from apiary.controllers import Queen
from apiary.controllers.rollout import Group, missing_ordinals, sync_group
from apiary.controllers.settings import RolloutSettings
from apiary.errors import Unavailable
from apiary.store import Store

from .helpers import agentspec, drones_of, hive

Obj = dict[str, Any]


class CountingCreates:
    """Wraps ``store.create`` for Drones: the sizes of the concurrent batches the rollout sends
    (a batch is every create started while another of it is still in flight), and a failure
    injected at the ``fail_at``-th create."""

    def __init__(self, store: Store, fail_at: int | None = None) -> None:
        self.store = store
        self.real = store.create
        self.calls = 0
        self.fail_at = fail_at
        self.batches: list[int] = []
        self._in_flight = 0
        store.create = self.create  # type: ignore[method-assign]

    async def create(self, obj: Obj) -> Obj:
        if obj.get("kind") != "Drone":
            return await self.real(obj)
        if self._in_flight == 0:
            self.batches.append(0)
        self.batches[-1] += 1
        self._in_flight += 1
        self.calls += 1
        call = self.calls
        try:
            await asyncio.sleep(0)  # every create of a gathered batch starts before any ends
            if call == self.fail_at:
                raise Unavailable("the store is away")
            return await self.real(obj)
        finally:
            self._in_flight -= 1

    def take(self) -> list[int]:
        batches, self.batches = self.batches, []
        return batches


async def test_a_thousand_replicas_are_created_in_slow_start_batches_over_passes(
    store: Store, queen: Queen
) -> None:
    await store.create(agentspec("echo"))
    await store.create(hive("big", ("s", "echo", 1000)))
    creates = CountingCreates(store)
    cap = queen.settings.rollout.max_creates_per_pass
    assert cap == 100

    await queen.hives.reconcile("default", "big")
    assert creates.take() == [1, 2, 4, 8, 16, 32, 37]  # 100: one pass, capped
    assert len(await drones_of(store, "big")) == 100
    status = (await store.get("Hive", "default", "big"))["status"]
    assert status["conditions"][2]["type"] == "Progressing"
    assert status["conditions"][2]["status"] == "True"

    passes = 1
    while len(await drones_of(store, "big")) < 1000:
        await queen.hives.reconcile("default", "big")
        batches = creates.take()
        assert batches[:3] == [1, 2, 4] and sum(batches) <= cap, batches
        passes += 1
        assert passes <= 10
    assert passes == 10
    ordinals = sorted(d["spec"]["ordinal"] for d in await drones_of(store, "big"))
    assert ordinals == list(range(1000))
    await queen.hives.reconcile("default", "big")
    assert creates.take() == []  # converged: nothing more to create


async def test_a_failed_create_ends_the_pass_and_the_batches_stop_growing(
    store: Store, queen: Queen
) -> None:
    await store.create(agentspec("echo"))
    await store.create(hive("big", ("s", "echo", 1000)))
    creates = CountingCreates(store, fail_at=5)  # in the third batch (creates 4..7)

    with pytest.raises(Unavailable):
        await queen.hives.reconcile("default", "big")
    assert creates.take() == [1, 2, 4]  # the batch with the failure is the last one
    assert creates.calls == 7
    assert len(await drones_of(store, "big")) == 6

    creates.fail_at = None  # the Queen's retry: the next pass starts at 1 again
    await queen.hives.reconcile("default", "big")
    assert creates.take()[:2] == [1, 2]
    assert len(await drones_of(store, "big")) == 106


async def test_scale_down_deletes_at_most_the_cap_per_pass(store: Store, queen: Queen) -> None:
    queen.settings.rollout.max_creates_per_pass = 300
    queen.settings.rollout.max_deletes_per_pass = 40
    await store.create(agentspec("echo"))
    await store.create(hive("big", ("s", "echo", 300)))
    await queen.hives.reconcile("default", "big")
    assert len(await drones_of(store, "big")) == 300

    def to_zero(h: Obj) -> Obj:
        h["spec"]["stages"][0]["replicas"] = 0
        return h

    await store.update_with_retry("Hive", "default", "big", to_zero)
    left = [300]
    while left[-1]:
        await queen.hives.reconcile("default", "big")
        left.append(len(await drones_of(store, "big")))
    assert left == [300, 260, 220, 180, 140, 100, 60, 20, 0]
    await queen.hives.reconcile("default", "big")  # the status of a pass that saw none left
    status = (await store.get("Hive", "default", "big"))["status"]
    assert status["phase"] == "Running" and status["replicas"] == 0


def test_missing_ordinals_are_computed_lazily() -> None:
    kept = {o: {} for o in range(0, 10, 2)}
    gen = missing_ordinals(10**18, kept)
    assert [next(gen) for _ in range(7)] == [1, 3, 5, 7, 9, 10, 11]


async def test_a_huge_group_costs_one_capped_pass_not_range_wanted(store: Store) -> None:
    """Admission refuses more than 1,000 replicas, but the rollout does not lean on that: a
    group wanting 10^12 drones (a store written by something else) is one pass of 100 creates."""
    owner = await store.create(agentspec("echo"))
    group = Group(
        owner=owner,
        name_parts=("echo",),
        labels={"apiary.io/agentspec": "echo"},
        wanted=10**12,
        template={"agentSpec": "echo", "runtime": {"command": ["/bin/cat"]}},
    )

    async def claim() -> None:
        return None

    result = await asyncio.wait_for(
        sync_group(store, group, [], rollout=RolloutSettings(), claim=claim), timeout=10
    )
    assert len(result.created) == 100 and result.more and not result.settled
    names = [d["metadata"]["name"] for d in (await store.list("Drone")).items]
    assert sorted(int(n.rsplit("-", 1)[1]) for n in names) == list(range(100))
