"""Query and path parameters, parsed strictly: a value the API does not understand is a 400 naming
it — never a 500 from deeper down (a 23-digit ``limit`` used to overflow the SQLite scan, a 26-digit
``resourceVersion`` broke a watch mid-stream) and never a 200 for a path no object can have.

Integers are Kubernetes' int64; cell and object names in the path are DNS-1123 labels, as every
name is (:mod:`apiary.resources.names`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

from apiary.errors import BadRequest, FieldDetail
from apiary.resources.names import dns_label_error
from apiary.store import Selector, parse_selector

INT64_MAX = 2**63 - 1
"""The largest integer a query parameter may carry (Kubernetes' int64)."""

_TRUE = frozenset({"true", "1", "yes", "all"})
_FALSE = frozenset({"false", "0", "no", ""})


def flag(params: QueryParams, name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(name, raw, "expected true or false")


def dry_run(params: QueryParams) -> bool:
    """``dryRun=All`` (Kubernetes) or ``dryRun=true``."""
    return flag(params, "dryRun")


def _bad(name: str, raw: str, expected: str) -> BadRequest:
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    message = f"query parameter {name}={shown!r}: {expected}"
    return BadRequest(message, [FieldDetail(name, expected)])


def non_negative_int(params: QueryParams, name: str, maximum: int = INT64_MAX) -> int | None:
    """``name`` as an integer in ``0..maximum``; absent or empty: None."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        raise _bad(name, raw, "expected a non-negative integer")
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise _bad(name, raw, f"must be at most {maximum}")
    return int(text)


def resource_version(params: QueryParams) -> str | None:
    """``resourceVersion`` as the store writes it (decimal digits), or None when absent."""
    value = non_negative_int(params, "resourceVersion")
    return None if value is None else str(value)


def path_name(value: str, what: str) -> str:
    """A cell or object name from the path: a DNS-1123 label, else a 400 naming the parameter."""
    problem = dns_label_error(value)
    if problem is not None:
        shown = value if len(value) <= 70 else value[:67] + "..."
        problem = problem.replace(repr(value), repr(shown))
        raise BadRequest(f"path parameter {what}: {problem}", [FieldDetail(what, problem)])
    return value


def path_names(path_params: dict[str, Any]) -> None:
    """The ``cell`` and ``name`` of any path are DNS labels, else a 400 naming the parameter
    (checked by the dispatcher for every route it serves, so no route can forget it)."""
    for what in ("cell", "name"):
        value = path_params.get(what)
        if value is not None:
            path_name(value, what)


@dataclass(frozen=True)
class ListParams:
    selector: Selector | None
    limit: int | None
    continue_token: str | None
    name: str | None
    involved_kind: str | None
    involved_name: str | None
    watch: bool
    resource_version: int | None
    view: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """How the caller may see each object (``Authorizer.view``); None: as it is."""

    def shown(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj if self.view is None else self.view(obj)

    def matches(self, obj: dict[str, object]) -> bool:
        """The filters the store does not apply itself (field selectors, event filters)."""
        meta = obj.get("metadata")
        if self.name is not None and (not isinstance(meta, dict) or meta.get("name") != self.name):
            return False
        if self.involved_kind is None and self.involved_name is None:
            return True
        involved = obj.get("involvedObject")
        if not isinstance(involved, dict):
            return False
        if self.involved_kind is not None and involved.get("kind") != self.involved_kind:
            return False
        return self.involved_name is None or involved.get("name") == self.involved_name


def list_params(params: QueryParams) -> ListParams:
    return ListParams(
        selector=parse_selector(params.get("labelSelector"), strict=True),
        limit=non_negative_int(params, "limit"),
        continue_token=params.get("continue") or None,
        name=_field_selector(params.get("fieldSelector")),
        involved_kind=params.get("involvedObject.kind") or None,
        involved_name=params.get("involvedObject.name") or None,
        watch=flag(params, "watch"),
        resource_version=non_negative_int(params, "resourceVersion"),
    )


def _field_selector(text: str | None) -> str | None:
    if not text:
        return None
    key, sep, value = text.partition("=")
    key = key.rstrip("=")
    value = value.lstrip("=")
    if not sep or key.strip() != "metadata.name" or not value.strip():
        raise _bad("fieldSelector", text, "only 'metadata.name=NAME' is supported")
    return value.strip()
