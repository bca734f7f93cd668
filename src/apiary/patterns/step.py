"""What one engine step returns: the new state and the actions the router must take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apiary.waggle import Message


@dataclass(frozen=True)
class Dispatch:
    """Send ``message`` to one replica of ``stage``. ``id`` is the engine's (journal and bus
    key); ``message.id`` is the same, except for a task a supervisor emitted, which keeps the id
    the agent gave it. ``parent`` is the journal entry that caused it (the input, an output, or
    a segment hand-off)."""

    id: str
    stage: str
    message: Message
    parent: str


@dataclass(frozen=True)
class Record:
    """Something to journal that is not a dispatch: ``output`` (an agent's output, as received),
    ``final`` (the hive's answer to an input), ``error`` (why a flow failed) or ``event`` (a note:
    a composed segment's hand-off, an event stopped at the hop limit)."""

    id: str
    kind: str
    message: Message
    stage: str | None
    parent: str | None


@dataclass
class Step:
    """The outcome of one engine call. ``state`` is the session's new state document (plain
    JSON); the router commits it together with ``records`` and ``dispatches``, then publishes the
    dispatches."""

    state: dict[str, Any]
    dispatches: list[Dispatch] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    """Outputs received, hand-offs, finals, errors — in the order they happened."""
    finals: list[Record] = field(default_factory=list)
    """The subset of ``records`` that are final outputs (what waiters wait for)."""
    failure: tuple[str, str] | None = None
    """(reason, message) when the flow failed in this step."""
