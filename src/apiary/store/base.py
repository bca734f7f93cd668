"""The store contract: Kubernetes-style object storage with a global resourceVersion.

A backend is a thin subclass that provides four primitives:

* ``_transact(key, mutate)`` — in one atomic transaction: allocate the next global
  resourceVersion, read the current body at ``key`` (or None), call ``mutate(current, rv)``, write
  what it returns (None deletes the row), append a change to the change log, commit. If
  ``mutate`` raises, nothing is written and no version is used. ``rv`` is used for nothing but
  ``metadata.resourceVersion``, so a backend that allocates the version last (PostgreSQL) may pass
  a provisional one and stamp the real one into the written body.
* ``_scan(kind, namespace, after, limit)`` — bodies ordered by (namespace, name), after a key.
* ``_changes_since(rv, limit)`` — change-log entries with version > rv, oldest first.
* ``_horizon()`` / ``_compact(keep)`` — the newest compacted version; trimming the log.

Everything else — uids, generation, optimistic concurrency, the status subresource, finalizers,
label selectors, pagination, watches and secret encryption — lives here, once, so every backend
means the same thing. Object bodies are plain dicts in the wire shape of the API. The types the
store speaks in are in :mod:`apiary.store.model`; what an update keeps of the current object is
in :mod:`apiary.store.updates`.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

import orjson

from apiary.errors import AlreadyExists, Conflict, Gone, NotFound
from apiary.resources.secret import fold_string_data
from apiary.store import continuation
from apiary.store.feed import ChangeFeed
from apiary.store.model import (
    Change,
    ChangeType,
    Clock,
    Key,
    Mutate,
    Obj,
    ObjectList,
    SecretCodec,
    StatusChange,
    StoreSettings,
    now_rfc3339,
    object_key,
)
from apiary.store.selectors import Selector
from apiary.store.updates import (
    MANAGED_METADATA,
    OWNED_ANNOTATION_PREFIX,
    desired_part,
    keep_owned_annotations,
    replaced,
    status_mutation,
)


def _rv_of(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


MAX_BATCH = 1000
"""Most rows one scan reads; a larger ``limit`` takes several (never a 10^23-row SQL LIMIT)."""


class Store(ABC):
    """Durable Kubernetes-style object store. Subclasses provide the primitives."""

    def __init__(
        self,
        settings: StoreSettings | None = None,
        *,
        codec: SecretCodec | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or StoreSettings()
        self.codec = codec
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self._changed = asyncio.Event()
        self._feed = ChangeFeed(self._changes_since)
        """The change log as this process's watchers read it: kept and shared (store/feed.py)."""
        self._compactor: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        """Connect, run migrations, start compaction."""
        await self._open()
        self._compactor = asyncio.create_task(self._compact_forever(), name="store-compactor")

    async def close(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            try:
                await self._compactor
            except asyncio.CancelledError:
                pass
            self._compactor = None
        await self._close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --------------------------------------------------------------- primitives

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _transact(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        """Atomically replace the body at key by ``mutate(current, rv)``; (old, new) bodies.

        Bodies cross this boundary in stored form (secrets encrypted)."""

    async def _transact_many(
        self, items: Sequence[tuple[Key, Mutate]]
    ) -> list[tuple[Obj | None, Obj | None]]:
        """``_transact`` for each item, in order. A backend that can runs them as one
        transaction (SQLite: one write lock, one commit); this default runs them one by one,
        each atomic on its own — what callers may rely on either way."""
        return [await self._transact(key, mutate) for key, mutate in items]

    @abstractmethod
    async def _scan(
        self, kind: str, namespace: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Obj]: ...

    @abstractmethod
    async def _changes_since(self, rv: int, limit: int) -> list[Change]: ...

    @abstractmethod
    async def _horizon(self) -> int:
        """Versions at or below this were compacted away."""

    @abstractmethod
    async def _compact(self, keep: int) -> None: ...

    @abstractmethod
    async def resource_version(self) -> int:
        """The newest committed global resourceVersion."""

    # ------------------------------------------------------------------ helpers

    def _notify(self) -> None:
        """Wake every watcher: something was committed."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _written(self) -> None:
        """Called once a write of this store has committed: wake the watchers."""
        self._notify()

    def _to_stored(self, obj: Obj) -> Obj:
        if obj.get("kind") != "Secret" or self.codec is None:
            return obj
        stored = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
        data = obj.get("data") or {}
        stored["encryptedData"] = self.codec.encrypt(orjson.dumps(data))
        return stored

    def _from_stored(self, obj: Obj | None) -> Obj | None:
        if obj is None or obj.get("kind") != "Secret" or "encryptedData" not in obj:
            return obj
        if self.codec is None:
            raise RuntimeError("the store holds encrypted secrets but has no key to read them")
        out = {k: v for k, v in obj.items() if k != "encryptedData"}
        out["data"] = orjson.loads(self.codec.decrypt(obj["encryptedData"]))
        return out

    async def _mutate(self, key: Key, mutate: Mutate) -> tuple[Obj | None, Obj | None]:
        def stored_mutate(current: Obj | None, rv: int) -> Obj | None:
            new = mutate(self._from_stored(current), rv)
            return None if new is None else self._to_stored(new)

        old, new = await self._transact(key, stored_mutate)
        self._written()
        return self._from_stored(old), self._from_stored(new)

    # ---------------------------------------------------------------- the API

    async def create(self, obj: Obj) -> Obj:
        """Store a new object; fills uid, resourceVersion, generation, creationTimestamp."""
        key = object_key(obj)
        body = copy.deepcopy(obj)
        fold_string_data(body)

        def mutate(current: Obj | None, rv: int) -> Obj:
            if current is not None:
                raise AlreadyExists(f"{key.kind} {key.name!r} already exists")
            meta = body.setdefault("metadata", {})
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = str(rv)
            meta["generation"] = 1
            meta["creationTimestamp"] = now_rfc3339(self.clock)
            meta.pop("deletionTimestamp", None)
            if key.namespace:
                meta["namespace"] = key.namespace
            else:
                meta.pop("namespace", None)
            body.setdefault("status", {})
            return body

        _, new = await self._mutate(key, mutate)
        assert new is not None
        return new

    async def get(self, kind: str, namespace: str, name: str) -> Obj:
        found = await self._get(Key(kind, namespace, name))
        if found is None:
            raise NotFound(
                f"{kind} {name!r} not found" + (f" in cell {namespace!r}" if namespace else "")
            )
        return found

    async def _get(self, key: Key) -> Obj | None:
        return self._from_stored(await self._read(key))

    @abstractmethod
    async def _read(self, key: Key) -> Obj | None:
        """The stored body at key, or None."""

    async def update(self, obj: Obj, *, subresource: Literal["status"] | None = None) -> Obj:
        """Replace an object (spec, metadata) or, with ``subresource="status"``, its status.

        A ``metadata.resourceVersion`` in ``obj`` must match the stored one (else 409); without one
        the update is unconditional. ``generation`` goes up when the spec (or a Secret's data)
        changes. Clearing the last finalizer of an object being deleted removes it.
        """
        key = object_key(obj)
        incoming = copy.deepcopy(obj)
        fold_string_data(incoming)
        want_rv = (incoming.get("metadata") or {}).get("resourceVersion")

        def mutate(current: Obj | None, rv: int) -> Obj | None:
            if current is None:
                raise NotFound(f"{key.kind} {key.name!r} not found")
            cur_meta = current["metadata"]
            if want_rv not in (None, "", 0) and str(want_rv) != cur_meta["resourceVersion"]:
                raise Conflict(
                    f"{key.kind} {key.name!r} was modified: resourceVersion {want_rv} is stale "
                    f"(now {cur_meta['resourceVersion']}); read it again and retry"
                )
            in_uid = (incoming.get("metadata") or {}).get("uid")
            if in_uid and in_uid != cur_meta["uid"]:
                raise Conflict(
                    f"{key.kind} {key.name!r} uid mismatch: it was deleted and recreated"
                )
            if subresource == "status":
                new = copy.deepcopy(current)
                new["status"] = incoming.get("status") or {}
            else:
                new = replaced(current, incoming)
                meta = new["metadata"]
                meta["name"] = key.name
                if key.namespace:
                    meta["namespace"] = key.namespace
                if desired_part(new) != desired_part(current):
                    meta["generation"] = int(cur_meta.get("generation", 1)) + 1
                if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                    return None
            new["metadata"]["resourceVersion"] = str(rv)
            return new

        old, new = await self._mutate(key, mutate)
        if new is None:  # last finalizer gone: the object is deleted now
            assert old is not None
            return old
        return new

    async def delete(
        self, kind: str, namespace: str, name: str, *, resource_version: str | None = None
    ) -> Obj:
        """Delete now, or mark ``deletionTimestamp`` if finalizers remain. Returns the last body."""
        key = Key(kind, namespace, name)

        def mutate(current: Obj | None, rv: int) -> Obj | None:
            if current is None:
                raise NotFound(f"{kind} {name!r} not found")
            if resource_version and resource_version != current["metadata"]["resourceVersion"]:
                raise Conflict(
                    f"{kind} {name!r} was modified since resourceVersion {resource_version}"
                )
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return current  # already terminating; nothing changes
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = now_rfc3339(self.clock)
                new["metadata"]["resourceVersion"] = str(rv)
                return new
            return None

        old, new = await self._mutate(key, mutate)
        result = new if new is not None else old
        assert result is not None
        return result

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        selector: Selector | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ObjectList:
        """Objects of a kind, ordered by (namespace, name); ``namespace=None`` means all cells.
        A ``continue_token`` must be one a list of this kind and cell gave (else 400)."""
        rv = await self.resource_version()
        after = continuation.decode(continue_token, kind, namespace) if continue_token else None
        want = limit if limit and limit > 0 else None
        # One row past the page tells whether a continue token is due; decoding more is waste
        # (``limit=50`` used to decode 100 rows). A selector may skip rows, so it reads wider.
        if want is None:
            batch = 500
        elif selector is None:
            batch = min(want + 1, MAX_BATCH)
        else:
            batch = min(max(want + 1, 100), MAX_BATCH)
        items: list[Obj] = []
        more = False
        while True:
            rows = await self._scan(kind, namespace, after, batch)
            for row in rows:
                obj = self._from_stored(row)
                assert obj is not None
                after = (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
                if selector is not None and not selector.matches(obj["metadata"].get("labels")):
                    continue
                if want is not None and len(items) == want:
                    more = True
                    break
                items.append(obj)
            if more or len(rows) < batch:
                break
        token = None
        if more and items:
            last = items[-1]["metadata"]
            token = continuation.encode(kind, namespace, last.get("namespace") or "", last["name"])
        return ObjectList(items, rv, token)

    async def watch(
        self,
        kind: str | None = None,
        namespace: str | None = None,
        *,
        since: int,
        selector: Selector | None = None,
    ) -> AsyncIterator[Change]:
        """Every change after version ``since``, in order, forever. 410 Gone if compacted."""
        last = since
        if last < await self._horizon():
            raise Gone(f"resourceVersion {last} is too old; list again and watch from there")
        timed_out = False
        while True:
            woken = self._changed
            changes = await self._feed.since(last, woken, fresh=timed_out)
            timed_out = False
            # The log is gap-free until compacted, so only a gap after ``last`` can mean that
            # versions were compacted away: the horizon (a round trip) is read only then, not on
            # every wake-up of every watcher (~5 % of a write's CPU on PostgreSQL).
            if changes and changes[0].rv > last + 1 and last < await self._horizon():
                raise Gone(f"resourceVersion {last} is too old; list again and watch from there")
            for change in changes:
                last = change.rv
                obj = change.object
                if kind is not None and obj["kind"] != kind:
                    continue
                if namespace is not None and (obj["metadata"].get("namespace") or "") != namespace:
                    continue
                if selector is not None and not selector.matches(obj["metadata"].get("labels")):
                    continue
                decoded = self._from_stored(obj)
                assert decoded is not None
                yield Change(change.rv, change.type, decoded)
            if not changes:
                # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that lands in
                # the turn a write wakes it, and the watch would run on, uncancellable.
                try:
                    async with asyncio.timeout(self.settings.watch_poll_interval):
                        await woken.wait()
                except TimeoutError:
                    timed_out = True  # no notification: maybe a writer elsewhere; read anew

    async def compact(self) -> None:
        """Trim the change log to ``settings.changelog_retention`` entries."""
        await self._compact(self.settings.changelog_retention)

    async def _compact_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.compact_interval)
            try:
                await self.compact()
            except Exception:  # a failed compaction is retried next round
                continue

    async def update_status_many(
        self, kind: str, changes: Sequence[tuple[str, str, StatusChange]]
    ) -> builtins.list[Obj | None]:
        """Set the status of many objects of one kind in one write where the backend can.

        For each ``(namespace, name, change)``: ``change(current)`` returns the object with its
        new status (only ``status`` is taken), or None to leave it as it is; it may replace
        the top-level fields of ``current`` and set or remove keys of its status, nothing
        deeper. A missing object is skipped. Returns the stored objects (None where skipped),
        in order; watchers are woken once. What a status writer that coalesces many objects'
        updates wants: under the write lock nothing can change between read and write, so there
        is no read-modify-write retry. If a ``change`` raises, the exception propagates and, on
        a backend that batches, none of the batch is written.
        """

        if not changes:
            return []
        items = [
            (Key(kind, ns, name), status_mutation(change, self._from_stored))
            for ns, name, change in changes
        ]
        done = await self._transact_many(items)
        self._written()
        out: builtins.list[Obj | None] = []
        for old, new in done:
            out.append(None if new is None or new is old else self._from_stored(new))
        return out

    async def transact(self, key: Key, mutate: Mutate) -> Obj | None:
        """Replace the body at ``key`` by ``mutate(current, rv)`` in one atomic transaction
        (None deletes it); the new body. For bookkeeping objects the store's API does not
        validate (the LLM budget ledger, :mod:`apiary.api.budget_ledger`): ``mutate`` sets
        ``metadata.resourceVersion`` itself; no uid, generation or admission applies."""
        _, new = await self._mutate(key, mutate)
        return new

    # ------------------------------------------------------------ conveniences

    async def update_with_retry(
        self,
        kind: str,
        namespace: str,
        name: str,
        change: Callable[[Obj], Awaitable[Obj | None] | Obj | None],
        *,
        subresource: Literal["status"] | None = None,
        attempts: int = 20,
    ) -> Obj | None:
        """Read-modify-write with retries on 409: how controllers update status safely."""
        for _ in range(attempts):
            try:
                current = await self.get(kind, namespace, name)
            except NotFound:
                return None
            result = change(current)
            new = await result if asyncio.iscoroutine(result) else result
            if new is None:
                return current
            try:
                return await self.update(new, subresource=subresource)  # type: ignore[arg-type]
            except Conflict:
                continue
            except NotFound:
                return None
        raise Conflict(f"{kind} {name!r}: too many concurrent updates")


__all__ = [
    "MANAGED_METADATA",
    "OWNED_ANNOTATION_PREFIX",
    "Change",
    "ChangeType",
    "Key",
    "Obj",
    "ObjectList",
    "SecretCodec",
    "Store",
    "StoreSettings",
    "keep_owned_annotations",
    "now_rfc3339",
    "object_key",
    "replaced",
]
