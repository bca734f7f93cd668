"""Small helpers the patterns share for reading agents' outputs."""

from __future__ import annotations

import json
from typing import Any

from apiary.waggle import REPLY, Message

Output = tuple[str, Message]
"""An output as the engine recorded it: (record id, message carrying that id)."""

INTERNAL_METADATA = frozenset({"more", "partial", "token-count", "hops", REPLY})
"""Metadata that describes one message rather than the work, so it is never copied onto a
derived message: ``more`` (or ``partial``) would make the next stage's answer look partial,
``token-count`` would count the same tokens twice, ``hops`` is the engine's own (event-driven)
counter, ``reply`` is about one delivery."""


def carried(metadata: dict[str, str]) -> dict[str, str]:
    """The part of a message's metadata that travels on to the messages derived from it."""
    return {k: v for k, v in metadata.items() if k not in INTERNAL_METADATA}


def terminal(outputs: list[Output]) -> Output | None:
    """The answer to a dispatch: its first output not marked ``more: true``. Outputs before it
    are partial (recorded only); any after it are surplus (recorded only)."""
    for output in outputs:
        if not output[1].more:
            return output
    return None


def canonical(payload: Any) -> str:
    """Canonical JSON, so that ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` vote together."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (a caller outside the wire path): compare by repr
        return repr(payload)


def recorded(message: Message, record_id: str, dispatch_id: str) -> Message:
    """A copy of an agent's output under the id the engine records it with; the caller's
    message is left untouched. ``correlationId`` defaults to the dispatch it answers."""
    copy = Message.__new__(Message)
    for slot in Message.__slots__:
        setattr(copy, slot, getattr(message, slot))
    copy.id = record_id
    copy.metadata = dict(message.metadata)
    if copy.correlation_id is None:
        copy.correlation_id = dispatch_id
    return copy


def describe(payload: Any, limit: int = 200) -> str:
    """A payload as a short string for an error message."""
    text = payload if isinstance(payload, str) else canonical(payload)
    return text if len(text) <= limit else text[: limit - 3] + "..."
