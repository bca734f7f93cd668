"""``update_status_many``: many objects' status in one write (the session status writer's batch).

Every backend gives the same answers; SQLite also writes the batch as one transaction, and
PostgreSQL a batch of distinct objects as one statement, so a ``change`` that raises leaves
every object of the batch as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
from storekit import collect, hive

from apiary.store import Store


def set_status(**fields: Any) -> Any:
    def change(obj: dict[str, Any]) -> dict[str, Any]:
        obj["status"] = {**(obj.get("status") or {}), **fields}
        return obj

    return change


async def test_sets_each_status_with_its_own_version_and_one_change_each(store: Store) -> None:
    a = await store.create(hive("a", spec={"v": 1}))
    b = await store.create(hive("b", spec={"v": 1}))
    since = await store.resource_version()
    out = await store.update_status_many(
        "Hive", [("default", "a", set_status(phase="One")), ("default", "b", set_status(n=2))]
    )
    assert [o["status"] for o in out if o is not None] == [{"phase": "One"}, {"n": 2}]
    assert [o["metadata"]["resourceVersion"] for o in out if o is not None] == [
        str(since + 1), str(since + 2),
    ]  # fmt: skip
    for before, after in zip((a, b), out, strict=True):
        assert after is not None
        assert after["spec"] == before["spec"]
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
    stored = await store.get("Hive", "default", "a")
    assert stored["status"] == {"phase": "One"}
    changes = await collect(store, 2, since=since)
    assert [(c.type, c.object["metadata"]["name"]) for c in changes] == [
        ("MODIFIED", "a"), ("MODIFIED", "b"),
    ]  # fmt: skip


async def test_only_status_is_taken_and_unchanged_or_missing_objects_are_skipped(
    store: Store,
) -> None:
    await store.create(hive("a", spec={"v": 1}))
    await store.create(hive("same"))

    def also_spec(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"] = {"v": 99}
        obj["status"] = {"phase": "Two"}
        return obj

    since = await store.resource_version()
    out = await store.update_status_many(
        "Hive",
        [
            ("default", "a", also_spec),
            ("default", "missing", set_status(phase="X")),
            ("default", "same", lambda obj: None),
            ("default", "same", lambda obj: obj),
        ],
    )
    assert out[1:] == [None, None, None]
    assert out[0] is not None and out[0]["spec"] == {"v": 1}
    assert (await store.get("Hive", "default", "a"))["spec"] == {"v": 1}
    assert await store.resource_version() == since + 1
    assert await store.update_status_many("Hive", []) == []


@pytest.mark.parametrize("second", ["a", "b"], ids=["same-object", "distinct-objects"])
async def test_a_failing_change_writes_nothing_of_its_batch(
    store: Store, backend: str, second: str
) -> None:
    if backend == "memory":
        pytest.skip("the memory store writes each item on its own")
    if backend == "postgresql" and second == "a":
        pytest.skip("PostgreSQL writes a batch naming an object twice item by item")
    for name in sorted({"a", second}):
        await store.create(hive(name))
    since = await store.resource_version()

    def boom(obj: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await store.update_status_many(
            "Hive", [("default", "a", set_status(phase="One")), ("default", second, boom)]
        )
    assert (await store.get("Hive", "default", "a"))["status"] == {}
    assert await store.resource_version() == since
