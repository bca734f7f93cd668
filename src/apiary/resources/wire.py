"""Models back to wire dicts: aliases, unset (None) fields left out, unknown fields kept.

``model_dump(exclude_none=True)`` would also drop an unknown field whose value is null and would
reach into free-form values; this walk drops None only for *declared* fields and copies
everything else as it came, so nothing the client sent is silently lost.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def to_wire(value: Any) -> Any:
    """A plain JSON-like copy of ``value`` (a model, or anything a model holds)."""
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        first = getattr(value, "name", None) if "name" in type(value).model_fields else None
        if first is not None:
            out["name"] = first  # names first, as people read them
        for name, field in type(value).model_fields.items():
            item = getattr(value, name)
            if item is not None:
                out[field.alias or name] = to_wire(item)
        for key, item in (value.__pydantic_extra__ or {}).items():
            out[key] = to_wire(item)
        return out
    if isinstance(value, dict):
        return {key: to_wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    return value
