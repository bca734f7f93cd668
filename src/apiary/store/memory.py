"""The in-memory backend: the whole contract, nothing durable. For tests and ``memory://``."""

from __future__ import annotations

import asyncio
import bisect
import copy

from apiary.store.base import Store
from apiary.store.model import Change, Key, Mutate, Obj


class MemoryStore(Store):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._objects: dict[Key, Obj] = {}
        self._changes: list[Change] = []
        self._rv = 0
        self._compacted = 0
        self._lock = asyncio.Lock()

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    async def _transact(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        async with self._lock:
            current = self._objects.get(key)
            rv = self._rv + 1
            new = mutate(copy.deepcopy(current), rv)
            if new == current:  # nothing changes (e.g. deleting a terminating object)
                same = copy.deepcopy(current)
                return same, same
            self._rv = rv
            if new is None:
                del self._objects[key]
                gone = copy.deepcopy(current)
                assert gone is not None
                gone["metadata"]["resourceVersion"] = str(rv)
                self._changes.append(Change(rv, "DELETED", gone))
            else:
                self._objects[key] = copy.deepcopy(new)
                self._changes.append(
                    Change(rv, "ADDED" if current is None else "MODIFIED", copy.deepcopy(new))
                )
            return current, new

    async def _read(self, key: Key) -> Obj | None:
        found = self._objects.get(key)
        return copy.deepcopy(found) if found is not None else None

    async def _scan(
        self, kind: str, namespace: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Obj]:
        keys = sorted(
            k
            for k in self._objects
            if k.kind == kind
            and (namespace is None or k.namespace == namespace)
            and (after is None or (k.namespace, k.name) > after)
        )
        return [copy.deepcopy(self._objects[k]) for k in keys[:limit]]

    async def _changes_since(self, rv: int, limit: int) -> list[Change]:
        i = bisect.bisect_right([c.rv for c in self._changes], rv)
        return self._changes[i : i + limit]

    async def _horizon(self) -> int:
        return self._compacted

    async def _compact(self, keep: int) -> None:
        async with self._lock:
            excess = len(self._changes) - keep
            if excess > 0:
                self._compacted = self._changes[excess - 1].rv
                del self._changes[:excess]

    async def resource_version(self) -> int:
        return self._rv
