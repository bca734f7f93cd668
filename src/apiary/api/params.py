"""Query parameters, parsed strictly: a value the API does not understand is a 400 naming it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

from apiary.errors import BadRequest
from apiary.store import Selector, parse_selector

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
    raise BadRequest(f"query parameter {name}={raw!r}: expected true or false")


def dry_run(params: QueryParams) -> bool:
    """``dryRun=All`` (Kubernetes) or ``dryRun=true``."""
    return flag(params, "dryRun")


def non_negative_int(params: QueryParams, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(
            f"query parameter {name}={raw!r}: expected a non-negative integer"
        ) from None
    if value < 0:
        raise BadRequest(f"query parameter {name}={raw!r}: expected a non-negative integer")
    return value


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
        selector=parse_selector(params.get("labelSelector")),
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
        raise BadRequest(f"fieldSelector {text!r}: only 'metadata.name=NAME' is supported")
    return value.strip()
