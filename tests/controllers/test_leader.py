"""Leader election over the store: one holder at a time, takeover after expiry, clean release."""

from __future__ import annotations

import asyncio

from apiary.controllers.leader import LeaderElector, LeaderSettings
from apiary.store import Store

from .helpers import FakeClock


def _candidate(store: Store, clock: FakeClock, identity: str) -> LeaderElector:
    return LeaderElector(
        store,
        LeaderSettings(
            identity=identity,
            lease_seconds=15,
            renew_deadline_seconds=10,
            retry_seconds=0.01,
            clock=clock,
        ),
    )


async def test_one_holder_until_the_lease_expires(store: Store, clock: FakeClock) -> None:
    a, b = _candidate(store, clock, "a"), _candidate(store, clock, "b")
    assert await a.try_acquire_or_renew() is True
    assert await b.try_acquire_or_renew() is False
    clock.advance(10)
    assert await a.try_acquire_or_renew() is True  # renewal pushes expiry out
    clock.advance(10)
    assert await b.try_acquire_or_renew() is False  # 10 s after renewal: still held
    clock.advance(6)
    assert await b.try_acquire_or_renew() is True  # 16 s after renewal: expired, b takes over
    assert await a.try_acquire_or_renew() is False
    lease = await store.get("Lease", "", "apiary-controllers")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["transitions"] == 1


async def test_racing_candidates_on_an_expired_lease_elect_exactly_one(
    store: Store, clock: FakeClock
) -> None:
    first = _candidate(store, clock, "first")
    assert await first.try_acquire_or_renew()
    clock.advance(60)
    racers = [_candidate(store, clock, f"r{i}") for i in range(8)]
    won = await asyncio.gather(*(r.try_acquire_or_renew() for r in racers))
    assert sum(won) == 1


async def test_release_lets_another_take_over_at_once(store: Store, clock: FakeClock) -> None:
    a, b = _candidate(store, clock, "a"), _candidate(store, clock, "b")
    assert await a.try_acquire_or_renew()
    await a.release()
    assert await b.try_acquire_or_renew() is True


async def test_run_leads_only_while_holding_and_stops_on_takeover(
    store: Store, clock: FakeClock
) -> None:
    a = _candidate(store, clock, "a")
    leading = asyncio.Event()
    stopped = asyncio.Event()

    async def lead(stop_leading: asyncio.Event) -> None:
        leading.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    stop = asyncio.Event()
    task = asyncio.create_task(a.run(lead, stop))
    await asyncio.wait_for(leading.wait(), 5)
    # Someone else steals the lease (as after a long pause of ``a``): ``a`` must stop leading.
    lease = await store.get("Lease", "", "apiary-controllers")
    lease["spec"]["holderIdentity"] = "thief"
    lease["spec"]["renewTime"] = "2999-01-01T00:00:00.000000Z"
    await store.update(lease)
    await asyncio.wait_for(stopped.wait(), 5)
    assert not a.is_leader
    stop.set()
    await asyncio.wait_for(task, 5)
