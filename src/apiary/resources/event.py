"""Event: what happened to an object, shown by ``describe``.

As in Kubernetes (``core/v1`` Event) the fields sit at the top level, not under ``spec``:
``involvedObject``, ``reason``, ``message``, ``type``, ``count``, ``firstTimestamp``,
``lastTimestamp``. Repeats of the same event bump ``count`` and ``lastTimestamp``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from apiary.resources.base import ApiModel, DNSLabel, Problems, Timestamp
from apiary.resources.meta import ApiObject
from apiary.resources.registry import KINDS

_KIND_NAMES = tuple(info.kind for info in KINDS)


class ObjectReference(ApiModel):
    kind: str
    name: DNSLabel
    namespace: DNSLabel | None = None
    uid: str | None = None
    api_version: str | None = None
    field_path: str | None = None
    """Which part of the object (``spec.stages[1]``), when the event is about one part."""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in _KIND_NAMES:
            raise ValueError(f"unknown kind {kind!r} (one of {', '.join(_KIND_NAMES)})")
        return kind


class EventSource(ApiModel):
    component: str | None = None
    host: str | None = None


class Event(ApiObject):
    status_model = None

    kind: Literal["Event"]
    involved_object: ObjectReference
    reason: str = Field(min_length=1, max_length=128)
    """Short UpperCamelCase cause (``CrashLoopBackOff``, ``GuardrailViolation``)."""
    message: str | None = Field(default=None, max_length=32_768)
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = Field(default=1, ge=1)
    first_timestamp: Timestamp | None = None
    last_timestamp: Timestamp | None = None
    source: EventSource | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Event:
        first, last = self.first_timestamp, self.last_timestamp
        if (
            first is not None
            and last is not None
            and datetime.fromisoformat(last) < datetime.fromisoformat(first)
        ):
            problems = Problems()
            problems.add(("lastTimestamp",), "must not be before firstTimestamp")
            problems.raise_if_any()
        return self
