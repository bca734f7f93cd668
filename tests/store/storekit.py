"""Helpers shared by the store contract tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from apiary.store import Change, Store, StoreSettings

MakeStore = Callable[..., Awaitable[Store]]


def settings_for_tests(**overrides: Any) -> StoreSettings:
    """Compaction only when a test asks; watches poll often enough to never stall a test."""
    values: dict[str, Any] = {"compact_interval": 3600.0, "watch_poll_interval": 0.5}
    values.update(overrides)
    return StoreSettings(**values)


def hive(
    name: str,
    namespace: str = "default",
    *,
    labels: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """A minimal Hive body in wire form."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, **metadata}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": meta,
        "spec": spec if spec is not None else {"pattern": "pipeline", "stages": []},
    }


async def collect(
    store: Store, count: int, *, since: int, timeout: float = 10.0, **filters: Any
) -> list[Change]:
    """The first ``count`` changes a watch from ``since`` yields (the watch is closed after)."""
    out: list[Change] = []

    async def run() -> None:
        async with contextlib.aclosing(store.watch(since=since, **filters)) as changes:
            async for change in changes:
                out.append(change)
                if len(out) >= count:
                    return

    await asyncio.wait_for(run(), timeout)
    return out
