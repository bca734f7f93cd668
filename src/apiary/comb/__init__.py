"""The Comb: session memory and long-term memory for agents, chosen by URL scheme.

``memory://``, ``sqlite:///path/comb.db``, ``postgresql://…`` and ``redis://…`` (session memory
only). Backends import their drivers only in their own modules, lazily. See docs/comb.md.
"""

from __future__ import annotations

from apiary.comb.base import (
    DEFAULT_SESSION_BYTES,
    Clock,
    Comb,
    CombSettings,
    MemoryHit,
    NotSupported,
)
from apiary.errors import BadRequest


def open_comb(url: str, settings: CombSettings | None = None) -> Comb:
    """A comb for ``url`` (not yet opened: ``await comb.open()`` or ``async with``)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from apiary.comb.memory import MemoryComb

        return MemoryComb(settings)
    if scheme == "sqlite":
        from apiary.comb.sqlite import SQLiteComb

        return SQLiteComb(url, settings)
    if scheme in ("postgresql", "postgres"):
        from apiary.comb.postgres import PostgresComb

        return PostgresComb(url, settings)
    if scheme in ("redis", "rediss"):
        from apiary.comb.redis import RedisComb

        return RedisComb(url, settings)
    raise BadRequest(
        f"unknown comb URL {url!r}: use memory://, sqlite:///path, postgresql://… or redis://…"
    )


__all__ = [
    "DEFAULT_SESSION_BYTES",
    "Clock",
    "Comb",
    "CombSettings",
    "MemoryHit",
    "NotSupported",
    "open_comb",
]
