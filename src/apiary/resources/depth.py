"""A nesting limit, checked without recursion before anything recursive sees the input.

Validation and copying walk the object recursively; a pathological body nested thousands of
levels deep would otherwise end in a RecursionError instead of a clear error naming the field.
"""

from __future__ import annotations

from typing import Any

from apiary.resources.base import Loc

MAX_DEPTH = 100
"""Deepest nesting of mappings and lists an object may have (Kubernetes manifests use < 20); the
default of the ``max_depth`` admission limit (:mod:`apiary.resources.limits`)."""


def too_deep(value: Any, limit: int = MAX_DEPTH) -> Loc | None:
    """The location of the first value nested deeper than ``limit``, or None."""
    stack: list[tuple[Any, Loc]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if len(loc) > limit:
            return loc
        if isinstance(item, dict):
            stack.extend((child, (*loc, str(key))) for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((child, (*loc, index)) for index, child in enumerate(item))
    return None
