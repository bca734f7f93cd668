"""Reference resolution: the ``ResolvedRefs`` condition of Hives and AgentSpecs.

Objects may be created in any order, so a Hive may name an AgentSpec that does not exist yet, and
an AgentSpec a Secret (or a key of one). This small level-triggered reconciler shows that in
``status.conditions``: ``ResolvedRefs=False`` with a message naming what is missing, turning
``True`` when it appears. It watches Hives, AgentSpecs and Secrets, re-checks the affected cell,
and resyncs everything periodically; it writes only when the condition changes, so two copies can
run side by side. (It lives in ``apiary.api`` for now; the runtime issue moves controllers to
``apiary.controllers``.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from apiary.api.events import EventRecorder
from apiary.api.references import agent_refs, secret_key_refs
from apiary.errors import Gone
from apiary.logging import get_logger
from apiary.store import Change, Store
from apiary.store.base import now_rfc3339

CONDITION = "ResolvedRefs"
_WATCHED = frozenset({"Hive", "AgentSpec", "Secret"})

log = get_logger("apiary.refs")


def _relevant(obj: dict[str, Any]) -> Any:
    """The part of an object that references depend on (status writes do not count)."""
    if obj["kind"] == "Secret":
        return sorted((obj.get("data") or {}).keys())
    return obj.get("spec")


class ReferenceResolver:
    def __init__(
        self,
        store: Store,
        recorder: EventRecorder,
        *,
        resync_interval: float = 30.0,
        debounce: float = 0.02,
        on_pass: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.resync_interval = resync_interval
        self.debounce = debounce
        self.on_pass = on_pass
        self._seen: dict[tuple[str, str, str], Any] = {}

    async def run(self) -> None:
        """Forever: full pass, then follow changes until the next resync (or a 410)."""
        while True:
            since = await self.store.resource_version()
            await self.reconcile_all()
            try:
                await self._follow(since)
            except Gone:
                log.info("watch fell behind the change log; resyncing")

    async def reconcile_all(self) -> None:
        cells: set[str] = set()
        for kind in ("Hive", "AgentSpec"):
            listed = await self.store.list(kind)
            cells.update(o["metadata"].get("namespace") or "" for o in listed.items)
        for cell in sorted(cells):
            await self.reconcile_cell(cell)

    async def _follow(self, since: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resync_interval
        changes = self.store.watch(None, None, since=since)
        pending: asyncio.Task[Change] | None = None
        dirty: set[str] = set()
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                if pending is None:
                    pending = asyncio.ensure_future(anext(changes))
                timeout = self.debounce if dirty else remaining
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    for cell in sorted(dirty):
                        await self.reconcile_cell(cell)
                    dirty.clear()
                    continue
                task, pending = pending, None
                change = task.result()
                touched = self._dirty_cell(change)
                if touched is not None:
                    dirty.add(touched)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            with contextlib.suppress(Exception):
                await changes.aclose()  # type: ignore[attr-defined]

    def _dirty_cell(self, change: Change) -> str | None:
        obj = change.object
        if obj["kind"] not in _WATCHED:
            return None
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace") or "", meta["name"])
        if change.type == "DELETED":
            self._seen.pop(key, None)
            return key[1]
        relevant = _relevant(obj)
        if change.type == "MODIFIED" and self._seen.get(key, object()) == relevant:
            return None  # a status-only write (likely our own): nothing to re-check
        self._seen[key] = relevant
        return key[1]

    async def reconcile_cell(self, cell: str) -> None:
        """Recompute the condition of every Hive and AgentSpec in one cell."""
        specs = (await self.store.list("AgentSpec", cell)).items
        hives = (await self.store.list("Hive", cell)).items
        secrets = (await self.store.list("Secret", cell)).items
        spec_names = {s["metadata"]["name"] for s in specs}
        secret_keys = {s["metadata"]["name"]: set((s.get("data") or {}).keys()) for s in secrets}
        for obj in (*specs, *hives, *secrets):
            self._seen[(obj["kind"], cell, obj["metadata"]["name"])] = _relevant(obj)
        for spec in specs:
            await self._set(spec, _missing_secrets(spec, secret_keys))
        for hive in hives:
            await self._set(hive, _missing_agents(hive, spec_names))
        if self.on_pass is not None:
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


def _missing_agents(hive: dict[str, Any], known: set[str]) -> list[str]:
    missing: dict[str, list[str]] = {}
    for path, name, _ in agent_refs(hive.get("spec")):
        if name not in known:
            missing.setdefault(name, []).append(path)
    return [f"AgentSpec {n!r} not found ({', '.join(p)})" for n, p in missing.items()]


def _missing_secrets(spec: dict[str, Any], secrets: dict[str, set[str]]) -> list[str]:
    out: list[str] = []
    for path, name, key in secret_key_refs(spec.get("spec")):
        if name not in secrets:
            out.append(f"Secret {name!r} not found ({path})")
        elif key is not None and key not in secrets[name]:
            out.append(f"Secret {name!r} has no key {key!r} ({path})")
    return out
