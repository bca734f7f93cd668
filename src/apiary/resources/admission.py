"""Admission: envelope checks common to every kind. Kind models refine this."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from apiary.resources.registry import API_VERSION, lookup_kind

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ValidationFailed(Exception):
    """An object failed validation; ``details`` is a list of (field path, message)."""

    def __init__(self, details: list[tuple[str, str]]) -> None:
        self.details = details
        super().__init__("; ".join(f"{f}: {m}" for f, m in details))


@dataclass
class Admission:
    object: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def admit(obj: Any, *, strict: bool = False) -> Admission:
    """Validate and default ``obj``; unknown fields are warnings (errors when ``strict``)."""
    if not isinstance(obj, dict):
        raise ValidationFailed([("", "an object must be a mapping with apiVersion, kind, metadata")])
    errors: list[tuple[str, str]] = []
    if obj.get("apiVersion") != API_VERSION:
        errors.append(("apiVersion", f"must be {API_VERSION!r}"))
    kind = obj.get("kind")
    info = lookup_kind(kind) if isinstance(kind, str) else None
    if info is None or info.kind != kind:
        errors.append(("kind", f"unknown kind {kind!r}"))
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        errors.append(("metadata", "required mapping"))
    else:
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            errors.append(("metadata.name", "required"))
        elif len(name) > 63 or not DNS1123.match(name):
            errors.append(("metadata.name", f"{name!r} is not a DNS-1123 label "
                           "(lower-case letters, digits and '-', at most 63 characters)"))
    if errors:
        raise ValidationFailed(errors)
    return Admission(dict(obj))
