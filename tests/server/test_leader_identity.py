"""A restarted apiaryd (same data dir) is the same leadership candidate; another data dir is not."""

from __future__ import annotations

from pathlib import Path

from apiary.controllers.leader import LeaderElector, LeaderSettings
from apiary.server.runtime import leader_identity
from apiary.store import open_store


def test_identity_is_stable_per_data_dir(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert leader_identity(a) == leader_identity(a)
    assert leader_identity(a) != leader_identity(b)


async def test_a_restarted_replica_takes_its_own_lease_back_at_once(tmp_path: Path) -> None:
    async with open_store("memory://") as store:
        me = leader_identity(tmp_path)
        first = LeaderElector(store, LeaderSettings(identity=me))
        assert await first.try_acquire_or_renew()
        # kill -9: no release. The next incarnation need not wait for the lease to expire.
        again = LeaderElector(store, LeaderSettings(identity=leader_identity(tmp_path)))
        assert await again.try_acquire_or_renew()
        other = LeaderElector(store, LeaderSettings(identity="someone-else"))
        assert not await other.try_acquire_or_renew()
