"""A watch-fed cache of a few kinds (client-go's informer, kopf's indexes): list once, then follow.

:class:`Informer` reads the store's resourceVersion, lists every object of its kinds, then
follows ``store.watch`` from that version — so nothing written between the version and the
listing is missed (a change the listing already shows is recognised by its resourceVersion and
skipped). It keeps each kind's objects by ``(namespace, name)``. A 410 Gone (the change log was
compacted past where the watch stood) lists everything again and swaps the new contents in at
once; any other watch error resumes the watch from the last version applied after
``restart_delay``. It works on every backend, PostgreSQL included: the store's watch does.

Controllers that run a pass every period over "every X" (the autoscaler, the session reaper)
read this instead of listing X from the store each pass: the pass stays level-triggered — it
decides from the whole current state every time — but costs memory reads, not a table scan.

Reads return the cached bodies themselves: they are read-only (deep-copy one before changing
and writing it). The cache lags the store by the watch's delivery time; writers stay safe the
usual way — resourceVersion-conditioned writes, or reads of the fresh object before writing.

* ``started()`` — an async context manager that runs the informer (shared by every user inside
  it, stopped when the last one leaves, and listed afresh when started again);
  ``has_synced`` / ``await synced()`` tell when the listing of the current run is in;
* ``prepare()`` — what a pass awaits first: the running informer's listing, or, with none
  running (a one-off pass: a test, a tool), one listing (``refresh()``) instead;
* ``apply(change)`` after a ``refresh()`` — for a controller that already follows a watch of
  its own (the Queen), which feeds the cache from it instead of opening a second one;
* ``get``/``list`` — the read API; ``resource_version`` is the newest change applied, and
  ``await wait_for(rv)``/``await caught_up()`` wait until the cache has seen a version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from apiary.controllers.meta import Obj
from apiary.errors import ApiaryError, Gone
from apiary.store import Change, Selector, Store

log = logging.getLogger("apiary.controllers.cache")

ObjKey = tuple[str, str]
"""(namespace, name); namespace "" for cluster-scoped kinds."""


def _rv(obj: Obj) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


class Informer:
    """Every object of ``kinds``, kept current by one watch of the store."""

    def __init__(self, store: Store, kinds: Iterable[str], *, restart_delay: float = 0.5) -> None:
        self.store = store
        self.kinds = frozenset(kinds)
        self.restart_delay = restart_delay
        self._objects: dict[str, dict[ObjKey, Obj]] = {k: {} for k in self.kinds}
        self._rv = 0
        self._synced = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self.relists = 0
        """Full listings made so far (the first one included)."""

    # ------------------------------------------------------------------ reading

    @property
    def has_synced(self) -> bool:
        """The first listing is in: reads answer from the whole state."""
        return self._synced.is_set()

    async def synced(self) -> None:
        """Return once the first listing is in."""
        await self._synced.wait()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def resource_version(self) -> int:
        """The newest store version the cache reflects."""
        return self._rv

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._bucket(kind).get((namespace, name))

    def list(
        self, kind: str, namespace: str | None = None, *, selector: Selector | None = None
    ) -> list[Obj]:
        """The cached objects of ``kind`` (in one cell, matching ``selector``), unordered."""
        out = []
        for obj in self._bucket(kind).values():
            meta = obj["metadata"]
            if namespace is not None and (meta.get("namespace") or "") != namespace:
                continue
            if selector is not None and not selector.matches(meta.get("labels")):
                continue
            out.append(obj)
        return out

    def __len__(self) -> int:
        return sum(len(b) for b in self._objects.values())

    def _bucket(self, kind: str) -> dict[ObjKey, Obj]:
        try:
            return self._objects[kind]
        except KeyError:
            raise KeyError(
                f"this cache does not hold {kind} (it holds {sorted(self.kinds)})"
            ) from None

    async def prepare(self) -> None:
        """Make the cache answer for one pass: a running informer's listing is awaited; with
        none running (a one-off pass: a test, a tool) the kinds are listed once, as a pass
        without a cache would."""
        if self.running:
            await self.synced()
        else:
            await self.refresh()

    async def synced_or(self, stop: asyncio.Event) -> bool:
        """Wait until the listing is in or ``stop`` is set; whether the cache has synced."""
        if not self.has_synced and not stop.is_set():
            waits = [asyncio.ensure_future(self.synced()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        return self.has_synced

    async def wait_for(self, rv: int) -> None:
        """Return once the cache reflects every change up to version ``rv``."""
        if self._rv >= rv:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((rv, future))
        await future

    async def caught_up(self) -> None:
        """Return once the cache reflects everything the store had committed when called."""
        await self.wait_for(await self.store.resource_version())

    # ------------------------------------------------------------------ filling

    async def refresh(self) -> None:
        """List every kind again and swap the result in (no watch)."""
        rv = await self.store.resource_version()
        fresh: dict[str, dict[ObjKey, Obj]] = {}
        for kind in sorted(self.kinds):
            items = (await self.store.list(kind)).items
            fresh[kind] = {(o["metadata"].get("namespace") or "", o["metadata"]["name"]): o
                           for o in items}  # fmt: skip
        self._objects = fresh
        self.relists += 1
        self._advance(rv)
        self._synced.set()

    def invalidate(self) -> None:
        """Forget everything (the watch feeding it stopped): reads wait for the next listing."""
        self._objects = {k: {} for k in self.kinds}
        self._synced.clear()

    def apply(self, change: Change) -> None:
        """Fold one change in; a change no newer than the cached body is ignored."""
        kind = change.kind
        if kind in self.kinds:
            meta = change.object["metadata"]
            key = (meta.get("namespace") or "", meta["name"])
            bucket = self._objects[kind]
            have = bucket.get(key)
            if have is None or _rv(have) < change.rv:
                if change.type == "DELETED":
                    bucket.pop(key, None)
                else:
                    bucket[key] = change.object
        self._advance(change.rv)

    def _advance(self, rv: int) -> None:
        self._rv = max(self._rv, rv)
        if self._waiters:
            waiting = []
            for wanted, future in self._waiters:
                if wanted <= self._rv:
                    if not future.done():
                        future.set_result(None)
                else:
                    waiting.append((wanted, future))
            self._waiters = waiting

    async def run(self) -> None:
        """List, then follow the watch, forever (until cancelled)."""
        listed = False
        while True:
            try:
                if not listed:
                    await self.refresh()
                    listed = True
                async for change in self.store.watch(since=self._rv):
                    self.apply(change)
            except Gone:
                log.info(
                    "cache fell behind the change log; listing again",
                    extra={"kinds": ",".join(sorted(self.kinds))},
                )
                listed = False
            except Exception as exc:  # the store is away for a moment: resume from where we were
                log.warning(
                    "cache watch failed; retrying",
                    extra={"kinds": ",".join(sorted(self.kinds)), "error": str(exc)},
                )
                await asyncio.sleep(self.restart_delay)

    async def run_passes(
        self, run_once: Callable[[], Awaitable[object]], period: float, stop: asyncio.Event,
        what: str,
    ) -> None:  # fmt: skip
        """While this cache runs: ``run_once`` every ``period`` seconds until ``stop``, the first
        once the cache has listed. A failed pass is logged (``what`` names the controller) and
        the next one tries again — a controller must not die of one object."""
        async with self.started():
            if not await self.synced_or(stop):
                return
            while not stop.is_set():
                try:
                    await run_once()
                except ApiaryError as exc:  # the store is away for a moment
                    log.warning(
                        "controller pass failed",
                        extra={"controller": what, "error": exc.message},
                    )
                except Exception:
                    log.exception("controller pass failed", extra={"controller": what})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), period)

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[Informer]:
        """Run the informer while inside; nested and concurrent users share one run."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="informer")
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0 and self._task is not None:
                task, self._task = self._task, None
                self._synced.clear()  # a later run answers only once it has listed again
                await cancel_and_wait(task)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it. Python 3.11's ``asyncio.wait_for`` (the store's watch
    sleeps in one) returns normally when the cancel races the event it waits for, swallowing the
    cancel, so the task is cancelled again until it has really ended."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


__all__ = ["Informer", "ObjKey", "cancel_and_wait"]
