"""Secret: named values for agents' environments (``valueFrom.secretKeyRef``).

As in Kubernetes the payload sits at the top level: ``data`` holds base64 strings, ``stringData``
plain strings that the store folds into ``data`` (and encrypts at rest). Secrets have no spec and
no status.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import field_validator

from apiary.resources.base import Problems
from apiary.resources.meta import ApiObject
from apiary.resources.names import secret_key_error

MAX_SECRET_BYTES = 1024 * 1024
"""Largest decoded payload of one Secret, as in Kubernetes."""

REDACTED = "<redacted>"
"""What a Secret's value reads as on the wire unless it is revealed."""


def fold_string_data(obj: dict[str, Any]) -> None:
    """A Secret's ``stringData`` is write-only: merge it into ``data`` as base64 (in place)."""
    if obj.get("kind") != "Secret" or not obj.get("stringData"):
        return
    data = dict(obj.get("data") or {})
    for k, v in obj.pop("stringData").items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    obj["data"] = data


def redact(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Secret with every ``data`` value replaced by ``<redacted>`` (keys stay);
    other kinds are returned as they are. Shared by the API and the client, so neither can
    show a value the caller did not ask for."""
    if obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    data = obj.get("data")
    if isinstance(data, dict):
        out["data"] = dict.fromkeys(data, REDACTED)
    out.pop("stringData", None)
    return out


def _check_keys(values: dict[str, str], problems: Problems) -> None:
    for key in values:
        message = secret_key_error(key)
        if message is not None:
            problems.add((key,), message)


class Secret(ApiObject):
    status_model = None

    kind: Literal["Secret"]
    type: str | None = None
    """Free-form classification (Kubernetes uses ``Opaque``); Apiary does not interpret it."""
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    immutable: bool | None = None

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str] | None) -> dict[str, str] | None:
        problems = Problems()
        total = 0
        for key, value in (data or {}).items():
            try:
                total += len(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                problems.add((key,), "must be base64 (use stringData for plain text)")
        _check_keys(data or {}, problems)
        if total > MAX_SECRET_BYTES:
            problems.add((), f"holds {total} bytes, more than {MAX_SECRET_BYTES}")
        problems.raise_if_any()
        return data

    @field_validator("string_data")
    @classmethod
    def _keys(cls, data: dict[str, str] | None) -> dict[str, str] | None:
        problems = Problems()
        _check_keys(data or {}, problems)
        problems.raise_if_any()
        return data
