"""The Comb contract: session memory (a key/value space per session) and long-term memory per cell.

A backend is a thin subclass; what every backend must mean the same is decided here, once:

* **names** — a session is ``"<cell>/<session>"``; keys and list names are 1-256 characters,
  printable, without ``/`` (they travel as one URL path segment). Bad names are a 422 naming the
  field, never a driver error.
* **values** — any JSON. They are encoded here (compact orjson) and backends store that text, so
  every backend counts the same bytes.
* **the memory limit** — per session, the bytes of keys + encoded values + list names + encoded
  list items that are alive. A write that would take a session over its limit is refused with
  413 (:class:`~apiary.errors.PayloadTooLarge`) naming the limit, and changes nothing.
* **TTL** — ``set(..., ttl=seconds)`` expires the key at ``clock() + ttl``. Expired keys are
  invisible at once (every read compares with the clock) and removed lazily by the next write to
  the session or by :meth:`Comb.purge_expired`. The clock is injectable, so tests move time
  instead of sleeping. ``set`` without ``ttl`` clears an earlier TTL; ``incr`` keeps it.
* **long-term memory** — ``remember(cell, text, metadata)`` stores a document;
  ``search(cell, query, limit)`` ranks documents that contain any of the query's words, best
  first, with each backend's real full-text ranking (FTS5 bm25, PostgreSQL ts_rank_cd, tf-idf).
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from apiary.errors import (
    ApiaryError,
    Conflict,
    FieldDetail,
    Invalid,
    NotFound,
    PayloadTooLarge,
)

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time`` unless a test injects its own)."""

DEFAULT_SESSION_BYTES = 1 << 20
MAX_NAME_LENGTH = 256
MAX_TEXT_BYTES = 64 * 1024
MAX_SEARCH_LIMIT = 100

_WORD = re.compile(r"\w+", re.UNICODE)


class NotSupported(ApiaryError):
    """The configured backend cannot do this (e.g. long-term memory on ``redis://``)."""

    status = 501
    code = "NotSupported"


class MemoryHit(NamedTuple):
    """One long-term memory search result; a higher ``score`` is more relevant."""

    id: str
    text: str
    metadata: dict[str, Any]
    score: float


@dataclass
class CombSettings:
    """Knobs every backend honours."""

    max_session_bytes: int = DEFAULT_SESSION_BYTES
    """Bytes of keys + values (+ lists) one session may hold; more is refused with 413."""

    clock: Clock = time.time
    """Where TTLs read the time; tests inject a fake one."""


# ------------------------------------------------------------------------------ validation


