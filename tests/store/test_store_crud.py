"""CRUD semantics every backend shares: metadata, generation, status, concurrency, deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from storekit import MakeStore, collect, hive

from apiary.errors import AlreadyExists, Conflict, Invalid, NotFound
from apiary.store import Store


async def test_create_then_get_round_trips_the_body(store: Store) -> None:
    created = await store.create(hive("a", labels={"team": "x"}, spec={"pattern": "swarm"}))
    got = await store.get("Hive", "default", "a")
    assert got == created
    assert got["spec"] == {"pattern": "swarm"}
    assert got["metadata"]["labels"] == {"team": "x"}
    assert got["status"] == {}


async def test_create_fills_server_managed_metadata(make_store: MakeStore) -> None:
    fixed = datetime(2030, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    store = await make_store(clock=lambda: fixed)
    a = await store.create(hive("a", uid="client-chosen", generation=7))
    b = await store.create(hive("b"))
    meta = a["metadata"]
    assert meta["uid"] != "client-chosen" and len(meta["uid"]) == 36
    assert meta["uid"] != b["metadata"]["uid"]
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] == "2030-01-02T03:04:05.600000Z"
    assert int(b["metadata"]["resourceVersion"]) > int(meta["resourceVersion"]) > 0


async def test_cluster_scoped_objects_have_no_namespace(store: Store) -> None:
    cell = {"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "prod"}, "spec": {}}
    created = await store.create(cell)
    assert "namespace" not in created["metadata"]
    assert (await store.get("Cell", "", "prod"))["metadata"]["name"] == "prod"


async def test_create_twice_is_already_exists_and_changes_nothing(store: Store) -> None:
    first = await store.create(hive("a"))
    rv = await store.resource_version()
    with pytest.raises(AlreadyExists):
        await store.create(hive("a", spec={"other": True}))
    assert await store.get("Hive", "default", "a") == first
    assert await store.resource_version() == rv, "a failed write must not use a version"


async def test_same_name_in_other_namespace_or_kind_is_distinct(store: Store) -> None:
    await store.create(hive("a", "one"))
    await store.create(hive("a", "two"))
    agent = {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": "a", "namespace": "one"},
        "spec": {},
    }
    await store.create(agent)
    assert (await store.get("AgentSpec", "one", "a"))["kind"] == "AgentSpec"
    assert (await store.get("Hive", "two", "a"))["metadata"]["namespace"] == "two"


async def test_get_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        await store.get("Hive", "default", "nope")
    with pytest.raises(NotFound):
        await store.update(hive("nope"))
    with pytest.raises(NotFound):
        await store.delete("Hive", "default", "nope")


async def test_generation_tracks_spec_only(store: Store) -> None:
    obj = await store.create(hive("a", spec={"replicas": 1}))
    obj["metadata"]["labels"] = {"new": "label"}
    obj["metadata"]["annotations"] = {"note": "x"}
    obj = await store.update(obj)
    assert obj["metadata"]["generation"] == 1, "labels/annotations are not spec"
    obj["status"] = {"phase": "Running"}
    obj = await store.update(obj, subresource="status")
    assert obj["metadata"]["generation"] == 1, "status is not spec"
    obj["spec"] = {"replicas": 2}
    obj = await store.update(obj)
    assert obj["metadata"]["generation"] == 2
    obj = await store.update(obj)
    assert obj["metadata"]["generation"] == 2, "an identical spec is no new generation"
    assert obj["metadata"]["labels"] == {"new": "label"}


async def test_status_subresource_ignores_spec_and_update_ignores_status(store: Store) -> None:
    obj = await store.create(hive("a", spec={"replicas": 1}))
    change = dict(obj, spec={"replicas": 99}, status={"phase": "Running", "observedGeneration": 1})
    after_status = await store.update(change, subresource="status")
    assert after_status["spec"] == {"replicas": 1}
    assert after_status["status"] == {"phase": "Running", "observedGeneration": 1}

    change = dict(after_status, spec={"replicas": 3}, status={"phase": "Hacked"})
    after_main = await store.update(change)
    assert after_main["spec"] == {"replicas": 3}
    assert after_main["status"] == {"phase": "Running", "observedGeneration": 1}
    assert await store.get("Hive", "default", "a") == after_main


async def test_update_keeps_server_managed_fields(store: Store) -> None:
    obj = await store.create(hive("a"))
    forged = dict(obj)
    forged["metadata"] = dict(
        obj["metadata"], creationTimestamp="1999-01-01T00:00:00Z", generation=42
    )
    updated = await store.update(forged)
    assert updated["metadata"]["creationTimestamp"] == obj["metadata"]["creationTimestamp"]
    assert updated["metadata"]["generation"] == 1
    assert updated["metadata"]["uid"] == obj["metadata"]["uid"]
    stale_uid = dict(updated, metadata=dict(updated["metadata"], uid="another-incarnation"))
    with pytest.raises(Conflict, match="uid"):
        await store.update(stale_uid)


async def test_stale_resource_version_is_conflict(store: Store) -> None:
    obj = await store.create(hive("a"))
    await store.update(dict(obj, spec={"v": 1}))
    with pytest.raises(Conflict, match="stale"):
        await store.update(dict(obj, spec={"v": 2}))
    with pytest.raises(Conflict):
        await store.delete(
            "Hive", "default", "a", resource_version=obj["metadata"]["resourceVersion"]
        )
    unconditional = dict(obj, metadata=dict(obj["metadata"], resourceVersion=""), spec={"v": 3})
    assert (await store.update(unconditional))["spec"] == {"v": 3}


async def test_concurrent_updates_with_same_version_exactly_one_wins(store: Store) -> None:
    await store.create(hive("a", spec={"n": 0}))
    for round_ in range(15):
        current = await store.get("Hive", "default", "a")
        attempts = [dict(current, spec={"n": round_, "writer": w}) for w in range(4)]
        results = await asyncio.gather(*(store.update(a) for a in attempts), return_exceptions=True)
        wins = [r for r in results if isinstance(r, dict)]
        losses = [r for r in results if isinstance(r, Conflict)]
        assert len(wins) == 1 and len(losses) == 3, results
        assert await store.get("Hive", "default", "a") == wins[0]


async def test_update_with_retry_applies_every_concurrent_increment(store: Store) -> None:
    await store.create(hive("counter", spec={"n": 0}))

    def bump(obj: dict) -> dict:
        return dict(obj, spec={"n": obj["spec"]["n"] + 1})

    await asyncio.gather(
        *(
            store.update_with_retry("Hive", "default", "counter", bump, attempts=100)
            for _ in range(10)
        )
    )
    assert (await store.get("Hive", "default", "counter"))["spec"]["n"] == 10


async def test_delete_without_finalizers_removes_at_once(store: Store) -> None:
    obj = await store.create(hive("a"))
    last = await store.delete("Hive", "default", "a")
    assert last["metadata"]["uid"] == obj["metadata"]["uid"]
    with pytest.raises(NotFound):
        await store.get("Hive", "default", "a")
    recreated = await store.create(hive("a"))
    assert recreated["metadata"]["uid"] != obj["metadata"]["uid"]


async def test_finalizers_hold_deletion_until_cleared(store: Store) -> None:
    obj = await store.create(hive("a", finalizers=["apiary.io/drones"]))
    since = await store.resource_version()
    marked = await store.delete("Hive", "default", "a")
    assert marked["metadata"]["deletionTimestamp"]
    assert await store.get("Hive", "default", "a") == marked
    rv = await store.resource_version()
    again = await store.delete("Hive", "default", "a")
    assert again == marked
    assert await store.resource_version() == rv, "deleting a terminating object changes nothing"

    # a status write while terminating keeps the object and its deletion mark
    still = await store.update(dict(marked, status={"phase": "Stopping"}), subresource="status")
    assert still["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]

    cleared = dict(still, metadata=dict(still["metadata"], finalizers=[]))
    gone = await store.update(cleared)
    assert gone["metadata"]["uid"] == obj["metadata"]["uid"]
    with pytest.raises(NotFound):
        await store.get("Hive", "default", "a")
    types = [c.type for c in await collect(store, 3, since=since)]
    assert types == ["MODIFIED", "MODIFIED", "DELETED"]


async def test_a_body_without_kind_or_name_is_invalid_naming_the_field(store: Store) -> None:
    with pytest.raises(Invalid) as caught:
        await store.create({"apiVersion": "apiary.io/v1", "metadata": {}, "spec": {}})
    assert [d.field for d in caught.value.details] == ["kind", "metadata.name"]
    with pytest.raises(Invalid, match=r"metadata\.name"):
        await store.update({"kind": "Hive", "metadata": {"namespace": "default"}})


async def test_controller_owned_annotations_survive_an_update_that_omits_them(store: Store) -> None:
    """`status.apiary.io/…` annotations are the controllers' (the autoscaler's count): a user's
    re-apply without them keeps them, as it keeps status; naming one sets it."""
    obj = await store.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                              "metadata": {"name": "h", "namespace": "c",
                                           "annotations": {"mine": "1"}},
                              "spec": {"x": 1}})  # fmt: skip
    obj["metadata"]["annotations"]["status.apiary.io/autoscaler"] = '{"s": {"replicas": 3}}'
    await store.update(obj)
    again = {"apiVersion": "apiary.io/v1", "kind": "Hive",
             "metadata": {"name": "h", "namespace": "c", "annotations": {"mine": "2"}},
             "spec": {"x": 1}}  # fmt: skip
    kept = await store.update(again)
    assert kept["metadata"]["annotations"] == {
        "mine": "2", "status.apiary.io/autoscaler": '{"s": {"replicas": 3}}'
    }  # fmt: skip
    again["metadata"]["annotations"]["status.apiary.io/autoscaler"] = "{}"
    assert (await store.update(again))["metadata"]["annotations"][
        "status.apiary.io/autoscaler"
    ] == "{}"
