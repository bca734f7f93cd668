"""What both clients agree on with the server: answers, warnings, the error tree by status and
reason, object normalisation for apply, and the :class:`Call` an operation yields."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from apiary import errors
from apiary.resources import KINDS, KindInfo, lookup_kind

Obj = dict[str, Any]
#: metadata the server owns; ignored when deciding whether an apply changes anything.
SERVER_MANAGED_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
)
_WARNING_RE = re.compile(r'\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')
_STATUS_ERRORS: dict[int, type[errors.ApiaryError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    413: errors.PayloadTooLarge,
    422: errors.Invalid,
    429: errors.TooManyRequests,
    503: errors.Unavailable,
}
_REASON_ERRORS: dict[str, type[errors.ApiaryError]] = {
    "QuotaExceeded": errors.QuotaExceeded,
    "AlreadyExists": errors.AlreadyExists,
}


class WatchTimeout(errors.Unavailable):
    """A watch saw no line (not even a bookmark) within its ``timeout``."""


@dataclass
class ApiResponse:
    """One successful HTTP answer: status, decoded JSON body (or text) and ``Warning`` headers."""

    status: int
    body: Any
    warnings: list[str] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_warnings(values: list[str]) -> list[str]:
    """``299 - "unknown field \\"spec.foo\\""`` → ``unknown field "spec.foo"``."""
    out: list[str] = []
    for value in values:
        found = _WARNING_RE.findall(value)
        if not found:
            out.append(value.strip())
        out.extend(re.sub(r"\\(.)", r"\1", text) for text in found)
    return out


def error_from_response(status: int, text: str) -> errors.ApiaryError:
    """The :mod:`apiary.errors` exception for a failed answer, keeping the server's details."""
    body: Any = None
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    reason = ""
    message = f"HTTP {status}: {text.strip()[:300]}" if text.strip() else f"HTTP {status}"
    details: list[errors.FieldDetail] = []
    if isinstance(body, dict):
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or message)
        for d in body.get("details") or []:
            if isinstance(d, dict):
                details.append(errors.FieldDetail(str(d.get("field", "")), str(d.get("message"))))
    cls = _REASON_ERRORS.get(reason) or _STATUS_ERRORS.get(status)
    if cls is None:
        exc = errors.ApiaryError(message, details)
        exc.status = status
        return exc
    return cls(message, details)


def resolve_kind(kind: str | KindInfo) -> KindInfo:
    if isinstance(kind, KindInfo):
        return kind
    info = lookup_kind(kind)
    if info is None:
        known = ", ".join(k.plural for k in KINDS)
        msg = f"unknown kind {kind!r} (known: {known})"
        raise errors.Invalid(msg, [errors.FieldDetail("kind", msg)])
    return info


def selector_string(selector: str | Mapping[str, str] | None) -> str | None:
    if selector is None or isinstance(selector, str):
        return selector or None
    return ",".join(f"{k}={v}" for k, v in selector.items()) or None


def normalized(obj: Obj) -> Obj:
    """``obj`` as a manifest controls it: no status or server-managed metadata, Secret
    ``stringData`` folded into ``data``."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    string_data = out.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        # Secrets: stringData is write-only sugar for base64 data; compare what gets stored.
        data = out["data"] = dict(out.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_MANAGED_METADATA:
            meta.pop(key, None)
        for key in ("labels", "annotations", "ownerReferences", "finalizers"):
            if meta.get(key) in ({}, [], None):
                meta.pop(key, None)
    return out


@dataclass
class Call:
    """One HTTP call an operation wants made; the sync and async clients perform it."""

    method: str
    path: str
    params: dict[str, str] | None = None
    body: Any = None


T = TypeVar("T")
Op = Generator[Call, ApiResponse, T]
ApplyResult = tuple[str, Obj, list[str]]


def _as_obj(body: Any) -> Obj:
    return dict(body) if isinstance(body, dict) else {}


def is_secret(obj: Obj) -> bool:
    info = lookup_kind(str(obj.get("kind", "")))
    return info is not None and info.kind == "Secret"


def name_and_cell(obj: Obj) -> tuple[str, str | None]:
    """``metadata.name`` ("" when missing) and ``metadata.namespace`` (None when missing)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "", None
    name, cell = meta.get("name"), meta.get("namespace")
    return (name if isinstance(name, str) else ""), (cell if isinstance(cell, str) else None)
