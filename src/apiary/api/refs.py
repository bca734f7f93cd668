"""Reference resolution: the ``ResolvedRefs`` condition of Hives and AgentSpecs.

Objects may be created in any order, so a Hive may name an AgentSpec that does not exist yet, and
an AgentSpec a Secret (or a key of one). This small level-triggered reconciler shows that in
``status.conditions``: ``ResolvedRefs=False`` with a message naming what is missing, turning
``True`` when it appears. It watches Hives, AgentSpecs and Secrets and re-checks only what a
change can affect — the changed object and the objects naming it — from an in-memory index of
references (:mod:`apiary.api.refindex`), so a change costs the same in a cell of 10 objects or of
10,000. Every ``resync_interval`` (and after a 410) it lists everything again and re-checks it
all. It writes only when the condition changes, so two copies can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Container, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from apiary.api.events import EventRecorder
from apiary.api.references import agent_refs, secret_key_refs
from apiary.api.refindex import CellIndex, build
from apiary.errors import Gone, NotFound
from apiary.logging import get_logger
from apiary.store import Change, Store
from apiary.store.base import now_rfc3339

CONDITION = "ResolvedRefs"
_WATCHED = frozenset({"Hive", "AgentSpec", "Secret"})
_CHECKED = ("AgentSpec", "Hive")

log = get_logger("apiary.refs")

Obj = dict[str, Any]
Pending = dict[tuple[str, str, str], Obj | None]
"""(kind, cell, name) → the newest body seen in a change, or None to read it from the store."""


class ReferenceResolver:
    def __init__(
        self,
        store: Store,
        recorder: EventRecorder,
        *,
        resync_interval: float = 30.0,
        debounce: float = 0.05,
        on_pass: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.resync_interval = resync_interval
        self.debounce = debounce
        self.on_pass = on_pass
        self._cells: dict[str, CellIndex] = {}

    async def run(self) -> None:
        """Forever: full pass, then follow changes until the next resync (or a 410).

        The full pass's checks join the follow loop's first batch, so an object changed while
        the pass was listing is checked once, with its newest body."""
        while True:
            since = await self.store.resource_version()
            everything = await self._rebuild()
            try:
                await self._follow(since, everything)
            except Gone:
                log.info("watch fell behind the change log; resyncing")

    async def reconcile_all(self) -> None:
        """Rebuild the index from one listing per kind and re-check every Hive and AgentSpec."""
        await self._check_dirty(await self._rebuild())

    async def reconcile_cell(self, cell: str) -> None:
        """Rebuild one cell's index from a listing and re-check every Hive and AgentSpec in it."""
        await self._check_dirty(await self._rebuild(cell))

    async def _rebuild(self, cell: str | None = None) -> Pending:
        """Index every cell (or one) from listings; everything that must be checked."""
        by_cell: dict[str, list[Obj]] = {}
        for kind in ("Secret", *_CHECKED):
            for obj in (await self.store.list(kind, cell)).items:
                by_cell.setdefault(obj["metadata"].get("namespace") or "", []).append(obj)
        if cell is None:
            self._cells = {}
        else:
            by_cell.setdefault(cell, [])
        due: Pending = {}
        for name, objects in by_cell.items():
            self._cells[name] = build(objects)
            for obj in objects:
                if obj["kind"] in _CHECKED:
                    due[(obj["kind"], name, obj["metadata"]["name"])] = obj
        return due

    async def _follow(self, since: int, dirty: Pending) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resync_interval
        changes = self.store.watch(None, None, since=since)
        pending: asyncio.Task[Change] | None = None
        # Checks wait at most ``debounce`` after the first change they follow, however busy the
        # change stream is (a sliding window would never close under load).
        flush_at = loop.time() + self.debounce
        try:
            while True:
                now = loop.time()
                if dirty and now >= flush_at:
                    await self._check_dirty(dirty)
                    dirty = {}
                    continue
                remaining = deadline - now
                if remaining <= 0:
                    return
                if pending is None:
                    pending = asyncio.ensure_future(anext(changes))
                timeout = flush_at - now if dirty else remaining
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    continue
                task, pending = pending, None
                if not dirty:
                    flush_at = loop.time() + self.debounce
                self._apply(task.result(), dirty)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            with contextlib.suppress(Exception):
                await changes.aclose()  # type: ignore[attr-defined]

    def _apply(self, change: Change, dirty: Pending) -> None:
        """Index one change and note which objects must be re-checked."""
        obj = change.object
        if obj["kind"] not in _WATCHED:
            return
        meta = obj["metadata"]
        cell, name = meta.get("namespace") or "", meta["name"]
        index = self._cells.setdefault(cell, CellIndex())
        if change.type == "DELETED":
            dirty.pop((obj["kind"], cell, name), None)
            touched = index.forget(obj["kind"], name)
        else:
            touched = index.observe(obj, modified=change.type == "MODIFIED")
            if (obj["kind"], name) in touched:
                dirty[(obj["kind"], cell, name)] = obj
        for kind, other in touched:
            dirty.setdefault((kind, cell, other), None)

    async def _check_dirty(self, dirty: Pending) -> None:
        cells: set[str] = set()
        for (kind, cell, name), known in sorted(dirty.items(), key=lambda kv: kv[0]):
            index = self._cells.get(cell)
            if index is None:
                continue
            obj = known
            if obj is None:
                try:
                    obj = await self.store.get(kind, cell, name)
                except NotFound:
                    continue
            await self._set(obj, _missing(obj, index))
            cells.add(cell)
        if self.on_pass is not None:
            for cell in sorted(cells):
                self.on_pass(cell)

    async def _set(self, obj: dict[str, Any], missing: list[str]) -> None:
        meta = obj["metadata"]
        want = {
            "type": CONDITION,
            "status": "False" if missing else "True",
            "reason": "MissingReferences" if missing else "AllResolved",
            "message": "; ".join(missing) if missing else "all references resolved",
            "observedGeneration": meta.get("generation", 1),
        }
        if _same(_condition(obj), want):
            return
        previous: dict[str, Any] | None = None
        wrote = False

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal previous, wrote
            old = _condition(current)
            if (
                _same(old, want)
                or current["metadata"].get("generation") != want["observedGeneration"]
            ):
                return None  # already right, or the spec moved on (the next pass handles it)
            previous = old
            status = dict(current.get("status") or {})
            conditions = [
                c
                for c in status.get("conditions") or []
                if not (isinstance(c, dict) and c.get("type") == CONDITION)
            ]
            keep_time = old is not None and old.get("status") == want["status"]
            stamp: str | None = old.get("lastTransitionTime") if keep_time and old else None
            conditions.append(
                {**want, "lastTransitionTime": stamp or now_rfc3339(self.store.clock)}
            )
            status["conditions"] = conditions
            wrote = True
            return {**current, "status": status}

        await self.store.update_with_retry(
            obj["kind"], meta.get("namespace") or "", meta["name"], change, subresource="status"
        )
        if not wrote or (previous is not None and previous.get("status") == want["status"]):
            return
        if missing:
            await self.recorder.try_record(obj, "Warning", "UnresolvedReferences", want["message"])
        elif previous is not None:
            await self.recorder.try_record(obj, "Normal", "ResolvedReferences", want["message"])


def _condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, dict) and c.get("type") == CONDITION:
            return c
    return None


def _same(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    return have is not None and all(have.get(k) == v for k, v in want.items())


def _missing(obj: Obj, index: CellIndex) -> list[str]:
    if obj["kind"] == "Hive":
        return _missing_agents(obj, index.spec_secrets.keys())
    return _missing_secrets(obj, index.secret_keys)


def _missing_agents(hive: Obj, known: Container[str]) -> list[str]:
    missing: dict[str, list[str]] = {}
    for path, name, _ in agent_refs(hive.get("spec")):
        if name not in known:
            missing.setdefault(name, []).append(path)
    return [f"AgentSpec {n!r} not found ({', '.join(p)})" for n, p in missing.items()]


def _missing_secrets(spec: Obj, secrets: Mapping[str, AbstractSet[str]]) -> list[str]:
    out: list[str] = []
    for path, name, key in secret_key_refs(spec.get("spec")):
        if name not in secrets:
            out.append(f"Secret {name!r} not found ({path})")
        elif key is not None and key not in secrets[name]:
            out.append(f"Secret {name!r} has no key {key!r} ({path})")
    return out