def _bad(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", [FieldDetail(field, message)])


def check_name(value: object, field: str) -> str:
    """A key, list name, cell or session name: 1-256 printable characters, no ``/``."""
    if not isinstance(value, str) or not value:
        raise _bad(field, "must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise _bad(field, f"must be at most {MAX_NAME_LENGTH} characters (got {len(value)})")
    if "/" in value:
        raise _bad(field, f"must not contain '/' (got {value!r})")
    if not value.isprintable():
        raise _bad(field, f"must not contain control characters (got {value!r})")
    return value


def split_session(session: object) -> tuple[str, str]:
    """``"<cell>/<session>"`` → (cell, session), each part checked."""
    if not isinstance(session, str) or session.count("/") != 1:
        raise _bad("session", f"must be '<cell>/<session>' (got {session!r})")
    cell, name = session.split("/")
    return check_name(cell, "session.cell"), check_name(name, "session.name")


def check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise _bad("ttlSeconds", "must be a number of seconds")
    if ttl <= 0:
        raise _bad("ttlSeconds", f"must be greater than 0 (got {ttl})")
    return float(ttl)


def check_by(by: object) -> int | float:
    if isinstance(by, bool) or not isinstance(by, int | float) or not math.isfinite(by):
        raise _bad("by", f"must be a number (got {by!r})")
    return by


def encode(value: Any, field: str = "value") -> str:
    """The JSON text a backend stores (and counts): compact, the same on every backend."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise _bad(field, f"must be JSON: {exc}") from None


def decode(text: str) -> Any:
    return orjson.loads(text)


def entry_size(key: str, text: str) -> int:
    return len(key.encode()) + len(text.encode())


def add_numbers(current: Any, by: int | float, key: str) -> int | float:
    """``current + by`` for incr; a non-number already there is a 409 naming the key."""
    if current is None:
        return by
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise Conflict(
            f"comb key {key!r} holds {type(current).__name__} {encode(current)[:60]}, "
            "not a number: incr needs a number"
        )
    return current + by


def check_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise _bad("text", "must be a non-empty string")
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise _bad("text", f"must be at most {MAX_TEXT_BYTES} bytes")
    return text


def check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _bad("metadata", "must be a mapping")
    encode(metadata, "metadata")
    return dict(metadata)


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_SEARCH_LIMIT} (got {limit!r})")
    return limit


def query_words(query: object) -> list[str]:
    """The words of a search query (lower case, duplicates dropped, order kept)."""
    if not isinstance(query, str) or not query.strip():
        raise _bad("q", "must be a non-empty search query")
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    if not words:
        raise _bad("q", f"has no words to search for (got {query!r})")
    return words[:32]


def glob_filter(keys: list[str], pattern: str) -> list[str]:
    """Keys matching a shell glob (``*``, ``?``, ``[abc]``), sorted. Same on every backend."""
    if not isinstance(pattern, str) or not pattern:
        raise _bad("pattern", "must be a non-empty glob pattern")
    if pattern == "*":
        return sorted(keys)
    return sorted(k for k in keys if fnmatch.fnmatchcase(k, pattern))


def too_large(session: str, used: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"comb of session {session!r} would hold {used} bytes, over its limit of {limit} bytes "
        f"({limit / (1 << 20):g} MiB): delete keys or set smaller values"
    )


# -------------------------------------------------------------------------------- the ABC


class Comb(ABC):
    """Session memory and long-term memory. Subclasses implement the ``_``-prefixed primitives;
    the public methods validate and encode, so every backend refuses the same bad input."""

    supports_long_term = True
    """False where ``remember``/``search`` answer 501 :class:`NotSupported` (``redis://``)."""

    def __init__(self, settings: CombSettings | None = None) -> None:
        self.settings = settings or CombSettings()

    @property
    def clock(self) -> Clock:
        return self.settings.clock

    @property
    def limit(self) -> int:
        return self.settings.max_session_bytes

    # -- lifecycle

    async def open(self) -> None:  # noqa: B027 - the memory backend has nothing to open
        """Connect and create tables; idempotent per instance."""

    async def close(self) -> None:  # noqa: B027 - nor anything to close
        """Release connections; idempotent."""

    async def __aenter__(self) -> Comb:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- session memory

    async def get(self, session: str, key: str) -> Any:
        """The value at ``key``; a missing or expired key is a 404 naming it."""
        split_session(session)
        check_name(key, "key")
        text = await self._get(session, key, self.clock())
        if text is None:
            raise NotFound(f"comb key {key!r} not found in session {session!r}")
        return decode(text)

    async def set(self, session: str, key: str, value: Any, ttl: float | None = None) -> None:
        split_session(session)
        check_name(key, "key")
        seconds = check_ttl(ttl)
        now = self.clock()
        await self._set(
            session, key, encode(value), None if seconds is None else now + seconds, now
        )

    async def delete(self, session: str, key: str) -> bool:
        """Remove ``key``; whether it existed (and had not expired)."""
        split_session(session)
        check_name(key, "key")
        return await self._delete(session, key, self.clock())

    async def incr(self, session: str, key: str, by: int | float = 1) -> int | float:
        """Atomically add ``by`` to a number (a missing key counts as 0); the new value."""
        split_session(session)
        check_name(key, "key")
        return await self._incr(session, key, check_by(by), self.clock())

    async def keys(self, session: str, pattern: str = "*") -> list[str]:
        split_session(session)
        glob_filter([], pattern)
        return glob_filter(await self._keys(session, self.clock()), pattern)

    async def clear(self, session: str) -> int:
        """Forget everything of a session (keys and lists); how many keys and lists went."""
        split_session(session)
        return await self._clear(session)

    async def usage(self, session: str) -> int:
        """Bytes the session holds now (what the limit is compared with)."""
        split_session(session)
        return await self._usage(session, self.clock())

    async def append(self, session: str, name: str, item: Any) -> int:
        """Append to the list ``name`` (``conversation``, ``artifacts``, …); its new length."""
        split_session(session)
        check_name(name, "list")
        return await self._append(session, name, encode(item, "item"), self.clock())

    async def list_range(
        self, session: str, name: str, start: int = 0, stop: int = -1
    ) -> list[Any]:
        """Items ``start..stop`` inclusive, negative indexes from the end (like Redis LRANGE)."""
        split_session(session)
        check_name(name, "list")
        for field, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise _bad(field, "must be an integer")
        return [decode(t) for t in await self._list_range(session, name, start, stop)]

    async def purge_expired(self) -> int:
        """Remove expired keys of every session; how many went (a periodic sweep)."""
        return await self._purge_expired(self.clock())

    # -- long-term memory

    async def remember(self, cell: str, text: str, metadata: dict[str, Any] | None = None) -> str:
        """Store a document in the cell's long-term memory; its id."""
        check_name(cell, "cell")
        return await self._remember(cell, check_text(text), check_metadata(metadata))

    async def search(self, cell: str, query: str, limit: int = 10) -> list[MemoryHit]:
        """Documents containing any of the query's words, most relevant first."""
        check_name(cell, "cell")
        words = query_words(query)
        check_limit(limit)
        return await self._search(cell, words, limit)

    async def forget(self, cell: str, memory_id: str) -> bool:
        """Delete one document; whether it existed."""
        check_name(cell, "cell")
        check_name(memory_id, "id")
        return await self._forget(cell, memory_id)

    async def forget_cell(self, cell: str) -> None:
        """Drop everything of a deleted cell: its sessions' memory and its long-term memory."""
        check_name(cell, "cell")
        await self._forget_cell(cell)

    # -- primitives

    @abstractmethod
    async def _get(self, session: str, key: str, now: float) -> str | None: ...

    @abstractmethod
    async def _set(
        self, session: str, key: str, text: str, expires: float | None, now: float
    ) -> None: ...

    @abstractmethod
    async def _delete(self, session: str, key: str, now: float) -> bool: ...

    @abstractmethod
    async def _incr(self, session: str, key: str, by: int | float, now: float) -> int | float: ...

    @abstractmethod
    async def _keys(self, session: str, now: float) -> list[str]: ...

    @abstractmethod
    async def _clear(self, session: str) -> int: ...

    @abstractmethod
    async def _usage(self, session: str, now: float) -> int: ...

    @abstractmethod
    async def _append(self, session: str, name: str, text: str, now: float) -> int: ...

    @abstractmethod
    async def _list_range(self, session: str, name: str, start: int, stop: int) -> list[str]: ...

    @abstractmethod
    async def _purge_expired(self, now: float) -> int: ...

    @abstractmethod
    async def _forget_cell(self, cell: str) -> None: ...

    @abstractmethod
    async def _remember(self, cell: str, text: str, metadata: dict[str, Any]) -> str: ...

    @abstractmethod
    async def _search(self, cell: str, words: list[str], limit: int) -> list[MemoryHit]: ...

    @abstractmethod
    async def _forget(self, cell: str, memory_id: str) -> bool: ...


def python_range(items: list[str], start: int, stop: int) -> list[str]:
    """LRANGE semantics over a Python list (inclusive stop, negatives from the end)."""
    n = len(items)
    lo = max(start + n if start < 0 else start, 0)
    hi = stop + n if stop < 0 else min(stop, n - 1)
    return items[lo : hi + 1] if lo <= hi else []


__all__ = [
    "DEFAULT_SESSION_BYTES",
    "Clock",
    "Comb",
    "CombSettings",
    "MemoryHit",
    "NotSupported",
]
