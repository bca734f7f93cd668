"""Secret values on the wire: redacted unless revealed, and never lost to a redacted round trip."""

from __future__ import annotations

from typing import Any

from apiary.resources.secret import REDACTED, redact

__all__ = ["REDACTED", "has_redacted", "keep_redacted", "redact"]


def has_redacted(obj: dict[str, Any]) -> bool:
    data = obj.get("data")
    return isinstance(data, dict) and any(v == REDACTED for v in data.values())


def keep_redacted(incoming: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``data`` values sent back as ``<redacted>`` keep what is stored (dropped if unknown)."""
    data = incoming.get("data")
    if not isinstance(data, dict):
        return incoming
    stored = current.get("data") or {}
    merged = {}
    for key, value in data.items():
        if value == REDACTED:
            if key in stored:
                merged[key] = stored[key]
        else:
            merged[key] = value
    return {**incoming, "data": merged}
