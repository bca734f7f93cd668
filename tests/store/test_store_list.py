"""Listing: label selectors, pagination with continue tokens, namespaces."""

from __future__ import annotations

import pytest
from storekit import hive

from apiary.errors import BadRequest
from apiary.store import Store, parse_selector

LABELS = {
    "a": {"tier": "gold", "env": "prod"},
    "b": {"tier": "silver", "env": "prod"},
    "c": {"tier": "gold"},
    "d": {"env": "dev"},
    "e": {},
}


async def _names(store: Store, selector: str) -> list[str]:
    listed = await store.list("Hive", "default", selector=parse_selector(selector))
    return [o["metadata"]["name"] for o in listed.items]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=gold", ["a", "c"]),
        ("tier==gold", ["a", "c"]),
        ("tier!=gold", ["b", "d", "e"]),
        ("tier in (gold, silver)", ["a", "b", "c"]),
        ("tier notin (gold)", ["b", "d", "e"]),
        ("env", ["a", "b", "d"]),
        ("!env", ["c", "e"]),
        ("tier=gold,env=prod", ["a"]),
        ("env,tier notin (silver)", ["a", "d"]),
        ("", ["a", "b", "c", "d", "e"]),
    ],
)
async def test_label_selector_operators(store: Store, selector: str, expected: list[str]) -> None:
    for name, labels in LABELS.items():
        await store.create(hive(name, labels=labels))
    assert await _names(store, selector) == expected


async def test_bad_selector_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="selector"):
        parse_selector("tier in gold")


async def test_list_across_namespaces_and_within_one(store: Store) -> None:
    for ns in ("zeta", "alpha", "mid"):
        for name in ("y", "x"):
            await store.create(hive(name, ns))
    everything = await store.list("Hive")
    keys = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in everything.items]
    assert keys == sorted(keys) and len(keys) == 6
    only = await store.list("Hive", "mid")
    assert [o["metadata"]["name"] for o in only.items] == ["x", "y"]
    assert (await store.list("Hive", "nowhere")).items == []
    assert (await store.list("AgentSpec")).items == []
    assert everything.resource_version == await store.resource_version()


async def _page_all(
    store: Store, limit: int, selector: str | None = None, between_pages: object = None
) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    token: str | None = None
    pages = 0
    while True:
        page = await store.list(
            "Hive", None, selector=parse_selector(selector), limit=limit, continue_token=token
        )
        assert len(page.items) <= limit
        seen += [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in page.items]
        pages += 1
        token = page.continue_token
        if token is None:
            return seen
        assert page.items, "a continue token comes only with a non-empty page"
        if callable(between_pages):
            await between_pages(pages)


async def test_pagination_has_no_duplicates_or_gaps(store: Store) -> None:
    expected = []
    for i in range(90):
        ns, name = f"ns{i % 3}", f"obj-{i:03d}"
        labels = {"tier": "gold" if i % 4 == 0 else "plain"}
        await store.create(hive(name, ns, labels=labels))
        expected.append((ns, name, labels["tier"]))
    expected.sort()

    assert await _page_all(store, 7) == [(ns, n) for ns, n, _ in expected]
    assert await _page_all(store, 1000) == [(ns, n) for ns, n, _ in expected]
    gold = [(ns, n) for ns, n, t in expected if t == "gold"]
    assert await _page_all(store, 4, "tier=gold") == gold
    assert await _page_all(store, 1, "tier=gold") == gold


async def test_pagination_is_stable_under_concurrent_writes(store: Store) -> None:
    for i in range(40):
        await store.create(hive(f"obj-{i:03d}"))
    stable = {("default", f"obj-{i:03d}") for i in range(40) if i % 2 == 1}

    async def churn(page: int) -> None:
        # delete an even object and add a new one between every page
        await store.delete("Hive", "default", f"obj-{(page - 1) * 2:03d}")
        await store.create(hive(f"new-{page:03d}"))

    seen = await _page_all(store, 5, between_pages=churn)
    assert len(seen) == len(set(seen)), "no object twice"
    assert stable <= set(seen), "every object that lived throughout appears"


async def test_malformed_continue_token_is_bad_request(store: Store) -> None:
    with pytest.raises(BadRequest, match="continue"):
        await store.list("Hive", limit=5, continue_token="not-a-token!")
