"""Secret values on the wire: redacted unless revealed, and never lost to a redacted round trip."""

from __future__ import annotations

from typing import Any

REDACTED = "<redacted>"


def redact(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Secret with every ``data`` value replaced by ``<redacted>`` (keys stay)."""
    if obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    data = obj.get("data")
    if isinstance(data, dict):
        out["data"] = dict.fromkeys(data, REDACTED)
    out.pop("stringData", None)
    return out


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
