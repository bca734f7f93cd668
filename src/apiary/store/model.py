"""What the store is made of: keys, change-log entries, list pages, settings, the secret codec's
contract, and the two helpers every layer uses (timestamps, the key of a body)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from apiary.errors import FieldDetail, Invalid

Obj = dict[str, Any]
Clock = Callable[[], datetime]
Mutate = Callable[[Obj | None, int], Obj | None]
StatusChange = Callable[[Obj], Obj | None]
"""For ``Store.update_status_many``: the current object → it with its new status, or None."""
ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, order=True)
class Key:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str


@dataclass(frozen=True)
class Change:
    """One entry of the change log: what happened to which object at which version."""

    rv: int
    type: ChangeType
    object: Obj

    @property
    def kind(self) -> str:
        return str(self.object["kind"])


@dataclass
class ObjectList:
    items: list[Obj]
    resource_version: int
    continue_token: str | None = None


@dataclass
class StoreSettings:
    """Knobs every backend honours."""

    changelog_retention: int = 100_000
    """How many change-log entries are kept for watches; older versions answer 410 Gone."""

    compact_interval: float = 5.0
    """Seconds between compactions of the change log."""

    watch_poll_interval: float = 1.0
    """Longest a watch sleeps before looking at the log again without being woken."""


class SecretCodec(ABC):
    """Encrypts a Secret's data before it reaches the backend, decrypts after."""

    @abstractmethod
    def encrypt(self, plaintext: bytes) -> str: ...

    @abstractmethod
    def decrypt(self, token: str) -> bytes: ...


def now_rfc3339(clock: Clock) -> str:
    return clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_key(obj: Obj) -> Key:
    """The key of a body; a body without kind or name is a 422 naming the field, not a KeyError."""
    meta = obj.get("metadata") or {}
    missing = [
        f for f, v in (("kind", obj.get("kind")), ("metadata.name", meta.get("name"))) if not v
    ]
    if missing:
        details = [FieldDetail(f, "required") for f in missing]
        raise Invalid(f"{', '.join(missing)} required", details)
    return Key(str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))
