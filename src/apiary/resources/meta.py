"""Metadata, conditions and the envelope every object shares (Kubernetes' ObjectMeta)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from apiary.resources.base import ApiModel, DNSLabel, Problems, Timestamp
from apiary.resources.names import (
    DNS1123_LABEL,
    label_value_error,
    qualified_name_error,
)
from apiary.resources.registry import API_VERSION


class OwnerReference(ApiModel):
    """Who owns this object; deleting the owner deletes it (cascading deletion)."""

    api_version: str = API_VERSION
    kind: str
    name: DNSLabel
    uid: str
    controller: bool | None = None
    """True on the one owner that manages this object (a Drone's Hive)."""
    block_owner_deletion: bool | None = None


class ObjectMeta(ApiModel):
    """Identity and bookkeeping. ``uid``, ``resourceVersion``, ``generation`` and the timestamps
    are set by the store; clients may send them back (``get -o yaml | apply``)."""

    name: DNSLabel
    generate_name: str | None = None
    """Accepted for compatibility; the API server turns it into a ``name`` before admission."""
    namespace: DNSLabel | None = None
    uid: str | None = None
    resource_version: str | None = None
    """Decimal digits (or empty: no precondition); anything else can only be a 409 later."""
    generation: int | None = Field(default=None, ge=0)
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        problems = Problems()
        for key, value in (labels or {}).items():
            message = qualified_name_error(key)
            if message is not None:
                problems.add((), f"label {message}")
            message = label_value_error(value)
            if message is not None:
                problems.add((), f"label {key!r}: {message}")
        problems.raise_if_any()
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str] | None) -> dict[str, str] | None:
        """Key syntax only; their total size is an admission limit (resources/limits.py)."""
        problems = Problems()
        for key in annotations or {}:
            message = qualified_name_error(key)
            if message is not None:
                problems.add((), f"annotation {message}")
        problems.raise_if_any()
        return annotations

    @field_validator("resource_version")
    @classmethod
    def _resource_version(cls, rv: str | None) -> str | None:
        if rv and not (rv.isascii() and rv.isdigit() and len(rv) <= 19):
            raise ValueError(f"{rv[:40]!r} is not a resourceVersion (a number this server gave)")
        return rv

    @field_validator("finalizers")
    @classmethod
    def _finalizers(cls, finalizers: list[str] | None) -> list[str] | None:
        problems = Problems()
        for index, finalizer in enumerate(finalizers or []):
            message = qualified_name_error(finalizer)
            if message is not None:
                problems.add((index,), message.replace("key ", "finalizer ", 1))
        problems.raise_if_any()
        return finalizers

    @field_validator("generate_name")
    @classmethod
    def _generate_name(cls, prefix: str | None) -> str | None:
        if prefix is not None:
            stem = prefix.rstrip("-")
            if len(prefix) > 58 or (stem and not DNS1123_LABEL.match(stem)):
                raise ValueError(
                    f"{prefix!r} is not a DNS-1123 name prefix (at most 58 characters)"
                )
        return prefix


class Condition(ApiModel):
    """One observation about an object (``Ready``, ``Scheduled``...), as in Kubernetes."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str | None = Field(default=None, max_length=1024)
    message: str | None = None
    last_transition_time: Timestamp | None = None
    observed_generation: int | None = Field(default=None, ge=0)


class Status(ApiModel):
    """What every status has; each kind's status adds its own fields. Extra keys are kept."""

    phase: str | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = Field(default=None, ge=0)


class ApiObject(ApiModel):
    """The envelope: ``apiVersion``, ``kind``, ``metadata`` and a free-form ``status``.

    ``status`` is only required to be a mapping on create and update: controllers own it and
    write it through the ``/status`` subresource, which validates it with :attr:`status_model`.
    """

    status_model: ClassVar[type[Status] | None] = Status

    api_version: Literal["apiary.io/v1"]
    kind: str
    metadata: ObjectMeta
    status: dict[str, Any] | None = None
