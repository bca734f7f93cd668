"""The in-memory Comb (``memory://``): the whole contract, nothing durable.

Every operation runs without awaiting in between, so on one event loop each is atomic without a
lock. Long-term memory ranks with tf-idf: ``(1 + log tf) * log(1 + N / df)`` summed over the
query words, divided by the square root of the document's length so a long document that
mentions a word once does not beat a short one about it.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from apiary.comb.base import (
    Comb,
    CombSettings,
    MemoryHit,
    add_numbers,
    decode,
    encode,
    entry_size,
    python_range,
    too_large,
)
from apiary.comb.text import tokens


@dataclass
class _Entry:
    text: str
    expires: float | None

    def alive(self, now: float) -> bool:
        return self.expires is None or self.expires > now


@dataclass
class _Session:
    kv: dict[str, _Entry] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def purge(self, now: float) -> int:
        dead = [k for k, e in self.kv.items() if not e.alive(now)]
        for k in dead:
            del self.kv[k]
        return len(dead)

    def used(self, now: float) -> int:
        kv = sum(entry_size(k, e.text) for k, e in self.kv.items() if e.alive(now))
        lists = sum(
            len(name.encode()) + sum(len(t.encode()) for t in items)
            for name, items in self.lists.items()
        )
        return kv + lists


@dataclass
class _Doc:
    id: str
    text: str
    metadata: dict[str, Any]
    terms: Counter[str]
    length: int


class MemoryComb(Comb):
    def __init__(self, settings: CombSettings | None = None) -> None:
        super().__init__(settings)
        self._sessions: dict[str, _Session] = {}
        self._docs: dict[str, dict[str, _Doc]] = {}

    def _session(self, session: str, now: float) -> _Session:
        s = self._sessions.setdefault(session, _Session())
        s.purge(now)
        return s

    # ---------------------------------------------------------------- session memory

    async def _get(self, session: str, key: str, now: float) -> str | None:
        s = self._sessions.get(session)
        entry = s.kv.get(key) if s is not None else None
        return entry.text if entry is not None and entry.alive(now) else None

    def _check_room(self, session: str, s: _Session, now: float, delta: int) -> None:
        used = s.used(now) + delta
        if delta > 0 and used > self.limit:
            raise too_large(session, used, self.limit)

    async def _set(
        self, session: str, key: str, text: str, expires: float | None, now: float
    ) -> None:
        s = self._session(session, now)
        old = s.kv.get(key)
        delta = entry_size(key, text) - (entry_size(key, old.text) if old else 0)
        self._check_room(session, s, now, delta)
        s.kv[key] = _Entry(text, expires)

    async def _delete(self, session: str, key: str, now: float) -> bool:
        s = self._session(session, now)
        return s.kv.pop(key, None) is not None

    async def _incr(self, session: str, key: str, by: int | float, now: float) -> int | float:
        s = self._session(session, now)
        old = s.kv.get(key)
        value = add_numbers(decode(old.text) if old else None, by, key)
        text = encode(value)
        delta = entry_size(key, text) - (entry_size(key, old.text) if old else 0)
        self._check_room(session, s, now, delta)
        s.kv[key] = _Entry(text, old.expires if old else None)
        return value

    async def _keys(self, session: str, now: float) -> list[str]:
        s = self._sessions.get(session)
        return [k for k, e in s.kv.items() if e.alive(now)] if s else []

    async def _clear(self, session: str) -> int:
        s = self._sessions.pop(session, None)
        return 0 if s is None else len(s.kv) + len(s.lists)

    async def _usage(self, session: str, now: float) -> int:
        s = self._sessions.get(session)
        return s.used(now) if s else 0

    async def _append(self, session: str, name: str, text: str, now: float) -> int:
        s = self._session(session, now)
        items = s.lists.get(name)
        delta = len(text.encode()) + (0 if items is not None else len(name.encode()))
        self._check_room(session, s, now, delta)
        s.lists.setdefault(name, []).append(text)
        return len(s.lists[name])

    async def _list_range(self, session: str, name: str, start: int, stop: int) -> list[str]:
        s = self._sessions.get(session)
        return python_range(s.lists.get(name, []) if s else [], start, stop)

    async def _purge_expired(self, now: float) -> int:
        return sum(s.purge(now) for s in self._sessions.values())

    async def _forget_cell(self, cell: str) -> None:
        for session in [s for s in self._sessions if s.split("/", 1)[0] == cell]:
            del self._sessions[session]
        self._docs.pop(cell, None)

    # --------------------------------------------------------------- long-term memory

    async def _remember(self, cell: str, text: str, metadata: dict[str, Any]) -> str:
        words = tokens(text)
        doc = _Doc(uuid.uuid4().hex, text, metadata, Counter(words), max(len(words), 1))
        self._docs.setdefault(cell, {})[doc.id] = doc
        return doc.id

    async def _search(self, cell: str, words: list[str], limit: int) -> list[MemoryHit]:
        docs = self._docs.get(cell) or {}
        query = [w for w in dict.fromkeys(tokens(" ".join(words)))]
        if not docs or not query:
            return []
        n = len(docs)
        df = {w: sum(1 for d in docs.values() if w in d.terms) for w in query}
        hits: list[MemoryHit] = []
        for doc in docs.values():
            score = 0.0
            for w in query:
                tf = doc.terms.get(w, 0)
                if tf:
                    score += (1.0 + math.log(tf)) * math.log(1.0 + n / df[w])
            if score > 0:
                score /= math.sqrt(doc.length)
                hits.append(MemoryHit(doc.id, doc.text, dict(doc.metadata), score))
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]

    async def _forget(self, cell: str, memory_id: str) -> bool:
        return (self._docs.get(cell) or {}).pop(memory_id, None) is not None


__all__ = ["MemoryComb"]
