"""Object stores, chosen by URL scheme: ``memory://``, ``sqlite:///path``, ``postgresql://…``."""

from __future__ import annotations

from apiary.errors import BadRequest
from apiary.store.base import (
    Change,
    Key,
    Obj,
    ObjectList,
    SecretCodec,
    Store,
    StoreSettings,
    object_key,
)
from apiary.store.selectors import Selector, parse_selector


def open_store(
    url: str, settings: StoreSettings | None = None, *, codec: SecretCodec | None = None
) -> Store:
    """A store for ``url`` (not yet opened). Backends import their drivers only here, lazily."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from apiary.store.memory import MemoryStore

        return MemoryStore(settings, codec=codec)
    if scheme == "sqlite":
        from apiary.store.sqlite import SQLiteStore

        return SQLiteStore(url, settings, codec=codec)
    if scheme in ("postgresql", "postgres"):
        from apiary.store.postgres import PostgresStore

        return PostgresStore(url, settings, codec=codec)
    raise BadRequest(
        f"unknown store URL scheme {scheme!r} (use memory://, sqlite:// or postgresql://)"
    )


__all__ = [
    "Change",
    "Key",
    "Obj",
    "ObjectList",
    "SecretCodec",
    "Selector",
    "Store",
    "StoreSettings",
    "object_key",
    "open_store",
    "parse_selector",
]
